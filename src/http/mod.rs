//! The v0.1.0 HTTP routes, as a thin adapter over the engine host and the operator core.
//! Request and response JSON match mlua-swarm-server 0.1.0; deliberate fixes are listed in
//! docs/COMPAT.md.

mod blueprints;
mod console;
mod data;
mod operators;
mod sessions;
mod tasks;
mod worker;

use axum::routing::{get, post};
use axum::Router;

use crate::legacy::LegacyState;

/// The v0.1.0 HTTP routes (the WebSocket's route is the `ws` door's own).
pub fn router(state: LegacyState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/healthz", get(|| async { "ok" }))
        .route("/v1/operators", post(operators::create))
        .route(
            "/v1/operators/{sid}",
            get(operators::info).delete(operators::delete),
        )
        .route("/v1/worker/prompt", get(worker::prompt))
        .route("/v1/worker/result", post(worker::result))
        .route("/v1/worker/submit", post(worker::submit))
        .route("/v1/data/emit", post(data::emit))
        .route("/v1/data/{key}", post(data::emit_named).get(data::get))
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
