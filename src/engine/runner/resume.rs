//! Runs after a restart: boot marks the runs a crash or shutdown cut INTERRUPTED, then
//! resumes them from the journal (at once, when their operator sessions attach, or on
//! ResumeTask); RerunTask drives a task again from one step.
//!
//! Every run of a task shares its run id, so its journal is one: a resume continues it,
//! a rerun cuts it at a step. Steps the journal holds are answered from it; the step in
//! flight at the crash has no row and is dispatched again (at-least-once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mlua_swarm::store::run::RunStatus;

use super::launch::{Prepared, TaskLaunch};
use crate::engine::{lock, EngineHost, ResumeMode, RunStart, TaskEventKind, TaskRecord, TaskState};
use crate::error::{Error, Result};

/// Why boot interrupts a run left running.
const RESTART: &str = "server restart";

impl EngineHost {
    /// Boot: tasks left RUNNING become INTERRUPTED (their runs too); then, in `auto`
    /// mode, every interrupted task is resumed in the background.
    pub(in crate::engine) async fn recover(self: &Arc<Self>) -> Result<()> {
        let left = self
            .tasks
            .list(Some(TaskState::Running), None, usize::MAX)
            .await?;
        for task in &left {
            self.interrupt(&task.task_id, RESTART).await;
        }
        // Runs whose task is gone (or never stored): nothing resumes them. Not when
        // replicas share the database: the runs left running there are other replicas'.
        if !self.shared_database {
            for run_id in self.journal.running().await {
                self.journal.interrupt_run(&run_id).await;
            }
        }
        let waiting = self
            .tasks
            .list(Some(TaskState::Interrupted), None, usize::MAX)
            .await?;
        if !left.is_empty() || !waiting.is_empty() {
            tracing::info!(
                interrupted = left.len(),
                waiting = waiting.len(),
                mode = ?self.resume,
                "tasks cut by a restart"
            );
        }
        if self.resume == ResumeMode::Auto && !waiting.is_empty() {
            let host = Arc::clone(self);
            tokio::spawn(async move {
                for task in waiting {
                    host.resume_or_park(&task.task_id).await;
                }
            });
        }
        Ok(())
    }

    /// Marks a task and its run INTERRUPTED.
    pub(in crate::engine) async fn interrupt(&self, task_id: &str, reason: &str) {
        self.free_task_state(task_id).await;
        crate::telemetry::task_ended(task_id);
        match self.tasks.interrupt(task_id, reason).await {
            Ok(_) => {
                crate::metrics::task_interrupted();
                self.journal
                    .set_status(task_id, RunStatus::Interrupted)
                    .await
            }
            Err(e) => tracing::error!(task_id, error = %e, "interruption not stored"),
        }
    }

    /// ResumeTask: resumes an INTERRUPTED task from its journal.
    pub async fn resume_task(self: &Arc<Self>, task_id: &str) -> Result<TaskRecord> {
        lock(&self.parked).remove(task_id);
        self.restart_run(task_id, RunStart::Resume).await
    }

    /// RerunTask: drives a finished or interrupted task again from `from_step`.
    pub async fn rerun_task(
        self: &Arc<Self>,
        task_id: &str,
        from_step: &str,
    ) -> Result<TaskRecord> {
        let from_step = from_step.trim();
        if from_step.is_empty() {
            return Err(Error::invalid(
                "from_step",
                "name the step ref to rerun from",
            ));
        }
        lock(&self.parked).remove(task_id);
        let start = RunStart::Rerun {
            from_step: from_step.to_string(),
        };
        self.restart_run(task_id, start).await
    }

    /// The operator session `sid` (holding `roles`) attached: interrupted tasks waiting
    /// for it resume if every session they need is now there. Called by the operator
    /// core.
    pub async fn on_session_attached(self: &Arc<Self>, sid: &str, roles: &[String]) {
        let parked: Vec<String> = lock(&self.parked).iter().cloned().collect();
        if parked.is_empty() {
            return;
        }
        tracing::debug!(sid, ?roles, parked = parked.len(), "checking parked tasks");
        for task_id in parked {
            if lock(&self.parked).remove(&task_id) {
                self.resume_or_park(&task_id).await;
            }
        }
    }

