//! The operator console (clients/web), built to `clients/web/dist/` and embedded in the
//! binary, served at `/`. It speaks gRPC-Web to this same origin. For console development,
//! `MSE_CONSOLE_DIR=<dir>` serves the files from that directory instead, read per request.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../clients/web/dist/index.html");
const APP_JS: &str = include_str!("../../clients/web/dist/app.js");
const APP_CSS: &str = include_str!("../../clients/web/dist/app.css");

async fn asset(name: &'static str, content_type: &'static str, embedded: &'static str) -> Response {
    let body = match std::env::var_os("MSE_CONSOLE_DIR") {
        Some(dir) => match tokio::fs::read_to_string(std::path::Path::new(&dir).join(name)).await {
            Ok(text) => text,
            Err(e) => return (StatusCode::NOT_FOUND, format!("{name}: {e}")).into_response(),
        },
        None => embedded.to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/app.js`, `/app.css`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| asset("index.html", "text/html; charset=utf-8", INDEX_HTML)),
        )
        .route(
            "/app.js",
            get(|| asset("app.js", "text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("app.css", "text/css; charset=utf-8", APP_CSS)),
        )
}
