//! Calls across replicas: a worker handle names the process that minted it (its boot
//! id, `engine/handles.rs`), so a replica that gets a worker call for another's handle
//! passes it to that process through a [`WorkerRelay`] (NATS, `crate::worker_relay`)
//! and answers with its answer; a CancelTask for a task another replica runs goes to
//! that replica the same way. Workers and clients may then call any replica, a balancer
//! in front included.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::worker::{Credential, SubmitOutcome, WorkerPrompt};
use super::EngineHost;
use crate::error::{Error, Result};

/// A worker call, as it travels to the replica that minted its handle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum WorkerCall {
    /// GetPrompt.
    Prompt {
        /// The worker handle.
        handle: String,
        /// The step the caller names, if any.
        step_id: Option<String>,
    },
    /// Submit (text).
    Submit {
        /// The worker handle.
        handle: String,
        /// The step the caller names, if any.
        step_id: Option<String>,
        /// The result.
        body: String,
        /// `pass`, `blocked` or `skip`.
        outcome: String,
    },
    /// CancelTask, for the replica running the task.
    Cancel {
        /// The task.
        task_id: String,
        /// Why.
        reason: String,
    },
}

/// What the minting replica answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum WorkerAnswer {
    /// The prompt.
    Prompt(WorkerPrompt),
    /// The task as the call left it (CancelTask).
    Task(Box<super::TaskRecord>),
    /// The result was taken.
    Submitted {
        /// The step.
        step_id: String,
        /// Its attempt.
        attempt: u32,
    },
    /// The call failed there.
    Failed {
        /// Its gRPC code, as a number.
        code: i32,
        /// Its message.
        message: String,
    },
}

/// Passes a call to another replica.
#[async_trait]
pub trait WorkerRelay: Send + Sync {
    /// A worker call to the process whose boot id is `boot`; None when no such process
    /// answers (it is gone).
    async fn call(&self, boot: &str, call: &WorkerCall) -> Option<WorkerAnswer>;

    /// A call to the replica `replica` (`--replica-id`); None when it does not answer.
    async fn to_replica(&self, replica: &str, call: &WorkerCall) -> Option<WorkerAnswer>;
}

fn outcome_text(outcome: SubmitOutcome) -> &'static str {
    match outcome {
        SubmitOutcome::Pass => "pass",
        SubmitOutcome::Blocked => "blocked",
        SubmitOutcome::Skip => "skip",
    }
}

fn outcome_of(text: &str) -> SubmitOutcome {
    match text {
        "blocked" => SubmitOutcome::Blocked,
        "skip" => SubmitOutcome::Skip,
        _ => SubmitOutcome::Pass,
    }
}

/// A failure as it crosses: an internal one keeps its detail in this replica's log.
fn failed(e: Error) -> WorkerAnswer {
    let message = match &e {
        Error::Internal(detail) => {
            tracing::error!(error = %detail, "relayed worker call failed");
            "internal error on the replica running the step".to_string()
        }
        other => other.to_string(),
    };
    WorkerAnswer::Failed {
        code: e.grpc_code() as i32,
        message,
    }
}

/// The error a relayed failure stands for.
fn error_of(code: i32, message: String) -> Error {
    use tonic::Code;
    match Code::from_i32(code) {
        Code::InvalidArgument => Error::InvalidArgument(message),
        Code::NotFound => Error::NotFound(message),
        Code::AlreadyExists => Error::AlreadyExists(message),
        Code::FailedPrecondition => Error::FailedPrecondition(message),
        Code::Unauthenticated => Error::Unauthenticated(message),
        Code::PermissionDenied => Error::PermissionDenied(message),
        Code::ResourceExhausted => Error::ResourceExhausted(message),
        Code::DeadlineExceeded => Error::DeadlineExceeded(message),
        Code::Aborted => Error::Aborted(message),
        Code::Unavailable => Error::Unavailable(message),
        _ => Error::Internal(format!("relayed worker call: {message}")),
    }
}

fn unexpected(answer: WorkerAnswer) -> Error {
    Error::Internal(format!("relayed worker call answered {answer:?}"))
}

impl EngineHost {
    /// Lets worker calls for handles minted elsewhere reach their replica (once, at
    /// start; `--nats-url`).
    pub fn set_worker_relay(&self, relay: std::sync::Arc<dyn WorkerRelay>) {
        let _ = self.relay.set(relay);
    }

    /// This process's boot id: the prefix of the worker handles it mints.
    pub fn boot_id(&self) -> &str {
        self.worker_handles.boot()
    }

    /// The answer of the replica that minted `cred`, when that is another one that
    /// answers; None to serve the call here.
    pub(super) async fn relayed(
        &self,
        cred: &Credential,
        call: impl FnOnce(String) -> WorkerCall,
    ) -> Option<WorkerAnswer> {
        let (Credential::Handle(handle), Some(relay)) = (cred, self.relay.get()) else {
            return None;
        };
        let boot = self.worker_handles.boot_of(handle)?;
        if boot == self.boot_id() {
            return None;
        }
        relay.call(boot, &call(handle.clone())).await
    }

