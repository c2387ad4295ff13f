//! The registry of operator sessions: create, authenticate, delete, reap idle ones, and
//! withdraw a finished task's requests from every session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::RngCore;

use super::bus::Outbound;
use super::parking::{is_idle, spawn_reaper};
use super::pending::{ENDED_BYTES_MAX, ENDED_REMEMBERED};
use super::session::{AttachListener, OperatorSession, SessionCounts, SessionInfo, SessionLinks};
use super::settings::SessionLimits;
use super::store::{Claim, SessionRecord};
use crate::engine::{Bound, EngineHost, StructureCounts, TaskEndListener};
use crate::error::{Error, Result};

/// A new session's credentials.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    /// `op-<uuid>`.
    pub sid: String,
    /// Bearer secret (128 bits, hex).
    pub token: String,
    /// Roles it holds.
    pub roles: Vec<String>,
}

/// Deleted sessions kept alive, so a late reply to one of their requests is answered
/// STALE (the store keeps their records as long).
const DELETED_KEPT: usize = 256;

/// The session objects of this process: live ones, and the recently deleted.
#[derive(Default)]
struct Live {
    sessions: HashMap<String, Arc<OperatorSession>>,
    deleted: VecDeque<Arc<OperatorSession>>,
}

/// All operator sessions of this server. Records and role claims go through the
/// [`SessionStore`]; frames between the engine and a session through the [`FrameBus`].
pub struct OperatorHub {
    host: Arc<EngineHost>,
    limits: Arc<SessionLimits>,
    links: SessionLinks,
    live: Mutex<Live>,
}

impl std::fmt::Debug for OperatorHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorHub").finish_non_exhaustive()
    }
}

impl OperatorHub {
    /// A hub over `host` with the in-memory store and the in-process bus; starts the
    /// task-end listener and the idle reaper.
    pub fn start(host: Arc<EngineHost>, limits: SessionLimits) -> Arc<Self> {
        Self::start_with(host, limits, SessionLinks::in_process())
    }

