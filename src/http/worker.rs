//! `/v1/worker/*` and `/v1/data/*`: the worker and data paths as v0.1.0.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, ApiResult, LegacyState};
use crate::engine::{Credential, EmitRequest, SubmitOutcome};
use crate::error::Error;

fn credential(headers: &HeaderMap, query_token: Option<&str>) -> Result<Credential, Error> {
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

#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EmitBody {
    task_id: String,
    attempt: u32,
    producer_agent: Option<String>,
    event: Value,
    #[serde(default)]
    parent_refs: Vec<String>,
}

async fn emit_as(
    st: &LegacyState,
    headers: &HeaderMap,
    q: &TokenQuery,
    body: EmitBody,
    producer: Option<String>,
) -> ApiResult<Json<Value>> {
    let cred = credential(headers, q.token.as_deref())?;
    let out_id = st
        .host
        .data_emit(
            &cred,
            EmitRequest {
                step_id: body.task_id,
                attempt: Some(body.attempt),
                producer: producer.or(body.producer_agent),
                event: body.event,
                parent_refs: body.parent_refs,
            },
        )
        .await?;
    Ok(Json(json!({ "out_id": out_id })))
}

pub(super) async fn emit(
    State(st): State<LegacyState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Json(body): Json<EmitBody>,
) -> ApiResult<Json<Value>> {
    if body.producer_agent.as_deref().is_none_or(str::is_empty) {
        return Err(Error::invalid("producer_agent", "required").into());
    }
    emit_as(&st, &headers, &q, body, None).await
}

pub(super) async fn emit_named(
    State(st): State<LegacyState>,
    Path(key): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Json(body): Json<EmitBody>,
) -> ApiResult<Json<Value>> {
    emit_as(&st, &headers, &q, body, Some(key)).await
}

pub(super) async fn get_data(
    State(st): State<LegacyState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = st.host.data_get(&key).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!("output not found (id nor name): {key}")),
        other => other,
    })?;
    Ok(Json(json!({
        "id": r.out_id,
        "task_id": r.step_id,
        "attempt": r.attempt,
        "producer_agent": r.producer_agent,
        "event": r.event,
        "parent_refs": r.parent_refs,
    })))
}
