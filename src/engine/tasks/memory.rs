//! The in-memory [`TaskStore`]: bounded, finished tasks past the retention count are
//! dropped oldest first. One lock, never held across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskState, TaskStore, EVENTS_KEPT,
};
use crate::engine::census::{Bound, StructureCounts};
use crate::error::Result;

struct Entry {
    record: TaskRecord,
    /// Ascending seqs, oldest first (consecutive unless restored after a kill).
    events: VecDeque<TaskEvent>,
    next_seq: u64,
    dispatched: HashSet<String>,
    finished_steps: HashSet<String>,
    notify: watch::Sender<u64>,
}

impl Entry {
    fn append(&mut self, kind: TaskEventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back(TaskEvent {
            seq,
            at: SystemTime::now(),
            task_id: self.record.task_id.clone(),
            kind,
        });
        if self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        self.notify.send_replace(seq);
    }

    /// Events with seq > `after`, at most `limit`, found by binary search rather than by
    /// a scan. Seqs ascend but may have gaps: a history restored after a kill can miss
    /// an event whose write the kill beat while a later one was committed.
    fn events_after(&self, after: u64, limit: usize) -> Vec<TaskEvent> {
        let skip = self.events.partition_point(|e| e.seq <= after);
        self.events.iter().skip(skip).take(limit).cloned().collect()
    }
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, Entry>,
    finished_order: VecDeque<String>,
}

/// Told the ids of tasks retention dropped, so their runs and journals go too.
pub(crate) type EvictHook = Box<dyn Fn(Vec<String>) + Send + Sync>;