    /// As [`Self::start`], on the given store and bus.
    pub fn start_with(
        host: Arc<EngineHost>,
        limits: SessionLimits,
        mut links: SessionLinks,
    ) -> Arc<Self> {
        let hub = Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let listener: std::sync::Weak<dyn AttachListener> = me.clone();
            links.attached = Some(listener);
            Self {
                host,
                limits: Arc::new(limits),
                links,
                live: Mutex::new(Live::default()),
            }
        });
        let listener: Arc<dyn TaskEndListener> = hub.clone();
        hub.host.add_task_end_listener(Arc::downgrade(&listener));
        spawn_reaper(&hub, hub.limits.timeouts.idle_horizon);
        hub
    }

    /// Loads every session the store kept from a previous process, detached: the same
    /// sid and token attach again, roles stay claimed, the first welcome says
    /// `server_restarted`. One nobody attaches to is reaped by the idle rules, counted
    /// from now. Returns how many were restored.
    pub async fn restore(self: &Arc<Self>) -> Result<usize> {
        let records = self.links.store.list().await?;
        for record in &records {
            let session = OperatorSession::restore(record, self.limits.clone(), self.links.clone());
            self.lock()
                .sessions
                .insert(record.sid.clone(), session.clone());
            self.host
                .register_operator(&record.sid, &record.roles, session)
                .await;
            tracing::info!(sid = %record.sid, roles = ?record.roles, "operator session restored");
        }
        Ok(records.len())
    }

    /// Writes what the store buffers and closes it (after [`Self::close_all`]).
    pub async fn close_store(&self) {
        self.links.store.close().await;
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        match self.live.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn live_sessions(&self) -> Vec<Arc<OperatorSession>> {
        self.lock().sessions.values().cloned().collect()
    }

    /// Creates a session holding `roles`. A role held by a live session, or equal to a
    /// session's sid (every sid is a reserved seat) → ALREADY_EXISTS.
    pub async fn create(&self, roles: Vec<String>) -> Result<CreatedSession> {
        let mut clean: Vec<String> = Vec::new();
        for role in roles {
            let role = role.trim().to_string();
            if role.is_empty() || role.len() > 128 {
                return Err(Error::invalid(
                    "roles",
                    "each role must be 1-128 characters",
                ));
            }
            if !clean.contains(&role) {
                clean.push(role);
            }
        }
        let sid = format!("op-{}", uuid::Uuid::new_v4());
        let token = new_token();
        let session = OperatorSession::open(
            sid.clone(),
            clean.clone(),
            self.limits.clone(),
            self.links.clone(),
        );
        let record = SessionRecord::new(sid.clone(), &token, clean.clone(), session.created_at());
        match self.links.store.create(record).await? {
            Claim::Claimed => {}
            Claim::RoleIsSid => {
                return Err(Error::AlreadyExists(
                    "a role may not be a session id (each sid is its own session's seat); \
                     pick another role"
                        .into(),
                ))
            }
            Claim::Held(held) => {
                return Err(Error::AlreadyExists(format!(
                    "role {} is held by a live session; delete that session or pick another role",
                    held.join(", ")
                )))
            }
        }
        self.lock().sessions.insert(sid.clone(), session.clone());
        self.host.register_operator(&sid, &clean, session).await;
        tracing::info!(sid = %sid, roles = ?clean, "operator session created");
        Ok(CreatedSession {
            sid,
            token,
            roles: clean,
        })
    }

    /// The session `sid` if `token` is its token. Missing token → UNAUTHENTICATED, unknown
    /// sid → NOT_FOUND, wrong token → UNAUTHENTICATED (in that order, as v0.1.0).
    pub async fn authenticate(
        &self,
        sid: &str,
        token: Option<&str>,
    ) -> Result<Arc<OperatorSession>> {
        let token = token.ok_or_else(|| {
            Error::Unauthenticated(
                "missing bearer token: send 'authorization: Bearer <session token>' (the token \
                 returned when the session was created)"
                    .into(),
            )
        })?;
        let record = self
            .links
            .store
            .get(sid)
            .await?
            .filter(SessionRecord::is_live);
        let Some(record) = record else {
            return Err(not_found(sid));
        };
        if !record.token_matches(token) {
            return Err(Error::Unauthenticated(format!(
                "token does not match session {sid}"
            )));
        }
        let session = self.find_or_adopt(&record).await;
        // Another replica may have held the stream since: take its epoch and seqs.
        session.catch_up(&record);
        Ok(session)
    }

    /// Learns a live session another replica created or holds (announced on the bus):
    /// this replica's engine can route to it from now on.
    pub async fn adopt(&self, sid: &str) -> Result<Option<Arc<OperatorSession>>> {
        let record = self.links.store.get(sid).await?;
        match record.filter(SessionRecord::is_live) {
            Some(record) => Ok(Some(self.find_or_adopt(&record).await)),
            None => Ok(None),
        }
    }

    /// A stream attached to `sid` on another replica: the session is learnt, and this
    /// replica's interrupted runs waiting for it resume (they reach it through the bus).
    pub async fn attached_elsewhere(&self, sid: &str) -> Result<()> {
        if let Some(session) = self.adopt(sid).await? {
            self.host.on_session_attached(sid, session.roles()).await;
        }
        Ok(())
    }

    /// The session object of `record`, made (held elsewhere) and registered with the
    /// engine if this process has none: its record is in the shared store.
    async fn find_or_adopt(&self, record: &SessionRecord) -> Arc<OperatorSession> {
        let session = {
            let mut live = self.lock();
            if let Some(session) = live.sessions.get(&record.sid) {
                return session.clone();
            }
            let session = OperatorSession::adopt(record, self.limits.clone(), self.links.clone());
            live.sessions.insert(record.sid.clone(), session.clone());
            session
        };
        self.host
            .register_operator(&record.sid, &record.roles, session.clone())
            .await;
        tracing::info!(sid = %record.sid, roles = ?record.roles, "operator session adopted from the shared store");
        session
    }

    /// As [`Self::authenticate`], but also finds a recently deleted session, so a reply
    /// to one of its requests is answered STALE.
    pub async fn authenticate_reply(
        &self,
        sid: &str,
        token: Option<&str>,
    ) -> Result<Arc<OperatorSession>> {
        if let (Some(record), Some(token)) = (self.links.store.get(sid).await?, token) {
            if !record.is_live() && record.token_matches(token) {
                let deleted = self.lock().deleted.iter().find(|s| s.sid() == sid).cloned();
                if let Some(session) = deleted {
                    return Ok(session);
                }
            }
        }
        self.authenticate(sid, token).await
    }

    /// The live session `sid` without checking a token (NOT_FOUND if unknown).
    pub fn find(&self, sid: &str) -> Result<Arc<OperatorSession>> {
        self.lock()
            .sessions
            .get(sid)
            .cloned()
            .ok_or_else(|| not_found(sid))
    }

    /// Which of `roles` are held by live sessions.
    pub async fn held_roles(&self, roles: &[String]) -> Result<Vec<String>> {
        let roles: Vec<String> = roles.iter().map(|r| r.trim().to_string()).collect();
        self.links.store.held_roles(&roles).await
    }

    /// Every live session.
    pub async fn list(&self) -> Result<Vec<SessionInfo>> {
        let records = self.links.store.list().await?;
        let live = self.lock();
        let mut out: Vec<SessionInfo> = records
            .iter()
            .filter_map(|r| live.sessions.get(&r.sid).map(|s| s.info()))
            .collect();
        drop(live);
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    /// Deletes a session: `closing` to its stream, its pending requests failed at once, its
    /// roles freed.
    pub async fn delete(&self, sid: &str, reason: &str) -> Result<()> {
        let gone = || Error::NotFound(format!("operator session '{sid}' not found"));
        self.links.store.delete(sid).await?.ok_or_else(gone)?;
        self.links.bus.deleted(sid, reason);
        if !self.forget(sid, reason).await {
            return Err(gone());
        }
        tracing::info!(sid, reason, "operator session deleted");
        Ok(())
    }

    /// Drops this process's object of a deleted session: `closing` to its stream, its
    /// pending requests failed, its seats unregistered. False if there was none.
    pub async fn forget(&self, sid: &str, reason: &str) -> bool {
        let session = {
            let mut live = self.lock();
            let Some(session) = live.sessions.remove(sid) else {
                return false;
            };
            live.deleted.push_back(session.clone());
            while live.deleted.len() > DELETED_KEPT {
                live.deleted.pop_front();
            }
            session
        };
        session.close(reason, 0);
        self.host.unregister_operator(sid, session.roles()).await;
        true
    }

    /// Closes every session's stream with `closing` and fails what is pending (shutdown).
    pub fn close_all(&self, reason: &str, retry_after_ms: u64) {
        for s in self.live_sessions() {
            s.close(reason, retry_after_ms);
        }
    }

    /// Counts what the engine host and every session hold (issue 18): the host's
    /// [`EngineHost::structure_counts`] plus `hub.*` and the `session.*` sums.
    pub async fn structure_counts(&self) -> StructureCounts {
        let sessions = self.live_sessions();
        // Every role of a live session is one claim.
        let roles: usize = sessions.iter().map(|s| s.roles().len()).sum();
        let mut sum = SessionCounts::default();
        for s in &sessions {
            let n = s.structure_counts();
            sum.pending += n.pending;
            sum.ended += n.ended;
            sum.ended_bytes += n.ended_bytes;
            sum.outbox += n.outbox;
            sum.control += n.control;
        }
        let remembered = Bound::Retained(sessions.len() * ENDED_REMEMBERED);
        let mut c = self.host.structure_counts().await;
        c.insert("hub.sessions", sessions.len(), Bound::PerClient);
        c.insert("hub.roles", roles, Bound::PerClient);
        c.insert("session.pending", sum.pending, Bound::PerTask);
        c.insert("session.ended", sum.ended, remembered);
        c.insert(
            "session.ended_bytes",
            sum.ended_bytes,
            Bound::Retained(sessions.len() * ENDED_BYTES_MAX),
        );
        c.insert(
            "session.outbox",
            sum.outbox,
            Bound::Retained(sessions.len() * self.limits.max_unacked),
        );
        c.insert(
            "session.control",
            sum.control,
            Bound::Retained(sessions.len() * self.limits.max_unacked),
        );
        c
    }

    /// The operator gauges of `/metrics`, read now.
    pub fn metric_gauges(&self) -> crate::metrics::OperatorGauges {
        let sessions: Vec<_> = self.lock().sessions.values().cloned().collect();
        let mut pending = super::pending::KIND_NAMES.map(|k| (k, 0));
        let mut g = crate::metrics::OperatorGauges {
            live: sessions.len(),
            ..Default::default()
        };
        for s in &sessions {
            let (attached, unacked) = s.gauges(&mut pending);
            g.attached += usize::from(attached);
            g.unacked += unacked;
        }
        g.pending = pending.to_vec();
        g
    }

    /// Deletes the sessions without a stream for longer than the idle horizon.
    pub(super) async fn reap_idle(&self) {
        let horizon = self.limits.timeouts.idle_horizon;
        let idle: Vec<String> = self
            .live_sessions()
            .iter()
            .filter(|s| is_idle(s, horizon))
            .map(|s| s.sid().to_string())
            .collect();
        for sid in idle {
            // A stream on another replica keeps the shared record's last_seen fresh.
            let record = self.links.store.get(&sid).await.ok().flatten();
            if record.is_some_and(|r| r.last_seen.elapsed().is_ok_and(|d| d < horizon)) {
                continue;
            }
            let _ = self
                .delete(&sid, "reaped: no stream within the idle horizon")
                .await;
        }
    }
}

fn not_found(sid: &str) -> Error {
    Error::NotFound(format!(
        "operator session '{sid}' not found; create a session first"
    ))
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl AttachListener for OperatorHub {
    /// Tells the engine host, so runs waiting for this session after a restart resume.
    fn attached(&self, sid: &str, roles: &[String]) {
        let (host, sid, roles) = (self.host.clone(), sid.to_string(), roles.to_vec());
        tokio::spawn(async move { host.on_session_attached(&sid, &roles).await });
    }
}

impl TaskEndListener for OperatorHub {
    /// A task's end crosses from the engine to every session through the bus.
    fn task_ended(&self, task_id: &str, reason: &str) {
        for s in self.live_sessions() {
            let withdraw = Outbound::WithdrawTask {
                task_id: task_id.to_string(),
                reason: reason.to_string(),
            };
            let _ = self.links.bus.deliver(s.sid(), withdraw);
        }
    }
}
