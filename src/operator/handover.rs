//! A session whose stream moves between replicas (issue 14): taking a re-sent request
//! once, handing the pending requests over when another replica's stream takes the
//! session, catching up with the shared record before an attach here, and the object a
//! replica keeps for a session held elsewhere.

use std::sync::Arc;

use super::bus::Outbound;
use super::frame::ServerBody;
use super::outbox::Outbox;
use super::parking::Presence;
use super::pending::{RequestKind, Waiter};
use super::session::{OperatorSession, SessionLinks, State};
use super::settings::SessionLimits;
use super::store::SessionRecord;
use crate::engine::OperatorRequestError;

/// A pending request taken out of a session whose stream moved elsewhere.
#[derive(Debug)]
pub(crate) struct Handed {
    pub(crate) req_id: String,
    pub(crate) kind: RequestKind,
    pub(crate) task_id: String,
    pub(crate) body: ServerBody,
    pub(crate) waiter: Waiter,
}

impl OperatorSession {
    /// The session of `record` as a replica keeps it while another replica holds its
    /// stream (at the record's epoch): its engine routes requests to it through the bus;
    /// this replica neither parks nor reaps it.
    pub fn adopt(
        record: &SessionRecord,
        limits: Arc<SessionLimits>,
        links: SessionLinks,
    ) -> Arc<Self> {
        let mut presence = Presence::new();
        presence.moved_to(record.epoch.max(1));
        let outbox = Outbox::resumed(limits.max_unacked, record.marks.last_seq);
        let state = State {
            moved: true,
            ..State::new(presence, record.last_seen, outbox)
        };
        let (sid, roles) = (record.sid.clone(), record.roles.clone());
        Self::with_state(sid, roles, record.created_at, state, limits, links)
    }

    /// Takes a request a bus re-sends at least once: one whose req_id this session has
    /// pending or answered already is not queued again (Ok(false)); otherwise as
    /// [`Self::accept`] (Ok(true)).
    pub(crate) fn accept_once(&self, frame: Outbound) -> Result<bool, OperatorRequestError> {
        if let Outbound::Request { req_id, .. } = &frame {
            if self.lock().pending.knows(req_id) {
                return Ok(false);
            }
        }
        self.accept(frame).map(|()| true)
    }

    /// A stream attached on another replica with `epoch` (the bus decided it wins): the
    /// stream here, if any, ends (`closing`, replaced, when its epoch is older), the
    /// unacked frames are dropped, and the pending requests are handed back unanswered,
    /// for their owners to send to the new holder.
    pub(crate) fn hand_over(&self, epoch: u64) -> Vec<Handed> {
        let handed = {
            let mut s = self.lock();
            s.presence.moved_to(epoch);
            s.outbox.clear();
            s.moved = true;
            s.pending.drain()
        };
        self.bump();
        if !handed.is_empty() {
            tracing::info!(sid = %self.sid, epoch, handed = handed.len(), "operator stream moved to another replica");
        }
        handed
            .into_iter()
            .map(|(req_id, kind, task_id, frame, waiter)| Handed {
                req_id,
                kind,
                task_id,
                body: frame.body,
                waiter,
            })
            .collect()
    }

    /// Before an attach here: takes the shared record's epoch and seq marks when another
    /// replica moved them past this object's (its stream was held elsewhere), so the
    /// attach takes a newer epoch and seqs continue past what that replica sent. Requests
    /// still pending here are queued again with new seqs. With one replica the record
    /// never leads, and nothing changes.
    pub(crate) fn catch_up(&self, record: &SessionRecord) {
        let mut s = self.lock();
        let epoch_behind = record.epoch > s.presence.epoch();
        // The record also holds this object's own reservations: only seqs past those
        // were taken elsewhere.
        let seq_behind = record.marks.last_seq > s.outbox.last_seq().max(self.seqs_asked());
        if !epoch_behind && !seq_behind {
            return;
        }
        if epoch_behind {
            s.presence.moved_to(record.epoch);
        }
        if seq_behind {
            let mut outbox = Outbox::resumed(self.limits.max_unacked, record.marks.last_seq);
            self.gate(&mut outbox);
            s.pending.requeue(&mut outbox);
            s.outbox = outbox;
        }
        s.moved = true;
        let last_seq = s.outbox.last_seq();
        drop(s);
        self.reserve_ahead(last_seq);
        self.bump();
    }

    /// True while a stream is attached here, or (as last announced) on another replica.
    pub(super) fn attached_here_or_elsewhere(&self) -> bool {
        let s = self.lock();
        s.presence.attached().is_some() || s.presence.held_elsewhere()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::engine::OperatorBackend;
    use crate::operator::outbox::Marks;
    use crate::operator::test_support::{test_limits, test_step};

    fn record(epoch: u64, last_seq: u64) -> SessionRecord {
        let mut r = SessionRecord::new("op-1".into(), "t", vec![], SystemTime::now());
        r.epoch = epoch;
        r.marks = Marks {
            last_seq,
            acked: last_seq,
        };
        r
    }

    #[tokio::test]
    async fn a_record_that_does_not_lead_changes_nothing() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let _a = session.attach(0).expect("attach");
        session
            .hook_after(test_step(1), serde_json::Value::Null)
            .await;
        session.catch_up(&record(1, 1));
        let info = session.info();
        assert_eq!((info.epoch, info.last_seq, info.connected), (1, 1, true));
        assert!(!session.lock().moved);
    }

    #[tokio::test]
    async fn a_moved_stream_hands_its_requests_over_and_a_leading_record_continues_seqs() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let mut a = session.attach(0).expect("attach");
        let s = session.clone();
        let hook = tokio::spawn(async move { s.hook_before(test_step(1)).await });
        while session.info().pending == 0 {
            tokio::task::yield_now().await;
        }
        let _welcome = a.next_frame().await;
        let _hook = a.next_frame().await;
        let handed = session.hand_over(2);
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].kind, RequestKind::Hook);
        assert!(session.attached_here_or_elsewhere() && session.attached_epoch().is_none());
        assert!(
            matches!(a.next_frame().await.map(|f| f.body), Some(ServerBody::Closing { reason, .. }) if reason.contains("replaced")),
            "the stream here is replaced"
        );
        drop(handed);
        assert!(
            hook.await.expect("join").is_err(),
            "its waiter went with it"
        );

        session.catch_up(&record(3, 9));
        let mut b = session
            .attach(9)
            .expect("attach after the other replica's seqs");
        let welcome = b.next_frame().await.expect("welcome");
        assert!(
            matches!(welcome.body, ServerBody::Welcome(w) if w.epoch == 4 && w.acked_seq == 9 && !w.server_restarted)
        );
        session
            .hook_after(test_step(2), serde_json::Value::Null)
            .await;
        assert_eq!(b.next_frame().await.expect("frame").seq, 10);
        let again = session.accept_once(Outbound::Info(ServerBody::Ping { nonce: 1 }));
        assert_eq!(again, Ok(true));
    }
}
