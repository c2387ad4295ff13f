//! Copies the state file's WAL into the database on a thread and connection of its own
//! (`PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`]), so the writer does not
//! stop for the bulk of a checkpoint's copy and fsync while commits queue up behind it.
//!
//! A checkpoint beside a busy writer never catches up with it (frames keep coming while
//! it copies), and SQLite starts the WAL over only from a checkpoint that did: so after
//! each one the writer copies the few frames written meanwhile itself, between two
//! batches ([`Checkpointer::tail_due`]), and its next transaction starts the WAL over.
//! The writer's own auto-checkpoint stays as a backstop at a far larger WAL.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;

/// How often the WAL is copied into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The checkpoint thread; it ends when this is stopped or dropped.
pub(super) struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set after each checkpoint of the thread: the writer copies the rest.
    tail: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Opens a second connection to the state file at `path` and starts the thread.
    pub(super) fn spawn(path: &Path) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| super::cannot_open(path, e);
        let conn = super::connect(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let file = path.display().to_string();
        let tail = Arc::new(AtomicBool::new(false));
        let tail_set = Arc::clone(&tail);
        let thread = std::thread::Builder::new()
            .name("mse-checkpoint".into())
            .spawn(move || {
                // Until stopped (a message, or the sender dropped).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    match checkpoint(&conn) {
                        Ok(()) => tail_set.store(true, Ordering::Release),
                        Err(e) => {
                            tracing::warn!(path = %file, error = %e, "state file checkpoint failed");
                        }
                    }
                }
            })
            .map_err(|e| fail(&e))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            tail,
        })
    }

    /// A flag set once the thread has checkpointed; the writer takes it ([`take_tail`])
    /// and copies the frames written since.
    pub(super) fn tail_due(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.tail)
    }

    /// Ends the thread and waits for it (at most the checkpoint it may be running), so
    /// its connection is closed when this returns.
    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies what the WAL holds into the database (as far as readers allow).
pub(super) fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// True once if `flag` was set: the writer's turn to finish a checkpoint.
pub(super) fn take_tail(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::AcqRel)
}
