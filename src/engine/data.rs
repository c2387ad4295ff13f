//! The data plane: workers emit output events, anyone reads them by id or producer name.
//! Events are the engine's own typed [`OutputEvent`]; each door maps it to its wire form
//! (gRPC: `grpc::data`, v0.1.0 JSON: `http::data`) with an exhaustive match, so a new
//! event kind is a compile error there, never a silent drop.

use mlua_swarm::store::output::{OutputRef, OutputStoreError};
use mlua_swarm::types::Verb;

use super::errors::from_engine;
use super::{Credential, EngineHost};
use crate::error::{Error, Result};

pub use mlua_swarm::worker::output::{ContentRef, OutputEvent};

/// A stored output.
#[derive(Debug, Clone)]
pub struct OutputRecord {
    /// `out-...`.
    pub out_id: String,
    /// The step it belongs to.
    pub step_id: String,
    /// The attempt.
    pub attempt: u32,
    /// Producer name.
    pub producer_agent: String,
    /// The event.
    pub event: OutputEvent,
    /// Parent output ids.
    pub parent_refs: Vec<String>,
}

/// One emit.
#[derive(Debug, Clone)]
pub struct EmitRequest {
    /// The credential's step.
    pub step_id: String,
    /// Attempt; None = the step's current one.
    pub attempt: Option<u32>,
    /// Producer name; None = the step's agent.
    pub producer: Option<String>,
    /// The event.
    pub event: OutputEvent,
    /// Parent output ids.
    pub parent_refs: Vec<String>,
}

impl EngineHost {
    /// Appends an output for the credential's step and returns its `out_id`.
    pub async fn data_emit(&self, cred: &Credential, req: EmitRequest) -> Result<String> {
        self.check_data_size(crate::limits::json_len(&req.event))?;
        let prompt = self.worker_prompt(cred, Some(&req.step_id)).await?;
        if let Credential::Token(t) = cred {
            let step = mlua_swarm::types::StepId::parse(&prompt.step_id)
                .map_err(|e| Error::invalid("step_id", e))?;
            self.engine
                .verify_token_for_task(t, Verb::EmitOutput, &step)
                .await
                .map_err(from_engine)?;
        }
        let attempt = req.attempt.filter(|a| *a > 0).unwrap_or(prompt.attempt);
        let producer = req
            .producer
            .filter(|p| !p.trim().is_empty())
            .unwrap_or(prompt.agent);
        let parents = req.parent_refs.into_iter().map(OutputRef).collect();
        let out = self
            .outputs
            .append(&prompt.step_id, attempt, &producer, req.event, parents)
            .await
            .map_err(|e| Error::Internal(format!("data store append: {e}")))?;
        Ok(out.0)
    }

    /// Reads an output by `out_id`, else the latest by producer name.
    pub async fn data_get(&self, key: &str) -> Result<OutputRecord> {
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::invalid(
                "key",
                "must be an out_id or a producer name",
            ));
        }
        let record = match self.outputs.get(&OutputRef(key.to_string())).await {
            Ok(r) => r,
            Err(OutputStoreError::NotFound(_)) => self
                .outputs
                .get_latest_by_name(key)
                .await
                .map_err(|e| match e {
                    OutputStoreError::NotFound(_) => {
                        Error::NotFound(format!("no output with id or producer name '{key}'"))
                    }
                    other => Error::Internal(format!("data store: {other}")),
                })?,
            Err(e) => return Err(Error::Internal(format!("data store: {e}"))),
        };
        Ok(OutputRecord {
            out_id: record.id.0,
            step_id: record.task_id,
            attempt: record.attempt,
            producer_agent: record.producer_agent,
            event: record.event,
            parent_refs: record.parent_refs.into_iter().map(|r| r.0).collect(),
        })
    }
}

/// One event of every kind, both content forms, optional fields set and unset: the doors'
/// mapping tests run through these.
#[cfg(test)]
pub(crate) fn every_event_kind() -> Vec<OutputEvent> {
    use serde_json::json;
    let events = vec![
        OutputEvent::Progress {
            stage: "plan".into(),
            note: None,
        },
        OutputEvent::Progress {
            stage: "plan".into(),
            note: Some("half way".into()),
        },
        OutputEvent::Partial {
            chunk: ContentRef::inline(json!("tok")),
        },
        OutputEvent::Artifact {
            name: "report".into(),
            content: ContentRef::file_ref("/tmp/r.md", Some("text/markdown".into()), Some(42)),
        },
        OutputEvent::Artifact {
            name: "blob".into(),
            content: ContentRef::file_ref("/tmp/b", None, None),
        },
        OutputEvent::Final {
            content: ContentRef::inline(json!({"notes": [1, "two", null]})),
            ok: false,
        },
    ];
    // No catch-all: a kind the engine adds stops this compiling until it has a sample here.
    for e in &events {
        match e {
            OutputEvent::Progress { .. }
            | OutputEvent::Partial { .. }
            | OutputEvent::Artifact { .. }
            | OutputEvent::Final { .. } => {}
        }
    }
    events
}
