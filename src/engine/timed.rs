//! Times every step a spawner runs, from its dispatch (the spawn) to its result (the
//! worker's join), into `mse_step_duration_seconds` by kind. A wrapper around each
//! spawner factory the engine is built with: one `Instant` and one histogram record per
//! step.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use mlua_swarm::types::CapToken;
use mlua_swarm::{
    AgentDef, CompileError, Ctx, Engine, SpawnError, SpawnerAdapter, SpawnerFactory,
    SpawnerFactoryKind, StepId, Worker, WorkerError, WorkerId,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::metrics::{step_finished, StepKind};

/// A spawner factory whose spawners time their steps as `kind`.
pub(super) struct Timed<F> {
    inner: Arc<F>,
    kind: StepKind,
}

impl<F> Timed<F> {
    pub(super) fn new(inner: Arc<F>, kind: StepKind) -> Arc<Self> {
        Arc::new(Self { inner, kind })
    }
}

impl<F: SpawnerFactory> SpawnerFactory for Timed<F> {
    fn build(
        &self,
        agent_def: &AgentDef,
        hint: Option<&Value>,
    ) -> Result<Arc<dyn SpawnerAdapter>, CompileError> {
        let inner = self.inner.build(agent_def, hint)?;
        Ok(Arc::new(TimedAdapter {
            inner,
            kind: self.kind,
        }))
    }
}

impl<F: SpawnerFactoryKind> SpawnerFactoryKind for Timed<F> {
    const KIND: mlua_swarm::AgentKind = F::KIND;
    type Worker = F::Worker;
}

struct TimedAdapter {
    inner: Arc<dyn SpawnerAdapter>,
    kind: StepKind,
}

#[async_trait]
impl SpawnerAdapter for TimedAdapter {
    async fn spawn(
        &self,
        engine: &Engine,
        ctx: &Ctx,
        task_id: StepId,
        attempt: u32,
        token: CapToken,
    ) -> Result<Box<dyn Worker>, SpawnError> {
        let dispatched = Instant::now();
        let inner = self
            .inner
            .spawn(engine, ctx, task_id, attempt, token)
            .await?;
        Ok(Box::new(TimedWorker {
            inner,
            dispatched,
            kind: self.kind,
        }))
    }
}

struct TimedWorker {
    inner: Box<dyn Worker>,
    dispatched: Instant,
    kind: StepKind,
}

#[async_trait]
impl Worker for TimedWorker {
    fn id(&self) -> &WorkerId {
        self.inner.id()
    }

    fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel_token()
    }

    async fn join(self: Box<Self>) -> Result<(), WorkerError> {
        let joined = self.inner.join().await;
        step_finished(self.kind, self.dispatched.elapsed());
        joined
    }
}
