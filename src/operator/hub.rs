//! The registry of operator sessions: create, authenticate, delete, reap idle ones, and
//! withdraw a finished task's requests from every session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rand::RngCore;

use super::session::{OperatorSession, SessionInfo, SessionLimits};
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

/// Deleted sessions remembered (their outboxes emptied), so a late reply is STALE rather
/// than NOT_FOUND and their sids stay reserved.
const DELETED_KEPT: usize = 256;

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Arc<OperatorSession>>,
    roles: HashMap<String, String>,
    deleted: VecDeque<Arc<OperatorSession>>,
}

impl Inner {
    /// True if `name` is the sid of a live or recently deleted session.
    fn is_sid(&self, name: &str) -> bool {
        self.sessions.contains_key(name) || self.deleted.iter().any(|s| s.sid() == name)
    }
}

/// All operator sessions of this server.
pub struct OperatorHub {
    host: Arc<EngineHost>,
    limits: Arc<SessionLimits>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for OperatorHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorHub").finish_non_exhaustive()
    }
}

impl OperatorHub {
    /// A hub over `host`; starts the task-end listener and the idle reaper.
    pub fn start(host: Arc<EngineHost>, limits: SessionLimits) -> Arc<Self> {
        let hub = Arc::new(Self {
            host,
            limits: Arc::new(limits),
            inner: Mutex::new(Inner::default()),
        });
        let listener: Arc<dyn TaskEndListener> = hub.clone();
        hub.host.add_task_end_listener(Arc::downgrade(&listener));
        spawn_reaper(&hub);
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
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
        let session = OperatorSession::new(
            sid.clone(),
            token.clone(),
            clean.clone(),
            self.limits.clone(),
        );
        {
            let mut inner = self.lock();
            if clean.iter().any(|r| inner.is_sid(r)) {
                return Err(Error::AlreadyExists(
                    "a role may not be a session id (each sid is its own session's seat); \
                     pick another role"
                        .into(),
                ));
            }
            let held: Vec<&String> = clean
                .iter()
                .filter(|r| inner.roles.contains_key(*r))
                .collect();
            if !held.is_empty() {
                let names: Vec<&str> = held.iter().map(|r| r.as_str()).collect();
                return Err(Error::AlreadyExists(format!(
                    "role {} is held by a live session; delete that session or pick another role",
                    names.join(", ")
                )));
            }
            for role in &clean {
                inner.roles.insert(role.clone(), sid.clone());
            }
            inner.sessions.insert(sid.clone(), session.clone());
        }
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
    pub fn authenticate(&self, sid: &str, token: Option<&str>) -> Result<Arc<OperatorSession>> {
        let token = token.ok_or_else(|| {
            Error::Unauthenticated(
                "missing bearer token: send 'authorization: Bearer <session token>' (the token \
                 returned when the session was created)"
                    .into(),
            )
        })?;
        let session = self.get(sid)?;
        if !session.token_matches(token) {
            return Err(Error::Unauthenticated(format!(
                "token does not match session {sid}"
            )));
        }
        Ok(session)
    }

    /// As [`Self::authenticate`], but also finds a recently deleted session, so a reply
    /// to one of its requests is answered STALE.
    pub fn authenticate_reply(
        &self,
        sid: &str,
        token: Option<&str>,
    ) -> Result<Arc<OperatorSession>> {
        let deleted = {
            let inner = self.lock();
            if inner.sessions.contains_key(sid) {
                None
            } else {
                inner.deleted.iter().find(|s| s.sid() == sid).cloned()
            }
        };
        match (deleted, token) {
            (Some(session), Some(token)) if session.token_matches(token) => Ok(session),
            _ => self.authenticate(sid, token),
        }
    }

    /// The session `sid` without checking a token (NOT_FOUND if unknown).
    pub fn find(&self, sid: &str) -> Result<Arc<OperatorSession>> {
        self.get(sid)
    }

    fn get(&self, sid: &str) -> Result<Arc<OperatorSession>> {
        self.lock().sessions.get(sid).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "operator session '{sid}' not found; create a session first"
            ))
        })
    }

    /// Which of `roles` are held by live sessions.
    pub fn held_roles(&self, roles: &[String]) -> Vec<String> {
        let inner = self.lock();
        roles
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| inner.roles.contains_key(r))
            .collect()
    }

    /// Every live session.
    pub fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<_> = self.lock().sessions.values().cloned().collect();
        let mut out: Vec<SessionInfo> = sessions.iter().map(|s| s.info()).collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    /// Deletes a session: `closing` to its stream, its pending requests failed at once, its
    /// roles freed.
    pub async fn delete(&self, sid: &str, reason: &str) -> Result<()> {
        let session = {
            let mut inner = self.lock();
            let session = inner
                .sessions
                .remove(sid)
                .ok_or_else(|| Error::NotFound(format!("operator session '{sid}' not found")))?;
            inner.roles.retain(|_, holder| holder != sid);
            inner.deleted.push_back(session.clone());
            while inner.deleted.len() > DELETED_KEPT {
                inner.deleted.pop_front();
            }
            session
        };
        session.close(reason, 0);
        self.host.unregister_operator(sid, session.roles()).await;
        tracing::info!(sid, reason, "operator session deleted");
        Ok(())
    }

    /// Closes every session's stream with `closing` and fails what is pending (shutdown).
    pub fn close_all(&self, reason: &str, retry_after_ms: u64) {
        let sessions: Vec<_> = self.lock().sessions.values().cloned().collect();
        for s in sessions {
            s.close(reason, retry_after_ms);
        }
    }

    /// Counts what the engine host and every session hold (issue 18): the host's
    /// [`EngineHost::structure_counts`] plus `hub.*` and the `session.*` sums.
    pub async fn structure_counts(&self) -> StructureCounts {
        let (sessions, roles) = {
            let inner = self.lock();
            let sessions: Vec<_> = inner.sessions.values().cloned().collect();
            (sessions, inner.roles.len())
        };
        let mut sum = super::session::SessionCounts::default();
        for s in &sessions {
            let n = s.structure_counts();
            sum.pending += n.pending;
            sum.ended += n.ended;
            sum.ended_bytes += n.ended_bytes;
            sum.outbox += n.outbox;
            sum.control += n.control;
        }
        let remembered = Bound::Retained(sessions.len() * super::session::ENDED_REMEMBERED);
        let mut c = self.host.structure_counts().await;
        c.insert("hub.sessions", sessions.len(), Bound::PerClient);
        c.insert("hub.roles", roles, Bound::PerClient);
        c.insert("session.pending", sum.pending, Bound::PerTask);
        c.insert("session.ended", sum.ended, remembered);
        c.insert(
            "session.ended_bytes",
            sum.ended_bytes,
            Bound::Retained(sessions.len() * super::session::ENDED_BYTES_MAX),
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
        let mut pending = super::session::KIND_NAMES.map(|k| (k, 0));
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

    async fn reap_idle(&self) {
        let horizon = self.limits.timeouts.idle_horizon;
        let idle: Vec<String> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.detached_for().is_some_and(|d| d > horizon))
            .map(|s| s.sid().to_string())
            .collect();
        for sid in idle {
            let _ = self
                .delete(&sid, "reaped: no stream within the idle horizon")
                .await;
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn spawn_reaper(hub: &Arc<OperatorHub>) {
    let weak: Weak<OperatorHub> = Arc::downgrade(hub);
    let period = (hub.limits.timeouts.idle_horizon / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(hub) = weak.upgrade() else { break };
            hub.reap_idle().await;
        }
    });
}

impl TaskEndListener for OperatorHub {
    fn task_ended(&self, task_id: &str, reason: &str) {
        let sessions: Vec<_> = self.lock().sessions.values().cloned().collect();
        for s in sessions {
            s.withdraw_task(task_id, reason);
        }
    }
}
