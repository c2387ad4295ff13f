//! One durability setting for every SQLite connection the process opens, ours and the
//! engine's: WAL with `synchronous=NORMAL`. The engine's run, replay and output stores open
//! their own connections at SQLite's default (`FULL`: an fsync per commit, ~9 per task,
//! most of the durable server's CPU), and offer no hook, so the setting is applied by an
//! SQLite auto-extension, which runs on every connection as it opens.
//!
//! WAL + `NORMAL` loses nothing when the process dies (`kill -9`, a panic, a deploy): a
//! commit is in the WAL file when it returns. An OS crash or power cut can lose the last
//! commits before a checkpoint; the database stays consistent (README, "What survives").

use std::ffi::{c_char, c_int};
use std::sync::Once;

use rusqlite::auto_extension::{init_auto_extension, register_auto_extension};
use rusqlite::ffi;

use crate::error::{Error, Result};

/// Registers the setting for connections opened from now on (once per process).
pub(super) fn install() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut outcome = Ok(());
    ONCE.call_once(|| {
        // SAFETY: `on_open` opens no database, closes none, and does not touch the list
        // of auto-extensions: the three conditions `register_auto_extension` states.
        outcome = unsafe { register_auto_extension(on_open) };
    });
    outcome.map_err(|e| Error::Unavailable(format!("cannot configure SQLite: {e}")))
}

unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: `db` is the connection SQLite is opening; `configure` only runs a pragma
    // on it through a non-owning handle.
    unsafe { init_auto_extension(db, err, configure) }
}

fn configure(conn: rusqlite::Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Reads through a memory map instead of a pread per page (a no-op for in-memory
    // databases); the map grows with the file up to this size.
    conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_opened_after_install_use_normal_sync() {
        super::install().expect("install");
        let path = std::env::temp_dir().join(format!("mse-sync-{}.sqlite", uuid::Uuid::new_v4()));
        let conn = rusqlite::Connection::open(&path).expect("open");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma");
        drop(conn);
        let _ = std::fs::remove_file(&path);
        assert_eq!(sync, 1, "NORMAL");
    }
}
