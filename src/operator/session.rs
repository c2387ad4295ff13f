//! One operator session: its state behind one short-held mutex (never held across an
//! await), and the glue between the parts that state is made of.
//!
//! * `outbox`: seq, cumulative ack, the unacked window a stream reads;
//! * `pending`: req_id → waiter, and the record of ended requests;
//! * `parking`: which stream holds the session, grace and idle timers;
//! * `attachment`: attach / detach and the cursor each door reads frames through;
//! * `inbound`: the frames a door hands in (acks, pongs, replies);
//! * `adapter`: the engine's side ([`crate::engine::OperatorBackend`]), which reaches the
//!   session only through the frame bus.
//!
//! A request is registered and its frame queued under the one lock, in one step, so a
//! reply can never arrive for a request not yet registered, nor a frame go out for a
//! request that was refused.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::attachment::ControlFrames;
use super::bus::{FrameBus, LocalBus, Outbound};
use super::frame::{ServerBody, ServerFrame};
use super::outbox::Outbox;
use super::parking::Presence;
use super::pending::PendingRequests;
use super::settings::SessionLimits;
use super::store::{MemorySessionStore, SessionRecord, SessionStore};
use crate::engine::OperatorRequestError;
use crate::limits::clip_text;

/// The state one lock guards.
pub(super) struct State {
    pub(super) presence: Presence,
    pub(super) last_seen: SystemTime,
    pub(super) outbox: Outbox,
    pub(super) control: ControlFrames,
    pub(super) pending: PendingRequests,
    /// Why and with which retry hint the session closed for good.
    pub(super) closed: Option<(String, u64)>,
    /// Restored from the store after a restart and not attached since: the next welcome
    /// says `server_restarted`.
    pub(super) restarted: bool,
    /// Its stream was held by another replica since this process last sent frames: the
    /// next attach continues the seqs past the client's `last_seq`, as after a restart.
    pub(super) moved: bool,
}

impl State {
    /// No frame or request yet, not closed; the outbox's window bounds the notices too.
    pub(super) fn new(presence: Presence, last_seen: SystemTime, outbox: Outbox) -> Self {
        let window = outbox.window();
        Self {
            presence,
            last_seen,
            outbox,
            control: ControlFrames::new(window),
            pending: PendingRequests::new(),
            closed: None,
            restarted: false,
            moved: false,
        }
    }
}

/// Told of every attach (the hub, which tells the engine host).
pub trait AttachListener: Send + Sync {
    /// A stream attached to `sid`, which holds `roles`.
    fn attached(&self, sid: &str, roles: &[String]);
}

/// The seams a session is wired to: where its record is kept and how frames reach it.
#[derive(Clone)]
pub struct SessionLinks {
    /// Keeps the session's record (epoch, seq/ack marks, last seen).
    pub store: Arc<dyn SessionStore>,
    /// Carries frames between the engine side and the session.
    pub bus: Arc<dyn FrameBus>,
    /// Told of every attach (held weakly; the hub sets it).
    pub attached: Option<Weak<dyn AttachListener>>,
}

impl SessionLinks {
    /// A fresh in-memory store and in-process bus.
    pub fn in_process() -> Self {
        Self::new(Arc::new(MemorySessionStore::default()))
    }

    /// `store` with the in-process bus.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            bus: Arc::new(LocalBus::default()),
            attached: None,
        }
    }
}

impl std::fmt::Debug for SessionLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLinks").finish_non_exhaustive()
    }
}

/// A session as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub sid: String,
    /// Roles (seats) it holds.
    pub roles: Vec<String>,
    /// A stream is attached now (here, or on another replica that announced it).
    pub connected: bool,
    /// Requests awaiting a reply.
    pub pending: u32,
    /// Last frame or attach seen.
    pub last_seen: SystemTime,
    /// Attach counter.
    pub epoch: u64,
    /// Highest seq assigned.
    pub last_seq: u64,
    /// Highest seq acknowledged.
    pub acked_seq: u64,
    /// Creation time.
    pub created_at: SystemTime,
}

/// One operator session, shared by every door that attaches to it.
pub struct OperatorSession {
    pub(super) sid: String,
    pub(super) roles: Vec<String>,
    pub(super) created_at: SystemTime,
    pub(super) limits: Arc<SessionLimits>,
    pub(super) links: SessionLinks,
    state: Mutex<State>,
    pub(super) changes: watch::Sender<u64>,
    /// Highest seq asked of a store that outlives the process (`super::reservation`).
    pub(super) seqs_asked: AtomicU64,
    /// Itself, for the tasks it starts (a reservation).
    pub(super) me: Weak<Self>,
}

