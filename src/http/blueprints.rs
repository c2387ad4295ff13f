//! `/v1/blueprints/*` and `/v1/doctor` as v0.1.0, with hex versions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::SEED_BLUEPRINT_ID;
use crate::error::Error;
use crate::legacy::{ApiResult, LegacyState};

pub(super) async fn seed(
    State(st): State<LegacyState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    if let Some(body_id) = body.get("id").and_then(Value::as_str) {
        if body_id != id {
            return Err(
                Error::InvalidArgument(format!("path id={id} != body.id={body_id}")).into(),
            );
        }
    }
    let out = st.host.put_blueprint(&id, body).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"id": out.id, "version": out.version, "seeded": out.created})),
    )
        .into_response())
}

pub(super) async fn head(
    State(st): State<LegacyState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let bp = st.host.get_blueprint(&id, None).await?;
    Ok(Json(
        json!({"id": bp.id, "version": bp.version, "blueprint": bp.blueprint}),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<usize>,
}

pub(super) async fn history(
    State(st): State<LegacyState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let versions = st.host.list_versions(&id, q.limit.unwrap_or(20)).await?;
    let entries: Vec<Value> = versions
        .into_iter()
        .map(|v| json!({"hash": v.version, "version_label": v.version_label, "rationale": v.rationale}))
        .collect();
    Ok(Json(json!({"count": entries.len(), "entries": entries})))
}

pub(super) async fn archive(
    State(st): State<LegacyState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.host.archive_blueprint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn unarchive(
    State(st): State<LegacyState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.host.unarchive_blueprint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn doctor(State(st): State<LegacyState>) -> ApiResult<Json<Value>> {
    let (backend, root) = st.host.blueprint_store_info();
    let ids: Vec<String> = st
        .host
        .list_blueprints()
        .await
        .map(|l| l.into_iter().map(|b| b.id).collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "bind": st.bind.to_string(),
        "blueprint_backend": backend,
        "blueprint_store_root": root.map(|p| p.display().to_string()),
        "blueprint_ref_base": null,
        "enhance_flow_enabled": false,
        "seed_blueprint_id": SEED_BLUEPRINT_ID,
        "registered_blueprint_count": ids.len(),
        "registered_blueprint_ids": ids,
    })))
}
