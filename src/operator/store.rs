//! The session store: each session's record (sid, token hash, roles, attach epoch, seq /
//! ack marks, created / last seen) and the role claims, behind [`SessionStore`], with the
//! in-memory default [`MemorySessionStore`] (`--ephemeral`). The durable one is
//! [`super::sqlite_store::SqliteSessionStore`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::outbox::Marks;
use crate::error::{Error, Result};
use crate::secret::secrets_equal;

/// Deleted sessions remembered, so their sids stay reserved and a late reply to one of
/// their requests is answered STALE rather than NOT_FOUND.
pub(super) const DELETED_KEPT: usize = 256;

/// SHA-256 of a session token, hex: what a store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What a store keeps of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub sid: String,
    /// [`token_hash`] of its bearer token; the token itself is never stored.
    pub token_hash: String,
    /// Roles (seats) it holds.
    pub roles: Vec<String>,
    /// Newest attach epoch.
    pub epoch: u64,
    /// Seq / ack watermark.
    pub marks: Marks,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last attach or client frame.
    pub last_seen: SystemTime,
    /// Set once deleted; the record is kept a while after.
    pub deleted_at: Option<SystemTime>,
}

impl SessionRecord {
    /// The record of a new session whose token is `token`.
    pub fn new(sid: String, token: &str, roles: Vec<String>, created_at: SystemTime) -> Self {
        Self {
            sid,
            token_hash: token_hash(token),
            roles,
            epoch: 0,
            marks: Marks::default(),
            created_at,
            last_seen: created_at,
            deleted_at: None,
        }
    }

    /// True if `token` is this session's token (hashes compared in constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        secrets_equal(&token_hash(token), &self.token_hash)
    }

    /// True until deleted.
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// What became of a new session's role claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Stored, every role claimed.
    Claimed,
    /// Nothing stored: a role is a (live or recently deleted) session's sid.
    RoleIsSid,
    /// Nothing stored: these roles are held by live sessions.
    Held(Vec<String>),
}

/// Where session records live.
///
/// Creating, reading and deleting are async (a durable store does I/O). The three
/// `record_*`/`touch` calls come from the session core's hot path (every attach, ack and
/// client frame) and must not block: a durable store buffers them and writes behind.
/// Their values only rise, so a store may apply them in any order.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session and claims its roles, all or nothing: no role may be held by
    /// a live session or be a live or recently deleted session's sid.
    async fn create(&self, record: SessionRecord) -> Result<Claim>;
    /// The record of `sid`, live or recently deleted.
    async fn get(&self, sid: &str) -> Result<Option<SessionRecord>>;
    /// Every live record.
    async fn list(&self) -> Result<Vec<SessionRecord>>;
    /// Deletes the live session `sid` and releases its roles; its record, or None if no
    /// live session has that sid. The sid stays reserved a while.
    async fn delete(&self, sid: &str) -> Result<Option<SessionRecord>>;
    /// Which of `roles` live sessions hold.
    async fn held_roles(&self, roles: &[String]) -> Result<Vec<String>>;
    /// A stream attached with `epoch` at `at`.
    fn record_attach(&self, sid: &str, epoch: u64, at: SystemTime);
    /// The session's seq / ack watermark moved.
    fn record_marks(&self, sid: &str, marks: Marks);
    /// A client frame arrived at `at`.
    fn touch(&self, sid: &str, at: SystemTime);
    /// True if sessions outlive the process: a frame is then sent only once its seq is
    /// reserved ([`Self::reserve_seqs`]).
    fn outlives_process(&self) -> bool {
        false
    }
    /// Raises the stored last seq of `sid` to `upto` and resolves once that is durable:
    /// frames up to it may go out, and a restored session continues past it.
    async fn reserve_seqs(&self, _sid: &str, _upto: u64) -> Result<()> {
        Ok(())
    }
    /// Writes what is buffered and closes (server shutdown).
    async fn close(&self) {}
}

/// The in-memory store: records, role claims, and the last [`DELETED_KEPT`] deleted.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    inner: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    live: HashMap<String, SessionRecord>,
    /// role → sid of the live session holding it.
    roles: HashMap<String, String>,
    deleted: VecDeque<SessionRecord>,
}

impl Records {
    fn is_sid(&self, name: &str) -> bool {
        self.live.contains_key(name) || self.deleted.iter().any(|r| r.sid == name)
    }
}

impl MemorySessionStore {
    fn lock(&self) -> MutexGuard<'_, Records> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn update(&self, sid: &str, f: impl FnOnce(&mut SessionRecord)) {
        if let Some(record) = self.lock().live.get_mut(sid) {
            f(record);
        }
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(&self, record: SessionRecord) -> Result<Claim> {
        let mut r = self.lock();
        if r.is_sid(&record.sid) {
            return Err(Error::AlreadyExists(format!(
                "operator session {} exists",
                record.sid
            )));
        }
        if record.roles.iter().any(|role| r.is_sid(role)) {
            return Ok(Claim::RoleIsSid);
        }
        let held: Vec<String> = record
            .roles
            .iter()
            .filter(|role| r.roles.contains_key(*role))
            .cloned()
            .collect();
        if !held.is_empty() {
            return Ok(Claim::Held(held));
        }
        for role in &record.roles {
            r.roles.insert(role.clone(), record.sid.clone());
        }
        r.live.insert(record.sid.clone(), record);
        Ok(Claim::Claimed)
    }

    async fn get(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let r = self.lock();
        let record = r
            .live
            .get(sid)
            .or_else(|| r.deleted.iter().find(|d| d.sid == sid));
        Ok(record.cloned())
    }

