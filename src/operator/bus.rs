//! The frame bus: where a frame crosses from the engine side (the owner of a request,
//! waiting for its reply) to the session that holds an operator's stream, and where a
//! client's reply crosses back to the owner of its req_id.
//!
//! In one process both sides are the same [`OperatorSession`], and [`LocalBus`] is a
//! direct call under the session's one lock, as before the seam existed. A bus between
//! replicas (NATS) implements the same trait: it keeps each waiter with its owner, sends
//! the frame (a serde type) to the holder of the sid, and sends replies back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use super::frame::{ClientFrame, NoticeCode, ReplyOutcome, ServerBody};
use super::pending::{RequestKind, Waiter};
use super::session::OperatorSession;
use crate::engine::OperatorRequestError;

/// A frame on its way from the engine side to the session holding a stream.
#[derive(Debug)]
pub enum Outbound {
    /// A request: queued with the next seq and registered as awaiting its reply, in one
    /// step. `waiter` gets the reply [`FrameBus::route_reply`] brings back.
    Request {
        /// What it asks for.
        kind: RequestKind,
        /// Correlation id.
        req_id: String,
        /// The task it serves (a task's end withdraws its requests).
        task_id: String,
        /// The frame.
        body: ServerBody,
        /// Where the reply goes.
        waiter: Waiter,
    },
    /// A frame that expects no reply (`hook_after`).
    Info(ServerBody),
    /// Ends one request: its waiter fails with `reason`, the operator gets `cancel`.
    Withdraw {
        /// Which.
        req_id: String,
        /// Why.
        reason: String,
    },
    /// Ends every request of a task that ended, as [`Outbound::Withdraw`].
    WithdrawTask {
        /// Which task.
        task_id: String,
        /// Why.
        reason: String,
    },
}

/// Carries frames between the engine side and the sessions holding operator streams.
///
/// Synchronous: in process each call is a map lookup and one short lock, and it is made
/// from places that cannot wait (a `Drop`, a door's frame handler). A networked bus
/// publishes without waiting, and may answer `route_reply` with `Accepted` and let the
/// owner's refusal follow as a `notice`.
pub trait FrameBus: Send + Sync {
    /// Frames for `session`'s sid are delivered to it, in this process, from now on.
    fn hold(&self, session: &Arc<OperatorSession>);
    /// Frames for `sid` are no longer delivered here (its session is gone).
    fn release(&self, sid: &str);
    /// A stream attached to `session` in this process with `epoch`. A bus between
    /// replicas takes the sid's frames here from now on and tells the other replicas (so
    /// the previous holder closes its stream); in process every session is held from its
    /// creation, and nothing happens.
    fn attached(&self, _session: &Arc<OperatorSession>, _epoch: u64) {}
    /// The session `sid` was deleted here (its record is gone). A bus between replicas
    /// tells the others, which drop their objects of it; in process nothing happens.
    fn deleted(&self, _sid: &str, _reason: &str) {}
    /// Hands `frame` to whoever holds `sid`'s stream. An error says why a request or
    /// frame was refused (session closed, parked too long, window full, gone).
    fn deliver(&self, sid: &str, frame: Outbound) -> Result<(), OperatorRequestError>;
    /// Brings a client's reply (answer, hook_ack, spawn_ack) for a request `sid` was sent
    /// to the owner of its req_id, and says what became of it. A bus between replicas
    /// also gets here any client frame (acks too) a door took for a stream held elsewhere.
    fn route_reply(&self, sid: &str, reply: ClientFrame) -> ReplyOutcome;
}

/// The in-process bus: every session of this process, by sid, called directly.
#[derive(Debug, Default)]
pub struct LocalBus {
    holders: RwLock<HashMap<String, Weak<OperatorSession>>>,
}

impl LocalBus {
    /// The session object of `sid` in this process, if it lives.
    pub(super) fn holder(&self, sid: &str) -> Option<Arc<OperatorSession>> {
        let holders = match self.holders.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        holders.get(sid).and_then(Weak::upgrade)
    }

