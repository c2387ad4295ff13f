//! The task store's writer: changes are queued in the order they were made (the change
//! and its place in the queue are taken under one lock, so a task's events are written in
//! seq order and a kill never leaves a gap), and everything queued is written in one
//! transaction (group commit). A caller is answered only once its change is committed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::params;
use rusqlite_isle::AsyncIsle;
use tokio::sync::oneshot;

use super::{unix_ms, TaskEvent, TaskRecord, EVENTS_KEPT};
use crate::error::{Error, Result};

/// One change: the event, the record it produced, and the tasks retention dropped.
pub(super) struct Write {
    pub(super) record: TaskRecord,
    pub(super) event: TaskEvent,
    pub(super) dropped: Vec<String>,
}

type Waiter = oneshot::Sender<Result<()>>;

#[derive(Default)]
struct Queue {
    pending: Vec<(Write, Waiter)>,
    /// A flush task is running; it drains the queue before it stops.
    flushing: bool,
}

/// See the module doc.
pub(super) struct GroupWriter {
    isle: AsyncIsle,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Woken after every batch, for `TaskStore::settled`.
    pub(super) written: tokio::sync::Notify,
}

impl GroupWriter {
    pub(super) fn new(isle: AsyncIsle, path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            isle,
            path,
            queue: Mutex::new(Queue::default()),
            written: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn isle(&self) -> &AsyncIsle {
        &self.isle
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes a change with `make` and queues its write in one step; resolves with what
    /// `make` returned once the write is committed (`None`: nothing changed).
    pub(super) async fn change<T>(
        self: &Arc<Self>,
        make: impl FnOnce() -> Result<Option<(T, Write)>>,
    ) -> Result<Option<T>> {
        let (tx, rx) = oneshot::channel();
        let (value, lead) = {
            let mut queue = self.lock();
            let Some((value, write)) = make()? else {
                return Ok(None);
            };
            queue.pending.push((write, tx));
            (value, !std::mem::replace(&mut queue.flushing, true))
        };
        if lead {
            // Its own task: a caller that goes away must not stop the others' writes.
            let writer = Arc::clone(self);
            tokio::spawn(async move { writer.flush().await });
        }
        match rx.await {
            Ok(done) => done.map(|()| Some(value)),
            Err(_) => Err(self.failed("the writer stopped")),
        }
    }

    /// Writes batches until the queue is empty.
    async fn flush(&self) {
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.pending.is_empty() {
                    queue.flushing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let (writes, waiters): (Vec<Write>, Vec<Waiter>) = batch.into_iter().unzip();
            // The error as text: every waiter of the batch gets its own copy.
            let outcome: std::result::Result<(), String> = match encode(&writes) {
                Ok(rows) => self
                    .isle
                    .call(move |conn| immediate(conn, |tx| apply(tx, &rows)))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            self.written.notify_waiters();
            for waiter in waiters {
                let _ = waiter.send(outcome.clone().map_err(|why| self.failed(&why)));
            }
        }
    }

    fn failed(&self, why: &str) -> Error {
        Error::Unavailable(format!(
            "task store {} write failed: {why}",
            self.path.display()
        ))
    }
}

/// A change as SQL parameters.
struct Row {
    task_id: String,
    seq: i64,
    at_ms: i64,
    kind: String,
    /// The record, only on the last change of its task in the batch (earlier ones would
    /// be overwritten in the same transaction).
    record: Option<EncodedRecord>,
    dropped: Vec<String>,
}

struct EncodedRecord {
    json: String,
    finished_ms: Option<i64>,
    /// The launch, if the batch holds the task's first event.
    launch: Option<String>,
}

fn encode(writes: &[Write]) -> Result<Vec<Row>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut launches: HashMap<&str, &Write> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        last.insert(&w.record.task_id, i);
        if w.event.seq == 1 {
            launches.insert(&w.record.task_id, w);
        }
    }
    let json = |e: serde_json::Error| Error::Internal(format!("task store encode: {e}"));
    writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let id = w.record.task_id.as_str();
            let record = if last.get(id) == Some(&i) {
                let launch = match launches
                    .get(id)
                    .and_then(|first| first.record.launch.as_ref())
                {
                    Some(l) => Some(serde_json::to_string(l).map_err(json)?),
                    None => None,
                };
                Some(EncodedRecord {
                    json: serde_json::to_string(&w.record).map_err(json)?,
                    finished_ms: w.record.finished_at.map(|t| sql_int(unix_ms(t))),
                    launch,
                })
            } else {
                None
            };
            Ok(Row {
                task_id: w.record.task_id.clone(),
                seq: sql_int(w.event.seq),
                at_ms: sql_int(unix_ms(w.event.at)),
                kind: serde_json::to_string(&w.event.kind).map_err(json)?,
                record,
                dropped: w.dropped.clone(),
            })
        })
        .collect()
}

/// Applies a batch in order, inside the caller's transaction.
fn apply(tx: &rusqlite::Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let kept = sql_int(EVENTS_KEPT as u64);
    for row in rows {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO task_events (task_id, seq, at_ms, kind) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![row.task_id, row.seq, row.at_ms, row.kind])?;
        if row.seq > kept {
            tx.prepare_cached("DELETE FROM task_events WHERE task_id = ?1 AND seq <= ?2")?
                .execute(params![row.task_id, row.seq - kept])?;
        }
        if let Some(record) = &row.record {
            tx.prepare_cached(
                "INSERT INTO tasks (task_id, rev, finished_ms, record, launch) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(task_id) DO UPDATE SET rev = excluded.rev, \
                   finished_ms = excluded.finished_ms, record = excluded.record \
                 WHERE excluded.rev > tasks.rev",
            )?
            .execute(params![
                row.task_id,
                row.seq,
                record.finished_ms,
                record.json,
                record.launch
            ])?;
        }
        for id in &row.dropped {
            tx.prepare_cached("DELETE FROM task_events WHERE task_id = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM tasks WHERE task_id = ?1")?
                .execute([id])?;
        }
    }
    Ok(())
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction whose BEGIN, COMMIT and ROLLBACK are
/// cached statements (`Connection::transaction*` parses them on every call).
fn immediate<T>(
    conn: &mut rusqlite::Connection,
    body: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let rollback = |conn: &rusqlite::Connection| {
        let _ = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
    };
    match body(conn) {
        Ok(value) => match conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
        {
            Ok(_) => Ok(value),
            Err(e) => {
                rollback(conn);
                Err(e)
            }
        },
        Err(e) => {
            rollback(conn);
            Err(e)
        }
    }
}

/// SQLite integers are signed; our seqs and times fit.
pub(super) fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
