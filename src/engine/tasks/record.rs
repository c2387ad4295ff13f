//! What a task run is to callers: its record, its position in a listing, and its events.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde_json::Value;

/// Step ids a task record keeps (the most recent); `step_count` counts them all.
pub const STEP_IDS_KEPT: usize = 100;

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskState {
    /// The flow is running.
    Running,
    /// The flow finished; `final_ctx` is set.
    Completed,
    /// The flow failed; `error` says why.
    Failed,
    /// CancelTask stopped it.
    Cancelled,
    /// Its run was cut by a server restart; it waits to be resumed (at once, when its
    /// operator session attaches, or by ResumeTask).
    Interrupted,
}

impl TaskState {
    /// True once the run is over: completed, failed or cancelled (RerunTask can still
    /// start it again). An interrupted task is not over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// How one run of a task started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunStart {
    /// StartTask / RunTask.
    Launch,
    /// An interrupted run continued from its journal.
    Resume,
    /// RerunTask: the journal cut at `from_step`, the flow driven again.
    Rerun {
        /// The step ref the journal was cut at.
        from_step: String,
    },
}

/// One run of a task: a launch, a resume or a rerun. Every run of a task shares the
/// task's engine run id (and journal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskRun {
    /// The engine run id (`R-<uuid of the task>`), the key of the task's journal.
    pub run_id: String,
    /// How it started.
    pub start: RunStart,
    /// How it ended; None while it runs.
    pub end: Option<RunEnd>,
    /// Unix milliseconds it started.
    pub started_at_ms: u64,
    /// Unix milliseconds it ended.
    pub ended_at_ms: Option<u64>,
    /// Steps the journal could answer when it started (0 for a launch).
    pub replayed_steps: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The flow finished.
    Completed,
    /// The flow failed.
    Failed,
    /// CancelTask stopped it.
    Cancelled,
    /// A server restart cut it.
    Interrupted,
}

/// Unix milliseconds of `t`.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where the effective TTL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TtlSource {
    /// The request's `ttl_secs`.
    RequestBody,
    /// The Blueprint's `metadata.default_run_ttl_secs`.
    BpMetadata,
    /// The server default, 1800 s.
    ServerDefault,
}

/// One task run as callers see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskRecord {
    /// `task-<uuid>`.
    pub task_id: String,
    /// Lifecycle state.
    pub state: TaskState,
    /// The flow context at the end (Completed only).
    pub final_ctx: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Hex version for stored Blueprints.
    pub bound_version: Option<String>,
    /// TTL of the task's engine session.
    pub effective_ttl_secs: u64,
    /// Where that TTL came from.
    pub ttl_source: TtlSource,
    /// When it started.
    pub created_at: SystemTime,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// The Blueprint's id.
    pub blueprint_id: String,
    /// The operator session it is pinned to.
    pub operator_sid: Option<String>,
    /// The most recent [`STEP_IDS_KEPT`] engine step ids dispatched, in order.
    pub step_ids: VecDeque<String>,
    /// Steps dispatched so far.
    pub step_count: u64,
    /// Its runs, oldest first: the launch, then each resume or rerun.
    pub runs: Vec<TaskRun>,
    /// The launch as stored, to resume or rerun it (never sent to callers; a durable
    /// store keeps it in a column of its own).
    #[serde(skip)]
    pub launch: Option<std::sync::Arc<Value>>,
}

impl TaskRecord {
    /// The engine run id of `task_id` (`task-<uuid>` → `R-<uuid>`), shared by its runs.
    pub fn run_id_of(task_id: &str) -> String {
        format!("R-{}", task_id.strip_prefix("task-").unwrap_or(task_id))
    }

    /// Closes the current run with `end`.
    fn close_run(&mut self, end: RunEnd, at: SystemTime) {
        if let Some(run) = self.runs.last_mut().filter(|r| r.end.is_none()) {
            run.end = Some(end);
            run.ended_at_ms = Some(unix_ms(at));
        }
    }

    /// Marks a running task interrupted; false (and unchanged) unless it was running.
    pub(super) fn interrupt(&mut self, reason: &str, at: SystemTime) -> bool {
        if self.state != TaskState::Running {
            return false;
        }
        self.state = TaskState::Interrupted;
        self.error = Some(reason.to_string());
        self.close_run(RunEnd::Interrupted, at);
        true
    }

    /// Starts a new run: a resume needs an interrupted task, a rerun an interrupted or
    /// ended one; false (and unchanged) otherwise.
    pub(super) fn reopen(&mut self, start: &RunStart, replayed: u64, at: SystemTime) -> bool {
        let allowed = match start {
            RunStart::Launch => false,
            RunStart::Resume => self.state == TaskState::Interrupted,
            RunStart::Rerun { .. } => {
                self.state == TaskState::Interrupted || self.state.is_terminal()
            }
        };
        if !allowed {
            return false;
        }
        self.state = TaskState::Running;
        self.final_ctx = None;
        self.error = None;
        self.finished_at = None;
        self.runs.push(TaskRun {
            run_id: Self::run_id_of(&self.task_id),
            start: start.clone(),
            end: None,
            started_at_ms: unix_ms(at),
            ended_at_ms: None,
            replayed_steps: replayed,
        });
        true
    }

