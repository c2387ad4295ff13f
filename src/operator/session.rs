//! One operator session: the pending-request map, the seq / ack / replay outbox, parking
//! while no stream is attached, reply timeouts, and the frame stream each door reads.
//!
//! All state sits behind one short-held mutex (never across an await). Frames are kept in
//! the outbox until acknowledged; an attached stream is a cursor over it, so a re-attach
//! re-sends exactly the unacknowledged frames, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::directive::spawn_directive;
use super::ended::EndedMemory;
use super::frame::{ClientFrame, NoticeCode, ReplyOutcome, ServerBody, ServerFrame, Step, Welcome};
use crate::config::OperatorTimeouts;
use crate::engine::{OperatorBackend, OperatorRequestError, SpawnGrant, SpawnReply, StepContext};
use crate::error::{Error, Result};
use crate::limits::{clip_text, SizePolicy};

/// Default for [`SessionLimits::max_unacked`].
pub const DEFAULT_MAX_UNACKED: usize = 10_000;
/// Ended req_ids remembered to tell duplicates and stale replies from unknown ones.
const ENDED_MEMORY: usize = 4096;
/// Ping intervals without a frame from the client after which a stream is dropped.
pub const MISSED_PINGS: u32 = 3;
/// What `closing` tells a client dropped for silence to wait before reconnecting.
const SILENT_RETRY_AFTER_MS: u64 = 1000;

/// Settings every session shares.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Timeouts and intervals.
    pub timeouts: OperatorTimeouts,
    /// The server's HTTP root, named in spawn directives.
    pub base_url: String,
    /// Most unacknowledged frames a session holds; past it new requests fail at once.
    pub max_unacked: usize,
    /// What the session stores from replies and puts in frames.
    pub size: SizePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ask = 0,
    Hook = 1,
    Spawn = 2,
}

/// The request kinds' names, in `Kind` order (metrics labels).
pub(crate) const KIND_NAMES: [&str; 3] = ["ask", "hook_before", "spawn"];

impl Kind {
    fn name(self) -> &'static str {
        KIND_NAMES[self as usize]
    }

    fn reply_name(self) -> &'static str {
        match self {
            Kind::Ask => "answer",
            Kind::Hook => "hook_ack",
            Kind::Spawn => "spawn_ack",
        }
    }
}

#[derive(Debug)]
enum Reply {
    Answer(Value),
    Hook,
    Spawn(SpawnReply),
}

type Waiter = oneshot::Sender<std::result::Result<Reply, OperatorRequestError>>;

struct Pending {
    kind: Kind,
    task_id: String,
    reply: Waiter,
    /// The request frame, re-sent to doors without seq/ack (the WebSocket shim).
    frame: ServerFrame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    Withdrawn,
}

struct State {
    epoch: u64,
    attached: Option<u64>,
    detached_since: Option<Instant>,
    last_seen: SystemTime,
    last_seq: u64,
    acked: u64,
    outbox: VecDeque<ServerFrame>,
    control: VecDeque<(u64, ServerBody)>,
    pending: HashMap<String, Pending>,
    ended: EndedMemory<Ended>,
    closed: Option<(String, u64)>,
}

