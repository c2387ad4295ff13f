//! `DataService`: thin adapter over the engine host's data plane. Events map between the
//! proto messages and the engine's typed [`OutputEvent`] by exhaustive matches: a kind the
//! engine adds is a compile error here, not a silent drop.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{json_to_value, value_to_json};
use super::worker::credential;
use crate::engine::{ContentRef, EmitRequest, EngineHost, OutputEvent};
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

    /// Emit and EmitNamed: the worker credential, the request as an emit, its `out_id`.
    async fn emit_as<R>(
        &self,
        request: Request<R>,
        into_emit: fn(R) -> Result<EmitRequest>,
    ) -> std::result::Result<String, Status> {
        let cred = credential(&request)?;
        let emit = into_emit(request.into_inner())?;
        Ok(self.host.data_emit(&cred, emit).await?)
    }
}

fn content_from_pb(c: Option<pb::ContentRef>, field: &str) -> Result<ContentRef> {
    use pb::content_ref::Kind as K;
    match c.and_then(|c| c.kind) {
        Some(K::Inline(v)) => Ok(ContentRef::Inline {
            value: value_to_json(v),
        }),
        Some(K::FileRef(f)) => Ok(ContentRef::FileRef {
            path: f.path.into(),
            mime: Some(f.mime).filter(|m| !m.is_empty()),
            size_hint: Some(f.size_hint).filter(|s| *s > 0),
        }),
        None => Err(Error::invalid(field, "required: inline value or file_ref")),
    }
}

fn event_from_pb(e: Option<pb::OutputEvent>) -> Result<OutputEvent> {
    use pb::output_event::Kind as K;
    match e.and_then(|e| e.kind) {
        Some(K::Progress(p)) => Ok(OutputEvent::Progress {
            stage: p.stage,
            note: Some(p.note).filter(|n| !n.is_empty()),
        }),
        Some(K::Partial(p)) => Ok(OutputEvent::Partial {
            chunk: content_from_pb(p.chunk, "event.partial.chunk")?,
        }),
        Some(K::Artifact(a)) => Ok(OutputEvent::Artifact {
            name: a.name,
            content: content_from_pb(a.content, "event.artifact.content")?,
        }),
        Some(K::Final(f)) => Ok(OutputEvent::Final {
            content: content_from_pb(f.content, "event.final.content")?,
            ok: f.ok,
        }),
        None => Err(Error::invalid(
            "event",
            "required: one of progress, partial, artifact, final",
        )),
    }
}

fn content_to_pb(c: ContentRef) -> pb::ContentRef {
    use pb::content_ref::Kind as K;
    let kind = match c {
        ContentRef::Inline { value } => K::Inline(json_to_value(value)),
        ContentRef::FileRef {
            path,
            mime,
            size_hint,
        } => K::FileRef(pb::FileRef {
            path: path.to_string_lossy().into_owned(),
            mime: mime.unwrap_or_default(),
            size_hint: size_hint.unwrap_or_default(),
        }),
    };
    pb::ContentRef { kind: Some(kind) }
}

fn event_to_pb(e: OutputEvent) -> pb::OutputEvent {
    use pb::output_event::Kind as K;
    let kind = match e {
        OutputEvent::Progress { stage, note } => K::Progress(pb::Progress {
            stage,
            note: note.unwrap_or_default(),
        }),
        OutputEvent::Partial { chunk } => K::Partial(pb::Partial {
            chunk: Some(content_to_pb(chunk)),
        }),
        OutputEvent::Artifact { name, content } => K::Artifact(pb::Artifact {
            name,
            content: Some(content_to_pb(content)),
        }),
        OutputEvent::Final { content, ok } => K::Final(pb::Final {
            content: Some(content_to_pb(content)),
            ok,
        }),
    };
    pb::OutputEvent { kind: Some(kind) }
}