/// The in-memory [`TaskStore`].
pub struct TaskRegistry {
    inner: Mutex<Inner>,
    retention: usize,
    on_evict: Option<EvictHook>,
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
            on_evict: None,
        }
    }

    /// The same registry, telling `hook` which tasks retention dropped.
    pub fn with_evict_hook(mut self, hook: EvictHook) -> Self {
        self.on_evict = Some(hook);
        self
    }

    /// Puts back a task read from a durable store, with its newest events (oldest
    /// first). A finished task joins the retention order in the order restored.
    pub(super) fn restore(&self, record: TaskRecord, events: Vec<TaskEvent>) {
        let next_seq = events.last().map_or(1, |e| e.seq + 1);
        let mut dispatched = HashSet::new();
        let mut finished_steps = HashSet::new();
        for e in &events {
            match &e.kind {
                TaskEventKind::StepDispatched { step_id, .. } => {
                    dispatched.insert(step_id.clone());
                }
                TaskEventKind::StepFinished { step_id, .. } => {
                    finished_steps.insert(step_id.clone());
                }
                _ => {}
            }
        }
        let entry = Entry {
            events: events.into(),
            next_seq,
            dispatched,
            finished_steps,
            notify: watch::channel(next_seq - 1).0,
            record,
        };
        self.with(|inner| {
            let id = entry.record.task_id.clone();
            if entry.record.state.is_terminal() {
                inner.finished_order.push_back(id.clone());
            }
            inner.tasks.insert(id, entry);
        });
    }

    /// Tasks held that have not finished (running or interrupted).
    pub(super) fn unfinished(&self) -> usize {
        self.with(|inner| inner.tasks.len().saturating_sub(inner.finished_order.len()))
    }

    /// Drops a task whatever its state (another replica runs it now); its watchers'
    /// receivers close.
    pub(super) fn forget(&self, task_id: &str) {
        self.with(|inner| {
            if inner.tasks.remove(task_id).is_some() {
                inner.finished_order.retain(|id| id != task_id);
            }
        });
    }

    /// [`TaskStore::finish`], also returning the ids retention dropped.
    pub(super) fn finish_evicting(
        &self,
        task_id: &str,
        end: TaskEventKind,
    ) -> Option<(TaskRecord, u64, Vec<String>)> {
        let retention = self.retention;
        self.with(|inner| {
            let entry = inner.tasks.get_mut(task_id)?;
            if entry.record.state.is_terminal() || !entry.record.end(&end, SystemTime::now()) {
                return None;
            }
            let record = entry.record.clone();
            entry.append(end);
            let seq = entry.next_seq - 1;
            inner.finished_order.push_back(task_id.to_string());
            let mut dropped = Vec::new();
            while inner.finished_order.len() > retention {
                if let Some(old) = inner.finished_order.pop_front() {
                    if inner
                        .tasks
                        .get(&old)
                        .is_some_and(|e| e.record.state.is_terminal())
                    {
                        inner.tasks.remove(&old);
                        dropped.push(old);
                    }
                }
            }
            Some((record, seq, dropped))
        })
    }

    /// Tells the hook which tasks were dropped.
    pub(super) fn evicted(&self, dropped: Vec<String>) {
        if let (Some(hook), false) = (&self.on_evict, dropped.is_empty()) {
            hook(dropped);
        }
    }

    /// Changes the record of a task and appends `kind`; the record and the event's seq,
    /// or None if `change` refused (returned false) or the task is unknown.
    pub(super) fn change(
        &self,
        task_id: &str,
        kind: TaskEventKind,
        change: impl FnOnce(&mut TaskRecord) -> bool,
    ) -> Option<(TaskRecord, u64)> {
        self.with(|inner| {
            let was_finished = inner
                .tasks
                .get(task_id)
                .is_some_and(|e| e.record.state.is_terminal());
            let entry = inner.tasks.get_mut(task_id)?;
            if !change(&mut entry.record) {
                return None;
            }
            entry.append(kind);
            let out = (entry.record.clone(), entry.next_seq - 1);
            if was_finished && !entry.record.state.is_terminal() {
                inner.finished_order.retain(|id| id != task_id);
            }
            Some(out)
        })
    }

    /// [`TaskStore::interrupt`], also returning the event's seq.
    pub(super) fn interrupt_noting(
        &self,
        task_id: &str,
        reason: &str,
    ) -> Option<(TaskRecord, u64)> {
        let kind = TaskEventKind::Interrupted {
            reason: reason.to_string(),
        };
        let now = SystemTime::now();
        self.change(task_id, kind, |r| r.interrupt(reason, now))
    }

    /// [`TaskStore::reopen`], also returning the event's seq.
    pub(super) fn reopen_noting(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Option<(TaskRecord, u64)> {
        let now = SystemTime::now();
        let kind = TaskEventKind::RunStarted {
            start: start.clone(),
            replayed_steps,
        };
        self.change(task_id, kind, |r| r.reopen(&start, replayed_steps, now))
    }

    /// [`TaskStore::push`], also returning the record and the event's seq.
    pub(super) fn push_noting(
        &self,
        task_id: &str,
        kind: TaskEventKind,
    ) -> Option<(TaskRecord, u64)> {
        self.push_then(task_id, kind, |record, _| record.clone())
    }

    /// [`TaskStore::push`], also returning what `then` takes of the record (given the
    /// event's seq), and the seq.
    pub(super) fn push_then<T>(
        &self,
        task_id: &str,
        kind: TaskEventKind,
        then: impl FnOnce(&TaskRecord, u64) -> T,
    ) -> Option<(T, u64)> {
        self.with_entry(task_id, |entry| {
            if entry.record.state != TaskState::Running {
                return None;
            }
            match &kind {
                TaskEventKind::StepDispatched { step_id, .. } => {
                    if !entry.dispatched.insert(step_id.clone()) {
                        return None;
                    }
                    entry.record.note_step(step_id.clone());
                }
                TaskEventKind::StepFinished { step_id, .. }
                    if !entry.finished_steps.insert(step_id.clone()) =>
                {
                    return None;
                }
                TaskEventKind::Started { .. }
                | TaskEventKind::Interrupted { .. }
                | TaskEventKind::RunStarted { .. } => return None,
                _ if kind.is_terminal() => return None,
                _ => {}
            }
            entry.append(kind);
            let seq = entry.next_seq - 1;
            Some((then(&entry.record, seq), seq))
        })
        .flatten()
    }

    /// [`TaskStore::create`], returning the `Started` event.
    pub(super) fn create_noting(&self, record: TaskRecord) -> TaskEvent {
        let started = TaskEventKind::Started {
            blueprint_id: record.blueprint_id.clone(),
            bound_version: record.bound_version.clone(),
        };
        let mut entry = Entry {
            record,
            events: VecDeque::new(),
            next_seq: 1,
            dispatched: HashSet::new(),
            finished_steps: HashSet::new(),
            notify: watch::channel(0).0,
        };
        entry.append(started);
        let event = entry.events[0].clone();
        self.with(|inner| inner.tasks.insert(entry.record.task_id.clone(), entry));
        event
    }

    /// The event with seq `seq` of a task, if still held.
    pub(super) fn event(&self, task_id: &str, seq: u64) -> Option<TaskEvent> {
        self.with_entry(task_id, |e| e.events_after(seq - 1, 1).pop())
            .flatten()
    }

    /// Runs `f` under the lock; `f` cannot await, so the lock is never held across one.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn with_entry<R>(&self, task_id: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.with(|inner| inner.tasks.get_mut(task_id).map(f))
    }
}

