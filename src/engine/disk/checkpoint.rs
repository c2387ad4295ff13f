//! Copies the state file's WAL into the database on a thread and connection of its own
//! (`PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`]), so the writer never
//! stops for a checkpoint's copy and fsync while commits queue up behind it. The
//! writer's own auto-checkpoint stays as a backstop at a far larger WAL.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::error::Result;

/// How often the WAL is copied into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The checkpoint thread; it ends when this is stopped or dropped.
pub(super) struct Checkpointer {
    stop: Option<Sender<()>>,
}

impl Checkpointer {
    /// Opens a second connection to the state file at `path` and starts the thread.
    pub(super) fn spawn(path: &Path) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| super::cannot_open(path, e);
        let conn = rusqlite::Connection::open(path).map_err(|e| fail(&e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail(&e))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let file = path.display().to_string();
        std::thread::Builder::new()
            .name("mse-checkpoint".into())
            .spawn(move || {
                // Until stopped (a message, or the sender dropped).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = done {
                        tracing::warn!(path = %file, error = %e, "state file checkpoint failed");
                    }
                }
            })
            .map_err(|e| fail(&e))?;
        Ok(Self { stop: Some(stop) })
    }

    /// Ends the thread after the checkpoint it may be running.
    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
