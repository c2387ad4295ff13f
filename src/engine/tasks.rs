//! The registry of task runs: records, their event lists, and watchers.
//!
//! In memory, bounded: finished tasks past the retention count are dropped oldest first.

use std::collections::{HashMap, HashSet, VecDeque};

/// Step ids a task record keeps (the most recent); `step_count` counts them all.
pub const STEP_IDS_KEPT: usize = 100;
/// Events a task keeps for WatchTask replay (the most recent); long loops drop the oldest.
pub const EVENTS_KEPT: usize = 10_000;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::watch;

use super::census::{Bound, StructureCounts};

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// The flow is running.
    Running,
    /// The flow finished; `final_ctx` is set.
    Completed,
    /// The flow failed; `error` says why.
    Failed,
    /// CancelTask stopped it.
    Cancelled,
}

impl TaskState {
    /// True once the task can change no more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Running)
    }
}

/// Where the effective TTL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlSource {
    /// The request's `ttl_secs`.
    RequestBody,
    /// The Blueprint's `metadata.default_run_ttl_secs`.
    BpMetadata,
    /// The server default, 1800 s.
    ServerDefault,
}

/// One task run as callers see it.
#[derive(Debug, Clone)]
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
    pub step_ids: Vec<String>,
    /// Steps dispatched so far.
    pub step_count: u64,
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

