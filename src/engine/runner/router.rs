//! Turns engine events (keyed by step id) into events of our tasks.

use std::sync::{Arc, Weak};

use mlua_swarm::types::StepId;
use mlua_swarm::{Event, TaskStatus};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::stored;
use crate::engine::{lock, EngineHost, TaskEventKind};

/// Starts the background task that maps engine events to our tasks. The broadcast can
/// lag (hazard H13); whatever is missed is recovered when the task ends.
pub(in crate::engine) fn spawn_event_router(host: &Arc<EngineHost>) {
    let mut events = host.engine.subscribe();
    let weak: Weak<EngineHost> = Arc::downgrade(host);
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "engine event router lagged");
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let Some(host) = weak.upgrade() else { break };
            match event {
                Event::TaskCreated { task_id } => host.on_step_created(task_id).await,
                Event::TaskAttemptCompleted {
                    task_id, result, ..
                } => host.on_step_completed(task_id, result).await,
                _ => {}
            }
        }
    });
}

impl EngineHost {
    async fn on_step_created(&self, step: StepId) {
        let step_id = step.as_str().to_string();
        let found = self
            .engine
            .with_state("step-owner", move |s| {
                let agent = s.tasks.get(&step).map(|t| t.spec.agent.clone())?;
                s.sessions
                    .values()
                    .find(|env| env.owned_task_ids.iter().rev().any(|id| id == &step))
                    .map(|env| (env.operator_id.clone(), agent))
            })
            .await
            .ok()
            .flatten();
        let Some((task_id, agent)) = found else {
            return;
        };
        if !stored(&task_id, self.tasks.is_running(&task_id).await) {
            return;
        }
        lock(&self.steps).insert(step_id.clone(), task_id.clone());
        let dispatched = TaskEventKind::StepDispatched { step_id, agent };
        if stored(&task_id, self.tasks.push(&task_id, dispatched).await) {
            crate::metrics::step_dispatched();
        }
    }

    async fn on_step_completed(&self, step: StepId, result: Value) {
        let step_id = step.as_str().to_string();
        let Some(task_id) = lock(&self.steps).get(&step_id).cloned() else {
            return;
        };
        let ok = self
            .engine
            .with_state("step-status", move |s| {
                s.tasks.get(&step).map(|t| t.status == TaskStatus::Pass)
            })
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
        let finished = TaskEventKind::StepFinished {
            step_id,
            ok,
            result: self.size.fit(result, "step result"),
        };
        stored(&task_id, self.tasks.push(&task_id, finished).await);
    }
}
