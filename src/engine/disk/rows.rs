//! A batch of [`Write`]s as SQL: encoded on the runtime (JSON), applied in order in one
//! transaction on the write connection ([`super::commit`]) with cached statements.

use std::collections::{HashMap, HashSet};

use mlua_swarm::store::replay::ReplayEntry;
use rusqlite::params;
use tokio::sync::oneshot;

use super::outputs::OutputRow;
use super::writer::Write;
use crate::engine::tasks::{unix_ms, EVENTS_KEPT};
use crate::error::{Error, Result};

/// One write, ready for SQL.
pub(super) enum Row {
    Task(TaskRow),
    Run {
        run_id: String,
        version: i64,
        json: String,
    },
    RunGone(String),
    Replay(ReplayEntry),
    Output(OutputRow),
    Cut {
        run_id: String,
        from_index: i64,
        dropped: oneshot::Sender<usize>,
    },
}

pub(super) struct TaskRow {
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

/// Encodes a batch into `rows`, emptying `writes` (both keep their capacity: the writer
/// reuses them, as large buffers allocated per batch cost the allocator fresh pages). Of
/// several records of one task or run, only the newest is written.
pub(super) fn encode(writes: &mut Vec<Write>, rows: &mut Vec<Row>) -> Result<()> {
    let newest = newest_records(writes);
    // A task's launch (its first event) goes with the newest record of the task.
    let mut launches: HashMap<String, String> = HashMap::new();
    let json = |e: serde_json::Error| Error::Internal(format!("state file encode: {e}"));
    for (write, newest) in writes.drain(..).zip(newest) {
        rows.push(match write {
            Write::Task {
                record,
                event,
                dropped,
            } => {
                let launch = match (event.seq, record.as_ref().and_then(|r| r.launch.as_ref())) {
                    (1, Some(launch)) => Some(serde_json::to_string(launch).map_err(json)?),
                    _ => None,
                };
                let encoded = match record {
                    Some(record) if newest => Some(EncodedRecord {
                        json: serde_json::to_string(&record).map_err(json)?,
                        finished_ms: record.finished_at.map(|t| sql_int(unix_ms(t))),
                        launch: launch.or_else(|| launches.remove(&event.task_id)),
                    }),
                    _ => {
                        if let Some(launch) = launch {
                            launches.insert(event.task_id.clone(), launch);
                        }
                        None
                    }
                };
                Row::Task(TaskRow {
                    seq: sql_int(event.seq),
                    at_ms: sql_int(unix_ms(event.at)),
                    kind: serde_json::to_string(&event.kind).map_err(json)?,
                    task_id: event.task_id,
                    record: encoded,
                    dropped,
                })
            }
            Write::Run { version, record } => {
                if !newest {
                    continue;
                }
                Row::Run {
                    version: sql_int(version),
                    json: serde_json::to_string(&record).map_err(json)?,
                    run_id: record.id.into_string(),
                }
            }
            Write::RunGone(id) => Row::RunGone(id.into_string()),
            Write::Replay(entry) => Row::Replay(entry),
            Write::Output(row) => Row::Output(row),
            Write::Cut {
                run_id,
                from_index,
                dropped,
            } => Row::Cut {
                run_id: run_id.into_string(),
                from_index: sql_int(from_index as u64),
                dropped,
            },
        });
    }
    Ok(())
}

/// For each write: it holds the newest record of its task or run in the batch.
fn newest_records(writes: &[Write]) -> Vec<bool> {
    let mut newest = vec![false; writes.len()];
    let mut tasks: HashSet<&str> = HashSet::new();
    let mut runs: HashSet<&str> = HashSet::new();
    for (i, write) in writes.iter().enumerate().rev() {
        newest[i] = match write {
            Write::Task {
                record: Some(_),
                event,
                ..
            } => tasks.insert(&event.task_id),
            Write::Run { record, .. } => runs.insert(record.id.as_str()),
            _ => false,
        };
    }
    newest
}

/// Applies a batch in order, inside the caller's transaction, emptying `rows`.
pub(super) fn apply(tx: &rusqlite::Connection, rows: &mut Vec<Row>) -> rusqlite::Result<()> {
    for row in rows.drain(..) {
        match row {
            Row::Task(task) => apply_task(tx, &task)?,
            Row::Run {
                run_id,
                version,
                json,
            } => {
                tx.prepare_cached(
                    "INSERT INTO runs (run_id, version, record) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(run_id) DO UPDATE SET version = excluded.version, \
                       record = excluded.record \
                     WHERE excluded.version > runs.version",
                )?
                .execute(params![run_id, version, json])?;
            }
            Row::RunGone(run_id) => {
                tx.prepare_cached("DELETE FROM runs WHERE run_id = ?1")?
                    .execute([run_id])?;
            }
            Row::Replay(e) => {
                insert_replay(tx, &e)?;
            }
            Row::Output(o) => {
                tx.prepare_cached(
                    "INSERT INTO outputs (id, task_id, attempt, producer_agent, event_json, \
                       parent_refs_json, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    o.id,
                    o.task_id,
                    o.attempt,
                    o.producer,
                    o.event_json,
                    o.parent_refs_json,
                    o.seq
                ])?;
            }
            Row::Cut {
                run_id,
                from_index,
                dropped,
            } => {
                let n = tx
                    .prepare_cached(
                        "DELETE FROM replay WHERE run_id = ?1 AND id >= \
                         (SELECT id FROM replay WHERE run_id = ?1 ORDER BY id \
                          LIMIT 1 OFFSET ?2)",
                    )?
                    .execute(params![run_id, from_index])?;
                let _ = dropped.send(n);
            }
        }
    }
    Ok(())
}

/// Inserts a replay row; a row whose identity is already held keeps the first.
pub(super) fn insert_replay(tx: &rusqlite::Connection, e: &ReplayEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO replay (run_id, step_ref, input_hash, occurrence, \
           ctx_snapshot_json, step_output_json, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.run_id.as_str(),
        e.step_ref,
        e.input_hash,
        e.occurrence,
        e.ctx_snapshot_json,
        e.step_output_json,
        sql_int(e.created_at)
    ])?;
    Ok(())
}

fn apply_task(tx: &rusqlite::Connection, row: &TaskRow) -> rusqlite::Result<()> {
    let kept = sql_int(EVENTS_KEPT as u64);
    tx.prepare_cached(
        "INSERT OR IGNORE INTO task_events (task_id, seq, at_ms, kind) VALUES (?1, ?2, ?3, ?4)",
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
    Ok(())
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction whose BEGIN, COMMIT and ROLLBACK are
/// cached statements (`Connection::transaction*` parses them on every call).
pub(super) fn immediate<T>(
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