    /// About how many bytes this record takes in a response.
    pub fn wire_len(&self) -> usize {
        let ids: usize = self.step_ids.iter().map(|s| s.len() + 2).sum();
        self.final_ctx.as_ref().map_or(0, crate::limits::wire_len)
            + self.error.as_ref().map_or(0, String::len)
            + ids
            + self.task_id.len()
            + self.blueprint_id.len()
            + self.operator_sid.as_ref().map_or(0, String::len)
            + self.runs.len() * 96
            + 256
    }

    /// Counts a dispatched step, keeping only the newest [`STEP_IDS_KEPT`] ids.
    pub(super) fn note_step(&mut self, step_id: String) {
        self.step_ids.push_back(step_id);
        while self.step_ids.len() > STEP_IDS_KEPT {
            self.step_ids.pop_front();
        }
        self.step_count += 1;
    }

    /// Applies a terminal event; false (and unchanged) for any other kind.
    pub(super) fn end(&mut self, kind: &TaskEventKind, at: SystemTime) -> bool {
        match kind {
            TaskEventKind::Completed { final_ctx } => {
                self.state = TaskState::Completed;
                self.final_ctx = Some(final_ctx.clone());
                self.close_run(RunEnd::Completed, at);
            }
            TaskEventKind::Failed { error } => {
                self.state = TaskState::Failed;
                self.error = Some(error.clone());
                self.close_run(RunEnd::Failed, at);
            }
            TaskEventKind::Cancelled { reason } => {
                self.state = TaskState::Cancelled;
                self.error = Some(reason.clone());
                self.close_run(RunEnd::Cancelled, at);
            }
            _ => return false,
        }
        self.finished_at = Some(at);
        true
    }
}

/// Where a task sits in the newest-first listing: by creation time, then id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskPosition {
    /// When the task was created.
    pub created_at: SystemTime,
    /// Its id (breaks ties).
    pub task_id: String,
}

impl TaskPosition {
    /// The position of `record`.
    pub fn of(record: &TaskRecord) -> Self {
        Self {
            created_at: record.created_at,
            task_id: record.task_id.clone(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TaskEventKind {
    /// The task was accepted and its flow started.
    Started {
        /// The Blueprint's id.
        blueprint_id: String,
        /// Hex version for stored Blueprints.
        bound_version: Option<String>,
    },
    /// A step was handed to its agent.
    StepDispatched {
        /// Engine step id.
        step_id: String,
        /// Agent name.
        agent: String,
    },
    /// A step ended.
    StepFinished {
        /// Engine step id.
        step_id: String,
        /// Passed (true) or blocked / failed (false).
        ok: bool,
        /// The step's result value.
        result: Value,
    },
    /// The flow finished.
    Completed {
        /// The final flow context.
        final_ctx: Value,
    },
    /// The flow failed.
    Failed {
        /// Why.
        error: String,
    },
    /// The task was cancelled.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// The task's run was cut by a server restart (not an end: a resume follows).
    Interrupted {
        /// Why ("server restart").
        reason: String,
    },
    /// A new run of the task started: a resume or a rerun.
    RunStarted {
        /// How it started.
        start: RunStart,
        /// Steps the journal could answer.
        replayed_steps: u64,
    },
}

impl TaskEventKind {
    /// True for the event that ends a task (the last one it has).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskEventKind::Completed { .. }
                | TaskEventKind::Failed { .. }
                | TaskEventKind::Cancelled { .. }
        )
    }
}

/// One event of a task.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    /// 1-based position in the task's list.
    pub seq: u64,
    /// When it was recorded.
    pub at: SystemTime,
    /// The task.
    pub task_id: String,
    /// What happened.
    pub kind: TaskEventKind,
}

#[cfg(test)]
pub(super) fn running(id: &str) -> TaskRecord {
    TaskRecord {
        task_id: id.into(),
        state: TaskState::Running,
        final_ctx: None,
        error: None,
        bound_version: None,
        effective_ttl_secs: 1800,
        ttl_source: TtlSource::ServerDefault,
        created_at: SystemTime::now(),
        finished_at: None,
        blueprint_id: "bp".into(),
        operator_sid: None,
        step_ids: VecDeque::new(),
        step_count: 0,
        runs: Vec::new(),
        launch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_step_ids_are_kept_but_all_are_counted() {
        let mut rec = running("t");
        for i in 0..STEP_IDS_KEPT + 5 {
            rec.note_step(format!("ST-{i}"));
        }
        assert_eq!(rec.step_ids.len(), STEP_IDS_KEPT);
        assert_eq!(rec.step_ids.front().map(String::as_str), Some("ST-5"));
        assert_eq!(rec.step_count, (STEP_IDS_KEPT + 5) as u64);
    }

    #[test]
    fn only_terminal_events_end_a_record() {
        let mut rec = running("t");
        let step = TaskEventKind::StepDispatched {
            step_id: "s".into(),
            agent: "a".into(),
        };
        assert!(!step.is_terminal());
        assert!(!rec.end(&step, SystemTime::now()));
        assert_eq!(rec.state, TaskState::Running);
        let cancel = TaskEventKind::Cancelled { reason: "r".into() };
        assert!(cancel.is_terminal());
        assert!(rec.end(&cancel, SystemTime::now()));
        assert_eq!(rec.state, TaskState::Cancelled);
        assert_eq!(rec.error.as_deref(), Some("r"));
        assert!(rec.finished_at.is_some());
    }
}
