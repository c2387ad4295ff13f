//! `mse-grpc`: the command line.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mlua_swarm_grpc::config::{Config, LogFormat, ServeArgs};
use mlua_swarm_grpc::engine::EngineHost;
use mlua_swarm_grpc::server;
use mlua_swarm_grpc::telemetry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// mimalloc instead of glibc malloc: the per-task path allocates a great deal (the engine
/// clones its state freely), and glibc's malloc/free were ~20 % of the server's CPU in B1.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gRPC, gRPC-Web and legacy HTTP/WebSocket server for the mlua-swarm engine.
#[derive(Debug, Parser)]
#[command(name = "mse-grpc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
}

fn main() -> ExitCode {
    let Command::Serve(args) = Cli::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mse-grpc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's client needs the runtime.
    let otlp = {
        let _inside = runtime.enter();
        init_logging(
            "info,mlua_swarm=warn,mlua_swarm_grpc=info",
            args.log_format,
            args.otlp_endpoint.as_deref(),
        )
    };
    let otlp = match otlp {
        Ok(otlp) => otlp,
        Err(e) => {
            eprintln!("mse-grpc: --otlp-endpoint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(*args));
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    // A flow that never yields keeps its runtime thread; exit without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mse-grpc: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The spans exported with `--otlp-endpoint`: the server's, not the engine's internals.
const TRACE_FILTER: &str = "warn,mlua_swarm_grpc=info";

/// Logs to stderr as text (colour only on a terminal) or JSON lines; `RUST_LOG` overrides
/// the default filter. With an OTLP endpoint, spans are exported there too.
fn init_logging(
    default_filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Option<telemetry::Otlp>, telemetry::OtlpError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (traces, otlp) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, otlp) = telemetry::otlp_layer(endpoint)?;
            (Some(layer), Some(otlp))
        }
        None => (None, None),
    };
    match traces {
        // Exported spans have their own filter: `RUST_LOG` (say `warn`) quiets logs only.
        Some(traces) => tracing_subscriber::registry()
            .with(traces.with_filter(EnvFilter::new(TRACE_FILTER)))
            .with(log_layer(format).with_filter(filter))
            .init(),
        // One global filter: a per-layer filter makes every span (a debug span per call
        // from the HTTP trace layer) be built and then dropped, ~2 % of B1's server CPU.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format))
            .init(),
    }
    Ok(otlp)
}

/// The stderr log layer in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), server::StartError> {
    let config = Config::load(&args)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", config.bind))?;
    match &config.storage {
        mlua_swarm_grpc::config::Storage::Dir(dir) => {
            tracing::info!(data_dir = %dir.display(), "state kept on disk")
        }
        mlua_swarm_grpc::config::Storage::Postgres { url, dir } => tracing::info!(
            database = %url,
            data_dir = %dir.display(),
            "tasks, runs and sessions in PostgreSQL; Blueprints and data outputs on disk"
        ),
        mlua_swarm_grpc::config::Storage::Ephemeral => tracing::info!("ephemeral: state in memory"),
    }
    let host = EngineHost::start(&config).await?;
    server::run(listener, config, host, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
