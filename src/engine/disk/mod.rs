//! The state file (`tasks.sqlite` under the data dir, WAL): task records and their
//! events, the engine's run records and the replay journal, all written by one ordered
//! writer with group commit, so a task step costs one share of one commit.

mod checkpoint;
mod commit;
mod import;
mod outputs;
mod replay;
mod rows;
mod runs;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite_isle::{AsyncIsle, AsyncIsleDriver};

pub(super) use outputs::DiskOutputStore;
pub(super) use replay::DiskReplayStore;
pub(super) use runs::DiskRunStore;
pub(super) use writer::{GroupWriter, Write};

use crate::error::{Error, Result};

/// The state file's name under the data dir (it held only tasks before runs and the
/// replay journal moved in).
pub(super) const STATE_FILE: &str = "tasks.sqlite";

/// The writer's page cache holds the pages the tasks in flight touch (2 MiB; a larger
/// cache costs more per commit: SQLite scans its whole page hash when a commit follows a
/// B-tree balance that renumbered pages, and at 16 MiB that was 11 % of the writer's
/// time). The WAL is
/// checkpointed by its own thread ([`checkpoint`]); the writer checkpoints only if the
/// WAL reaches 50,000 pages (200 MiB), should that thread fall behind.
const TUNING: &str = "PRAGMA cache_size = -2048; PRAGMA wal_autocheckpoint = 50000;";

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
CREATE TABLE IF NOT EXISTS runs (
    run_id  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replay (
    id                INTEGER PRIMARY KEY,
    run_id            TEXT NOT NULL,
    step_ref          TEXT NOT NULL,
    input_hash        TEXT NOT NULL,
    occurrence        INTEGER NOT NULL,
    ctx_snapshot_json TEXT NOT NULL,
    step_output_json  TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    UNIQUE (run_id, step_ref, input_hash, occurrence)
);
CREATE TABLE IF NOT EXISTS outputs (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    producer_agent   TEXT NOT NULL,
    event_json       TEXT NOT NULL,
    parent_refs_json TEXT NOT NULL,
    seq              INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_outputs_attempt ON outputs (task_id, attempt, seq);
CREATE INDEX IF NOT EXISTS ix_outputs_producer ON outputs (producer_agent, seq);
CREATE INDEX IF NOT EXISTS ix_outputs_producer_run ON outputs (producer_agent, task_id, attempt, seq);
";

/// Opens (or creates) the state file under `dir`, and moves in the run records, journal
/// rows and outputs an older build kept in `runs.sqlite`, `journal.sqlite` and
/// `outputs.sqlite`. A file that is
/// not a readable store fails with a message naming it.
pub(super) async fn open(dir: &Path) -> Result<(Arc<GroupWriter>, AsyncIsleDriver)> {
    let path = dir.join(STATE_FILE);
    let (isle, driver) = AsyncIsle::builder()
        .wal(BUSY_TIMEOUT)
        .thread_name("mse-state")
        .spawn(&path, |conn| {
            conn.execute_batch(TUNING)?;
            conn.execute_batch(SCHEMA)
        })
        .await
        .map_err(|e| cannot_open(&path, &e))?;
    import::older_journal(dir, &isle).await?;
    import::older_outputs(dir, &isle).await?;
    let checkpoints = checkpoint::Checkpointer::spawn(&path)?;
    let conn = commit::WriteConnection::open(&path, TUNING, checkpoints.tail_due())?;
    Ok((GroupWriter::new(isle, conn, path, checkpoints), driver))
}

/// How long a connection to the state file waits for a lock another one holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Another connection to the state file at `path` (the writer's, the checkpoint thread's).
fn connect(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).map_err(|e| cannot_open(path, &e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| cannot_open(path, &e))?;
    Ok(conn)
}

pub(super) fn cannot_open(path: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!("cannot open the store {}: {e}", path.display()))
}