    /// Resumes an interrupted task now if the sessions it needs are registered, else
    /// parks it until they attach (its TTL still runs).
    pub(super) async fn resume_or_park(self: &Arc<Self>, task_id: &str) {
        let missing = match self.missing_seats(task_id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "interrupted task not resumed");
                return;
            }
        };
        if missing.is_empty() {
            if let Err(e) = self.restart_run(task_id, RunStart::Resume).await {
                tracing::warn!(task_id, error = %e, "interrupted task not resumed");
            }
            return;
        }
        tracing::info!(
            task_id,
            ?missing,
            "interrupted task waits for its operator sessions"
        );
        lock(&self.parked).insert(task_id.to_string());
        // A session that attached between the check and the park found nothing parked:
        // check again now that the park is visible, and resume if it was the last one.
        if self
            .missing_seats(task_id)
            .await
            .is_ok_and(|m| m.is_empty())
            && lock(&self.parked).remove(task_id)
        {
            if let Err(e) = self.restart_run(task_id, RunStart::Resume).await {
                tracing::warn!(task_id, error = %e, "interrupted task not resumed");
            }
            return;
        }
        let Ok(rec) = self.get_task(task_id).await else {
            return;
        };
        let left = ttl_left(&rec);
        let host = Arc::downgrade(self);
        let id = task_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            let Some(host) = host.upgrade() else { return };
            if lock(&host.parked).remove(&id) {
                let error = format!(
                    "ttl expired while waiting for operator session(s) {}",
                    missing.join(", ")
                );
                let _ = host.record_end(&id, TaskEventKind::Failed { error }).await;
            }
        });
    }

    /// The seats (sids, roles) a task's launch needs that no attached session holds now.
    async fn missing_seats(&self, task_id: &str) -> Result<Vec<String>> {
        let rec = self.get_task(task_id).await?;
        let launch = stored_launch(&rec)?;
        let (bp, _) = self.resolve(launch.blueprint.clone()).await?;
        let mut needed: Vec<String> = bp.operators.iter().map(|o| o.name.clone()).collect();
        needed.extend(launch.operator_sid.clone());
        needed.extend(launch.operator.spawn_hook_id.clone());
        needed.extend(launch.operator.senior_bridge_id.clone());
        needed.retain(|s| !s.trim().is_empty() && !self.seat_attached(s));
        needed.sort();
        needed.dedup();
        Ok(needed)
    }

    /// Starts a new run of a task from its journal: the launch is prepared again (same
    /// pinned Blueprint, sessions checked, compiled), the record reopened (the CAS: one
    /// caller wins), and the flow driven with the journal's rows as answers.
    async fn restart_run(self: &Arc<Self>, task_id: &str, start: RunStart) -> Result<TaskRecord> {
        // Replicas sharing the database: this one takes the task's lease first.
        self.tasks.claim_to_run_again(task_id).await?;
        let rec = self.get_task(task_id).await?;
        let allowed = match &start {
            RunStart::Resume => rec.state == TaskState::Interrupted,
            _ => rec.state == TaskState::Interrupted || rec.state.is_terminal(),
        };
        if !allowed {
            return Err(wrong_state(&rec, &start));
        }
        let launch = stored_launch(&rec)?;
        let ttl = match start {
            // A resume keeps the task's deadline; a rerun is a new run with a full one.
            RunStart::Resume => ttl_left(&rec),
            _ => Duration::from_secs(rec.effective_ttl_secs),
        };
        if ttl.is_zero() {
            let error = ttl_expired(rec.effective_ttl_secs);
            return self
                .record_end(task_id, TaskEventKind::Failed { error })
                .await?
                .ok_or_else(|| wrong_state(&rec, &start));
        }
        let Prepared { input, .. } = self.prepare(task_id, launch).await?;
        let from_step = match &start {
            RunStart::Rerun { from_step } => Some(from_step.as_str()),
            _ => None,
        };
        let (run, answered) = self.journal.reopen(task_id, from_step).await?;
        let Some(record) = self.tasks.reopen(task_id, start.clone(), answered).await? else {
            let now = self.get_task(task_id).await?;
            return Err(wrong_state(&now, &start));
        };
        self.drive(task_id, input, run, ttl);
        if matches!(start, RunStart::Resume) {
            crate::metrics::task_resumed();
        }
        tracing::info!(
            task_id,
            ?start,
            replayed_steps = answered,
            "task run restarted"
        );
        Ok(record)
    }
}

/// The launch a task was started with, as stored.
fn stored_launch(rec: &TaskRecord) -> Result<TaskLaunch> {
    let Some(launch) = &rec.launch else {
        return Err(Error::FailedPrecondition(format!(
            "task {} has no stored launch to run again",
            rec.task_id
        )));
    };
    serde_json::from_value(launch.as_ref().clone())
        .map_err(|e| Error::Internal(format!("stored launch of {}: {e}", rec.task_id)))
}

/// What is left of a task's TTL, counted from its creation.
fn ttl_left(rec: &TaskRecord) -> Duration {
    let ttl = Duration::from_secs(rec.effective_ttl_secs);
    let spent = SystemTime::now()
        .duration_since(rec.created_at)
        .unwrap_or_default();
    ttl.saturating_sub(spent)
}

fn ttl_expired(secs: u64) -> String {
    format!("ttl expired: the task's {secs}s ttl passed before it could be resumed")
}

fn wrong_state(rec: &TaskRecord, start: &RunStart) -> Error {
    let want = match start {
        RunStart::Resume => {
            "only an INTERRUPTED task can be resumed (RerunTask runs a finished one again)"
        }
        _ => "only a finished or INTERRUPTED task can be rerun",
    };
    Error::FailedPrecondition(format!(
        "task {} is {}; {want}",
        rec.task_id,
        format!("{:?}", rec.state).to_uppercase()
    ))
}
