//! The v0.1.0 HTTP routes, as a thin adapter over the engine host and the operator core.
//! Request and response JSON match mlua-swarm-server 0.1.0; deliberate fixes are listed in
//! docs/COMPAT.md.

mod blueprints;
mod console;
mod operators;
mod sessions;
mod tasks;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::engine::EngineHost;
use crate::error::Error;
use crate::operator::OperatorHub;

/// What every legacy handler can reach.
#[derive(Debug, Clone)]
pub struct LegacyState {
    /// The engine host.
    pub host: Arc<EngineHost>,
    /// The operator sessions.
    pub hub: Arc<OperatorHub>,
    /// The bound address (reported by `/v1/doctor`).
    pub bind: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// An error answered as `{"error": "..."}` with the status [`Error::http_status`] gives.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.0.public_message() }))).into_response()
    }
}

/// Result of a legacy handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `Authorization: Bearer <value>` exactly as v0.1.0 parsed it (case-sensitive prefix,
/// trimmed, non-empty). None if the header is absent.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(raw) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| Error::Unauthenticated("invalid Authorization header encoding".into()))?;
    let value = text
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| Error::Unauthenticated("Authorization must be 'Bearer <token>'".into()))?;
    if value.is_empty() {
        return Err(Error::Unauthenticated(
            "missing or empty Bearer token".into(),
        ));
    }
    Ok(Some(value.to_string()))
}

/// The v0.1.0 routes.
pub fn router(state: LegacyState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/healthz", get(|| async { "ok" }))
        .route("/v1/operators", post(operators::create))
        .route(
            "/v1/operators/{sid}",
            get(operators::info).delete(operators::delete),
        )
        .route("/v1/operators/{sid}/ws", get(crate::ws::connect))
        .route("/v1/worker/prompt", get(worker::prompt))
        .route("/v1/worker/result", post(worker::result))
        .route("/v1/worker/submit", post(worker::submit))
        .route("/v1/data/emit", post(worker::emit))
        .route(
            "/v1/data/{key}",
            post(worker::emit_named).get(worker::get_data),
        )
        .route("/v1/tasks", post(tasks::start))
        .route(
            "/v1/blueprints/{id}",
            post(blueprints::seed).delete(blueprints::archive),
        )
        .route("/v1/blueprints/{id}/head", get(blueprints::head))
        .route("/v1/blueprints/{id}/history", get(blueprints::history))
        .route("/v1/blueprints/{id}/unarchive", post(blueprints::unarchive))
        .route("/v1/doctor", get(blueprints::doctor))
        .route(
            "/v1/sessions",
            post(sessions::attach).delete(sessions::detach),
        )
        .merge(console::routes())
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
