//! One port for every door: native gRPC (h2c), gRPC-Web (HTTP/1.1) and plain HTTP routes,
//! with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::engine::EngineHost;
use crate::grpc;

/// How long open streams get to end after shutdown starts before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Boxed error of server start-up.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A server running on a background task.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The engine host (tests read its state).
    pub host: Arc<EngineHost>,
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
    let (routes, health) = grpc::routes(&config, host.clone()).await?;
    let grpc_router = routes.prepare().into_axum_router();
    let grpc_router = match cors(&config.cors_origins)? {
        Some(layer) => grpc_router.layer(layer),
        None => grpc_router,
    };
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(grpc_router);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "mse-grpc listening (gRPC, gRPC-Web, HTTP)");
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let health_for_drain = health.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, draining streams");
        grpc::set_serving(&health_for_drain, false).await;
        let _ = drained_tx.send(());
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
    let serve = async move { serve.await.map_err(StartError::from) };
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result?,
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => tracing::warn!("drain timeout: closing remaining connections"),
    }
    host.shutdown().await;
    Ok(())
}

/// Binds `config.bind`'s listener (or the given one), starts the engine host and serves in
/// the background.
pub async fn spawn(listener: TcpListener, config: Config) -> Result<RunningServer, StartError> {
    let addr = listener.local_addr()?;
    let host = EngineHost::start(&config).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(run(listener, config, host.clone(), async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        host,
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
                h("x-grpc-web"),
                h("x-user-agent"),
                h("grpc-timeout"),
            ])
            .expose_headers([
                h("grpc-status"),
                h("grpc-message"),
                h("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}