impl TaskRecord {
    /// About how many bytes this record takes in a response.
    pub fn wire_len(&self) -> usize {
        let ids: usize = self.step_ids.iter().map(|s| s.len() + 2).sum();
        self.final_ctx.as_ref().map_or(0, crate::limits::wire_len)
            + self.error.as_ref().map_or(0, String::len)
            + ids
            + self.task_id.len()
            + self.blueprint_id.len()
            + self.operator_sid.as_ref().map_or(0, String::len)
            + 256
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
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

struct Entry {
    record: TaskRecord,
    events: VecDeque<TaskEvent>,
    next_seq: u64,
    dispatched: HashSet<String>,
    finished_steps: HashSet<String>,
    notify: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, Entry>,
    finished_order: VecDeque<String>,
}

/// The in-memory [`TaskStore`].
pub struct TaskRegistry {
    inner: Mutex<Inner>,
    retention: usize,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl TaskRegistry {
    /// A registry keeping at most `retention` finished tasks.
    pub fn new(retention: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            retention: retention.max(1),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

/// Where task records and their events live: in memory by default ([`TaskRegistry`]); a
/// shared store can stand behind it when the server runs as several replicas.
pub trait TaskStore: Send + Sync {
    /// Adds a running task and its `Started` event.
    fn create(&self, record: TaskRecord);
    /// True if `task_id` is known and running.
    fn is_running(&self, task_id: &str) -> bool;
    /// Appends an event to a running task (step events de-duplicated by step id); false if
    /// the task is unknown, finished, or the event a duplicate.
    fn push(&self, task_id: &str, kind: TaskEventKind) -> bool;
    /// Ends a running task with its terminal event; None if unknown or already ended.
    fn finish(&self, task_id: &str, kind: TaskEventKind) -> Option<TaskRecord>;
    /// Reads one task.
    fn get(&self, task_id: &str) -> Option<TaskRecord>;
    /// Lists tasks newest first, optionally only those in `state`, starting after
    /// `after` (the position of the last task of the previous page).
    fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Vec<TaskRecord>;
    /// Events with seq > `after`, and a receiver that changes when more arrive.
    fn events_after(
        &self,
        task_id: &str,
        after: u64,
    ) -> Option<(Vec<TaskEvent>, watch::Receiver<u64>)>;
    /// Number of tasks held.
    fn len(&self) -> usize;
    /// True when no task is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What the store holds, for [`EngineHost::structure_counts`](super::EngineHost).
    fn structure_counts(&self) -> StructureCounts {
        let mut c = StructureCounts::default();
        c.insert("registry.tasks", self.len(), Bound::PerClient);
        c
    }
}

impl TaskStore for TaskRegistry {
    /// Adds a running task and its `Started` event.
    fn create(&self, record: TaskRecord) {
        let started = TaskEventKind::Started {
            blueprint_id: record.blueprint_id.clone(),
            bound_version: record.bound_version.clone(),
        };
        let id = record.task_id.clone();
        let (notify, _) = watch::channel(0);
        self.with(|inner| {
            inner.tasks.insert(
                id.clone(),
                Entry {
                    record,
                    events: VecDeque::new(),
                    next_seq: 1,
                    dispatched: HashSet::new(),
                    finished_steps: HashSet::new(),
                    notify,
                },
            );
        });
        self.push(&id, started);
    }

    /// True if `task_id` is known and running.
    fn is_running(&self, task_id: &str) -> bool {
        self.with(|inner| {
            inner
                .tasks
                .get(task_id)
                .is_some_and(|e| !e.record.state.is_terminal())
        })
    }

    /// Appends an event to a running task. Step events are de-duplicated by step id.
    /// Returns false if the task is unknown, finished, or the event is a duplicate.
    fn push(&self, task_id: &str, kind: TaskEventKind) -> bool {
        self.with(|inner| {
            let Some(entry) = inner.tasks.get_mut(task_id) else {
                return false;
            };
            if entry.record.state.is_terminal() {
                return false;
            }
            match &kind {
                TaskEventKind::StepDispatched { step_id, .. } => {
                    if !entry.dispatched.insert(step_id.clone()) {
                        return false;
                    }
                    let ids = &mut entry.record.step_ids;
                    ids.push(step_id.clone());
                    if ids.len() > STEP_IDS_KEPT {
                        ids.remove(0);
                    }
                    entry.record.step_count += 1;
                }
                TaskEventKind::StepFinished { step_id, .. }
                    if !entry.finished_steps.insert(step_id.clone()) =>
                {
                    return false;
                }
                _ => {}
            }
            append(entry, task_id, kind);
            true
        })
    }

    /// Ends a running task with its terminal event. Returns the final record, or None if
    /// the task was unknown or had already ended (the first end wins).
    fn finish(&self, task_id: &str, kind: TaskEventKind) -> Option<TaskRecord> {
        let retention = self.retention;
        self.with(|inner| {
            let entry = inner.tasks.get_mut(task_id)?;
            if entry.record.state.is_terminal() {
                return None;
            }
            let rec = &mut entry.record;
            match &kind {
                TaskEventKind::Completed { final_ctx } => {
                    rec.state = TaskState::Completed;
                    rec.final_ctx = Some(final_ctx.clone());
                }
                TaskEventKind::Failed { error } => {
                    rec.state = TaskState::Failed;
                    rec.error = Some(error.clone());
                }
                TaskEventKind::Cancelled { reason } => {
                    rec.state = TaskState::Cancelled;
                    rec.error = Some(reason.clone());
                }
                _ => return None,
            }
            rec.finished_at = Some(SystemTime::now());
            let record = rec.clone();
            append(entry, task_id, kind);
            inner.finished_order.push_back(task_id.to_string());
            while inner.finished_order.len() > retention {
                if let Some(old) = inner.finished_order.pop_front() {
                    inner.tasks.remove(&old);
                }
            }
            Some(record)
        })
    }

    /// Reads one task.
    fn get(&self, task_id: &str) -> Option<TaskRecord> {
        self.with(|inner| inner.tasks.get(task_id).map(|e| e.record.clone()))
    }

    /// Lists tasks newest first, optionally only those in `state`, after `after`.
    fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Vec<TaskRecord> {
        self.with(|inner| {
            let mut keys: Vec<TaskPosition> = inner
                .tasks
                .values()
                .filter(|e| state.is_none_or(|s| e.record.state == s))
                .map(|e| TaskPosition::of(&e.record))
                .filter(|p| after.is_none_or(|a| p < a))
                .collect();
            keys.sort_by(|a, b| b.cmp(a));
            keys.truncate(limit);
            keys.iter()
                .filter_map(|k| inner.tasks.get(&k.task_id).map(|e| e.record.clone()))
                .collect()
        })
    }

    /// Events with seq > `after`, and a receiver that changes when more arrive.
    /// None if the task is unknown.
    fn events_after(
        &self,
        task_id: &str,
        after: u64,
    ) -> Option<(Vec<TaskEvent>, watch::Receiver<u64>)> {
        self.with(|inner| {
            let entry = inner.tasks.get(task_id)?;
            let events = entry
                .events
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect();
            Some((events, entry.notify.subscribe()))
        })
    }

    /// Number of tasks held (running and retained finished ones).
    fn len(&self) -> usize {
        self.with(|inner| inner.tasks.len())
    }

    fn structure_counts(&self) -> StructureCounts {
        let retention = self.retention;
        self.with(|inner| {
            let running = inner
                .tasks
                .values()
                .filter(|e| !e.record.state.is_terminal())
                .count();
            let sum = |f: fn(&Entry) -> usize| inner.tasks.values().map(f).sum::<usize>();
            let mut c = StructureCounts::default();
            c.insert("registry.running", running, Bound::PerTask);
            c.insert(
                "registry.finished",
                inner.tasks.len() - running,
                Bound::Retained(retention),
            );
            c.insert(
                "registry.finished_order",
                inner.finished_order.len(),
                Bound::Retained(retention),
            );
            let per_task =
                |n: usize| Bound::Retained(retention.saturating_add(running).saturating_mul(n));
            c.insert(
                "registry.events",
                sum(|e| e.events.len()),
                per_task(EVENTS_KEPT),
            );
            c.insert(
                "registry.step_ids",
                sum(|e| e.dispatched.len() + e.finished_steps.len() + e.record.step_ids.len()),
                per_task(usize::MAX),
            );
            c.insert(
                "registry.watchers",
                sum(|e| e.notify.receiver_count()),
                Bound::PerTask,
            );
            c
        })
    }
}

fn append(entry: &mut Entry, task_id: &str, kind: TaskEventKind) {
    let seq = entry.next_seq;
    entry.next_seq += 1;
    entry.events.push_back(TaskEvent {
        seq,
        at: SystemTime::now(),
        task_id: task_id.to_string(),
        kind,
    });
    if entry.events.len() > EVENTS_KEPT {
        entry.events.pop_front();
    }
    entry.notify.send_replace(seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> TaskRecord {
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
            step_ids: vec![],
            step_count: 0,
        }
    }

    #[test]
    fn first_end_wins_and_later_events_are_refused() {
        let reg = TaskRegistry::new(10);
        reg.create(record("t1"));
        let step = |id: &str| TaskEventKind::StepDispatched {
            step_id: id.into(),
            agent: "a".into(),
        };
        assert!(reg.push("t1", step("ST-1")));
        assert!(!reg.push("t1", step("ST-1")), "duplicate step");
        let done = reg.finish(
            "t1",
            TaskEventKind::Completed {
                final_ctx: Value::Null,
            },
        );
        assert_eq!(done.map(|r| r.state), Some(TaskState::Completed));
        assert!(reg
            .finish("t1", TaskEventKind::Cancelled { reason: "x".into() })
            .is_none());
        assert!(!reg.push("t1", step("ST-2")));
        let (events, _) = reg.events_after("t1", 0).expect("known");
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn finished_tasks_beyond_retention_are_dropped_oldest_first() {
        let reg = TaskRegistry::new(2);
        for i in 0..5 {
            let id = format!("t{i}");
            reg.create(record(&id));
            reg.finish(&id, TaskEventKind::Failed { error: "e".into() });
        }
        assert_eq!(reg.len(), 2);
        assert!(reg.get("t0").is_none() && reg.get("t4").is_some());
    }
}
