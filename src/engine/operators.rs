//! The engine side of operator sessions: the traits the operator core implements, and the
//! adapter that presents it to the engine as its `Operator`, `SpawnHook` and `SeniorBridge`.
//!
//! Each session is registered under its sid and each of its roles: in the engine (hook,
//! bridge and operator-id registries) and in the `OperatorSpawnerFactory`, which routes
//! agents whose `spec.operator_ref` names a seat.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use mlua_swarm::operator::{Operator, WorkerBinding};
use mlua_swarm::types::{CapToken, StepId};
use mlua_swarm::worker::adapter::{WorkerError, WorkerResult};
use mlua_swarm::{Ctx, SeniorBridge, SpawnHook};
use serde_json::Value;

use super::lock;
use super::EngineHost;

/// Where an operator request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// Our task id (empty if unknown).
    pub task_id: String,
    /// The engine's step id.
    pub step_id: String,
    /// Agent name (empty for asks).
    pub agent: String,
    /// 1-based attempt (0 for asks).
    pub attempt: u32,
}

/// What a spawn hands to the sub-agent.
#[derive(Debug, Clone)]
pub struct SpawnGrant {
    /// Encoded signed capability token.
    pub capability_token: String,
    /// The server-minted `wh-` + 32 hex handle (128 bits), valid until the spawn is
    /// answered.
    pub worker_handle: String,
}

/// The operator's reply to a spawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnReply {
    /// Step result if the worker submitted nothing itself.
    pub value: Value,
    /// False marks the result blocked.
    pub ok: bool,
}

/// Why an operator request did not get a usable reply (rejected, timed out, cancelled,
/// session gone). The text becomes the step's (and usually the task's) error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OperatorRequestError(pub String);

/// An operator session as the engine uses it. Implemented by the operator core.
#[async_trait]
pub trait OperatorBackend: Send + Sync {
    /// Asks approval for a spawn; an error rejects it.
    async fn hook_before(&self, step: StepContext) -> Result<(), OperatorRequestError>;
    /// Reports a finished spawn (no reply expected).
    async fn hook_after(&self, step: StepContext, result: Value);
    /// Hands a step to a sub-agent and waits for the operator's ack.
    async fn spawn(
        &self,
        step: StepContext,
        grant: SpawnGrant,
    ) -> Result<SpawnReply, OperatorRequestError>;
    /// Asks the operator a question and waits for the answer.
    async fn ask(&self, step: StepContext, question: Value) -> Result<Value, OperatorRequestError>;
    /// True while a stream is attached: an interrupted run waiting for this seat resumes
    /// only then, so it does not burn its TTL while nobody listens.
    fn is_attached(&self) -> bool;
}

impl EngineHost {
    /// Registers a session under its sid and roles, so Blueprints can route to it and
    /// launches can pin it.
    pub async fn register_operator(
        self: &Arc<Self>,
        sid: &str,
        roles: &[String],
        backend: Arc<dyn OperatorBackend>,
    ) {
        let adapter = Arc::new(EngineOperator {
            backend: backend.clone(),
            host: Arc::downgrade(self),
        });
        for seat in std::iter::once(sid).chain(roles.iter().map(String::as_str)) {
            lock(&self.seats).insert(seat.to_string(), backend.clone());
            self.engine.register_operator(seat, adapter.clone()).await;
            self.engine.register_spawn_hook(seat, adapter.clone()).await;
            self.engine
                .register_senior_bridge(seat, adapter.clone())
                .await;
            self.factory.register_operator(seat, adapter.clone());
        }
    }

    /// True if the session holding `seat` (a sid or a role) has a stream attached.
    pub(super) fn seat_attached(&self, seat: &str) -> bool {
        lock(&self.seats).get(seat).is_some_and(|b| b.is_attached())
    }

