//! The durable [`TaskStore`]: every change is written to SQLite (WAL) before it is
//! acknowledged, and the held tasks are read back at boot. Reads are served by the
//! in-memory [`TaskRegistry`] the store keeps in step with the file, so the rules of the
//! seam (seqs, de-duplication, retention) live in one place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use rusqlite_isle::{AsyncIsle, AsyncIsleDriver};
use tokio::sync::watch;

use super::memory::EvictHook;
use super::{
    unix_ms, RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskRegistry, TaskState,
    TaskStore, EVENTS_KEPT,
};
use crate::engine::census::StructureCounts;
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    rev         INTEGER NOT NULL,
    finished_ms INTEGER,
    record      TEXT NOT NULL,
    launch      TEXT
);
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
";

/// The SQLite [`TaskStore`] (`tasks.sqlite` under the data dir).
pub struct SqliteTaskStore {
    mem: TaskRegistry,
    isle: AsyncIsle,
    path: PathBuf,
    /// Woken after every write, for [`TaskStore::settled`].
    written: tokio::sync::Notify,
}

impl std::fmt::Debug for SqliteTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTaskStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One change, written in one transaction: the event, the record it produced, and the
/// tasks retention dropped.
struct Write {
    record: TaskRecord,
    event: TaskEvent,
    dropped: Vec<String>,
}

