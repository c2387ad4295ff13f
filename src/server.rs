//! One port for every door: native gRPC (h2c, or h2 over TLS), gRPC-Web (HTTP/1.1) and plain
//! HTTP routes, with graceful shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::brake::{self, Brake};
use crate::config::{Config, Storage};
use crate::engine::EngineHost;
use crate::gate::{self, Gate};
use crate::grpc;
use crate::metrics::export::{Exporter, Sampler};
use crate::operator::{
    NatsBus, OperatorHub, PgSessionStore, SessionLimits, SessionLinks, SqliteSessionStore,
};

/// HTTP/2 streams one connection may hold open (operator streams, watches, unary calls).
const MAX_STREAMS_PER_CONNECTION: u32 = 4096;
/// What `closing` frames tell operators to wait before reconnecting after a shutdown.
const SHUTDOWN_RETRY_AFTER_MS: u64 = 1000;

/// Boxed error of server start-up.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A server running on a background task.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The engine host (tests read its state).
    pub host: Arc<EngineHost>,
    /// The operator sessions (benchmarks drive them directly).
    pub hub: Arc<OperatorHub>,
    /// Whether every door is served over TLS.
    pub tls: bool,
    /// Where `/metrics` is served on its own (`--metrics-bind`).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), StartError>>,
}

impl RunningServer {
    /// Starts graceful shutdown and waits for the server to stop.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join.await?
    }
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    host: Arc<EngineHost>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let tls = start_tls(&config)?;
    let metrics = bind_metrics(&config).await?;
    let hub = start_hub(&config, &host, listener.local_addr()?).await?;
    serve(listener, config, host, hub, tls, metrics, shutdown).await
}

/// The listener of `--metrics-bind`, if set (and metrics are on).
async fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, StartError> {
    match config.metrics_bind.filter(|_| config.metrics) {
        Some(addr) => Ok(Some(TcpListener::bind(addr).await?)),
        None => Ok(None),
    }
}

/// The `/metrics` exporter, its gauges read from `host` and `hub` at each scrape; None
/// when off.
fn exporter(config: &Config, host: &Arc<EngineHost>, hub: &Arc<OperatorHub>) -> Option<Exporter> {
    if !config.metrics {
        return None;
    }
    let (host, hub) = (Arc::downgrade(host), Arc::downgrade(hub));
    let live: Sampler = Arc::new(move || {
        if let Some(host) = host.upgrade() {
            crate::metrics::set_tasks_in_flight(host.runs_in_flight());
        }
        if let Some(hub) = hub.upgrade() {
            crate::metrics::set_operator_gauges(&hub.metric_gauges());
        }
    });
    Exporter::new(vec![live])
}

fn start_tls(config: &Config) -> Result<Option<TlsAcceptor>, StartError> {
    Ok(config.tls.as_ref().map(crate::tls::start).transpose()?)
}

/// The operator hub on the session store the storage mode picks (SQLite under the data
/// dir, PostgreSQL with `--database-url`, or in memory for `--ephemeral`), with the sessions of the previous process restored.
async fn start_hub(
    config: &Config,
    host: &Arc<EngineHost>,
    addr: SocketAddr,
) -> Result<Arc<OperatorHub>, StartError> {
    let mut links = match &config.storage {
        Storage::Dir(dir) => SessionLinks::new(Arc::new(SqliteSessionStore::open(dir).await?)),
        Storage::Postgres { url, .. } => {
            let pool = crate::pg::connect(url).await?;
            SessionLinks::new(Arc::new(PgSessionStore::open(pool).await?))
        }
        Storage::Ephemeral => SessionLinks::in_process(),
    };
    let nats = match &config.cluster.nats_url {
        Some(url) => {
            let grace = config.operator.park_grace;
            let bus = NatsBus::connect(url, &config.cluster.replica_id, grace).await?;
            crate::worker_relay::NatsWorkerRelay::start(url, &config.cluster.replica_id, host)
                .await?;
            links.bus = bus.clone();
            Some(bus)
        }
        None => None,
    };
    let hub = OperatorHub::start_with(
        host.clone(),
        SessionLimits {
            timeouts: config.operator.clone(),
            base_url: match (&config.public_url, &config.tls) {
                (Some(url), _) => url.clone(),
                (None, Some(_)) => format!("https://{addr}"),
                (None, None) => format!("http://{addr}"),
            },
            max_unacked: config.operator.max_unacked,
            size: crate::limits::SizePolicy::new(config.max_message_bytes, config.max_data_bytes),
        },
        links,
    );
    if let Some(bus) = nats {
        bus.serve_hub(&hub);
    }
    let restored = hub.restore().await?;
    if restored > 0 {
        tracing::info!(restored, "operator sessions restored from the data dir");
    }
    Ok(hub)
}