impl std::fmt::Debug for OperatorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSession")
            .field("sid", &self.sid)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Drop for OperatorSession {
    fn drop(&mut self) {
        self.links.bus.release(&self.sid);
    }
}

impl OperatorSession {
    /// A new, detached session on its own in-memory store and in-process bus.
    pub fn new(sid: String, roles: Vec<String>, limits: Arc<SessionLimits>) -> Arc<Self> {
        Self::open(sid, roles, limits, SessionLinks::in_process())
    }

    /// A new, detached session wired to `links`; the bus delivers its frames from now on.
    /// Requests park from now until the first attach, up to the grace window.
    pub fn open(
        sid: String,
        roles: Vec<String>,
        limits: Arc<SessionLimits>,
        links: SessionLinks,
    ) -> Arc<Self> {
        let now = SystemTime::now();
        let outbox = Outbox::new(limits.max_unacked);
        let state = State::new(Presence::new(), now, outbox);
        Self::with_state(sid, roles, now, state, limits, links)
    }

    /// A session of a previous process, from its stored record: detached, parked from now
    /// (so one nobody re-attaches to is reaped by the idle rules), its seq / ack marks and
    /// epoch continued (nothing from before is replayed), and its next welcome says
    /// `server_restarted`.
    pub fn restore(
        record: &SessionRecord,
        limits: Arc<SessionLimits>,
        links: SessionLinks,
    ) -> Arc<Self> {
        let outbox = Outbox::resumed(limits.max_unacked, record.marks.last_seq);
        let state = State {
            restarted: true,
            ..State::new(Presence::restored(record.epoch), record.last_seen, outbox)
        };
        let (sid, roles) = (record.sid.clone(), record.roles.clone());
        Self::with_state(sid, roles, record.created_at, state, limits, links)
    }

    pub(super) fn with_state(
        sid: String,
        roles: Vec<String>,
        created_at: SystemTime,
        state: State,
        limits: Arc<SessionLimits>,
        links: SessionLinks,
    ) -> Arc<Self> {
        let (changes, _) = watch::channel(0);
        let epoch = state.presence.epoch();
        let session = Arc::new_cyclic(|me| Self {
            sid,
            roles,
            created_at,
            limits,
            links,
            state: Mutex::new(state),
            changes,
            seqs_asked: AtomicU64::new(0),
            me: me.clone(),
        });
        session.gate(&mut session.lock().outbox);
        session.links.bus.hold(&session);
        session.watch_parking(epoch);
        session
    }

    /// Session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Roles it holds.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Creation time.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Wakes the attached stream.
    pub(super) fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A snapshot for GetSession / ListSessions.
    pub fn info(&self) -> SessionInfo {
        let s = self.lock();
        let marks = s.outbox.marks();
        SessionInfo {
            sid: self.sid.clone(),
            roles: self.roles.clone(),
            // Through a balancer the stream may sit on another replica.
            connected: s.presence.attached().is_some() || s.presence.held_elsewhere(),
            pending: u32::try_from(s.pending.len()).unwrap_or(u32::MAX),
            last_seen: s.last_seen,
            epoch: s.presence.epoch(),
            last_seq: marks.last_seq,
            acked_seq: marks.acked,
            created_at: self.created_at,
        }
    }

    /// How long the session has had no stream (None while attached).
    pub fn detached_for(&self) -> Option<Duration> {
        self.lock().presence.detached_for()
    }

    /// Closes the session for good: streams get `closing` (reconnect after
    /// `retry_after_ms`, 0 = do not) and end, pending requests fail.
    /// Each pending request gets its `cancel` frame before `closing`.
    pub fn close(&self, reason: &str, retry_after_ms: u64) {
        let marks = {
            let mut s = self.lock();
            if s.closed.is_some() {
                return;
            }
            let why = clip_text(&format!("operator session {} {reason}", self.sid));
            withdraw_many_locked(&mut s, &self.sid, None, &why);
            s.closed = Some((reason.to_string(), retry_after_ms));
            if s.presence.attached().is_none() {
                // Nobody can attach any more: the frames would never be read.
                s.outbox.clear();
            }
            s.outbox.marks()
        };
        self.bump();
        self.note_marks(marks);
    }

