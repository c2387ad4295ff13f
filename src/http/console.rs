//! The operator console (clients/web), built to `clients/web/dist/` and embedded in the
//! binary, served at `/`. It speaks gRPC-Web to this same origin.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../clients/web/dist/index.html");
const APP_JS: &str = include_str!("../../clients/web/dist/app.js");
const APP_CSS: &str = include_str!("../../clients/web/dist/app.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/app.js`, `/app.css`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}
