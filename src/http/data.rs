//! `/v1/data/*`: the data path as v0.1.0. Events travel in v0.1.0's JSON form, which is
//! the engine's own serde form of [`OutputEvent`] (`{"type": "final", "content": {"kind":
//! "inline", "value": ...}, "ok": true}`): every kind the engine has maps, none is dropped.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::worker::credential;
use crate::engine::{EmitRequest, OutputEvent};
use crate::error::{Error, Result};
use crate::legacy::{ApiResult, LegacyState};

/// An event from v0.1.0 JSON; a shape the engine does not know is INVALID_ARGUMENT.
fn event_from_json(value: Value) -> Result<OutputEvent> {
    serde_json::from_value(value).map_err(|e| Error::invalid("event", e))
}

/// An event as v0.1.0 JSON.
fn event_to_json(event: &OutputEvent) -> Result<Value> {
    serde_json::to_value(event).map_err(|e| Error::Internal(format!("event to json: {e}")))
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
                event: event_from_json(body.event)?,
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

pub(super) async fn get(
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
        "event": event_to_json(&r.event)?,
        "parent_refs": r.parent_refs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::every_event_kind;

    /// The v0.1.0 text of each of [`every_event_kind`], in order (the spec's §5 shapes).
    const V010_TEXT: [&str; 6] = [
        r#"{"note":null,"stage":"plan","type":"progress"}"#,
        r#"{"note":"half way","stage":"plan","type":"progress"}"#,
        r#"{"chunk":{"kind":"inline","value":"tok"},"type":"partial"}"#,
        r#"{"content":{"kind":"file_ref","mime":"text/markdown","path":"/tmp/r.md","size_hint":42},"name":"report","type":"artifact"}"#,
        r#"{"content":{"kind":"file_ref","mime":null,"path":"/tmp/b","size_hint":null},"name":"blob","type":"artifact"}"#,
        r#"{"content":{"kind":"inline","value":{"notes":[1,"two",null]}},"ok":false,"type":"final"}"#,
    ];

    #[test]
    fn every_kind_maps_to_its_v010_text_and_back() {
        let events = every_event_kind();
        assert_eq!(
            events.len(),
            V010_TEXT.len(),
            "a v0.1.0 text for every sample"
        );
        for (event, text) in events.iter().zip(V010_TEXT) {
            assert_eq!(event_to_json(event).expect("to json").to_string(), text);
            let back = event_from_json(serde_json::from_str(text).expect("json")).expect("parse");
            assert_eq!(event_to_json(&back).expect("to json").to_string(), text);
        }
    }

    #[test]
    fn optional_fields_may_be_left_out_and_unknown_kinds_are_refused() {
        let progress = event_from_json(json!({"type": "progress", "stage": "s"})).expect("ok");
        assert!(matches!(progress, OutputEvent::Progress { note: None, .. }));
        let file = json!({"type": "partial", "chunk": {"kind": "file_ref", "path": "/p"}});
        assert!(event_from_json(file).is_ok());
        for bad in [
            json!({"type": "telemetry", "value": 1}),
            json!({"type": "final", "content": {"kind": "stream"}, "ok": true}),
            json!({"stage": "no type"}),
        ] {
            let err = event_from_json(bad).expect_err("refused");
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.starts_with("event: ")),
                "{err}"
            );
        }
    }
}