impl SqliteTaskStore {
    /// Opens (or creates) the store at `path` and reads back the tasks it holds. A file
    /// that is not a readable store fails with a message naming it.
    pub async fn open(
        path: &Path,
        retention: usize,
        on_evict: EvictHook,
    ) -> Result<(Self, AsyncIsleDriver)> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!(
                "cannot open the task store {}: {e}",
                path.display()
            ))
        };
        let (isle, driver) = AsyncIsle::builder()
            .wal(Duration::from_secs(5))
            .thread_name("mse-tasks")
            .spawn(path, |conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(|e| fail(&e))?;
        let mem = TaskRegistry::new(retention).with_evict_hook(on_evict);
        let rows = isle.call(load).await.map_err(|e| fail(&e))?;
        for (record, launch, events) in rows {
            let mut record: TaskRecord = serde_json::from_str(&record).map_err(|e| fail(&e))?;
            record.launch = match launch {
                Some(l) => Some(Arc::new(serde_json::from_str(&l).map_err(|e| fail(&e))?)),
                None => None,
            };
            let task_id = record.task_id.clone();
            let events = events
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
            mem.restore(record, events);
        }
        let store = Self {
            mem,
            isle,
            path: path.to_path_buf(),
            written: tokio::sync::Notify::new(),
        };
        Ok((store, driver))
    }

    async fn write(&self, w: Write) -> Result<()> {
        let record = serde_json::to_string(&w.record).map_err(internal)?;
        let launch = match &w.record.launch {
            Some(l) if w.event.seq == 1 => Some(serde_json::to_string(l).map_err(internal)?),
            _ => None,
        };
        let kind = serde_json::to_string(&w.event.kind).map_err(internal)?;
        let task_id = w.record.task_id.clone();
        let seq = sql_int(w.event.seq);
        let at_ms = sql_int(unix_ms(w.event.at));
        let finished_ms = w.record.finished_at.map(|t| sql_int(unix_ms(t)));
        let kept = sql_int(EVENTS_KEPT as u64);
        let dropped = w.dropped;
        let path = self.path.clone();
        let written = self
            .isle
            .call(move |conn| {
                immediate(conn, |tx| {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO task_events (task_id, seq, at_ms, kind) \
                     VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![task_id, seq, at_ms, kind])?;
                    if seq > kept {
                        tx.prepare_cached(
                            "DELETE FROM task_events WHERE task_id = ?1 AND seq <= ?2",
                        )?
                        .execute(params![task_id, seq - kept])?;
                    }
                    tx.prepare_cached(
                        "INSERT INTO tasks (task_id, rev, finished_ms, record, launch) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(task_id) DO UPDATE SET rev = excluded.rev, \
                       finished_ms = excluded.finished_ms, record = excluded.record \
                     WHERE excluded.rev > tasks.rev",
                    )?
                    .execute(params![
                        task_id,
                        seq,
                        finished_ms,
                        record,
                        launch
                    ])?;
                    for id in &dropped {
                        tx.prepare_cached("DELETE FROM task_events WHERE task_id = ?1")?
                            .execute([id])?;
                        tx.prepare_cached("DELETE FROM tasks WHERE task_id = ?1")?
                            .execute([id])?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| {
                Error::Unavailable(format!("task store {} write failed: {e}", path.display()))
            });
        self.written.notify_waiters();
        written
    }

    /// True once the row of `task_id` on disk is finished, or gone (retention dropped
    /// it, after its end).
    async fn end_on_disk(&self, task_id: &str) -> Result<bool> {
        let id = task_id.to_string();
        self.isle
            .call(move |conn| {
                conn.prepare_cached("SELECT finished_ms IS NOT NULL FROM tasks WHERE task_id = ?1")?
                    .query_row([id], |r| r.get::<_, bool>(0))
                    .optional()
                    .map(|finished| finished.unwrap_or(true))
            })
            .await
            .map_err(|e| Error::Unavailable(format!("task store read failed: {e}")))
    }

    fn event(&self, task_id: &str, seq: u64) -> Result<TaskEvent> {
        self.mem
            .event(task_id, seq)
            .ok_or_else(|| Error::Internal(format!("event {seq} of {task_id} vanished")))
    }
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction whose BEGIN, COMMIT and ROLLBACK are
/// cached statements (`Connection::transaction*` parses them on every call: 6 % of this
/// store's writer thread).
fn immediate<T>(
    conn: &mut rusqlite::Connection,
    body: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match body(conn) {
        Ok(value) => {
            if let Err(e) = conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
            {
                let _ = conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
                return Err(e);
            }
            Ok(value)
        }
        Err(e) => {
            let _ = conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
            Err(e)
        }
    }
}

/// How long a caller waits for a task's end to be committed before it is told to read
/// the task again.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

type LoadedTask = (String, Option<String>, Vec<(u64, u64, String)>);

/// SQLite integers are signed; our seqs and times fit.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every held task (finished ones in the order they finished) with its events.
fn load(conn: &mut rusqlite::Connection) -> rusqlite::Result<Vec<LoadedTask>> {
    let mut tasks = conn.prepare(
        "SELECT task_id, record, launch FROM tasks \
         ORDER BY finished_ms IS NOT NULL, finished_ms, rowid",
    )?;
    let mut events =
        conn.prepare("SELECT seq, at_ms, kind FROM task_events WHERE task_id = ?1 ORDER BY seq")?;
    let rows: Vec<(String, String, Option<String>)> = tasks
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (task_id, record, launch) in rows {
        let evs = events
            .query_map([&task_id], |r| {
                let seq: i64 = r.get(0)?;
                let at: i64 = r.get(1)?;
                Ok((seq.max(0) as u64, at.max(0) as u64, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push((record, launch, evs));
    }
    Ok(out)
}

fn internal(e: serde_json::Error) -> Error {
    Error::Internal(format!("task store encode: {e}"))
}

#[async_trait]
impl TaskStore for SqliteTaskStore {
    async fn create(&self, record: TaskRecord) -> Result<()> {
        let event = self.mem.create_noting(record.clone());
        self.write(Write {
            record,
            event,
            dropped: Vec::new(),
        })
        .await
    }

    async fn push(&self, task_id: &str, kind: TaskEventKind) -> Result<bool> {
        let Some((record, seq)) = self.mem.push_noting(task_id, kind) else {
            return Ok(false);
        };
        let event = self.event(task_id, seq)?;
        self.write(Write {
            record,
            event,
            dropped: Vec::new(),
        })
        .await?;
        Ok(true)
    }

    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>> {
        let Some((record, seq, dropped)) = self.mem.finish_evicting(task_id, end) else {
            return Ok(None);
        };
        let event = self.event(task_id, seq)?;
        self.write(Write {
            record: record.clone(),
            event,
            dropped: dropped.clone(),
        })
        .await?;
        self.mem.evicted(dropped);
        Ok(Some(record))
    }

    async fn interrupt(&self, task_id: &str, reason: &str) -> Result<Option<TaskRecord>> {
        let changed = self.mem.interrupt_noting(task_id, reason);
        self.write_changed(changed).await
    }

    async fn reopen(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Result<Option<TaskRecord>> {
        let changed = self.mem.reopen_noting(task_id, start, replayed_steps);
        self.write_changed(changed).await
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
    /// Writes a record changed by the event with `seq` (interrupt, reopen).
    async fn write_changed(
        &self,
        changed: Option<(TaskRecord, u64)>,
    ) -> Result<Option<TaskRecord>> {
        let Some((record, seq)) = changed else {
            return Ok(None);
        };
        let event = self.event(&record.task_id, seq)?;
        self.write(Write {
            record: record.clone(),
            event,
            dropped: Vec::new(),
        })
        .await?;
        Ok(Some(record))
    }

    /// See [`TaskStore::settled`]: waits for the end's commit, at most [`SETTLE_WAIT`].
    async fn wait_settled(&self, task_id: &str) -> Result<()> {
        let wait = async {
            loop {
                let written = self.written.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if self.end_on_disk(task_id).await? {
                    return Ok(());
                }
                written.await;
            }
        };
        tokio::time::timeout(SETTLE_WAIT, wait)
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
        self.isle
            .call(|conn| {
                conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|n| n.unwrap_or_default().max(0) as u64)
            })
            .await
            .map_err(|e| Error::Unavailable(format!("task store read failed: {e}")))
    }
}
