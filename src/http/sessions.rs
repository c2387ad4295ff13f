//! `POST` / `DELETE /v1/sessions`: engine attach and detach as v0.1.0.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::legacy::{bearer, ApiResult, LegacyState};

#[derive(Debug, Deserialize)]
pub(super) struct AttachBody {
    agent_id: String,
    role: String,
    ttl_secs: u64,
}

pub(super) async fn attach(
    State(st): State<LegacyState>,
    Json(body): Json<AttachBody>,
) -> ApiResult<Json<Value>> {
    let id = st
        .host
        .attach_engine_session(&body.agent_id, &body.role, body.ttl_secs)
        .await?;
    Ok(Json(json!({"session_id": id, "role": body.role})))
}

pub(super) async fn detach(
    State(st): State<LegacyState>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let sid = bearer(&headers)?
        .ok_or_else(|| Error::Unauthenticated("missing Authorization header".into()))?;
    st.host.detach_engine_session(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}
