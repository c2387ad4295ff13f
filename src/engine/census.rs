//! Counts every structure the server and the hosted engine keep per task, step, worker
//! handle, request id and session (issue 18), so a test or an operator can tell which one
//! grows. Counts, not bytes: deterministic, and cheap enough to read under load.
//!
//! Each count has a [`Bound`]: a per-task structure must return to its baseline once the
//! tasks that filled it have ended; a retained one is capped by a retention setting.

use std::collections::BTreeMap;
use std::fmt;

use super::EngineHost;

/// What keeps a structure from growing without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Emptied as the tasks (steps, requests) it holds end: back to its baseline when
    /// nothing runs.
    PerTask,
    /// Keeps the newest entries up to a cap (task retention, output-store capacity, the
    /// ended-request memory of a session).
    Retained(usize),
    /// Sized by configuration or by clients (sessions, roles, Blueprints), not by tasks.
    PerClient,
}

/// One counted structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Entries held now.
    pub len: usize,
    /// What bounds it.
    pub bound: Bound,
}

/// Named counts, e.g. `engine.tasks`, `host.steps`, `session.ended`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructureCounts(BTreeMap<&'static str, Count>);

impl StructureCounts {
    /// Records `len` entries of `name`.
    pub fn insert(&mut self, name: &'static str, len: usize, bound: Bound) {
        self.0.insert(name, Count { len, bound });
    }

    /// Entries of `name` (0 if not counted).
    pub fn get(&self, name: &str) -> usize {
        self.0.get(name).map_or(0, |c| c.len)
    }

    /// Every count, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Count)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    /// Adds every count of `other`.
    pub fn extend(&mut self, other: StructureCounts) {
        self.0.extend(other.0);
    }

    /// The per-task structures holding more than in `baseline`, as (name, before, now).
    pub fn per_task_grown_since(
        &self,
        baseline: &StructureCounts,
    ) -> Vec<(&'static str, usize, usize)> {
        self.iter()
            .filter(|(_, c)| c.bound == Bound::PerTask)
            .map(|(name, c)| (name, baseline.get(name), c.len))
            .filter(|(_, before, now)| now > before)
            .collect()
    }

    /// The retained structures holding more than their cap, as (name, len, cap).
    pub fn over_cap(&self) -> Vec<(&'static str, usize, usize)> {
        self.iter()
            .filter_map(|(name, c)| match c.bound {
                Bound::Retained(cap) if c.len > cap => Some((name, c.len, cap)),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for StructureCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, c) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={}", c.len)?;
        }
        Ok(())
    }
}

impl EngineHost {
    /// Counts what the engine state, the engine's registries, our host maps, the task
    /// registry and the output store hold now.
    pub async fn structure_counts(&self) -> StructureCounts {
        use Bound::{PerClient, PerTask};
        let mut c = StructureCounts::default();
        let state = self
            .engine
            .with_state("census", |s| {
                let event_log_max = s.event_log_max;
                [
                    ("engine.tasks", s.tasks.len(), PerTask),
                    ("engine.sessions", s.sessions.len(), PerTask),
                    ("engine.prompts", s.prompts.len(), PerTask),
                    ("engine.systems", s.systems.len(), PerTask),
                    // Keyed by agent name: as many as the Blueprints name.
                    (
                        "engine.agent_render_sizes",
                        s.agent_render_sizes.len(),
                        PerClient,
                    ),
                    ("engine.agent_ctx", s.agent_ctx.len(), PerTask),
                    ("engine.step_namings", s.step_namings.len(), PerTask),
                    (
                        "engine.projection_placements",
                        s.projection_placements.len(),
                        PerTask,
                    ),
                    ("engine.tokens", s.tokens.len(), PerTask),
                    ("engine.worker_handles", s.worker_handles.len(), PerTask),
                    ("engine.pending_resumes", s.pending_resumes.len(), PerTask),
                    ("engine.task_notifies", s.task_notifies.len(), PerTask),
                    // Set only by `set_resource`, which the server never calls.
                    ("engine.resources", s.resources.len(), PerClient),
                    ("engine.output_tails", s.output_store.len(), PerTask),
                    (
                        "engine.worker_artifact_names",
                        s.worker_artifact_names.len(),
                        PerTask,
                    ),
                    (
                        "engine.event_log_tail",
                        s.event_log_tail.len(),
                        Bound::Retained(event_log_max),
                    ),
                    ("engine.worker_stats", s.worker_stats.len(), PerTask),
                    ("engine.trace_handles", s.trace_handles.len(), PerTask),
                ]
            })
            .await;
        match state {
            Ok(entries) => {
                for (name, len, bound) in entries {
                    c.insert(name, len, bound);
                }
            }
            Err(e) => tracing::warn!(error = %e, "engine state not counted"),
        }
        c.insert(
            "engine.operators",
            self.engine.list_operator_ids().await.len(),
            PerClient,
        );
        c.insert(
            "engine.spawn_hooks",
            self.engine.list_spawn_hook_ids().await.len(),
            PerClient,
        );
        c.insert(
            "engine.senior_bridges",
            self.engine.list_senior_bridge_ids().await.len(),
            PerClient,
        );
        c.insert("host.steps", super::lock(&self.steps).len(), PerTask);
        c.insert("host.running", super::lock(&self.running).len(), PerTask);
        c.insert(
            "host.engine_sessions",
            super::lock(&self.engine_sessions).len(),
            PerClient,
        );
        c.insert("host.minted_handles", self.worker_handles.len(), PerTask);
        c.insert(
            "host.end_listeners",
            self.end_listeners.read().map(|l| l.len()).unwrap_or(0),
            PerClient,
        );
        c.extend(self.tasks.structure_counts().await);
        if let Some(outputs) = &self.bounded_outputs {
            c.extend(outputs.structure_counts());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_reported_for_per_task_structures_only() {
        let mut base = StructureCounts::default();
        base.insert("a", 1, Bound::PerTask);
        base.insert("b", 5, Bound::Retained(10));
        base.insert("c", 2, Bound::PerClient);
        let mut now = base.clone();
        now.insert("a", 3, Bound::PerTask);
        now.insert("b", 11, Bound::Retained(10));
        now.insert("c", 9, Bound::PerClient);
        assert_eq!(now.per_task_grown_since(&base), vec![("a", 1, 3)]);
        assert_eq!(now.over_cap(), vec![("b", 11, 10)]);
        assert_eq!(now.to_string(), "a=3 b=11 c=9");
        assert_eq!(now.get("missing"), 0);
    }
}
