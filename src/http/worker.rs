//! `/v1/worker/*`: the worker path as v0.1.0.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Credential, SubmitOutcome};
use crate::error::Error;
use crate::legacy::{bearer, ApiResult, LegacyState};

/// A worker's credential: `Authorization: Bearer` (wins if present), else `?token=`.
pub(super) fn credential(
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Credential, Error> {
    let value = match bearer(headers)? {
        Some(v) => v,
        None => match query_token.map(str::trim) {
            Some("") => return Err(Error::Unauthenticated("token is empty".into())),
            Some(t) => t.to_string(),
            None => {
                return Err(Error::Unauthenticated(
                    "missing token: pass 'Authorization: Bearer <token>' or '?token=<token>'"
                        .into(),
                ))
            }
        },
    };
    Credential::parse(&value)
}

#[derive(Debug, Deserialize)]
pub(super) struct PromptQuery {
    task_id: String,
}

pub(super) async fn prompt(
    State(st): State<LegacyState>,
    Query(q): Query<PromptQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let cred = credential(&headers, None)?;
    let p = st.host.worker_prompt(&cred, Some(&q.task_id)).await?;
    let mut body =
        json!({"task_id": p.step_id, "attempt": p.attempt, "agent": p.agent, "prompt": p.prompt});
    if let Some(system) = p.system {
        body["system"] = Value::String(system);
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
pub(super) struct ResultBody {
    task_id: String,
    value: Value,
    #[serde(default = "yes")]
    ok: bool,
    #[allow(dead_code)]
    attempt: Option<u32>,
}

fn yes() -> bool {
    true
}

pub(super) async fn result(
    State(st): State<LegacyState>,
    headers: HeaderMap,
    Json(body): Json<ResultBody>,
) -> ApiResult<StatusCode> {
    let cred = credential(&headers, None)?;
    st.host
        .worker_post_result(&cred, Some(&body.task_id), body.value, body.ok)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct SubmitQuery {
    ok: Option<bool>,
}

pub(super) async fn submit(
    State(st): State<LegacyState>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let cred = credential(&headers, None)?;
    let text = String::from_utf8_lossy(&body);
    let outcome = if q.ok.unwrap_or(true) {
        SubmitOutcome::Pass
    } else {
        SubmitOutcome::Blocked
    };
    st.host.worker_submit(&cred, None, &text, outcome).await?;
    Ok(StatusCode::NO_CONTENT)
}
