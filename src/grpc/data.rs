//! `DataService`: thin adapter over the engine host's data plane.

use std::sync::Arc;

use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::convert::{json_to_value, value_to_json};
use super::worker::credential;
use crate::engine::{EmitRequest, EngineHost};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::pb::v1::data_service_server::DataService;

/// Serves `mlua_swarm.v1.DataService`.
#[derive(Debug, Clone)]
pub struct DataSvc {
    host: Arc<EngineHost>,
}

impl DataSvc {
    /// A service over `host`.
    pub fn new(host: Arc<EngineHost>) -> Self {
        Self { host }
    }
}

fn content_to_json(c: Option<pb::ContentRef>, field: &str) -> Result<Value> {
    match c.and_then(|c| c.kind) {
        Some(pb::content_ref::Kind::Inline(v)) => {
            Ok(json!({"kind": "inline", "value": value_to_json(v)}))
        }
        Some(pb::content_ref::Kind::FileRef(f)) => Ok(json!({"kind": "file_ref", "path": f.path,
            "mime": Some(f.mime).filter(|m| !m.is_empty()),
            "size_hint": Some(f.size_hint).filter(|s| *s > 0)})),
        None => Err(Error::invalid(field, "required: inline value or file_ref")),
    }
}

fn event_to_json(e: Option<pb::OutputEvent>) -> Result<Value> {
    use pb::output_event::Kind as K;
    match e.and_then(|e| e.kind) {
        Some(K::Progress(p)) => Ok(json!({"type": "progress", "stage": p.stage,
            "note": Some(p.note).filter(|n| !n.is_empty())})),
        Some(K::Partial(p)) => Ok(json!({"type": "partial",
            "chunk": content_to_json(p.chunk, "event.partial.chunk")?})),
        Some(K::Artifact(a)) => Ok(json!({"type": "artifact", "name": a.name,
            "content": content_to_json(a.content, "event.artifact.content")?})),
        Some(K::Final(f)) => Ok(json!({"type": "final",
            "content": content_to_json(f.content, "event.final.content")?, "ok": f.ok})),
        None => Err(Error::invalid(
            "event",
            "required: one of progress, partial, artifact, final",
        )),
    }
}

fn content_from_json(v: &Value) -> Option<pb::ContentRef> {
    let kind = match v.get("kind").and_then(Value::as_str) {
        Some("inline") => pb::content_ref::Kind::Inline(json_to_value(
            v.get("value").cloned().unwrap_or(Value::Null),
        )),
        Some("file_ref") => pb::content_ref::Kind::FileRef(pb::FileRef {
            path: v
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            mime: v
                .get("mime")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            size_hint: v
                .get("size_hint")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
        }),
        _ => return None,
    };
    Some(pb::ContentRef { kind: Some(kind) })
}

fn event_from_json(v: &Value) -> Option<pb::OutputEvent> {
    use pb::output_event::Kind as K;
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let kind = match v.get("type").and_then(Value::as_str)? {
        "progress" => K::Progress(pb::Progress {
            stage: text("stage"),
            note: text("note"),
        }),
        "partial" => K::Partial(pb::Partial {
            chunk: v.get("chunk").and_then(content_from_json),
        }),
        "artifact" => K::Artifact(pb::Artifact {
            name: text("name"),
            content: v.get("content").and_then(content_from_json),
        }),
        "final" => K::Final(pb::Final {
            content: v.get("content").and_then(content_from_json),
            ok: v.get("ok").and_then(Value::as_bool).unwrap_or(true),
        }),
        _ => return None,
    };
    Some(pb::OutputEvent { kind: Some(kind) })
}

#[tonic::async_trait]
impl DataService for DataSvc {
    async fn emit(
        &self,
        request: Request<pb::EmitRequest>,
    ) -> std::result::Result<Response<pb::EmitResponse>, Status> {
        let cred = credential(&request)?;
        let pb::EmitRequest {
            step_id,
            attempt,
            producer_agent,
            event,
            parent_refs,
        } = request.into_inner();
        let out_id = self
            .host
            .data_emit(
                &cred,
                EmitRequest {
                    step_id,
                    attempt: Some(attempt),
                    producer: Some(producer_agent),
                    event: event_to_json(event)?,
                    parent_refs,
                },
            )
            .await?;
        Ok(Response::new(pb::EmitResponse { out_id }))
    }

    async fn emit_named(
        &self,
        request: Request<pb::EmitNamedRequest>,
    ) -> std::result::Result<Response<pb::EmitNamedResponse>, Status> {
        let cred = credential(&request)?;
        let pb::EmitNamedRequest {
            name,
            step_id,
            attempt,
            event,
            parent_refs,
        } = request.into_inner();
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "required: the producer name").into());
        }
        let out_id = self
            .host
            .data_emit(
                &cred,
                EmitRequest {
                    step_id,
                    attempt: Some(attempt),
                    producer: Some(name),
                    event: event_to_json(event)?,
                    parent_refs,
                },
            )
            .await?;
        Ok(Response::new(pb::EmitNamedResponse { out_id }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> std::result::Result<Response<pb::GetResponse>, Status> {
        let r = self.host.data_get(&request.into_inner().key).await?;
        Ok(Response::new(pb::GetResponse {
            record: Some(pb::OutputRecord {
                event: event_from_json(&r.event),
                out_id: r.out_id,
                step_id: r.step_id,
                attempt: r.attempt,
                producer_agent: r.producer_agent,
                parent_refs: r.parent_refs,
            }),
        }))
    }
}
