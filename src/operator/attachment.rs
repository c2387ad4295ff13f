//! The door cursor: an attached stream reads the session's outbox through an
//! [`Attachment`], after its `welcome` and the requests still awaited, interleaved with its
//! own control frames and pings. Attach bumps the epoch; detach is epoch-checked, so an old
//! stream going away never detaches a newer one.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::frame::{ServerBody, ServerFrame, Welcome};
use super::session::OperatorSession;
use crate::error::{Error, Result};

/// Ping intervals without a frame from the client after which a stream is dropped.
pub const MISSED_PINGS: u32 = 3;
/// What `closing` tells a client dropped for silence to wait before reconnecting.
const SILENT_RETRY_AFTER_MS: u64 = 1000;

/// Control frames (notices) queued for one stream each, never replayed.
#[derive(Debug)]
pub(super) struct ControlFrames {
    frames: VecDeque<(u64, ServerBody)>,
    cap: usize,
}

impl ControlFrames {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            cap,
        }
    }

    /// Queues `body` for the stream of `epoch`; false when full.
    fn push(&mut self, epoch: u64, body: ServerBody) -> bool {
        if self.frames.len() >= self.cap {
            return false;
        }
        self.frames.push_back((epoch, body));
        true
    }

    /// The oldest frame for the stream of `epoch`.
    fn take(&mut self, epoch: u64) -> Option<ServerBody> {
        let i = self.frames.iter().position(|(e, _)| *e == epoch)?;
        self.frames.remove(i).map(|(_, b)| b)
    }

    /// Forgets the frames of every other stream.
    fn keep_only(&mut self, epoch: u64) {
        self.frames.retain(|(e, _)| *e == epoch);
    }

    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }
}