    async fn list(&self) -> Result<Vec<SessionRecord>> {
        Ok(self.lock().live.values().cloned().collect())
    }

    async fn delete(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let mut r = self.lock();
        let Some(mut record) = r.live.remove(sid) else {
            return Ok(None);
        };
        r.roles.retain(|_, holder| holder != sid);
        record.deleted_at = Some(SystemTime::now());
        r.deleted.push_back(record.clone());
        while r.deleted.len() > DELETED_KEPT {
            r.deleted.pop_front();
        }
        Ok(Some(record))
    }

    async fn held_roles(&self, roles: &[String]) -> Result<Vec<String>> {
        let r = self.lock();
        Ok(roles
            .iter()
            .filter(|role| r.roles.contains_key(*role))
            .cloned()
            .collect())
    }

    fn record_attach(&self, sid: &str, epoch: u64, at: SystemTime) {
        self.update(sid, |rec| {
            rec.epoch = rec.epoch.max(epoch);
            rec.last_seen = rec.last_seen.max(at);
        });
    }

    fn record_marks(&self, sid: &str, marks: Marks) {
        self.update(sid, |rec| {
            rec.marks.last_seq = rec.marks.last_seq.max(marks.last_seq);
            rec.marks.acked = rec.marks.acked.max(marks.acked);
        });
    }

    fn touch(&self, sid: &str, at: SystemTime) {
        self.update(sid, |rec| rec.last_seen = rec.last_seen.max(at));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::OperatorBackend;
    use crate::operator::frame::ClientFrame;
    use crate::operator::session::SessionLinks;
    use crate::operator::test_support::{linked_session, test_step};

    fn record(sid: &str, roles: &[&str]) -> SessionRecord {
        let roles = roles.iter().map(|r| r.to_string()).collect();
        SessionRecord::new(sid.into(), "secret-token", roles, SystemTime::now())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_hash_of_the_token_is_kept_and_it_matches_only_that_token() {
        let r = record("op-1", &[]);
        assert_ne!(r.token_hash, "secret-token");
        assert_eq!(r.token_hash.len(), 64);
        assert!(r.token_matches("secret-token"));
        assert!(!r.token_matches("secret-tokeN"));
        assert!(!r.token_matches(""));
        assert!(!format!("{r:?}").contains("secret-token"));
    }

    #[tokio::test]
    async fn roles_are_claimed_all_or_nothing() {
        let store = MemorySessionStore::default();
        let claim = store.create(record("op-1", &["lead", "qa"])).await;
        assert_eq!(claim.expect("create"), Claim::Claimed);
        let clash = store.create(record("op-2", &["dev", "qa"])).await;
        assert_eq!(clash.expect("create"), Claim::Held(strings(&["qa"])));
        assert!(
            store.get("op-2").await.expect("get").is_none(),
            "nothing stored"
        );
        let held = store.held_roles(&strings(&["dev", "lead"])).await;
        assert_eq!(
            held.expect("held"),
            strings(&["lead"]),
            "dev was not claimed"
        );
        let sid_role = store.create(record("op-3", &["op-1"])).await;
        assert_eq!(sid_role.expect("create"), Claim::RoleIsSid);
    }

    #[tokio::test]
    async fn delete_releases_the_roles_and_keeps_the_sid_reserved() {
        let store = MemorySessionStore::default();
        store
            .create(record("op-1", &["lead"]))
            .await
            .expect("create");
        let gone = store
            .delete("op-1")
            .await
            .expect("delete")
            .expect("was live");
        assert!(!gone.is_live());
        assert_eq!(store.delete("op-1").await.expect("delete"), None);
        assert!(store.list().await.expect("list").is_empty());
        let kept = store.get("op-1").await.expect("get").expect("tombstone");
        assert!(!kept.is_live() && kept.token_matches("secret-token"));
        let claim = store.create(record("op-2", &["lead"])).await;
        assert_eq!(claim.expect("create"), Claim::Claimed, "lead is free again");
        let claim = store.create(record("op-3", &["op-1"])).await;
        assert_eq!(
            claim.expect("create"),
            Claim::RoleIsSid,
            "a deleted sid stays reserved"
        );
    }

    #[tokio::test]
    async fn epoch_marks_and_last_seen_only_rise() {
        let store = MemorySessionStore::default();
        store.create(record("op-1", &[])).await.expect("create");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        store.record_attach("op-1", 3, later);
        store.record_attach("op-1", 2, SystemTime::now());
        store.record_marks(
            "op-1",
            Marks {
                last_seq: 9,
                acked: 4,
            },
        );
        store.record_marks(
            "op-1",
            Marks {
                last_seq: 7,
                acked: 5,
            },
        );
        store.touch("op-1", SystemTime::UNIX_EPOCH);
        let r = store.get("op-1").await.expect("get").expect("record");
        assert_eq!(r.epoch, 3);
        assert_eq!((r.marks.last_seq, r.marks.acked), (9, 5));
        assert_eq!(r.last_seen, later);
    }

    #[tokio::test]
    async fn the_session_core_keeps_its_record_current() {
        let store = Arc::new(MemorySessionStore::default());
        store.create(record("op-1", &[])).await.expect("create");
        let links = SessionLinks::new(store.clone());
        let (_bus, session) = linked_session(links);
        let _a = session.attach(0).expect("attach");
        for n in 0..2 {
            session
                .hook_after(test_step(n), serde_json::Value::Null)
                .await;
        }
        session.handle(ClientFrame::Ack { seq: 1 });
        let r = store.get("op-1").await.expect("get").expect("record");
        assert_eq!(r.epoch, 1);
        assert_eq!((r.marks.last_seq, r.marks.acked), (2, 1));
        assert_eq!(r.marks, session.marks());
    }
}