    /// Fails the pending requests of one task, or all of them, and tells the operator.
    pub(super) fn withdraw_where(&self, task_id: Option<&str>, reason: &str) {
        let mut s = self.lock();
        if !withdraw_many_locked(&mut s, &self.sid, task_id, reason) {
            return;
        }
        let marks = s.outbox.marks();
        drop(s);
        self.bump();
        self.note_marks(marks);
    }

    /// Takes a frame the bus delivers: a request is registered and queued in one step.
    pub(super) fn accept(&self, frame: Outbound) -> Result<(), OperatorRequestError> {
        let mut s = self.lock();
        let changed = match frame {
            Outbound::Request {
                kind,
                req_id,
                task_id,
                body,
                waiter,
            } => {
                if let Some((reason, _)) = &s.closed {
                    return Err(OperatorRequestError(format!(
                        "operator session {} {reason}",
                        self.sid
                    )));
                }
                let grace = self.limits.timeouts.park_grace;
                if s.presence.parked_past(grace) {
                    return Err(OperatorRequestError(format!(
                        "operator session {} has had no stream for over {}s; connect an operator",
                        self.sid,
                        grace.as_secs()
                    )));
                }
                let Some(seq) = s.outbox.push(body.clone()) else {
                    return Err(OperatorRequestError(format!(
                        "operator session {} has {} unacknowledged frames; the operator must ack \
                         what it handled",
                        self.sid, self.limits.max_unacked
                    )));
                };
                let frame = ServerFrame { seq, body };
                s.pending.register(req_id, kind, task_id, waiter, frame);
                true
            }
            Outbound::Info(body) => {
                if s.closed.is_some() || s.outbox.push(body).is_none() {
                    return Err(OperatorRequestError(format!(
                        "operator session {} is closed or full",
                        self.sid
                    )));
                }
                true
            }
            Outbound::Withdraw { req_id, reason } => {
                withdraw_locked(&mut s, &self.sid, &req_id, &reason)
            }
            Outbound::WithdrawTask { task_id, reason } => {
                withdraw_many_locked(&mut s, &self.sid, Some(&task_id), &reason)
            }
        };
        let marks = s.outbox.marks();
        drop(s);
        if changed {
            self.bump();
            self.note_marks(marks);
        }
        Ok(())
    }

    /// The seq / ack marks.
    #[cfg(test)]
    pub(super) fn marks(&self) -> super::outbox::Marks {
        self.lock().outbox.marks()
    }

    /// For the metrics gauges: attached, frames not yet acknowledged, and the pending
    /// requests counted by kind into `pending` (ask, hook_before, spawn).
    pub(crate) fn gauges(&self, pending: &mut [(&'static str, usize); 3]) -> (bool, u64) {
        let s = self.lock();
        s.pending.count_kinds(pending);
        let marks = s.outbox.marks();
        (
            s.presence.attached().is_some(),
            marks.last_seq.saturating_sub(marks.acked),
        )
    }

    /// What the session holds per request id.
    pub(crate) fn structure_counts(&self) -> SessionCounts {
        let s = self.lock();
        let (ended, ended_bytes) = s.pending.ended_counts();
        SessionCounts {
            pending: s.pending.len(),
            ended,
            ended_bytes,
            outbox: s.outbox.len(),
            control: s.control.len(),
        }
    }
}

/// Entries one session holds per request id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionCounts {
    pub(crate) pending: usize,
    pub(crate) ended: usize,
    pub(crate) ended_bytes: usize,
    pub(crate) outbox: usize,
    pub(crate) control: usize,
}

/// Fails one pending request and queues a `cancel` frame for it. True if it was pending.
fn withdraw_locked(s: &mut State, sid: &str, req_id: &str, reason: &str) -> bool {
    let reason = clip_text(reason);
    let Some(task_id) = s.pending.withdraw(req_id, &reason) else {
        return false;
    };
    if s.closed.is_none() {
        let cancel = ServerBody::Cancel {
            req_id: req_id.to_string(),
            reason: reason.clone(),
        };
        let _ = s.outbox.push(cancel);
    }
    tracing::info!(sid, req_id, task_id, %reason, "operator request withdrawn");
    true
}

/// Withdraws the pending requests of one task, or all of them. True if any was pending.
fn withdraw_many_locked(s: &mut State, sid: &str, task_id: Option<&str>, reason: &str) -> bool {
    let ids = s.pending.ids(task_id);
    for id in &ids {
        withdraw_locked(s, sid, id, reason);
    }
    !ids.is_empty()
}
