//! Frees the engine state of a finished task (hazard H1: `EngineState` never frees
//! anything by itself), and reports what the state holds.
//!
//! Every launch runs under its own engine session whose `operator_id` is our task id, so
//! a task's sessions, steps, tokens and handles are found from that id alone.

use mlua_swarm::core::state::EngineState;
use mlua_swarm::types::StepId;
use mlua_swarm::TaskStatus;
use serde_json::Value;

use super::EngineHost;

/// How many entries the engine's state maps hold; all zero when no task runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSizes {
    /// Steps.
    pub tasks: usize,
    /// Launch sessions.
    pub sessions: usize,
    /// Capability token records.
    pub tokens: usize,
    /// Worker handles.
    pub worker_handles: usize,
    /// Per-attempt prompts.
    pub prompts: usize,
    /// Per-attempt output tails.
    pub output_tails: usize,
    /// Worker handles the server minted and still maps (outstanding spawns).
    pub minted_handles: usize,
}

impl StateSizes {
    /// Sum of all counts.
    pub fn total(&self) -> usize {
        self.tasks
            + self.sessions
            + self.tokens
            + self.worker_handles
            + self.prompts
            + self.output_tails
            + self.minted_handles
    }
}

/// A step of a finished task, as found in the state before it was freed.
#[derive(Debug, Clone)]
pub(super) struct StepSnapshot {
    pub(super) step_id: String,
    pub(super) agent: String,
    /// None while it never reached Pass / Blocked / Cancelled.
    pub(super) ok: Option<bool>,
    pub(super) result: Value,
}

impl EngineHost {
    /// Counts what the engine state holds.
    pub async fn state_sizes(&self) -> StateSizes {
        self.engine
            .with_state("sizes", |s| StateSizes {
                tasks: s.tasks.len(),
                sessions: s.sessions.len(),
                tokens: s.tokens.len(),
                worker_handles: s.worker_handles.len(),
                prompts: s.prompts.len(),
                output_tails: s.output_store.len(),
                minted_handles: 0,
            })
            .await
            .map(|sizes| StateSizes {
                minted_handles: self.worker_handles.len(),
                ..sizes
            })
            .unwrap_or_default()
    }

    /// Removes everything the engine holds for `task_id` and returns its steps in
    /// dispatch order.
    pub(super) async fn free_task_state(&self, task_id: &str) -> Vec<StepSnapshot> {
        self.worker_handles.revoke_task(task_id);
        let id = task_id.to_string();
        let freed = self
            .engine
            .with_state("gc", move |s| {
                let before = entries(s);
                let steps = prune(s, &id);
                (steps, before.saturating_sub(entries(s)))
            })
            .await;
        match freed {
            Ok((steps, entries)) => {
                crate::metrics::gc_run(entries);
                steps
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "engine state of a finished task not freed");
                Vec::new()
            }
        }
    }
}

/// Entries of the engine-state collections [`prune`] frees from.
fn entries(s: &EngineState) -> usize {
    s.sessions.len()
        + s.tasks.len()
        + s.step_namings.len()
        + s.projection_placements.len()
        + s.task_notifies.len()
        + s.trace_handles.len()
        + s.pending_resumes.len()
        + s.prompts.len()
        + s.systems.len()
        + s.agent_ctx.len()
        + s.output_store.len()
        + s.worker_artifact_names.len()
        + s.worker_stats.len()
        + s.tokens.len()
        + s.worker_handles.len()
}

/// Frees `task_id`'s entries. Runs once per finished task with the engine's state
/// locked, so it removes by key where it can and never hashes inside a scan: the
/// per-attempt maps are keyed `(step, attempt)` and a step's attempts are known; the
/// token maps are scanned once, matching against the task's few steps and fingerprints
/// by equality (hashing each entry made this 10 % of the server's instructions).
fn prune(s: &mut EngineState, task_id: &str) -> Vec<StepSnapshot> {
    let session_ids: Vec<_> = s
        .sessions
        .iter()
        .filter(|(_, env)| env.operator_id == task_id)
        .map(|(sid, _)| sid.clone())
        .collect();
    let mut steps: Vec<StepId> = Vec::new();
    let mut fps: Vec<String> = Vec::new();
    for sid in &session_ids {
        if let Some(env) = s.sessions.remove(sid) {
            fps.push(env.token_fp);
            steps.extend(env.owned_task_ids);
        }
    }
    let snapshots = steps
        .iter()
        .filter_map(|step| s.tasks.get(step))
        .map(|t| StepSnapshot {
            step_id: t.id.as_str().to_string(),
            agent: t.spec.agent.clone(),
            ok: match t.status {
                TaskStatus::Pass => Some(true),
                TaskStatus::Blocked | TaskStatus::Cancelled => Some(false),
                _ => None,
            },
            result: t.last_result.clone().unwrap_or(Value::Null),
        })
        .collect();
    let resume_keys: Vec<_> = steps
        .iter()
        .filter_map(|step| s.tasks.get(step).and_then(|t| t.suspended_on.clone()))
        .collect();
    for key in resume_keys {
        s.pending_resumes.remove(&key);
    }
    for step in &steps {
        // Attempts count from 0 or 1 depending on the path; one past the last is free.
        let last_attempt = s.tasks.remove(step).map_or(0, |t| t.attempt);
        for attempt in 0..=last_attempt.saturating_add(1) {
            let key = (step.clone(), attempt);
            s.prompts.remove(&key);
            s.systems.remove(&key);
            s.agent_ctx.remove(&key);
            s.output_store.remove(&key);
            s.worker_artifact_names.remove(&key);
            s.worker_stats.remove(&key);
        }
        s.step_namings.remove(step);
        s.projection_placements.remove(step);
        s.task_notifies.remove(step);
        s.trace_handles.remove(step);
    }
    s.tokens.retain(|fp, rec| {
        if fps.contains(fp) {
            return false;
        }
        let owned = rec.task_id.as_ref().is_some_and(|t| steps.contains(t));
        if owned {
            fps.push(fp.clone());
        }
        !owned
    });
    s.worker_handles.retain(|_, fp| !fps.contains(fp));
    snapshots
}
