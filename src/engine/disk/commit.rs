//! The state file's write connection (reads use the `mse-state` thread's). While the
//! server is quiet, a small batch commits on the flush task's own thread: its transaction
//! (about 0.1 ms for a task's few rows) costs less than the two thread hand-offs of
//! running it elsewhere (about 0.11 ms on one host, paid twice per task at one task in
//! flight). A busy server's batches, large ones, and one that also copies the WAL's tail
//! into the database commit on tokio's blocking pool, so a runtime worker is never held
//! for long.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::checkpoint;
use super::rows::{self, Row};
use crate::error::Result;

/// Batches of up to this many rows commit on the flush task's thread.
const INLINE_ROWS: usize = 8;

/// See the module doc.
pub(super) struct WriteConnection {
    /// `None` once closed.
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
    /// Set by the checkpoint thread: the next batch copies the frames it could not.
    tail: Arc<AtomicBool>,
}

impl WriteConnection {
    /// Opens the connection to the state file at `path` (its schema is in place), tuned
    /// with `tuning`; `tail` is the checkpoint thread's flag.
    pub(super) fn open(path: &Path, tuning: &str, tail: Arc<AtomicBool>) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| super::cannot_open(path, e);
        let conn = super::connect(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(&e))?;
        conn.execute_batch(tuning).map_err(|e| fail(&e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Some(conn))),
            tail,
        })
    }

    /// Commits `rows` in one transaction, on this thread if the batch is small and the
    /// server `quiet`; the error as text (every waiter of the batch gets its own copy).
    /// The emptied `rows` come back, for the next batch.
    pub(super) async fn commit(
        &self,
        mut rows: Vec<Row>,
        quiet: bool,
    ) -> (Vec<Row>, std::result::Result<(), String>) {
        let copy_tail = checkpoint::take_tail(&self.tail);
        if quiet && rows.len() <= INLINE_ROWS && !copy_tail {
            let outcome = write(&self.conn, &mut rows, false);
            return (rows, outcome);
        }
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let outcome = write(&conn, &mut rows, copy_tail);
            (rows, outcome)
        })
        .await
        .unwrap_or_else(|e| (Vec::new(), Err(format!("the write stopped: {e}"))))
    }

    /// Closes the connection; later commits fail.
    pub(super) fn close(&self) {
        crate::engine::lock(&self.conn).take();
    }
}

fn write(
    conn: &Mutex<Option<rusqlite::Connection>>,
    rows: &mut Vec<Row>,
    copy_tail: bool,
) -> std::result::Result<(), String> {
    let mut guard = crate::engine::lock(conn);
    let Some(conn) = guard.as_mut() else {
        return Err("the state file is closed".into());
    };
    rows::immediate(conn, |tx| rows::apply(tx, rows)).map_err(|e| e.to_string())?;
    if copy_tail {
        // Not this batch's failure: the next checkpoint tries again.
        if let Err(e) = checkpoint::checkpoint(conn) {
            tracing::warn!(error = %e, "state file checkpoint failed");
        }
    }
    Ok(())
}
