//! The seam where task records, their events and their watchers live.

use async_trait::async_trait;
use tokio::sync::watch;

use super::{RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskState};
use crate::engine::census::{Bound, StructureCounts};
use crate::error::Result;

/// Events a task keeps for WatchTask replay (the most recent); long loops drop the oldest.
pub const EVENTS_KEPT: usize = 10_000;

/// Where task records and their events live: in memory by default
/// ([`TaskRegistry`](super::TaskRegistry)); a durable or shared store (SQLite, PostgreSQL)
/// can stand behind it.
///
/// Rules every store keeps, whatever backs it:
/// - a task's events have seqs 1, 2, 3, … with no gaps; at most [`EVENTS_KEPT`] of the
///   newest are kept;
/// - step events are de-duplicated by step id (the engine's event stream and the end of a
///   task can both report a step);
/// - a run ends once: the first terminal event wins, and no step event is appended
///   after it (only a rerun's `RunStarted` starts another run);
/// - finished tasks past the store's retention are dropped oldest first.
///
/// Errors are the store failing (an I/O error, say), never "unknown task": that is `None`
/// or `false`.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Adds a running task and its `Started` event (seq 1).
    async fn create(&self, record: TaskRecord) -> Result<()>;

    /// [`Self::create`] without waiting for it to be stored, for a caller answered only
    /// with the task's end ([`Self::settled`] covers the creation too).
    async fn create_queued(&self, record: TaskRecord) -> Result<()> {
        self.create(record).await
    }

    /// Appends a step event to a running task; false if the task is unknown, finished, or
    /// the event a duplicate.
    async fn push(&self, task_id: &str, kind: TaskEventKind) -> Result<bool>;

    /// Ends a running task with its terminal event and returns the final record; None if
    /// the task is unknown or already ended, or `end` is not a terminal event.
    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>>;

    /// Marks a running task INTERRUPTED (a server restart cut its run) with an
    /// `Interrupted` event; None if it is unknown or not running.
    async fn interrupt(&self, task_id: &str, reason: &str) -> Result<Option<TaskRecord>>;

    /// Starts a new run of a task with a `RunStarted` event: a resume of an interrupted
    /// task, or a rerun of an interrupted or ended one. None if the task is unknown or in
    /// a state `start` does not allow.
    async fn reopen(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Result<Option<TaskRecord>>;

    /// Reads one task.
    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>>;

    /// True if `task_id` is known and running.
    async fn is_running(&self, task_id: &str) -> Result<bool> {
        Ok(self
            .get(task_id)
            .await?
            .is_some_and(|r| r.state == TaskState::Running))
    }

    /// Up to `limit` tasks newest first, optionally only those in `state`, starting after
    /// `after` (the position of the last task of the previous page).
    async fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>>;

    /// Up to `limit` events with seq > `after`, oldest first; None if the task is unknown.
    async fn events_after(
        &self,
        task_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<TaskEvent>>>;

    /// A receiver of the task's newest seq, marked changed whenever an event is appended
    /// (subscribe first, then read, and no event is missed); None if the task is unknown.
    /// It closes when the task is dropped.
    async fn subscribe(&self, task_id: &str) -> Result<Option<watch::Receiver<u64>>>;

    /// Resolves once the end of `task_id` is durable. Readers see a change as it is made,
    /// before its commit; a caller about to report an end waits here first, so what it
    /// reports survives a kill. At once for the in-memory store.
    async fn settled(&self, _task_id: &str) -> Result<()> {
        Ok(())
    }

    /// A store shared by replicas: claims the unfinished tasks of replicas that stopped
    /// heartbeating and holds them here (they read as before; this replica writes them
    /// from now on). Their ids; none for a store of one process.
    async fn take_over(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// A store shared by replicas: the tasks held here that another replica claimed
    /// since the last call (a write of them was refused, or their lease moved). They are
    /// no longer held here. None for a store of one process.
    async fn lost(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// A store shared by replicas: takes the lease of `task_id` before it runs again here
    /// (ResumeTask, RerunTask); FAILED_PRECONDITION naming the replica that runs it.
    async fn claim_to_run_again(&self, _task_id: &str) -> Result<()> {
        Ok(())
    }

    /// A store shared by replicas: the replica running (or holding) the unfinished task
    /// `task_id` when that is another one. None for a store of one process.
    async fn runner_elsewhere(&self, _task_id: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// A store shared by replicas: this replica is leaving (shutdown, after its runs
    /// ended or were interrupted); the others may take its unfinished tasks at once.
    async fn hand_over(&self) -> Result<()> {
        Ok(())
    }

    /// Number of tasks held (running and retained finished ones).
    async fn len(&self) -> Result<usize>;

    /// True when no task is held.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// What the store holds, for [`EngineHost::structure_counts`](crate::engine::EngineHost).
    async fn structure_counts(&self) -> StructureCounts {
        let mut c = StructureCounts::default();
        let held = self.len().await.unwrap_or(0);
        c.insert("registry.tasks", held, Bound::PerClient);
        c
    }
}
