//! The durable [`TaskStore`]: every change is written to the state file (SQLite, WAL,
//! `engine::disk`) before it is acknowledged, and the held tasks are read back at boot. Reads are served by the
//! in-memory [`TaskRegistry`] the store keeps in step with the file, so the rules of the
//! seam (seqs, de-duplication, retention) live in one place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use tokio::sync::watch;

use super::memory::EvictHook;
use super::{
    RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskRegistry, TaskState,
    TaskStore,
};
use crate::engine::census::StructureCounts;
use crate::engine::disk::{GroupWriter, Write};
use crate::error::{Error, Result};

/// The SQLite [`TaskStore`] (`tasks.sqlite` under the data dir).
pub struct SqliteTaskStore {
    mem: Arc<TaskRegistry>,
    writer: Arc<GroupWriter>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTaskStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteTaskStore {
    /// Reads back the tasks the state file holds. A file that is not a readable store
    /// fails with a message naming it.
    pub(in crate::engine) async fn open(
        writer: Arc<GroupWriter>,
        retention: usize,
        on_evict: EvictHook,
    ) -> Result<Self> {
        let path = writer.path().to_path_buf();
        let fail = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!(
                "cannot open the task store {}: {e}",
                path.display()
            ))
        };
        let mem = Arc::new(TaskRegistry::new(retention).with_evict_hook(on_evict));
        let rows = writer.isle().call(load).await.map_err(|e| fail(&e))?;
        for stored in rows {
            let mut record: TaskRecord =
                serde_json::from_str(&stored.record).map_err(|e| fail(&e))?;
            record.launch = match stored.launch {
                Some(l) => Some(Arc::new(serde_json::from_str(&l).map_err(|e| fail(&e))?)),
                None => None,
            };
            let task_id = record.task_id.clone();
            let events = stored
                .events
                .into_iter()
                .map(|(seq, at_ms, kind)| {
                    Ok(TaskEvent {
                        seq,
                        at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
                        task_id: task_id.clone(),
                        kind: serde_json::from_str(&kind).map_err(|e| fail(&e))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            count_later_steps(&mut record, stored.rev, &events);
            mem.restore(record, events);
        }
        let open = Arc::clone(&mem);
        writer.measure_load(Box::new(move || open.unfinished()));
        Ok(Self { mem, writer, path })
    }

    fn event(&self, task_id: &str, seq: u64) -> Result<TaskEvent> {
        self.mem
            .event(task_id, seq)
            .ok_or_else(|| Error::Internal(format!("event {seq} of {task_id} vanished")))
    }
}

/// How long a caller waits for a task's end to be committed before it is told to read
/// the task again.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// A change (with the record it produced, if it is written) that drops no task.
fn write(record: impl Into<Option<TaskRecord>>, event: TaskEvent) -> Write {
    Write::Task {
        record: record.into(),
        event,
        dropped: Vec::new(),
    }
}

/// A step's events carry the task's record only this often, so the events a record is
/// older than stay far fewer than the [`super::EVENTS_KEPT`] a task keeps.
const RECORD_EVERY: u64 = 64;

/// Counts the steps dispatched after the record was stored (at seq `rev`): a step's
/// event is written without the record ([`TaskStore::push`]).
fn count_later_steps(record: &mut TaskRecord, rev: u64, events: &[TaskEvent]) {
    for event in events.iter().filter(|e| e.seq > rev) {
        if let TaskEventKind::StepDispatched { step_id, .. } = &event.kind {
            record.note_step(step_id.clone());
        }
    }
}

/// A task as the state file holds it (JSON as stored).
struct StoredTask {
    record: String,
    /// The seq of the event the record is as of.
    rev: u64,
    launch: Option<String>,
    /// `(seq, at_ms, kind)`, oldest first.
    events: Vec<(u64, u64, String)>,
}

/// Every held task (finished ones in the order they finished) with its events.
fn load(conn: &mut rusqlite::Connection) -> rusqlite::Result<Vec<StoredTask>> {
    let mut tasks = conn.prepare(
        "SELECT task_id, record, launch, rev FROM tasks \
         ORDER BY finished_ms IS NOT NULL, finished_ms, rowid",
    )?;
    let mut events =
        conn.prepare("SELECT seq, at_ms, kind FROM task_events WHERE task_id = ?1 ORDER BY seq")?;
    let rows: Vec<(String, String, Option<String>, i64)> = tasks
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (task_id, record, launch, rev) in rows {
        let evs = events
            .query_map([&task_id], |r| {
                let seq: i64 = r.get(0)?;
                let at: i64 = r.get(1)?;
                Ok((seq.max(0) as u64, at.max(0) as u64, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(StoredTask {
            record,
            rev: rev.max(0) as u64,
            launch,
            events: evs,
        });
    }
    Ok(out)
}

#[async_trait]
impl TaskStore for SqliteTaskStore {
    async fn create(&self, record: TaskRecord) -> Result<()> {
        self.writer
            .change(|| {
                let event = self.mem.create_noting(record.clone());
                Ok(Some(((), write(record, event))))
            })
            .await
            .map(|_| ())
    }

    async fn create_queued(&self, record: TaskRecord) -> Result<()> {
        self.writer.change_queued(|| {
            let event = self.mem.create_noting(record.clone());
            Ok(Some(((), write(record, event))))
        })?;
        Ok(())
    }

    /// Queued, not waited for: a step's events answer nobody, and the task's end, which
    /// is waited for, is written after them. Mostly only the event is written: the
    /// record's step count and ids are counted from the events at boot
    /// ([`count_later_steps`]), and the record goes with every [`RECORD_EVERY`]th event.
    async fn push(&self, task_id: &str, kind: TaskEventKind) -> Result<bool> {
        let pushed = self.writer.change_queued(|| {
            let Some((record, seq)) = self.mem.push_then(task_id, kind, |record, seq| {
                seq.is_multiple_of(RECORD_EVERY).then(|| record.clone())
            }) else {
                return Ok(None);
            };
            let event = self.event(task_id, seq)?;
            Ok(Some(((), write(record, event))))
        })?;
        Ok(pushed.is_some())
    }

    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>> {
        let finished = self
            .writer
            .change(|| {
                let Some((record, seq, dropped)) = self.mem.finish_evicting(task_id, end) else {
                    return Ok(None);
                };
                let event = self.event(task_id, seq)?;
                let done = (record.clone(), dropped.clone());
                Ok(Some((
                    done,
                    Write::Task {
                        record: Some(record),
                        event,
                        dropped,
                    },
                )))
            })
            .await?;
        Ok(finished.map(|(record, dropped)| {
            self.mem.evicted(dropped);
            record
        }))
    }

    async fn interrupt(&self, task_id: &str, reason: &str) -> Result<Option<TaskRecord>> {
        self.write_changed(|| self.mem.interrupt_noting(task_id, reason), Clone::clone)
            .await
    }

    async fn reopen(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Result<Option<TaskRecord>> {
        self.write_changed(
            || self.mem.reopen_noting(task_id, start, replayed_steps),
            Clone::clone,
        )
        .await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>> {
        self.mem.get(task_id).await
    }

    async fn is_running(&self, task_id: &str) -> Result<bool> {
        self.mem.is_running(task_id).await
    }

    async fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        self.mem.list(state, after, limit).await
    }

    async fn events_after(
        &self,
        task_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<TaskEvent>>> {
        self.mem.events_after(task_id, after, limit).await
    }

    async fn subscribe(&self, task_id: &str) -> Result<Option<watch::Receiver<u64>>> {
        self.mem.subscribe(task_id).await
    }

    async fn settled(&self, task_id: &str) -> Result<()> {
        self.wait_settled(task_id).await
    }

    async fn len(&self) -> Result<usize> {
        self.mem.len().await
    }

    async fn structure_counts(&self) -> StructureCounts {
        self.mem.structure_counts().await
    }
}

impl SqliteTaskStore {
    /// Makes a change that produced a record and the event with `seq` (push, interrupt,
    /// reopen) and writes it; answers with what `keep` takes of the record.
    async fn write_changed<T>(
        &self,
        change: impl FnOnce() -> Option<(TaskRecord, u64)>,
        keep: impl FnOnce(&TaskRecord) -> T,
    ) -> Result<Option<T>> {
        self.writer
            .change(|| {
                let Some((record, seq)) = change() else {
                    return Ok(None);
                };
                let event = self.event(&record.task_id, seq)?;
                Ok(Some((keep(&record), write(record, event))))
            })
            .await
    }

    /// See [`TaskStore::settled`]: waits for the commit of the task's changes, at most
    /// [`SETTLE_WAIT`].
    async fn wait_settled(&self, task_id: &str) -> Result<()> {
        tokio::time::timeout(SETTLE_WAIT, self.writer.settled(task_id))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(format!(
                    "the end of task {task_id} is not stored in {} yet; read it again with \
                     GetTask",
                    self.path.display()
                )))
            })
    }

    /// Number of task rows on disk (tests, the census).
    pub async fn rows(&self) -> Result<u64> {
        self.writer
            .isle()
            .call(|conn| {
                conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|n| n.unwrap_or_default().max(0) as u64)
            })
            .await
            .map_err(|e| Error::Unavailable(format!("task store read failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::running;
    use super::*;

    fn step(id: String) -> TaskEventKind {
        TaskEventKind::StepDispatched {
            step_id: id,
            agent: "a".into(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mse-tasks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    /// The task store on the state file under `dir`, and the file's driver.
    async fn open_store(
        dir: &std::path::Path,
    ) -> (SqliteTaskStore, rusqlite_isle::AsyncIsleDriver) {
        let (writer, driver) = crate::engine::disk::open(dir).await.expect("state file");
        let store = SqliteTaskStore::open(writer, 100, Box::new(|_| {}))
            .await
            .expect("open");
        (store, driver)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_are_committed_in_seq_order_and_read_back() {
        let dir = temp_dir();
        let open = || open_store(&dir);
        let (store, driver) = open().await;
        let store = Arc::new(store);
        let tasks = (0..16).map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("t{t}");
                store.create(running(&id)).await.expect("create");
                // Two writers per task race; each change is still written in seq order.
                let pushes = (0..2).map(|w| {
                    let (store, id) = (Arc::clone(&store), id.clone());
                    tokio::spawn(async move {
                        for s in 0..10 {
                            let kind = step(format!("ST-{w}-{s}"));
                            assert!(store.push(&id, kind).await.expect("push"));
                        }
                    })
                });
                for push in futures::future::join_all(pushes).await {
                    push.expect("pushes");
                }
            })
        });
        for task in futures::future::join_all(tasks).await {
            task.expect("task");
        }
        // As the host's shutdown does: a flush task may still hold the writer a moment.
        store.writer.drained().await;
        store.writer.close();
        drop(store);
        driver.shutdown().await.expect("shutdown");

        let (store, driver) = open().await;
        for t in 0..16 {
            let events = store
                .events_after(&format!("t{t}"), 0, 100)
                .await
                .expect("events")
                .expect("task held");
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=21).collect::<Vec<u64>>(), "t{t}");
            // A step's event is written without the record: the steps are counted back.
            let record = store
                .get(&format!("t{t}"))
                .await
                .expect("get")
                .expect("held");
            let dispatched: Vec<String> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    TaskEventKind::StepDispatched { step_id, .. } => Some(step_id.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(record.step_count, 20, "t{t}");
            assert_eq!(Vec::from(record.step_ids), dispatched, "t{t}");
        }
        drop(store);
        driver.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// One task alone (the load at which `disk/commit.rs` commits on the flush task's
    /// thread): its changes are read back, with more steps than [`RECORD_EVERY`]; once
    /// the writer is closed a change fails instead of hanging.
    #[tokio::test]
    async fn one_task_alone_is_read_back_and_a_closed_writer_refuses_changes() {
        let dir = temp_dir();
        let open = || open_store(&dir);
        let (store, driver) = open().await;
        store.create(running("t0")).await.expect("create");
        let steps = RECORD_EVERY as usize + 6;
        for s in 0..steps {
            assert!(store
                .push("t0", step(format!("ST-{s}")))
                .await
                .expect("push"));
        }
        store.settled("t0").await.expect("settled");
        store.writer.drained().await;
        store.writer.close();
        let refused = store.create(running("t1")).await.expect_err("closed");
        assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
        drop(store);
        driver.shutdown().await.expect("shutdown");

        let (store, driver) = open().await;
        let events = store
            .events_after("t0", 0, 100)
            .await
            .expect("events")
            .expect("task held");
        assert_eq!(events.len(), steps + 1);
        let record = store.get("t0").await.expect("get").expect("held");
        assert_eq!(record.step_count, steps as u64);
        let ids: Vec<String> = (0..steps).map(|s| format!("ST-{s}")).collect();
        assert_eq!(Vec::from(record.step_ids), ids);
        assert!(store
            .events_after("t1", 0, 100)
            .await
            .expect("read")
            .is_none());
        drop(store);
        driver.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