async fn serve(
    listener: TcpListener,
    config: Config,
    host: Arc<EngineHost>,
    hub: Arc<OperatorHub>,
    tls: Option<TlsAcceptor>,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener.local_addr()?;
    let exporter = exporter(&config, &host, &hub);
    let (routes, health) = grpc::routes(&config, host.clone(), hub.clone()).await?;
    let grpc_router = routes
        .prepare()
        .into_axum_router()
        .layer(TraceLayer::new_for_grpc());
    let legacy_state = crate::legacy::LegacyState {
        host: host.clone(),
        hub: hub.clone(),
        bind: addr,
        max_body_bytes: config.max_message_bytes,
    };
    let legacy = crate::http::router(legacy_state.clone()).merge(crate::ws::router(legacy_state));
    let mut app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(legacy.layer(TraceLayer::new_for_http()))
        .merge(grpc_router);
    // `/metrics` on the main port is gated like the APIs; on its own address it is open.
    let metrics_server = match (&exporter, metrics_listener) {
        (Some(e), None) => {
            app = app.merge(e.clone().router());
            None
        }
        (Some(e), Some(l)) => Some(tokio::spawn(
            axum::serve(l, e.clone().router()).into_future(),
        )),
        (None, _) => None,
    };
    // The API token is checked here, once, for every door; CORS wraps it so that a
    // refused browser call still reads its grpc-status.
    if let Some(gate) = Gate::new(config.api_token.as_deref()) {
        app = app.layer(axum::middleware::from_fn_with_state(gate, gate::check));
    }
    // Outside the gate, so its refusals count as failed checks too.
    if let Some(brake) = Brake::start(config.brake) {
        app = app.layer(axum::middleware::from_fn_with_state(brake, brake::check));
    }
    // Outside the gate and the brake, so their refusals are counted too.
    if exporter.is_some() {
        app = app.layer(crate::metrics::layer::CountLayer);
    }
    if crate::telemetry::enabled() {
        app = app.layer(axum::middleware::from_fn(crate::telemetry::join_trace));
    }
    if let Some(layer) = cors(&config.cors_origins)? {
        app = app.layer(layer);
    }
    tracing::info!(%addr, tls = tls.is_some(), "mse-grpc listening (gRPC, gRPC-Web, HTTP)");
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving plaintext to the network; set --tls-cert and --tls-key to serve TLS");
    }
    let connections = accept_loop(listener, app, tls, shutdown).await;
    tracing::info!("shutting down: health NOT_SERVING, closing operator streams");
    grpc::set_serving(&health, false).await;
    host.begin_drain();
    // Draining: the operator reconnects (in a cluster, through the balancer, to another
    // replica, which serves the same session).
    hub.close_all(
        "draining: server shutting down; reconnect after retry_after_ms",
        SHUTDOWN_RETRY_AFTER_MS,
    );
    // Bounded drain: running tasks and open connections get `drain` to end, then the
    // tasks still running are aborted.
    let (_, runs_done) = tokio::join!(
        connections.drain(config.drain),
        host.wait_runs(config.drain)
    );
    if !runs_done {
        tracing::warn!(
            drain_secs = config.drain.as_secs(),
            "drain window over: aborting running tasks"
        );
        host.abort_runs("server shut down before the task finished (drain window over)")
            .await;
    }
    host.shutdown().await;
    hub.close_store().await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    Ok(())
}

/// The connections still open after accepting stopped.
struct OpenConnections {
    /// Drains served connections: HTTP/1 ends after the response in flight, HTTP/2 sends
    /// GOAWAY and finishes its open streams. A WebSocket leaves hyper at its upgrade; its
    /// session's `closing` ends it.
    graceful: GracefulShutdown,
    /// Ends TLS handshakes still under way: such a connection has no request to finish.
    stop_handshakes: watch::Sender<bool>,
}

impl OpenConnections {
    /// Asks every connection to finish gracefully and waits up to `within` (`--drain-secs`).
    async fn drain(self, within: Duration) {
        let _ = self.stop_handshakes.send(true);
        if tokio::time::timeout(within, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout: connections still open are cut");
        }
    }
}

/// Accepts connections until `shutdown`, serving HTTP/1.1 (with upgrades, for WebSocket and
/// gRPC-Web) and HTTP/2 on each, inside TLS when `tls` is set.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> OpenConnections {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        // Taken before the task starts, so a shutdown that begins meanwhile waits for it.
        let watcher = graceful.watcher();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(&builder, stream, app, watcher, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        done = crate::tls::handshake(&acceptor, stream) => done,
                        _ = stop.changed() => return, // shutting down: `watcher` drops with the task
                    };
                    match handshake {
                        Ok(stream) => serve_connection(&builder, stream, app, watcher, peer).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                    }
                }
            }
        });
    }
    drop(listener);
    OpenConnections {
        graceful,
        stop_handshakes: stop_tx,
    }
}

/// Serves one connection until it ends; `watcher` finishes it gracefully once the server
/// shuts down.
async fn serve_connection<I>(
    builder: &Builder<TokioExecutor>,
    io: I,
    app: axum::Router,
    watcher: Watcher,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The peer address, for the brake (`ConnectInfo`, as axum's own serve gives it).
    let svc = TowerToHyperService::new(app.map_request(
        move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        },
    ));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Binds `config.bind`'s listener (or the given one), starts the engine host and serves in
/// the background.
pub async fn spawn(listener: TcpListener, config: Config) -> Result<RunningServer, StartError> {
    let addr = listener.local_addr()?;
    let tls = start_tls(&config)?;
    let metrics = bind_metrics(&config).await?;
    let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
    let host = EngineHost::start(&config).await?;
    let hub = start_hub(&config, &host, addr).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(serve(
        listener,
        config,
        host.clone(),
        hub.clone(),
        tls.clone(),
        metrics,
        async move {
            let _ = rx.await;
        },
    ));
    Ok(RunningServer {
        addr,
        host,
        hub,
        tls: tls.is_some(),
        metrics_addr,
        shutdown: Some(tx),
        join,
    })
}

/// CORS for browsers calling gRPC-Web from the given origins (none: same origin only).
fn cors(origins: &[String]) -> Result<Option<CorsLayer>, StartError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let h = |s: &'static str| HeaderName::from_static(s);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                h(gate::ACCESS_TOKEN_HEADER),
                h("x-grpc-web"),
                h("x-user-agent"),
                h("grpc-timeout"),
                h(crate::telemetry::TRACEPARENT),
            ])
            .expose_headers([
                h("grpc-status"),
                h("grpc-message"),
                h("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}