/// A session as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub sid: String,
    /// Roles (seats) it holds.
    pub roles: Vec<String>,
    /// A stream is attached now.
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
    sid: String,
    token: String,
    roles: Vec<String>,
    created_at: SystemTime,
    limits: Arc<SessionLimits>,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for OperatorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSession")
            .field("sid", &self.sid)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl OperatorSession {
    /// A new, detached session. Requests park from now until the first attach, up to the
    /// grace window.
    pub fn new(
        sid: String,
        token: String,
        roles: Vec<String>,
        limits: Arc<SessionLimits>,
    ) -> Arc<Self> {
        let (changes, _) = watch::channel(0);
        let session = Arc::new(Self {
            sid,
            token,
            roles,
            created_at: SystemTime::now(),
            limits,
            state: Mutex::new(State {
                epoch: 0,
                attached: None,
                detached_since: Some(Instant::now()),
                last_seen: SystemTime::now(),
                last_seq: 0,
                acked: 0,
                outbox: VecDeque::new(),
                control: VecDeque::new(),
                pending: HashMap::new(),
                ended: EndedMemory::new(ENDED_MEMORY),
                closed: None,
            }),
            changes,
        });
        session.watch_parking(0);
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

    /// True if `token` is this session's token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        crate::secret::secrets_equal(token, &self.token)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A snapshot for GetSession / ListSessions.
    pub fn info(&self) -> SessionInfo {
        let s = self.lock();
        SessionInfo {
            sid: self.sid.clone(),
            roles: self.roles.clone(),
            connected: s.attached.is_some(),
            pending: u32::try_from(s.pending.len()).unwrap_or(u32::MAX),
            last_seen: s.last_seen,
            epoch: s.epoch,
            last_seq: s.last_seq,
            acked_seq: s.acked,
            created_at: self.created_at,
        }
    }

    /// How long the session has had no stream (None while attached).
    pub fn detached_for(&self) -> Option<Duration> {
        self.lock().detached_since.map(|t| t.elapsed())
    }

    /// Attaches a stream resuming after `last_seq` (which also acknowledges): bumps the
    /// epoch (a previous stream gets `closing` and ends) and returns the attachment, whose
    /// first frame is `welcome`, then every acknowledged request still awaiting its reply,
    /// then every unacknowledged frame, each group in seq order.
    /// Such a stream answers pings: one silent for [`MISSED_PINGS`] intervals is detached.
    pub fn attach(self: &Arc<Self>, last_seq: u64) -> Result<Attachment> {
        self.attach_with(Some(last_seq))
    }

    /// Attaches a door without seq/ack (the v0.1.0 WebSocket shim): everything sent so far
    /// counts as acknowledged, so exactly the requests still pending are re-sent.
    pub fn attach_unsequenced(self: &Arc<Self>) -> Result<Attachment> {
        self.attach_with(None)
    }

    fn attach_with(self: &Arc<Self>, last_seq: Option<u64>) -> Result<Attachment> {
        let mut s = self.lock();
        if let Some((reason, _)) = &s.closed {
            return Err(Error::NotFound(format!(
                "operator session {} {reason}",
                self.sid
            )));
        }
        let last_seq_given = last_seq.is_some();
        let last_seq = last_seq.unwrap_or(s.last_seq);
        if last_seq > s.last_seq {
            return Err(Error::invalid(
                "last_seq",
                format!(
                    "{last_seq} is ahead of the last frame this session sent ({}); resume with the \
                     highest seq you received, or 0",
                    s.last_seq
                ),
            ));
        }
        ack_locked(&mut s, last_seq);
        // Requests whose frames were acknowledged but whose replies never arrived (lost
        // with the old stream) are sent again first; nothing still awaited is lost.
        let mut awaited: Vec<ServerFrame> = s
            .pending
            .values()
            .filter(|p| p.frame.seq <= s.acked)
            .map(|p| p.frame.clone())
            .collect();
        awaited.sort_by_key(|f| f.seq);
        let replay: VecDeque<ServerFrame> = awaited.into();
        s.epoch += 1;
        let epoch = s.epoch;
        s.attached = Some(epoch);
        s.detached_since = None;
        s.last_seen = SystemTime::now();
        s.control.retain(|(e, _)| *e == epoch);
        let welcome = Welcome {
            sid: self.sid.clone(),
            epoch,
            acked_seq: s.acked,
            replayed: u32::try_from(s.outbox.len() + replay.len()).unwrap_or(u32::MAX),
            roles: self.roles.clone(),
            ping_interval_secs: u32::try_from(self.limits.timeouts.ping_interval.as_secs())
                .unwrap_or(u32::MAX),
        };
        let cursor = s.acked;
        drop(s);
        self.bump();
        tracing::info!(sid = %self.sid, epoch, resume_after = cursor, "operator attached");
        crate::metrics::frames_replayed(welcome.replayed);
        let period = self.limits.timeouts.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Attachment {
            session: Arc::clone(self),
            epoch,
            cursor,
            welcome: Some(welcome),
            replay,
            finished: false,
            changes: self.changes.subscribe(),
            ping,
            nonce: 0,
            silence_limit: last_seq_given.then(|| period * MISSED_PINGS),
            dropped_silent: false,
        })
    }

    /// Marks the stream of `epoch` gone. A newer stream is left alone. Parked requests
    /// fail if no stream attaches within the grace window.
    pub fn detach(self: &Arc<Self>, epoch: u64) {
        let mut s = self.lock();
        if s.attached != Some(epoch) {
            return;
        }
        s.attached = None;
        s.detached_since = Some(Instant::now());
        drop(s);
        self.bump();
        tracing::info!(sid = %self.sid, epoch, "operator detached");
        self.watch_parking(epoch);
    }

    fn watch_parking(self: &Arc<Self>, epoch: u64) {
        let weak = Arc::downgrade(self);
        let grace = self.limits.timeouts.park_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(session) = weak.upgrade() {
                session.expire_parked(epoch, grace);
            }
        });
    }

    fn expire_parked(&self, epoch: u64, grace: Duration) {
        let still_detached = {
            let s = self.lock();
            s.attached.is_none() && s.epoch == epoch && s.closed.is_none()
        };
        if still_detached {
            crate::metrics::parking_expired();
            let reason = format!(
                "operator session {} had no stream for {}s; its requests were failed",
                self.sid,
                grace.as_secs()
            );
            self.withdraw_where(|_| true, &reason);
        }
    }

    /// Closes the session for good: streams get `closing` (reconnect after
    /// `retry_after_ms`, 0 = do not) and end, pending requests fail.
    /// Each pending request gets its `cancel` frame before `closing`.
    pub fn close(&self, reason: &str, retry_after_ms: u64) {
        {
            let mut s = self.lock();
            if s.closed.is_some() {
                return;
            }
            let why = clip_text(&format!("operator session {} {reason}", self.sid));
            let ids: Vec<String> = s.pending.keys().cloned().collect();
            for id in ids {
                withdraw_locked(&mut s, &self.sid, &id, &why, self.limits.max_unacked);
            }
            s.closed = Some((reason.to_string(), retry_after_ms));
            if s.attached.is_none() {
                // Nobody can attach any more: the frames would never be read.
                s.outbox.clear();
            }
        }
        self.bump();
    }

    /// Fails the pending requests of one task (it ended) and tells the operator.
    pub fn withdraw_task(&self, task_id: &str, reason: &str) {
        self.withdraw_where(|p| p.task_id == task_id, reason);
    }

    fn withdraw_where(&self, pred: impl Fn(&Pending) -> bool, reason: &str) {
        let mut s = self.lock();
        let ids: Vec<String> = s
            .pending
            .iter()
            .filter(|(_, p)| pred(p))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        for id in ids {
            withdraw_locked(&mut s, &self.sid, &id, reason, self.limits.max_unacked);
        }
        drop(s);
        self.bump();
    }

    fn withdraw(&self, req_id: &str, reason: &str) {
        let max = self.limits.max_unacked;
        let done = withdraw_locked(&mut self.lock(), &self.sid, req_id, reason, max);
        if done {
            self.bump();
        }
    }

    /// Queues a frame for delivery; None if the session is closed or over its limit.
    fn push_locked(&self, s: &mut State, body: ServerBody) -> Option<u64> {
        if s.closed.is_some() || s.outbox.len() >= self.limits.max_unacked {
            return None;
        }
        s.last_seq += 1;
        let seq = s.last_seq;
        s.outbox.push_back(ServerFrame { seq, body });
        Some(seq)
    }

    /// Sends a request frame and waits for its reply, parking while detached.
    async fn request(
        &self,
        kind: Kind,
        task_id: &str,
        build: impl FnOnce(&str, u64) -> ServerBody,
    ) -> std::result::Result<Reply, OperatorRequestError> {
        let timeout = match kind {
            Kind::Ask => self.limits.timeouts.ask,
            Kind::Hook => self.limits.timeouts.hook,
            Kind::Spawn => self.limits.timeouts.spawn,
        };
        let req_id = format!(
            "{}-{}-{}",
            self.sid,
            kind.name(),
            uuid::Uuid::new_v4().simple()
        );
        let deadline_ms = unix_ms(SystemTime::now() + timeout);
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            if let Some((reason, _)) = &s.closed {
                return Err(OperatorRequestError(format!(
                    "operator session {} {reason}",
                    self.sid
                )));
            }
            let grace = self.limits.timeouts.park_grace;
            if s.detached_since.is_some_and(|t| t.elapsed() > grace) {
                return Err(OperatorRequestError(format!(
                    "operator session {} has had no stream for over {}s; connect an operator",
                    self.sid,
                    grace.as_secs()
                )));
            }
            let body = build(&req_id, deadline_ms);
            let Some(seq) = self.push_locked(&mut s, body.clone()) else {
                return Err(OperatorRequestError(format!(
                    "operator session {} has {} unacknowledged frames; the operator must ack \
                     what it handled",
                    self.sid, self.limits.max_unacked
                )));
            };
            s.pending.insert(
                req_id.clone(),
                Pending {
                    kind,
                    task_id: task_id.to_string(),
                    reply: tx,
                    frame: ServerFrame { seq, body },
                },
            );
        }
        self.bump();
        tracing::debug!(sid = %self.sid, req_id = %req_id, task_id, kind = kind.name(), "operator request sent");
        let guard = AbandonGuard {
            session: self,
            req_id: &req_id,
        };
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(OperatorRequestError(format!(
                "operator session {} dropped request {req_id}",
                self.sid
            ))),
            Err(_) => {
                let reason = format!(
                    "operator did not answer {} {req_id} within {}s",
                    kind.name(),
                    timeout.as_secs()
                );
                self.withdraw(&req_id, &reason);
                Err(OperatorRequestError(reason))
            }
        };
        drop(guard);
        result
    }

    /// Handles one client frame from a door without streams of its own (`Send`, the
    /// WebSocket shim).
    pub fn handle(&self, frame: ClientFrame) -> ReplyOutcome {
        self.handle_inner(None, frame)
            .unwrap_or(ReplyOutcome::Accepted)
    }

    /// Handles one client frame read from the stream of `epoch`. None: the stream was
    /// replaced, and frames of older epochs are void.
    pub fn handle_on(&self, epoch: u64, frame: ClientFrame) -> Option<ReplyOutcome> {
        self.handle_inner(Some(epoch), frame)
    }

    fn handle_inner(&self, epoch: Option<u64>, frame: ClientFrame) -> Option<ReplyOutcome> {
        if let Err(outcome) = self.check_reply_size(&frame) {
            return Some(outcome);
        }
        let outcome = {
            let mut s = self.lock();
            if epoch.is_some_and(|e| s.epoch != e || s.attached != Some(e)) {
                tracing::debug!(sid = %self.sid, ?epoch, "frame of a replaced stream ignored");
                return None;
            }
            s.last_seen = SystemTime::now();
            match frame {
                ClientFrame::Hello { .. } => refused(
                    NoticeCode::InvalidFrame,
                    "",
                    "hello is only valid as the first frame of a stream",
                ),
                ClientFrame::Ack { seq } if seq > s.last_seq => refused(
                    NoticeCode::InvalidFrame,
                    "",
                    &format!(
                        "ack {seq} is ahead of the last frame this session sent ({}); ack the \
                         highest seq you received",
                        s.last_seq
                    ),
                ),
                ClientFrame::Ack { seq } => {
                    ack_locked(&mut s, seq);
                    ReplyOutcome::Accepted
                }
                ClientFrame::Pong { .. } => ReplyOutcome::Accepted,
                ClientFrame::Answer { req_id, value } => resolve_locked(
                    &mut s,
                    &self.sid,
                    req_id,
                    Kind::Ask,
                    Ok(Reply::Answer(value)),
                ),
                ClientFrame::HookAck { req_id, ok, reason } => {
                    let reply = if ok {
                        Ok(Reply::Hook)
                    } else {
                        Err(OperatorRequestError(
                            reason
                                .filter(|r| !r.trim().is_empty())
                                .map(|r| clip_text(&r))
                                .unwrap_or_else(|| "operator rejected the spawn".into()),
                        ))
                    };
                    resolve_locked(&mut s, &self.sid, req_id, Kind::Hook, reply)
                }
                ClientFrame::SpawnAck {
                    req_id,
                    value,
                    ok,
                    error,
                } => {
                    let reply = match error.filter(|e| !e.trim().is_empty()) {
                        Some(e) => Err(OperatorRequestError(format!(
                            "operator spawn failed: {}",
                            clip_text(&e)
                        ))),
                        None => Ok(Reply::Spawn(SpawnReply { value, ok })),
                    };
                    resolve_locked(&mut s, &self.sid, req_id, Kind::Spawn, reply)
                }
            }
        };
        if let ReplyOutcome::Refused {
            code,
            req_id,
            message,
        } = &outcome
        {
            tracing::debug!(sid = %self.sid, req_id = %req_id, ?code, %message, "client frame refused");
        }
        Some(outcome)
    }

    /// Refuses a reply whose value is over the data limit; the request stays pending.
    fn check_reply_size(&self, frame: &ClientFrame) -> std::result::Result<(), ReplyOutcome> {
        let (req_id, what, value) = match frame {
            ClientFrame::Answer { req_id, value } => (req_id, "answer.value", value),
            ClientFrame::SpawnAck { req_id, value, .. } => (req_id, "spawn_ack.value", value),
            _ => return Ok(()),
        };
        self.limits
            .size
            .check_value(what, value)
            .map_err(|e| refused(NoticeCode::TooLarge, req_id, &e.to_string()))
    }

    /// Queues a control frame (notice) for the stream of `epoch` only.
    pub fn notify_stream(&self, epoch: u64, body: ServerBody) {
        {
            let mut s = self.lock();
            if s.attached != Some(epoch) || s.control.len() >= self.limits.max_unacked {
                return;
            }
            s.control.push_back((epoch, body));
        }
        self.bump();
    }

    /// The epoch of the attached stream, if any.
    pub fn attached_epoch(&self) -> Option<u64> {
        self.lock().attached
    }

    /// For the metrics gauges: attached, frames not yet acknowledged, and the pending
    /// requests counted by kind into `pending` (ask, hook_before, spawn).
    pub(crate) fn gauges(&self, pending: &mut [(&'static str, usize); 3]) -> (bool, u64) {
        let s = self.lock();
        for p in s.pending.values() {
            pending[p.kind as usize].1 += 1;
        }
        (s.attached.is_some(), s.last_seq.saturating_sub(s.acked))
    }

    /// What the session holds per request id.
    pub(crate) fn structure_counts(&self) -> SessionCounts {
        let s = self.lock();
        SessionCounts {
            pending: s.pending.len(),
            ended: s.ended.len(),
            ended_bytes: s.ended.heap_bytes(),
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

/// Ended request ids a session remembers at most, and the bytes that takes.
pub(crate) const ENDED_REMEMBERED: usize = ENDED_MEMORY;
pub(crate) const ENDED_BYTES_MAX: usize = ENDED_MEMORY * std::mem::size_of::<(u64, Ended)>();

struct AbandonGuard<'a> {
    session: &'a OperatorSession,
    req_id: &'a str,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        // Still pending means the waiting future was dropped (its task went away).
        self.session
            .withdraw(self.req_id, "request abandoned by the engine");
    }
}

/// The directive's line asking the sub-agent to join the task's trace (none when off).
fn traced(traceparent: &str) -> String {
    if traceparent.is_empty() {
        return String::new();
    }
    format!("\ntrace: send metadata 'traceparent: {traceparent}' with GetPrompt and Submit")
}

fn refused(code: NoticeCode, req_id: &str, message: &str) -> ReplyOutcome {
    crate::metrics::notice(code.label());
    ReplyOutcome::Refused {
        code,
        req_id: req_id.to_string(),
        message: message.to_string(),
    }
}

fn ack_locked(s: &mut State, seq: u64) {
    let seq = seq.min(s.last_seq);
    if seq <= s.acked {
        return;
    }
    s.acked = seq;
    while s.outbox.front().is_some_and(|f| f.seq <= seq) {
        s.outbox.pop_front();
    }
}

fn remember_ended(s: &mut State, req_id: &str, how: Ended) {
    s.ended.remember(req_id, how);
}

/// Fails one pending request and queues a `cancel` frame for it. True if it was pending.
fn withdraw_locked(
    s: &mut State,
    sid: &str,
    req_id: &str,
    reason: &str,
    max_unacked: usize,
) -> bool {
    let Some(p) = s.pending.remove(req_id) else {
        return false;
    };
    let reason = clip_text(reason);
    let _ = p.reply.send(Err(OperatorRequestError(reason.clone())));
    remember_ended(s, req_id, Ended::Withdrawn);
    if s.closed.is_none() && s.outbox.len() < max_unacked {
        s.last_seq += 1;
        let seq = s.last_seq;
        s.outbox.push_back(ServerFrame {
            seq,
            body: ServerBody::Cancel {
                req_id: req_id.to_string(),
                reason: reason.clone(),
            },
        });
    }
    tracing::info!(sid, req_id, task_id = %p.task_id, %reason, "operator request withdrawn");
    true
}

fn resolve_locked(
    s: &mut State,
    sid: &str,
    req_id: String,
    kind: Kind,
    reply: std::result::Result<Reply, OperatorRequestError>,
) -> ReplyOutcome {
    match s.pending.get(&req_id) {
        Some(p) if p.kind == kind => {
            if let Some(p) = s.pending.remove(&req_id) {
                let _ = p.reply.send(reply);
            }
            remember_ended(s, &req_id, Ended::Answered);
            ReplyOutcome::Accepted
        }
        Some(p) => refused(
            NoticeCode::WrongKind,
            &req_id,
            &format!(
                "{req_id} is a {} request; reply with {}, not {}",
                p.kind.name(),
                p.kind.reply_name(),
                kind.reply_name()
            ),
        ),
        None => match s.ended.get(&req_id) {
            Some(Ended::Answered) => refused(
                NoticeCode::Duplicate,
                &req_id,
                &format!("{req_id} was already answered; this reply changed nothing"),
            ),
            Some(Ended::Withdrawn) => refused(
                NoticeCode::Stale,
                &req_id,
                &format!(
                    "{req_id} ended before this reply (timed out, cancelled or its task ended)"
                ),
            ),
            None => refused(
                NoticeCode::UnknownReq,
                &req_id,
                &format!("no request {req_id} was sent to session {sid}"),
            ),
        },
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn step_of(ctx: &StepContext) -> Step {
    Step {
        task_id: ctx.task_id.clone(),
        step_id: ctx.step_id.clone(),
        agent: ctx.agent.clone(),
        attempt: ctx.attempt,
    }
}

#[async_trait]
impl OperatorBackend for OperatorSession {
    async fn hook_before(
        &self,
        step: StepContext,
    ) -> std::result::Result<(), OperatorRequestError> {
        let frame_step = step_of(&step);
        self.request(Kind::Hook, &step.task_id, |req_id, deadline| {
            ServerBody::HookBefore {
                req_id: req_id.to_string(),
                step: frame_step,
                deadline_unix_ms: deadline,
            }
        })
        .await
        .map(|_| ())
    }

    async fn hook_after(&self, step: StepContext, result: Value) {
        let req_id = format!("{}-hook_after-{}", self.sid, uuid::Uuid::new_v4().simple());
        let body = ServerBody::HookAfter {
            req_id,
            step: step_of(&step),
            result: self.limits.size.fit(result, "hook_after.result"),
        };
        let queued = {
            let mut s = self.lock();
            self.push_locked(&mut s, body)
        };
        match queued {
            Some(_) => self.bump(),
            None => tracing::warn!(sid = %self.sid, "hook_after dropped: session closed or full"),
        }
    }

    async fn spawn(
        &self,
        step: StepContext,
        grant: SpawnGrant,
    ) -> std::result::Result<SpawnReply, OperatorRequestError> {
        let frame_step = step_of(&step);
        let base_url = self.limits.base_url.clone();
        let traceparent = crate::telemetry::traceparent(&step.task_id);
        let reply = self
            .request(Kind::Spawn, &step.task_id, |req_id, deadline| {
                ServerBody::Spawn {
                    directive: spawn_directive(
                        &base_url,
                        req_id,
                        &frame_step,
                        &grant.worker_handle,
                    ) + &traced(&traceparent),
                    traceparent: traceparent.clone(),
                    req_id: req_id.to_string(),
                    step: frame_step,
                    capability_token: grant.capability_token,
                    worker_handle: grant.worker_handle,
                    deadline_unix_ms: deadline,
                }
            })
            .await?;
        match reply {
            Reply::Spawn(r) => Ok(r),
            other => Err(OperatorRequestError(format!("unexpected reply {other:?}"))),
        }
    }

    async fn ask(
        &self,
        step: StepContext,
        question: Value,
    ) -> std::result::Result<Value, OperatorRequestError> {
        let StepContext {
            task_id, step_id, ..
        } = step;
        let reply = self
            .request(Kind::Ask, &task_id.clone(), |req_id, deadline| {
                ServerBody::Ask {
                    req_id: req_id.to_string(),
                    task_id,
                    step_id,
                    question: self.limits.size.fit(question, "ask.question"),
                    deadline_unix_ms: deadline,
                }
            })
            .await?;
        match reply {
            Reply::Answer(v) => Ok(v),
            other => Err(OperatorRequestError(format!("unexpected reply {other:?}"))),
        }
    }
}

/// One attached stream: a cursor over the session's outbox, plus its control frames and
/// pings. Ends after `closing` when replaced or the session closes, or when detached.
pub struct Attachment {
    session: Arc<OperatorSession>,
    epoch: u64,
    cursor: u64,
    welcome: Option<Welcome>,
    replay: VecDeque<ServerFrame>,
    finished: bool,
    changes: watch::Receiver<u64>,
    ping: tokio::time::Interval,
    nonce: u64,
    /// Silence after which the stream is dropped (doors that answer pings).
    silence_limit: Option<Duration>,
    dropped_silent: bool,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("sid", &self.session.sid)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Attachment {
    /// The attach epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The session.
    pub fn session(&self) -> &Arc<OperatorSession> {
        &self.session
    }

    /// True once the stream was dropped because the client stopped answering pings (its
    /// last frame was `closing`); the door ends it as UNAVAILABLE.
    pub fn dropped_silent(&self) -> bool {
        self.dropped_silent
    }

    /// The next frame to deliver, waiting if there is none; None once the stream is over.
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        if let Some(w) = self.welcome.take() {
            return Some(ServerFrame {
                seq: 0,
                body: ServerBody::Welcome(w),
            });
        }
        if self.finished {
            return None;
        }
        if let Some(frame) = self.replay.pop_front() {
            return Some(frame);
        }
        loop {
            self.changes.borrow_and_update();
            if let Some(frame) = self.poll_state() {
                return frame;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        self.finished = true;
                        return None;
                    }
                }
                _ = self.ping.tick() => {
                    if let Some(closing) = self.drop_if_silent() {
                        return Some(closing);
                    }
                    self.nonce += 1;
                    return Some(ServerFrame { seq: 0, body: ServerBody::Ping { nonce: self.nonce } });
                }
            }
        }
    }

    /// Detaches a stream whose client sent nothing for the silence limit; its requests
    /// park. Returns the `closing` frame to end it with.
    fn drop_if_silent(&mut self) -> Option<ServerFrame> {
        let limit = self.silence_limit?;
        let silent_for = {
            let s = self.session.lock();
            if s.attached != Some(self.epoch) {
                return None;
            }
            s.last_seen.elapsed().unwrap_or_default()
        };
        if silent_for < limit {
            return None;
        }
        tracing::warn!(sid = %self.session.sid, epoch = self.epoch, "operator stream silent past 3 pings; dropping it");
        self.session.detach(self.epoch);
        self.finished = true;
        self.dropped_silent = true;
        Some(ServerFrame {
            seq: 0,
            body: ServerBody::Closing {
                reason: format!(
                    "no frame from the client for {}s ({MISSED_PINGS} pings unanswered); \
                     reconnect and answer every ping with pong",
                    silent_for.as_secs()
                ),
                retry_after_ms: SILENT_RETRY_AFTER_MS,
            },
        })
    }

    /// Some(frame or end) if the state has something for this stream now.
    fn poll_state(&mut self) -> Option<Option<ServerFrame>> {
        let mut s = self.session.lock();
        let closing = |reason: String, retry_after_ms: u64| {
            Some(Some(ServerFrame {
                seq: 0,
                body: ServerBody::Closing {
                    reason,
                    retry_after_ms,
                },
            }))
        };
        if let Some((reason, retry)) = s.closed.clone() {
            // The `cancel` frames of the withdrawn requests go out before `closing`.
            if s.epoch == self.epoch {
                let cursor = self.cursor.max(s.acked);
                let idx = s.outbox.partition_point(|f| f.seq <= cursor);
                if let Some(frame) = s.outbox.get(idx).cloned() {
                    self.cursor = frame.seq;
                    return Some(Some(frame));
                }
                // Delivered; nobody can attach a closed session again.
                s.outbox.clear();
            }
            self.finished = true;
            return closing(format!("session {reason}"), retry);
        }
        if s.epoch != self.epoch {
            self.finished = true;
            return closing("replaced by a newer stream for this session".into(), 0);
        }
        if s.attached != Some(self.epoch) {
            self.finished = true;
            return Some(None);
        }
        if let Some(i) = s.control.iter().position(|(e, _)| *e == self.epoch) {
            let body = s.control.remove(i).map(|(_, b)| b)?;
            return Some(Some(ServerFrame { seq: 0, body }));
        }
        let cursor = self.cursor.max(s.acked);
        let idx = s.outbox.partition_point(|f| f.seq <= cursor);
        let frame = s.outbox.get(idx)?.clone();
        self.cursor = frame.seq;
        Some(Some(frame))
    }
}
