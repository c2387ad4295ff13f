//! Client frames a door hands to a session: acks and pongs are the session's own
//! business; a reply goes through the frame bus to the owner of its req_id. Frames read
//! from a replaced stream are void.

use std::time::SystemTime;

use super::frame::{ClientFrame, NoticeCode, ReplyOutcome};
use super::pending::check_reply_size;
use super::session::OperatorSession;

impl OperatorSession {
    /// Takes a reply the bus routes to this session, the owner of its req_id.
    pub(super) fn resolve(&self, reply: ClientFrame) -> ReplyOutcome {
        self.lock().pending.resolve(&self.sid, reply)
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
        if let Err(outcome) = check_reply_size(&self.limits.size, &frame) {
            return Some(outcome);
        }
        let now = SystemTime::now();
        let (outcome, acked) = {
            let mut s = self.lock();
            if epoch.is_some_and(|e| !s.presence.is_current(e)) {
                tracing::debug!(sid = %self.sid, ?epoch, "frame of a replaced stream ignored");
                return None;
            }
            if epoch.is_none() && s.presence.held_elsewhere() {
                // The stream is on another replica (`Send` through another replica than
                // `Subscribe`): that replica applies the frame, acks included.
                drop(s);
                return Some(self.links.bus.route_reply(&self.sid, frame));
            }
            s.last_seen = now;
            match frame {
                ClientFrame::Hello { .. } => (
                    Some(ReplyOutcome::refused(
                        NoticeCode::InvalidFrame,
                        "",
                        "hello is only valid as the first frame of a stream",
                    )),
                    None,
                ),
                ClientFrame::Ack { seq } => match s.outbox.ack(seq) {
                    Ok(()) => (Some(ReplyOutcome::Accepted), Some(s.outbox.marks())),
                    Err(last_seq) => (
                        Some(ReplyOutcome::refused(
                            NoticeCode::InvalidFrame,
                            "",
                            &format!(
                                "ack {seq} is ahead of the last frame this session sent \
                                 ({last_seq}); ack the highest seq you received"
                            ),
                        )),
                        None,
                    ),
                },
                ClientFrame::Pong { .. } => (Some(ReplyOutcome::Accepted), None),
                reply => {
                    drop(s);
                    self.links.store.touch(&self.sid, now);
                    // A reply goes to the owner of its req_id, wherever it waits.
                    let outcome = self.links.bus.route_reply(&self.sid, reply);
                    return Some(self.logged(outcome));
                }
            }
        };
        self.links.store.touch(&self.sid, now);
        if let Some(marks) = acked {
            self.note_marks(marks);
        }
        outcome.map(|o| self.logged(o))
    }

    fn logged(&self, outcome: ReplyOutcome) -> ReplyOutcome {
        if let ReplyOutcome::Refused {
            code,
            req_id,
            message,
        } = &outcome
        {
            tracing::debug!(sid = %self.sid, req_id = %req_id, ?code, %message, "client frame refused");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OperatorBackend;
    use crate::operator::test_support::{test_limits, test_step};

    fn refused_code(outcome: Option<ReplyOutcome>) -> Option<NoticeCode> {
        match outcome {
            Some(ReplyOutcome::Refused { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn frames_of_a_replaced_stream_are_void() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let old = session.attach(0).expect("attach");
        let new = session.attach(0).expect("re-attach");
        assert_eq!(
            session.handle_on(old.epoch(), ClientFrame::Ack { seq: 0 }),
            None
        );
        assert_eq!(
            session.handle_on(new.epoch(), ClientFrame::Ack { seq: 0 }),
            Some(ReplyOutcome::Accepted)
        );
    }

    #[tokio::test]
    async fn an_ack_ahead_of_the_last_seq_and_a_late_hello_are_refused() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        session
            .hook_after(test_step(1), serde_json::Value::Null)
            .await;
        let ahead = session.handle_on(0, ClientFrame::Ack { seq: 2 });
        assert_eq!(ahead, None, "no stream of epoch 0 is attached");
        let ahead = Some(session.handle(ClientFrame::Ack { seq: 2 }));
        assert_eq!(refused_code(ahead), Some(NoticeCode::InvalidFrame));
        assert_eq!(session.info().acked_seq, 0);
        assert_eq!(
            session.handle(ClientFrame::Ack { seq: 1 }),
            ReplyOutcome::Accepted
        );
        assert_eq!(session.info().acked_seq, 1);
        let hello = ClientFrame::Hello {
            sid: "op-1".into(),
            last_seq: 0,
        };
        assert_eq!(
            refused_code(Some(session.handle(hello))),
            Some(NoticeCode::InvalidFrame)
        );
    }

    #[tokio::test]
    async fn a_reply_to_a_request_never_sent_is_unknown() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let reply = ClientFrame::Answer {
            req_id: "op-1-ask-x".into(),
            value: serde_json::Value::Null,
        };
        assert_eq!(
            refused_code(Some(session.handle(reply))),
            Some(NoticeCode::UnknownReq)
        );
    }
}