    fn holders_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Weak<OperatorSession>>> {
        match self.holders.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl FrameBus for LocalBus {
    fn hold(&self, session: &Arc<OperatorSession>) {
        self.holders_mut()
            .insert(session.sid().to_string(), Arc::downgrade(session));
    }

    fn release(&self, sid: &str) {
        let mut holders = self.holders_mut();
        // Only a session that is gone lets go of its sid.
        if holders.get(sid).is_some_and(|w| w.strong_count() == 0) {
            holders.remove(sid);
        }
    }

    fn deliver(&self, sid: &str, frame: Outbound) -> Result<(), OperatorRequestError> {
        match self.holder(sid) {
            Some(session) => session.accept(frame),
            None => Err(OperatorRequestError(format!(
                "operator session {sid} is gone"
            ))),
        }
    }

    fn route_reply(&self, sid: &str, reply: ClientFrame) -> ReplyOutcome {
        match self.holder(sid) {
            Some(session) => session.resolve(reply),
            None => ReplyOutcome::refused(
                NoticeCode::UnknownReq,
                "",
                &format!("operator session {sid} is gone"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::operator::session::SessionLinks;
    use crate::operator::test_support::linked_session;

    fn request(
        req_id: &str,
    ) -> (
        Outbound,
        oneshot::Receiver<super::super::pending::ReplyResult>,
    ) {
        let (waiter, rx) = oneshot::channel();
        let body = ServerBody::Cancel {
            req_id: req_id.into(),
            reason: String::new(),
        };
        let out = Outbound::Request {
            kind: RequestKind::Hook,
            req_id: req_id.into(),
            task_id: "task-1".into(),
            body,
            waiter,
        };
        (out, rx)
    }

    #[tokio::test]
    async fn frames_reach_the_held_session_and_replies_come_back() {
        let (bus, session) = linked_session(SessionLinks::in_process());
        let (out, mut rx) = request("r1");
        bus.deliver("op-1", out).expect("delivered");
        assert_eq!(session.info().pending, 1);
        assert_eq!(
            session.info().last_seq,
            1,
            "queued with a seq in the same step"
        );
        let reply = ClientFrame::HookAck {
            req_id: "r1".into(),
            ok: true,
            reason: None,
        };
        assert_eq!(bus.route_reply("op-1", reply), ReplyOutcome::Accepted);
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_gone_session_refuses_frames_and_replies() {
        let (bus, session) = linked_session(SessionLinks::in_process());
        drop(session);
        let (out, _rx) = request("r1");
        let err = bus.deliver("op-1", out).expect_err("gone");
        assert!(err.0.contains("gone"));
        let reply = ClientFrame::Answer {
            req_id: "r1".into(),
            value: serde_json::Value::Null,
        };
        assert!(matches!(
            bus.route_reply("op-1", reply),
            ReplyOutcome::Refused {
                code: NoticeCode::UnknownReq,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn withdrawing_a_task_cancels_only_its_requests() {
        let (bus, session) = linked_session(SessionLinks::in_process());
        let (out, mut rx) = request("r1");
        bus.deliver("op-1", out).expect("delivered");
        let other = Outbound::WithdrawTask {
            task_id: "task-2".into(),
            reason: "ended".into(),
        };
        bus.deliver("op-1", other).expect("delivered");
        assert_eq!(session.info().pending, 1);
        let mine = Outbound::WithdrawTask {
            task_id: "task-1".into(),
            reason: "task ended".into(),
        };
        bus.deliver("op-1", mine).expect("delivered");
        assert_eq!(session.info().pending, 0);
        assert_eq!(session.info().last_seq, 2, "its cancel frame was queued");
        assert!(matches!(rx.try_recv(), Ok(Err(OperatorRequestError(w))) if w == "task ended"));
    }
}
