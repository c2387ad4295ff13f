//! The durable [`SessionStore`]: `sessions.sqlite` under the data dir (WAL), on its own
//! SQLite thread (`rusqlite-isle`), so no call blocks the runtime. It keeps the token's
//! SHA-256, never the token; a role claim is one `BEGIN IMMEDIATE` transaction. The
//! hot-path notes (attach epoch, seq / ack marks, last seen) are merged in memory and
//! written behind by one flusher task (`super::notes`); a `kill -9` loses at most the
//! last 100 ms of them. Seq reservations (`super::reservation`) are written at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};
use rusqlite_isle::{AsyncIsle, AsyncIsleDriver, IsleError};

use super::notes::{unix_ms, Notes};
use super::outbox::Marks;
use super::sqlite_sql::{create_tx, decode, delete_tx, held, to_i64, write_notes, COLUMNS, SCHEMA};
use super::store::{Claim, SessionRecord, SessionStore};
use crate::error::{Error, Result};

/// The store's file name under the data dir.
pub const SESSIONS_FILE: &str = "sessions.sqlite";

/// The session store file could not be opened or is not a session store.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the operator session store {path}: {reason}; fix or move the file (it holds the operator sessions), or start with --ephemeral")]
pub struct StoreOpenError {
    /// The file.
    pub path: PathBuf,
    /// What SQLite said.
    pub reason: String,
}