fn emit_request(r: pb::EmitRequest) -> Result<EmitRequest> {
    Ok(EmitRequest {
        step_id: r.step_id,
        attempt: Some(r.attempt),
        producer: Some(r.producer_agent),
        event: event_from_pb(r.event)?,
        parent_refs: r.parent_refs,
    })
}

/// EmitNamed is Emit with the producer name required.
fn emit_named_request(r: pb::EmitNamedRequest) -> Result<EmitRequest> {
    if r.name.trim().is_empty() {
        return Err(Error::invalid("name", "required: the producer name"));
    }
    emit_request(pb::EmitRequest {
        step_id: r.step_id,
        attempt: r.attempt,
        producer_agent: r.name,
        event: r.event,
        parent_refs: r.parent_refs,
    })
}

#[tonic::async_trait]
impl DataService for DataSvc {
    async fn emit(
        &self,
        request: Request<pb::EmitRequest>,
    ) -> std::result::Result<Response<pb::EmitResponse>, Status> {
        let out_id = self.emit_as(request, emit_request).await?;
        Ok(Response::new(pb::EmitResponse { out_id }))
    }

    async fn emit_named(
        &self,
        request: Request<pb::EmitNamedRequest>,
    ) -> std::result::Result<Response<pb::EmitNamedResponse>, Status> {
        let out_id = self.emit_as(request, emit_named_request).await?;
        Ok(Response::new(pb::EmitNamedResponse { out_id }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> std::result::Result<Response<pb::GetResponse>, Status> {
        let r = self.host.data_get(&request.into_inner().key).await?;
        Ok(Response::new(pb::GetResponse {
            record: Some(pb::OutputRecord {
                event: Some(event_to_pb(r.event)),
                out_id: r.out_id,
                step_id: r.step_id,
                attempt: r.attempt,
                producer_agent: r.producer_agent,
                parent_refs: r.parent_refs,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::every_event_kind;

    /// The engine's JSON form, to compare events (the engine's type has no `PartialEq`).
    fn json(e: &OutputEvent) -> serde_json::Value {
        serde_json::to_value(e).expect("json")
    }

    #[test]
    fn every_kind_survives_proto_and_back() {
        for event in every_event_kind() {
            let back = event_from_pb(Some(event_to_pb(event.clone()))).expect("from pb");
            assert_eq!(json(&back), json(&event));
        }
    }

    #[test]
    fn each_kind_lands_on_its_own_proto_message() {
        use pb::output_event::Kind as K;
        for event in every_event_kind() {
            let kind = event_to_pb(event.clone()).kind.expect("a kind");
            let same = match (&event, &kind) {
                (OutputEvent::Progress { stage, note }, K::Progress(p)) => {
                    p.stage == *stage && p.note == note.clone().unwrap_or_default()
                }
                (OutputEvent::Partial { .. }, K::Partial(p)) => p.chunk.is_some(),
                (OutputEvent::Artifact { name, .. }, K::Artifact(a)) => {
                    a.name == *name && a.content.is_some()
                }
                (OutputEvent::Final { ok, .. }, K::Final(f)) => f.ok == *ok && f.content.is_some(),
                (event, kind) => panic!("{event:?} mapped to {kind:?}"),
            };
            assert!(same, "{event:?} -> {kind:?}");
        }
    }

    #[test]
    fn missing_parts_are_refused_naming_the_field() {
        let err = event_from_pb(None).expect_err("no event");
        assert!(err.to_string().contains("event"), "{err}");
        let no_chunk = pb::OutputEvent {
            kind: Some(pb::output_event::Kind::Partial(pb::Partial { chunk: None })),
        };
        let err = event_from_pb(Some(no_chunk)).expect_err("no chunk");
        assert!(err.to_string().contains("event.partial.chunk"), "{err}");
        let named = pb::EmitNamedRequest {
            name: " ".into(),
            ..Default::default()
        };
        let err = emit_named_request(named).expect_err("no name");
        assert!(err.to_string().contains("name"), "{err}");
    }
}
