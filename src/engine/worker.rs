//! The worker path: a spawned sub-agent reads its prompt and submits its result with the
//! Spawn's credential (short handle or full capability token).

use mlua_swarm::core::state::SubmitOutcome as EngineOutcome;
use mlua_swarm::types::{CapToken, StepId, Verb};
use mlua_swarm::worker::output::{ContentRef, OutputEvent};
use mlua_swarm::TaskStatus;
use serde_json::Value;

use super::errors::from_engine;
use super::EngineHost;
use crate::error::{Error, Result};

/// A worker credential from `authorization: Bearer ...`.
#[derive(Clone)]
pub enum Credential {
    /// `wh-` + 32 hex, minted by the server per spawn; valid until the spawn is answered.
    Handle(String),
    /// A decoded capability token (signature and TTL checked on use).
    Token(Box<CapToken>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Handle(_) => f.write_str("Credential::Handle(..)"),
            Credential::Token(_) => f.write_str("Credential::Token(..)"),
        }
    }
}

impl Credential {
    /// Parses a bearer value: a handle is `wh-` plus 2-61 ASCII alphanumerics; anything
    /// else must decode as a capability token.
    pub fn parse(bearer: &str) -> Result<Self> {
        let bearer = bearer.trim();
        if let Some(rest) = bearer.strip_prefix("wh-") {
            if (2..=61).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Ok(Credential::Handle(bearer.to_string()));
            }
        }
        CapToken::decode(bearer)
            .map(|t| Credential::Token(Box::new(t)))
            .map_err(|_| {
                Error::Unauthenticated(
                    "credential is neither a worker handle (wh-...) nor a capability token; pass \
                     the one from the Spawn frame as 'authorization: Bearer <credential>'"
                        .into(),
                )
            })
    }
}

/// How the worker judges its own result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Done.
    Pass,
    /// Could not finish (senior escalation may ask the operator).
    Blocked,
    /// Skipped.
    Skip,
}

/// A step's prompt as the worker reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerPrompt {
    /// The step.
    pub step_id: String,
    /// Current attempt.
    pub attempt: u32,
    /// Agent name.
    pub agent: String,
    /// Rendered system prompt.
    pub system: Option<String>,
    /// The step input as text.
    pub prompt: String,
}

impl EngineHost {
    /// Resolves a credential to its running step; `claimed` (if given) must match.
    async fn worker_step(
        &self,
        cred: &Credential,
        verb: Verb,
        claimed: Option<&str>,
    ) -> Result<StepId> {
        let step = match cred {
            Credential::Handle(h) => {
                let engine_handle = self
                    .worker_handles
                    .resolve(h)
                    .ok_or_else(|| self.worker_handles.unknown(h))?;
                self.engine.task_id_from_handle(&engine_handle).await
            }
            Credential::Token(t) => self.engine.task_id_from_token(t).await,
        }
        .map_err(from_engine)?;
        if let Some(claimed) = claimed.map(str::trim).filter(|c| !c.is_empty()) {
            if claimed != step.as_str() {
                return Err(Error::PermissionDenied(format!(
                    "credential belongs to step {step}, not {claimed}"
                )));
            }
        }
        if let Credential::Token(t) = cred {
            self.engine
                .verify_token_for_task(t, verb, &step)
                .await
                .map_err(from_engine)?;
        }
        let id = step.clone();
        let status = self
            .engine
            .with_state("worker-step-status", move |s| {
                s.tasks.get(&id).map(|t| t.status.clone())
            })
            .await
            .map_err(from_engine)?;
        match status {
            Some(TaskStatus::Pending | TaskStatus::Running | TaskStatus::Suspended) => Ok(step),
            Some(_) => Err(Error::FailedPrecondition(format!(
                "step {step} has finished; its credential no longer accepts calls"
            ))),
            None => Err(Error::Unauthenticated(
                "credential unknown, or its step has finished".into(),
            )),
        }
    }