/// Session records in SQLite.
pub struct SqliteSessionStore {
    isle: AsyncIsle,
    notes: Arc<Notes>,
    driver: tokio::sync::Mutex<Option<AsyncIsleDriver>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSessionStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteSessionStore {
    /// Opens (or creates) [`SESSIONS_FILE`] under `dir`. A file that is not a readable
    /// session store fails with a message naming it.
    pub async fn open(dir: &Path) -> std::result::Result<Self, StoreOpenError> {
        let path = dir.join(SESSIONS_FILE);
        let fail = |reason: String| StoreOpenError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let (isle, driver) = AsyncIsle::builder()
            .thread_name("sessions-sqlite")
            .wal(Duration::from_secs(5))
            .spawn(&path, |conn| {
                conn.execute_batch(SCHEMA)?;
                // Every stored row must decode: a damaged file fails the boot here.
                let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM sessions"))?;
                let rows = stmt.query_map([], decode)?;
                for row in rows {
                    row?;
                }
                Ok(())
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let notes = Arc::new(Notes::default());
        spawn_flusher(isle.clone(), notes.clone());
        Ok(Self {
            isle,
            notes,
            driver: tokio::sync::Mutex::new(Some(driver)),
            path,
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        self.isle
            .call_write(f)
            .await
            .map_err(|e| store_error(&path, e))
    }
}

fn store_error(path: &Path, e: IsleError) -> Error {
    match e {
        IsleError::Closed => Error::Unavailable("the session store is closed".into()),
        e if e.is_busy() => Error::Unavailable("the session store is busy; retry".into()),
        e => Error::Internal(format!("session store {}: {e}", path.display())),
    }
}

/// Writes the merged notes whenever some arrive, until the store closes or drops.
fn spawn_flusher(isle: AsyncIsle, notes: Arc<Notes>) {
    tokio::spawn(async move {
        while notes.next().await {
            if !flush(&isle, &notes).await {
                break;
            }
        }
    });
}

impl Drop for SqliteSessionStore {
    fn drop(&mut self) {
        self.notes.finish();
    }
}

/// Writes what is pending; false once the store is closed.
async fn flush(isle: &AsyncIsle, notes: &Notes) -> bool {
    let batch = notes.take();
    if batch.is_empty() {
        return true;
    }
    match isle.call_write(move |tx| write_notes(tx, &batch)).await {
        Ok(()) => true,
        Err(IsleError::Closed) => false,
        Err(e) => {
            tracing::warn!(error = %e, "session store: attach / ack marks not written");
            true
        }
    }
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn create(&self, record: SessionRecord) -> Result<Claim> {
        let sid = record.sid.clone();
        self.call(move |tx| create_tx(tx, &record))
            .await?
            .ok_or_else(|| Error::AlreadyExists(format!("operator session {sid} exists")))
    }

    async fn get(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let sid = sid.to_string();
        let select = format!("SELECT {COLUMNS} FROM sessions WHERE sid = ?1");
        self.call(move |tx| tx.query_row(&select, [sid], decode).optional())
            .await
    }

    async fn list(&self) -> Result<Vec<SessionRecord>> {
        let select = format!("SELECT {COLUMNS} FROM sessions WHERE deleted_ms IS NULL");
        self.call(move |tx| {
            let mut stmt = tx.prepare(&select)?;
            let rows = stmt.query_map([], decode)?;
            rows.collect()
        })
        .await
    }

    async fn delete(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let sid = sid.to_string();
        let now = unix_ms(SystemTime::now());
        self.call(move |tx| delete_tx(tx, &sid, now)).await
    }

    async fn held_roles(&self, roles: &[String]) -> Result<Vec<String>> {
        let roles = roles.to_vec();
        self.call(move |tx| held(tx, &roles)).await
    }

    fn record_attach(&self, sid: &str, epoch: u64, at: SystemTime) {
        self.notes.attach(sid, epoch, at);
    }

    fn record_marks(&self, sid: &str, marks: Marks) {
        self.notes.marks(sid, marks);
    }

    fn touch(&self, sid: &str, at: SystemTime) {
        self.notes.touch(sid, at);
    }

    fn outlives_process(&self) -> bool {
        true
    }

    async fn reserve_seqs(&self, sid: &str, upto: u64) -> Result<()> {
        let sid = sid.to_string();
        self.call(move |tx| {
            tx.prepare_cached("UPDATE sessions SET last_seq = MAX(last_seq, ?2) WHERE sid = ?1")?
                .execute(params![sid, to_i64(upto)])
                .map(drop)
        })
        .await
    }

    async fn close(&self) {
        self.notes.finish();
        flush(&self.isle, &self.notes).await;
        if let Some(driver) = self.driver.lock().await.take() {
            if let Err(e) = driver.shutdown().await {
                tracing::warn!(error = %e, "session store shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mse-sessions-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn record(sid: &str, roles: &[&str]) -> SessionRecord {
        let roles = roles.iter().map(|r| r.to_string()).collect();
        SessionRecord::new(sid.into(), "secret-token-42", roles, SystemTime::now())
    }

    /// A store in a new dir, holding op-1 with role `lead`.
    async fn opened_with_lead() -> (PathBuf, SqliteSessionStore) {
        let dir = temp_dir();
        let store = SqliteSessionStore::open(&dir).await.expect("open");
        let claim = store.create(record("op-1", &["lead"])).await;
        assert_eq!(claim.expect("create"), Claim::Claimed);
        (dir, store)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn the_file_holds_the_hash_of_the_token_never_the_token() {
        let (dir, store) = opened_with_lead().await;
        store.close().await;
        let mut bytes = std::fs::read(dir.join(SESSIONS_FILE)).expect("read");
        if let Ok(wal) = std::fs::read(dir.join(format!("{SESSIONS_FILE}-wal"))) {
            bytes.extend(wal);
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret-token-42"), "the token is on disk");
        assert!(text.contains(&super::super::store::token_hash("secret-token-42")));
        let again = SqliteSessionStore::open(&dir).await.expect("reopen");
        let r = again.get("op-1").await.expect("get").expect("kept");
        assert!(r.token_matches("secret-token-42") && r.is_live());
        assert_eq!(r.roles, strings(&["lead"]));
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_role_leave_exactly_one_holder() {
        let store = Arc::new(SqliteSessionStore::open(&temp_dir()).await.expect("open"));
        let claims = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create(record(&format!("op-{i}"), &["lead", &format!("r{i}")]))
                    .await
            })
        });
        let mut claimed = 0;
        for c in futures::future::join_all(claims).await {
            match c.expect("join").expect("create") {
                Claim::Claimed => claimed += 1,
                Claim::Held(held) => assert_eq!(held, strings(&["lead"])),
                Claim::RoleIsSid => panic!("no role is a sid"),
            }
        }
        assert_eq!(claimed, 1);
        assert_eq!(
            store.list().await.expect("list").len(),
            1,
            "a refused claim stores nothing"
        );
        let held = store
            .held_roles(&strings(&["lead", "r3"]))
            .await
            .expect("held");
        assert_eq!(
            held.len(),
            1 + usize::from(held.contains(&"r3".to_string()))
        );
    }

    #[tokio::test]
    async fn delete_frees_the_roles_keeps_the_sid_and_notes_only_rise() {
        let (dir, store) = opened_with_lead().await;
        store.create(record("op-2", &[])).await.expect("create");
        assert_eq!(
            store.create(record("op-3", &["op-1"])).await.expect("c"),
            Claim::RoleIsSid
        );
        assert!(store.delete("op-1").await.expect("delete").is_some());
        assert_eq!(store.delete("op-1").await.expect("delete"), None);
        assert_eq!(
            store.create(record("op-4", &["lead"])).await.expect("c"),
            Claim::Claimed
        );
        assert_eq!(
            store.create(record("op-5", &["op-1"])).await.expect("c"),
            Claim::RoleIsSid
        );
        assert!(
            store.create(record("op-1", &[])).await.is_err(),
            "a deleted sid stays reserved"
        );
        store.record_attach("op-2", 4, SystemTime::now());
        store.record_attach("op-2", 2, SystemTime::now());
        store.record_marks(
            "op-2",
            Marks {
                last_seq: 9,
                acked: 3,
            },
        );
        store.record_marks(
            "op-2",
            Marks {
                last_seq: 5,
                acked: 7,
            },
        );
        store.close().await;
        let again = SqliteSessionStore::open(&dir).await.expect("reopen");
        let r = again.get("op-2").await.expect("get").expect("kept");
        assert_eq!((r.epoch, r.marks.last_seq, r.marks.acked), (4, 9, 7));
        let live: Vec<String> = again
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.sid)
            .collect();
        assert_eq!(live.len(), 2);
        assert!(!live.contains(&"op-1".to_string()));
        assert!(!again
            .get("op-1")
            .await
            .expect("get")
            .expect("tombstone")
            .is_live());
    }

    #[tokio::test]
    async fn a_damaged_file_fails_the_open_naming_the_file() {
        let dir = temp_dir();
        std::fs::write(
            dir.join(SESSIONS_FILE),
            b"this is not a database, just bytes ".repeat(200),
        )
        .expect("write");
        let err = SqliteSessionStore::open(&dir).await.expect_err("refused");
        assert!(err.to_string().contains(SESSIONS_FILE), "{err}");
    }
}