    /// GetPrompt relayed to `cred`'s replica; None to serve it here.
    pub(super) async fn relayed_prompt(
        &self,
        cred: &Credential,
        step_id: Option<&str>,
    ) -> Option<Result<WorkerPrompt>> {
        let step_id = step_id.map(str::to_string);
        let answer = self
            .relayed(cred, |handle| WorkerCall::Prompt { handle, step_id })
            .await?;
        Some(match answer {
            WorkerAnswer::Prompt(prompt) => Ok(prompt),
            WorkerAnswer::Failed { code, message } => Err(error_of(code, message)),
            other => Err(unexpected(other)),
        })
    }

    /// Submit relayed to `cred`'s replica; None to serve it here.
    pub(super) async fn relayed_submit(
        &self,
        cred: &Credential,
        step_id: Option<&str>,
        body: &str,
        outcome: SubmitOutcome,
    ) -> Option<Result<(String, u32)>> {
        let step_id = step_id.map(str::to_string);
        let answer = self
            .relayed(cred, |handle| WorkerCall::Submit {
                handle,
                step_id,
                body: body.to_string(),
                outcome: outcome_text(outcome).to_string(),
            })
            .await?;
        Some(match answer {
            WorkerAnswer::Submitted { step_id, attempt } => Ok((step_id, attempt)),
            WorkerAnswer::Failed { code, message } => Err(error_of(code, message)),
            other => Err(unexpected(other)),
        })
    }

    /// CancelTask for a task another replica runs: its answer; None to serve it here
    /// (one process, or the task is this replica's).
    pub(super) async fn cancel_elsewhere(
        &self,
        task_id: &str,
        reason: &str,
    ) -> Option<Result<super::TaskRecord>> {
        let relay = self.relay.get()?;
        let runner = match self.tasks.runner_elsewhere(task_id).await {
            Ok(runner) => runner?,
            Err(e) => return Some(Err(e)),
        };
        let call = WorkerCall::Cancel {
            task_id: task_id.to_string(),
            reason: reason.to_string(),
        };
        Some(match relay.to_replica(&runner, &call).await {
            Some(WorkerAnswer::Task(record)) => Ok(*record),
            Some(WorkerAnswer::Failed { code, message }) => Err(error_of(code, message)),
            Some(other) => Err(unexpected(other)),
            None => Err(Error::Unavailable(format!(
                "task {task_id} runs on replica {runner}, which does not answer; retry (a \
                 replica that died has its tasks taken over within 20 s)"
            ))),
        })
    }

    /// Serves a call another replica relayed here (its handle was minted here, or the
    /// task runs here).
    pub async fn serve_relayed(self: &std::sync::Arc<Self>, call: WorkerCall) -> WorkerAnswer {
        match call {
            WorkerCall::Cancel { task_id, reason } => {
                match Box::pin(self.cancel_task(&task_id, &reason)).await {
                    Ok(record) => WorkerAnswer::Task(Box::new(record)),
                    Err(e) => failed(e),
                }
            }
            WorkerCall::Prompt { handle, step_id } => {
                let cred = Credential::Handle(handle);
                match self.worker_prompt(&cred, step_id.as_deref()).await {
                    Ok(prompt) => WorkerAnswer::Prompt(prompt),
                    Err(e) => failed(e),
                }
            }
            WorkerCall::Submit {
                handle,
                step_id,
                body,
                outcome,
            } => {
                let cred = Credential::Handle(handle);
                let outcome = outcome_of(&outcome);
                match self
                    .worker_submit(&cred, step_id.as_deref(), &body, outcome)
                    .await
                {
                    Ok((step_id, attempt)) => WorkerAnswer::Submitted { step_id, attempt },
                    Err(e) => failed(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_failure_keeps_its_code_and_message_but_not_internal_detail() {
        let crossed = |e: Error| match failed(e) {
            WorkerAnswer::Failed { code, message } => error_of(code, message),
            other => panic!("{other:?}"),
        };
        let e = crossed(Error::FailedPrecondition("step s1 has finished".into()));
        assert!(matches!(&e, Error::FailedPrecondition(m) if m == "step s1 has finished"));
        let e = crossed(Error::Unauthenticated("credential unknown".into()));
        assert!(matches!(e, Error::Unauthenticated(_)));
        let e = crossed(Error::Internal("sqlite: disk I/O error at /var/x".into()));
        assert!(!format!("{e:?}").contains("/var/x"), "{e:?}");
        let call = WorkerCall::Submit {
            handle: "wh-1".into(),
            step_id: None,
            body: "b".into(),
            outcome: outcome_text(SubmitOutcome::Blocked).into(),
        };
        let back: WorkerCall =
            serde_json::from_str(&serde_json::to_string(&call).unwrap()).unwrap();
        assert!(
            matches!(back, WorkerCall::Submit { outcome, .. } if outcome_of(&outcome) == SubmitOutcome::Blocked)
        );
    }
}