    /// Removes a session's registrations; the next launch naming it fails to compile.
    pub async fn unregister_operator(&self, sid: &str, roles: &[String]) {
        for seat in std::iter::once(sid).chain(roles.iter().map(String::as_str)) {
            lock(&self.seats).remove(seat);
            self.engine.unregister_operator(seat).await;
            self.engine.unregister_spawn_hook(seat).await;
            self.engine.unregister_senior_bridge(seat).await;
            self.factory.unregister_operator(seat);
        }
    }
}

struct EngineOperator {
    backend: Arc<dyn OperatorBackend>,
    host: Weak<EngineHost>,
}

impl EngineOperator {
    /// Resolves once the replay rows of `task_id`'s run are on disk (they are queued,
    /// not waited for): a frame for a later step must not reach an operator while a kill
    /// could still make the steps before it run again.
    async fn journaled(&self, task_id: &str) -> Result<(), String> {
        let Some(state) = self.host.upgrade().and_then(|h| h.state_file.clone()) else {
            return Ok(());
        };
        let run_id = super::TaskRecord::run_id_of(task_id);
        state.settled(&run_id).await.map_err(|e| {
            tracing::error!(task_id, error = %e, "operator frame held back: the run's journal is not stored");
            "the server could not store this run's progress; the step was not sent".to_string()
        })
    }
}

fn step_context(ctx: &Ctx) -> StepContext {
    StepContext {
        task_id: ctx.operator.id.clone(),
        step_id: ctx.task_id.as_str().to_string(),
        agent: ctx.agent.clone(),
        attempt: ctx.attempt,
    }
}

#[async_trait]
impl Operator for EngineOperator {
    async fn execute(
        &self,
        ctx: &Ctx,
        _system: Option<String>,
        _prompt: Value,
        _worker: Option<WorkerBinding>,
        worker_token: CapToken,
    ) -> Result<WorkerResult, WorkerError> {
        let engine_handle = ctx
            .meta
            .runtime
            .get("worker_handle")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let step = step_context(ctx);
        self.journaled(&step.task_id)
            .await
            .map_err(WorkerError::Failed)?;
        // The engine's short handle stays in the process; the sub-agent gets a 128-bit one.
        let worker_handle = match self.host.upgrade() {
            Some(host) if !engine_handle.is_empty() => {
                host.worker_handles.mint(engine_handle, &step.task_id)
            }
            _ => String::new(),
        };
        let grant = SpawnGrant {
            capability_token: worker_token.encode(),
            worker_handle: worker_handle.clone(),
        };
        let reply = self.backend.spawn(step, grant).await;
        if let Some(host) = self.host.upgrade() {
            host.worker_handles.revoke(&worker_handle);
        }
        match reply {
            Ok(reply) => Ok(WorkerResult {
                value: reply.value,
                ok: reply.ok,
                stats: None,
            }),
            Err(e) => Err(WorkerError::Failed(e.0)),
        }
    }
}

#[async_trait]
impl SpawnHook for EngineOperator {
    async fn before(&self, ctx: &Ctx) -> Result<(), String> {
        let step = step_context(ctx);
        self.journaled(&step.task_id).await?;
        self.backend.hook_before(step).await.map_err(|e| e.0)
    }

    async fn after(&self, ctx: &Ctx, result: &Value) -> Result<(), String> {
        let step = step_context(ctx);
        self.journaled(&step.task_id).await?;
        self.backend.hook_after(step, result.clone()).await;
        Ok(())
    }
}

#[async_trait]
impl SeniorBridge for EngineOperator {
    async fn ask(&self, step_id: &StepId, question: Value) -> Result<Value, String> {
        let step_id = step_id.as_str().to_string();
        let task_id = self
            .host
            .upgrade()
            .and_then(|h| lock(&h.steps).get(&step_id).cloned())
            .unwrap_or_default();
        self.journaled(&task_id).await?;
        let step = StepContext {
            task_id,
            step_id,
            agent: String::new(),
            attempt: 0,
        };
        self.backend.ask(step, question).await.map_err(|e| e.0)
    }
}