#[async_trait]
impl TaskStore for TaskRegistry {
    async fn create(&self, record: TaskRecord) -> Result<()> {
        self.create_noting(record);
        Ok(())
    }

    async fn push(&self, task_id: &str, kind: TaskEventKind) -> Result<bool> {
        Ok(self.push_then(task_id, kind, |_, _| ()).is_some())
    }

    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>> {
        let Some((record, _, dropped)) = self.finish_evicting(task_id, end) else {
            return Ok(None);
        };
        self.evicted(dropped);
        Ok(Some(record))
    }

    async fn interrupt(&self, task_id: &str, reason: &str) -> Result<Option<TaskRecord>> {
        Ok(self.interrupt_noting(task_id, reason).map(|(r, _)| r))
    }

    async fn reopen(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Result<Option<TaskRecord>> {
        Ok(self
            .reopen_noting(task_id, start, replayed_steps)
            .map(|(r, _)| r))
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.with_entry(task_id, |e| e.record.clone()))
    }

    async fn is_running(&self, task_id: &str) -> Result<bool> {
        Ok(self
            .with_entry(task_id, |e| e.record.state == TaskState::Running)
            .unwrap_or(false))
    }

    async fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        Ok(self.with(|inner| {
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
        }))
    }

    async fn events_after(
        &self,
        task_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<TaskEvent>>> {
        Ok(self.with_entry(task_id, |e| e.events_after(after, limit)))
    }

    async fn subscribe(&self, task_id: &str) -> Result<Option<watch::Receiver<u64>>> {
        Ok(self.with_entry(task_id, |e| e.notify.subscribe()))
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.with(|inner| inner.tasks.len()))
    }

    async fn structure_counts(&self) -> StructureCounts {
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::record::running;
    use super::*;

    fn step(id: &str) -> TaskEventKind {
        TaskEventKind::StepDispatched {
            step_id: id.into(),
            agent: "a".into(),
        }
    }

    fn finished(id: &str, ok: bool) -> TaskEventKind {
        TaskEventKind::StepFinished {
            step_id: id.into(),
            ok,
            result: Value::Null,
        }
    }

    fn seqs(events: &[TaskEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn a_history_restored_with_a_gap_still_takes_new_events() {
        // A kill can beat the write of event 3 while event 4 was committed.
        let event = |seq, kind| TaskEvent {
            seq,
            at: SystemTime::now(),
            task_id: "t1".into(),
            kind,
        };
        let reg = TaskRegistry::new(10);
        reg.restore(
            running("t1"),
            vec![
                event(1, step("ST-1")),
                event(2, finished("ST-1", true)),
                event(4, finished("ST-2", true)),
            ],
        );
        let (_, seq) = reg
            .interrupt_noting("t1", "server restart")
            .expect("interrupt");
        assert_eq!(seq, 5);
        assert_eq!(reg.event("t1", 5).map(|e| e.seq), Some(5));
        assert_eq!(reg.event("t1", 4).map(|e| e.seq), Some(4));
        let after_two = reg.events_after("t1", 2, 10).await.expect("events");
        assert_eq!(seqs(&after_two.expect("task")), vec![4, 5]);
    }

    #[tokio::test]
    async fn first_end_wins_and_later_events_are_refused() {
        let reg = TaskRegistry::new(10);
        reg.create(running("t1")).await.expect("create");
        assert!(reg.push("t1", step("ST-1")).await.expect("push"));
        assert!(
            !reg.push("t1", step("ST-1")).await.expect("push"),
            "duplicate step"
        );
        let done = reg
            .finish(
                "t1",
                TaskEventKind::Completed {
                    final_ctx: Value::Null,
                },
            )
            .await
            .expect("finish");
        assert_eq!(done.map(|r| r.state), Some(TaskState::Completed));
        let again = TaskEventKind::Cancelled { reason: "x".into() };
        assert!(reg.finish("t1", again).await.expect("finish").is_none());
        assert!(!reg.push("t1", step("ST-2")).await.expect("push"));
        assert!(!reg.is_running("t1").await.expect("running"));
        let events = reg.events_after("t1", 0, 100).await.expect("read");
        assert_eq!(seqs(&events.expect("known")), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn step_events_are_deduplicated_by_step_id_and_kind() {
        let reg = TaskRegistry::new(10);
        reg.create(running("t")).await.expect("create");
        assert!(reg.push("t", step("S1")).await.expect("push"));
        assert!(reg.push("t", finished("S1", true)).await.expect("push"));
        assert!(!reg.push("t", finished("S1", false)).await.expect("push"));
        assert!(!reg.push("t", step("S1")).await.expect("push"));
        assert!(reg.push("t", step("S2")).await.expect("push"));
        let not_a_step = TaskEventKind::Failed { error: "e".into() };
        assert!(
            !reg.push("t", not_a_step).await.expect("push"),
            "ends go through finish"
        );
        assert!(
            !reg.push("nope", step("S3")).await.expect("push"),
            "unknown task"
        );
        let rec = reg.get("t").await.expect("get").expect("known");
        assert_eq!(rec.step_count, 2);
        assert_eq!(Vec::from(rec.step_ids), vec!["S1", "S2"]);
    }

    #[tokio::test]
    async fn finished_tasks_beyond_retention_are_dropped_oldest_first() {
        let reg = TaskRegistry::new(2);
        reg.create(running("live")).await.expect("create");
        for i in 0..5 {
            let id = format!("t{i}");
            reg.create(running(&id)).await.expect("create");
            let end = TaskEventKind::Failed { error: "e".into() };
            reg.finish(&id, end).await.expect("finish");
        }
        assert_eq!(
            reg.len().await.expect("len"),
            3,
            "two finished + the running one"
        );
        assert!(reg.get("t0").await.expect("get").is_none());
        assert!(reg.get("t4").await.expect("get").is_some());
        assert!(
            reg.is_running("live").await.expect("running"),
            "running tasks are kept"
        );
        let c = reg.structure_counts().await;
        assert_eq!(c.get("registry.finished"), 2);
        assert!(c.over_cap().is_empty(), "{c}");
    }

    #[tokio::test]
    async fn events_are_read_in_pages_and_only_the_newest_are_kept() {
        let reg = TaskRegistry::new(10);
        reg.create(running("t")).await.expect("create");
        for i in 0..EVENTS_KEPT + 10 {
            reg.push("t", step(&format!("S{i}"))).await.expect("push");
        }
        let newest = (EVENTS_KEPT + 11) as u64;
        let page = reg
            .events_after("t", 0, 3)
            .await
            .expect("read")
            .expect("known");
        assert_eq!(seqs(&page), vec![12, 13, 14], "seqs 1..=11 were dropped");
        let page = reg
            .events_after("t", 20, 2)
            .await
            .expect("read")
            .expect("known");
        assert_eq!(seqs(&page), vec![21, 22]);
        let tail = reg.events_after("t", newest - 1, 10).await.expect("read");
        assert_eq!(seqs(&tail.expect("known")), vec![newest]);
        let none = reg.events_after("t", newest, 10).await.expect("read");
        assert!(none.expect("known").is_empty());
        assert!(reg
            .events_after("nope", 0, 10)
            .await
            .expect("read")
            .is_none());
    }

    #[tokio::test]
    async fn a_subscriber_sees_each_append_and_the_close_when_the_task_is_dropped() {
        let reg = TaskRegistry::new(1);
        reg.create(running("t")).await.expect("create");
        let mut rx = reg.subscribe("t").await.expect("sub").expect("known");
        assert_eq!(*rx.borrow_and_update(), 1);
        reg.push("t", step("S")).await.expect("push");
        rx.changed().await.expect("open");
        assert_eq!(*rx.borrow_and_update(), 2);
        let end = TaskEventKind::Failed { error: "e".into() };
        reg.finish("t", end).await.expect("finish");
        reg.create(running("u")).await.expect("create");
        let end = TaskEventKind::Failed { error: "e".into() };
        reg.finish("u", end).await.expect("finish");
        rx.changed().await.expect("the end of t");
        assert!(rx.changed().await.is_err(), "t was dropped by retention");
        assert!(reg.subscribe("t").await.expect("sub").is_none());
    }

    #[tokio::test]
    async fn list_pages_newest_first_by_position_and_filters_by_state() {
        let reg = TaskRegistry::new(10);
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        for i in 0..5u64 {
            let mut rec = running(&format!("t{i}"));
            rec.created_at = base + std::time::Duration::from_secs(i);
            reg.create(rec).await.expect("create");
        }
        let end = TaskEventKind::Failed { error: "e".into() };
        reg.finish("t3", end).await.expect("finish");
        let ids = |v: Vec<TaskRecord>| v.into_iter().map(|r| r.task_id).collect::<Vec<_>>();
        let first = reg.list(None, None, 2).await.expect("list");
        assert_eq!(ids(first.clone()), vec!["t4", "t3"]);
        let after = TaskPosition::of(first.last().expect("two"));
        let second = reg.list(None, Some(&after), 2).await.expect("list");
        assert_eq!(ids(second), vec!["t2", "t1"]);
        let failed = reg
            .list(Some(TaskState::Failed), None, 10)
            .await
            .expect("list");
        assert_eq!(ids(failed), vec!["t3"]);
    }
}