    /// The step's prompt and rendered system prompt.
    pub async fn worker_prompt(
        &self,
        cred: &Credential,
        step_id: Option<&str>,
    ) -> Result<WorkerPrompt> {
        if let Some(answer) = self.relayed_prompt(cred, step_id).await {
            return answer;
        }
        let step = self.worker_step(cred, Verb::FetchPrompt, step_id).await?;
        let payload = match cred {
            Credential::Handle(_) => self.engine.fetch_worker_payload_trusted(&step).await,
            Credential::Token(t) => self.engine.fetch_worker_payload(t, &step).await,
        }
        .map_err(from_engine)?;
        Ok(WorkerPrompt {
            step_id: payload.task_id.as_str().to_string(),
            attempt: payload.attempt,
            agent: payload.agent,
            system: payload.system,
            prompt: payload.prompt,
        })
    }

    /// Submits text as the step's result. Returns (step id, attempt).
    pub async fn worker_submit(
        &self,
        cred: &Credential,
        step_id: Option<&str>,
        body: &str,
        outcome: SubmitOutcome,
    ) -> Result<(String, u32)> {
        self.check_data_size(body.len())?;
        if let Some(answer) = self.relayed_submit(cred, step_id, body, outcome).await {
            return answer;
        }
        let step = self.worker_step(cred, Verb::PostResult, step_id).await?;
        let attempt = self.engine.task_attempt(&step).await.map_err(from_engine)?;
        let outcome = match outcome {
            SubmitOutcome::Pass => EngineOutcome::Pass,
            SubmitOutcome::Blocked => EngineOutcome::Blocked,
            SubmitOutcome::Skip => EngineOutcome::Skip,
        };
        let value = Value::String(body.trim_end().to_string());
        self.engine
            .submit_worker_result_trusted(&step, attempt, value, outcome)
            .await
            .map_err(from_engine)?;
        let task_id = super::lock(&self.steps).get(step.as_str()).cloned();
        tracing::debug!(task_id, step_id = %step, attempt, "worker submitted");
        Ok((step.as_str().to_string(), attempt))
    }

    /// Submits a JSON value as the step's result (capability token only).
    pub async fn worker_post_result(
        &self,
        cred: &Credential,
        step_id: Option<&str>,
        value: Value,
        ok: bool,
    ) -> Result<(String, u32)> {
        let Credential::Token(token) = cred else {
            return Err(Error::Unauthenticated(
                "PostResult needs the capability token, not the worker handle; use Submit with \
                 the handle"
                    .into(),
            ));
        };
        self.size.check_value("value", &value)?;
        let step = self.worker_step(cred, Verb::PostResult, step_id).await?;
        let attempt = self.engine.task_attempt(&step).await.map_err(from_engine)?;
        let event = OutputEvent::Final {
            content: ContentRef::Inline {
                value: value.clone(),
            },
            ok,
        };
        self.engine
            .submit_output(token, &step, attempt, event)
            .await
            .map_err(from_engine)?;
        self.engine
            .post_result(token, &step, value)
            .await
            .map_err(from_engine)?;
        Ok((step.as_str().to_string(), attempt))
    }

    pub(super) fn check_data_size(&self, len: usize) -> Result<()> {
        let max = self.size.max_data_bytes();
        if len > max {
            return Err(Error::ResourceExhausted(format!(
                "payload is {len} bytes, over the {max} byte limit; store large content elsewhere \
                 and pass a reference"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_garbage_are_told_apart() {
        assert!(
            matches!(Credential::parse(" wh-1a2b3c4d "), Ok(Credential::Handle(h)) if h == "wh-1a2b3c4d")
        );
        let err = Credential::parse("not-a-token").expect_err("garbage");
        assert!(err.to_string().contains("Bearer"), "{err}");
        assert!(Credential::parse("wh-!!").is_err());
    }
}
