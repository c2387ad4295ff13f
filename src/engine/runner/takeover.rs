//! Several replicas on one database: every [`TICK`], take over the tasks of replicas
//! that died (resumed from the shared journal, exactly as a restart resumes its own) and
//! let go of the tasks another replica took from this one while it was thought dead
//! (a stopped process woken up: its writes of them are refused already).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{lock, EngineHost, ResumeMode, TaskState};

/// How often leases are checked; a dead replica's tasks move within its silence
/// (15 s, `pg::replicas::DEAD_AFTER`) plus one tick.
const TICK: Duration = Duration::from_secs(2);

/// Why a taken-over running task shows INTERRUPTED before its resume.
const RUNNER_DIED: &str = "its replica stopped answering; resumed by another";

impl EngineHost {
    /// Starts the lease tick (shared databases only); it stops with the host.
    pub(in crate::engine) fn start_takeover(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(host) = host.upgrade() else { return };
                host.let_go_of_lost().await;
                host.take_over_dead().await;
            }
        });
    }

    /// Claims the unfinished tasks of dead replicas and resumes them here.
    async fn take_over_dead(self: &Arc<Self>) {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let ids = match self.tasks.take_over().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "dead replicas' tasks not claimed this tick");
                return;
            }
        };
        if ids.is_empty() {
            return;
        }
        tracing::info!(
            tasks = ids.len(),
            "took over the tasks of a replica that stopped answering"
        );
        for id in &ids {
            let running = self
                .tasks
                .get(id)
                .await
                .is_ok_and(|r| r.is_some_and(|r| r.state == TaskState::Running));
            if running {
                self.interrupt(id, RUNNER_DIED).await;
            }
        }
        if self.resume == ResumeMode::Auto {
            for id in ids {
                self.resume_or_park(&id).await;
            }
        }
    }

    /// Stops the local runs of tasks another replica claimed: their flows are aborted
    /// without an end (the new runner records it), their operator requests withdrawn.
    async fn let_go_of_lost(&self) {
        let lost = match self.tasks.lost().await {
            Ok(lost) => lost,
            Err(e) => {
                tracing::warn!(error = %e, "leases not checked this tick");
                return;
            }
        };
        for id in lost {
            lock(&self.parked).remove(&id);
            if let Some(run) = self.claim(&id) {
                run.abort();
            }
            self.announce_end(&id, "task moved: another replica runs it now");
            self.free_task_state(&id).await;
            crate::telemetry::task_ended(&id);
            tracing::warn!(task_id = %id, "another replica took this task over; its run here stopped");
        }
    }
}