impl OperatorSession {
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
        let restarted = std::mem::take(&mut s.restarted);
        let moved = std::mem::take(&mut s.moved);
        if let (true, Some(seen)) = (restarted || moved, last_seq) {
            // Frames of the previous process are gone; its client may have seen seqs
            // past the last marks that process stored.
            let moved = s.outbox.skip_to(seen);
            s.pending.renumber(&moved);
        }
        let sent = s.outbox.last_seq();
        let resume = last_seq.unwrap_or(sent);
        if s.outbox.ack(resume).is_err() {
            s.restarted = restarted;
            s.moved = moved;
            return Err(Error::invalid(
                "last_seq",
                format!(
                    "{resume} is ahead of the last frame this session sent ({sent}); resume \
                     with the highest seq you received, or 0"
                ),
            ));
        }
        // Requests whose frames were acknowledged but whose replies never arrived (lost
        // with the old stream) are sent again first; nothing still awaited is lost.
        let replay: VecDeque<ServerFrame> = s.pending.awaited_up_to(s.outbox.acked()).into();
        let epoch = s.presence.attach();
        let now = SystemTime::now();
        s.last_seen = now;
        s.control.keep_only(epoch);
        let welcome = Welcome {
            sid: self.sid.clone(),
            epoch,
            acked_seq: s.outbox.acked(),
            replayed: u32::try_from(s.outbox.len() + replay.len()).unwrap_or(u32::MAX),
            roles: self.roles.clone(),
            ping_interval_secs: u32::try_from(self.limits.timeouts.ping_interval.as_secs())
                .unwrap_or(u32::MAX),
            server_restarted: restarted,
        };
        let marks = s.outbox.marks();
        drop(s);
        self.bump();
        self.links.store.record_attach(&self.sid, epoch, now);
        self.note_marks(marks);
        self.links.bus.attached(self, epoch);
        tracing::info!(sid = %self.sid, epoch, resume_after = marks.acked, restarted, "operator attached");
        crate::metrics::frames_replayed(welcome.replayed);
        if let Some(listener) = self.links.attached.as_ref().and_then(Weak::upgrade) {
            listener.attached(&self.sid, &self.roles);
        }
        let period = self.limits.timeouts.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Attachment {
            session: Arc::clone(self),
            epoch,
            cursor: marks.acked,
            welcome: Some(welcome),
            replay,
            finished: false,
            changes: self.changes.subscribe(),
            ping,
            nonce: 0,
            silence_limit: last_seq.is_some().then(|| period * MISSED_PINGS),
            dropped_silent: false,
        })
    }

    /// Marks the stream of `epoch` gone. A newer stream is left alone. Parked requests
    /// fail if no stream attaches within the grace window.
    pub fn detach(self: &Arc<Self>, epoch: u64) {
        if !self.lock().presence.detach(epoch) {
            return;
        }
        self.bump();
        tracing::info!(sid = %self.sid, epoch, "operator detached");
        self.watch_parking(epoch);
    }

    /// Queues a control frame (notice) for the stream of `epoch` only.
    pub fn notify_stream(&self, epoch: u64, body: ServerBody) {
        {
            let mut s = self.lock();
            if s.presence.attached() != Some(epoch) || !s.control.push(epoch, body) {
                return;
            }
        }
        self.bump();
    }

    /// The epoch of the attached stream, if any.
    pub fn attached_epoch(&self) -> Option<u64> {
        self.lock().presence.attached()
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
            .field("sid", &self.session.sid())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn closing(reason: String, retry_after_ms: u64) -> ServerFrame {
    ServerFrame {
        seq: 0,
        body: ServerBody::Closing {
            reason,
            retry_after_ms,
        },
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
            if s.presence.attached() != Some(self.epoch) {
                return None;
            }
            s.last_seen.elapsed().unwrap_or_default()
        };
        if silent_for < limit {
            return None;
        }
        tracing::warn!(sid = %self.session.sid(), epoch = self.epoch, "operator stream silent past 3 pings; dropping it");
        self.session.detach(self.epoch);
        self.finished = true;
        self.dropped_silent = true;
        Some(closing(
            format!(
                "no frame from the client for {}s ({MISSED_PINGS} pings unanswered); \
                 reconnect and answer every ping with pong",
                silent_for.as_secs()
            ),
            SILENT_RETRY_AFTER_MS,
        ))
    }

    /// Some(frame or end) if the state has something for this stream now.
    fn poll_state(&mut self) -> Option<Option<ServerFrame>> {
        let mut s = self.session.lock();
        if let Some((reason, retry)) = s.closed.clone() {
            // The `cancel` frames of the withdrawn requests go out before `closing`.
            if s.presence.epoch() == self.epoch {
                if let Some(frame) = s.outbox.next_queued_after(self.cursor).cloned() {
                    self.cursor = frame.seq;
                    return Some(Some(frame));
                }
                // Delivered; nobody can attach a closed session again.
                s.outbox.clear();
            }
            self.finished = true;
            return Some(Some(closing(format!("session {reason}"), retry)));
        }
        if s.presence.epoch() != self.epoch {
            self.finished = true;
            return Some(Some(closing(
                "replaced by a newer stream for this session".into(),
                0,
            )));
        }
        if s.presence.attached() != Some(self.epoch) {
            self.finished = true;
            return Some(None);
        }
        if let Some(body) = s.control.take(self.epoch) {
            return Some(Some(ServerFrame { seq: 0, body }));
        }
        let frame = s.outbox.next_after(self.cursor)?.clone();
        self.cursor = frame.seq;
        Some(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::engine::OperatorBackend;
    use crate::operator::frame::ClientFrame;
    use crate::operator::test_support::{test_limits, test_step};

    /// Frames ready now, without waiting.
    fn ready(a: &mut Attachment) -> Vec<ServerFrame> {
        let mut out = Vec::new();
        while let Some(Some(f)) = a.next_frame().now_or_never() {
            out.push(f);
        }
        out
    }

    #[tokio::test]
    async fn a_detach_of_an_older_epoch_does_not_detach_a_newer_attach() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let mut old = session.attach(0).expect("attach");
        let new = session.attach(0).expect("re-attach");
        assert_eq!(new.epoch(), old.epoch() + 1);
        session.detach(old.epoch());
        assert_eq!(session.attached_epoch(), Some(new.epoch()));
        let frames = ready(&mut old);
        assert!(matches!(frames[0].body, ServerBody::Welcome(_)));
        assert!(
            matches!(&frames[1].body, ServerBody::Closing { reason, .. } if reason.contains("replaced")),
            "{frames:?}"
        );
        assert_eq!(old.next_frame().await, None, "the old stream is over");
        session.detach(new.epoch());
        assert_eq!(session.attached_epoch(), None);
    }

    #[tokio::test]
    async fn welcome_first_then_the_unacked_frames_in_seq_order() {
        let session = OperatorSession::new("op-1".into(), vec!["lead".into()], test_limits());
        for n in 0..3 {
            session
                .hook_after(test_step(n), serde_json::Value::Null)
                .await;
        }
        let mut a = session.attach(1).expect("attach after seq 1");
        let frames = ready(&mut a);
        match &frames[0].body {
            ServerBody::Welcome(w) => {
                assert_eq!((w.epoch, w.acked_seq, w.replayed), (1, 1, 2));
                assert_eq!(w.roles, vec!["lead".to_string()]);
            }
            other => panic!("first frame {other:?}"),
        }
        let seqs: Vec<u64> = frames[1..].iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
    }

    #[tokio::test]
    async fn a_restored_session_says_so_once_and_continues_past_its_stored_marks() {
        let mut record = crate::operator::SessionRecord::new(
            "op-1".into(),
            "token",
            vec!["lead".into()],
            SystemTime::now(),
        );
        record.epoch = 4;
        record.marks = crate::operator::Marks {
            last_seq: 9,
            acked: 7,
        };
        let links = crate::operator::SessionLinks::in_process();
        let session = OperatorSession::restore(&record, test_limits(), links);
        let mut a = session
            .attach(12)
            .expect("a seq the old process never stored");
        let frames = ready(&mut a);
        match &frames[0].body {
            ServerBody::Welcome(w) => {
                assert!(w.server_restarted);
                assert_eq!((w.epoch, w.acked_seq, w.replayed), (5, 12, 0));
            }
            other => panic!("first frame {other:?}"),
        }
        assert_eq!(frames.len(), 1, "nothing from before is replayed");
        session
            .hook_after(test_step(0), serde_json::Value::Null)
            .await;
        assert_eq!(ready(&mut a)[0].seq, 13, "seqs continue");
        let mut b = session.attach(13).expect("re-attach");
        match &ready(&mut b)[0].body {
            ServerBody::Welcome(w) => assert!(!w.server_restarted && w.epoch == 6),
            other => panic!("first frame {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resume_ahead_of_the_last_seq_is_refused() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let err = session.attach(1).expect_err("nothing was sent");
        assert!(err.to_string().contains("ahead of the last frame"), "{err}");
        assert_eq!(
            session.attached_epoch(),
            None,
            "a refused attach changes nothing"
        );
    }

    #[tokio::test]
    async fn notices_go_to_their_own_stream_only() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let mut a = session.attach(0).expect("attach");
        let _ = ready(&mut a);
        let notice = || ServerBody::Notice {
            code: crate::operator::NoticeCode::InvalidFrame,
            req_id: String::new(),
            message: "bad".into(),
        };
        session.notify_stream(a.epoch() + 1, notice());
        assert!(
            ready(&mut a).is_empty(),
            "a notice for another epoch is dropped"
        );
        session.notify_stream(a.epoch(), notice());
        let frames = ready(&mut a);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].seq, 0, "control frames carry no seq");
        assert!(session
            .handle_on(a.epoch(), ClientFrame::Pong { nonce: 1 })
            .is_some());
    }
}
