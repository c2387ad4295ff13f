//! Requests awaiting an operator's reply (req_id → waiter) and the record of recently ended
//! ones, so a reply is matched to its request, or refused as a duplicate, a stale, an
//! unknown or a wrong-kind reply. Also the wait for a reply up to its deadline.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::ended::EndedMemory;
use super::frame::{ClientFrame, NoticeCode, ReplyOutcome, ServerFrame};
use crate::engine::{OperatorRequestError, SpawnReply};
use crate::limits::{clip_text, SizePolicy};

/// Ended req_ids remembered to tell duplicates and stale replies from unknown ones.
const ENDED_MEMORY: usize = 4096;

/// What a request asks for, and so which reply answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `ask`, answered by `answer`.
    Ask = 0,
    /// `hook_before`, answered by `hook_ack`.
    Hook = 1,
    /// `spawn`, answered by `spawn_ack`.
    Spawn = 2,
}

/// The request frames' names, in [`RequestKind`] order (metric labels).
pub(crate) const KIND_NAMES: [&str; 3] = ["ask", "hook_before", "spawn"];

impl RequestKind {
    /// The request frame's name.
    pub fn name(self) -> &'static str {
        KIND_NAMES[self as usize]
    }

    /// The name of the frame that answers it.
    pub fn reply_name(self) -> &'static str {
        match self {
            RequestKind::Ask => "answer",
            RequestKind::Hook => "hook_ack",
            RequestKind::Spawn => "spawn_ack",
        }
    }
}

/// An operator's reply as its waiter receives it.
#[derive(Debug)]
pub enum Reply {
    /// The answer to an `ask`.
    Answer(Value),
    /// `hook_before` approved.
    Hook,
    /// A spawn acknowledged.
    Spawn(SpawnReply),
}

/// What a waiter receives: the reply, or why there is none.
pub type ReplyResult = Result<Reply, OperatorRequestError>;

/// The sending half a request's owner waits on.
pub type Waiter = oneshot::Sender<ReplyResult>;

struct Pending {
    kind: RequestKind,
    task_id: String,
    waiter: Waiter,
    /// The request frame, re-sent on attach while its reply is still owed.
    frame: ServerFrame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    Withdrawn,
}

/// Ended request ids a session remembers at most, and the bytes that takes.
pub(crate) const ENDED_REMEMBERED: usize = ENDED_MEMORY;
pub(crate) const ENDED_BYTES_MAX: usize = ENDED_MEMORY * std::mem::size_of::<(u64, Ended)>();

/// The pending requests of one session and its memory of ended ones.
pub(super) struct PendingRequests {
    map: HashMap<String, Pending>,
    ended: EndedMemory<Ended>,
}

impl PendingRequests {
    pub(super) fn new() -> Self {
        Self {
            map: HashMap::new(),
            ended: EndedMemory::new(ENDED_MEMORY),
        }
    }

    /// Registers a request whose frame was queued as `frame`.
    pub(super) fn register(
        &mut self,
        req_id: String,
        kind: RequestKind,
        task_id: String,
        waiter: Waiter,
        frame: ServerFrame,
    ) {
        let pending = Pending {
            kind,
            task_id,
            waiter,
            frame,
        };
        self.map.insert(req_id, pending);
    }

    /// Hands a reply frame to its waiter, or says why it cannot.
    pub(super) fn resolve(&mut self, sid: &str, frame: ClientFrame) -> ReplyOutcome {
        let Some((req_id, kind, reply)) = reply_of(frame) else {
            return ReplyOutcome::refused(
                NoticeCode::InvalidFrame,
                "",
                "only answer, hook_ack and spawn_ack are replies",
            );
        };
        match self.map.get(&req_id) {
            Some(p) if p.kind == kind => {
                if let Some(p) = self.map.remove(&req_id) {
                    let _ = p.waiter.send(reply);
                }
                self.ended.remember(&req_id, Ended::Answered);
                ReplyOutcome::Accepted
            }
            Some(p) => ReplyOutcome::refused(
                NoticeCode::WrongKind,
                &req_id,
                &format!(
                    "{req_id} is a {} request; reply with {}, not {}",
                    p.kind.name(),
                    p.kind.reply_name(),
                    kind.reply_name()
                ),
            ),
            None => match self.ended.get(&req_id) {
                Some(Ended::Answered) => ReplyOutcome::refused(
                    NoticeCode::Duplicate,
                    &req_id,
                    &format!("{req_id} was already answered; this reply changed nothing"),
                ),
                Some(Ended::Withdrawn) => ReplyOutcome::refused(
                    NoticeCode::Stale,
                    &req_id,
                    &format!(
                        "{req_id} ended before this reply (timed out, cancelled or its task ended)"
                    ),
                ),
                None => ReplyOutcome::refused(
                    NoticeCode::UnknownReq,
                    &req_id,
                    &format!("no request {req_id} was sent to session {sid}"),
                ),
            },
        }
    }

    /// True if `req_id` is pending or remembered as ended: a re-sent request already
    /// taken (a bus between replicas delivers at least once).
    pub(super) fn knows(&self, req_id: &str) -> bool {
        self.map.contains_key(req_id) || self.ended.get(req_id).is_some()
    }

    /// Takes every pending request out, unanswered (the stream moved to another
    /// replica, whose owners re-send them there): req_id, kind, task, frame, waiter.
    pub(super) fn drain(&mut self) -> Vec<(String, RequestKind, String, ServerFrame, Waiter)> {
        let mut out: Vec<_> = self
            .map
            .drain()
            .map(|(id, p)| (id, p.kind, p.task_id, p.frame, p.waiter))
            .collect();
        out.sort_by_key(|(_, _, _, frame, _)| frame.seq);
        out
    }

    /// Queues every pending request's frame again in `outbox` (after its marks were
    /// reset), in seq order, with its new seq.
    pub(super) fn requeue(&mut self, outbox: &mut super::outbox::Outbox) {
        let mut pending: Vec<&mut Pending> = self.map.values_mut().collect();
        pending.sort_by_key(|p| p.frame.seq);
        for p in pending {
            if let Some(seq) = outbox.push(p.frame.body.clone()) {
                p.frame.seq = seq;
            }
        }
    }

    /// Fails a pending request with `reason`. True if it was pending.
    pub(super) fn withdraw(&mut self, req_id: &str, reason: &str) -> Option<String> {
        let p = self.map.remove(req_id)?;
        let _ = p.waiter.send(Err(OperatorRequestError(reason.to_string())));
        self.ended.remember(req_id, Ended::Withdrawn);
        Some(p.task_id)
    }

    /// The ids of pending requests, all of them or one task's.
    pub(super) fn ids(&self, task_id: Option<&str>) -> Vec<String> {
        self.map
            .iter()
            .filter(|(_, p)| task_id.is_none_or(|t| p.task_id == t))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Frames of requests acknowledged up to `acked` whose replies are still owed, in seq
    /// order: a new stream gets them again, since the old one may have lost them.
    pub(super) fn awaited_up_to(&self, acked: u64) -> Vec<ServerFrame> {
        let mut frames: Vec<ServerFrame> = self
            .map
            .values()
            .filter(|p| p.frame.seq <= acked)
            .map(|p| p.frame.clone())
            .collect();
        frames.sort_by_key(|f| f.seq);
        frames
    }

    /// Gives the frames whose seq moved (see `Outbox::skip_to`) their new seq.
    pub(super) fn renumber(&mut self, moved: &[(u64, u64)]) {
        for p in self.map.values_mut() {
            if let Some(&(_, new)) = moved.iter().find(|(old, _)| *old == p.frame.seq) {
                p.frame.seq = new;
            }
        }
    }

    /// Requests pending.
    /// Counts the pending requests by kind into `counts` (indexed as [`KIND_NAMES`]).
    pub(super) fn count_kinds(&self, counts: &mut [(&'static str, usize); 3]) {
        for p in self.map.values() {
            counts[p.kind as usize].1 += 1;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Ended ids remembered, and the bytes that takes.
    pub(super) fn ended_counts(&self) -> (usize, usize) {
        (self.ended.len(), self.ended.heap_bytes())
    }
}

/// The request id, kind and reply a reply frame carries; None for other frames.
fn reply_of(frame: ClientFrame) -> Option<(String, RequestKind, ReplyResult)> {
    match frame {
        ClientFrame::Answer { req_id, value } => {
            Some((req_id, RequestKind::Ask, Ok(Reply::Answer(value))))
        }
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
            Some((req_id, RequestKind::Hook, reply))
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
            Some((req_id, RequestKind::Spawn, reply))
        }
        ClientFrame::Hello { .. } | ClientFrame::Ack { .. } | ClientFrame::Pong { .. } => None,
    }
}

/// Refuses a reply whose value is over the data limit; the request stays pending.
pub(super) fn check_reply_size(size: &SizePolicy, frame: &ClientFrame) -> Result<(), ReplyOutcome> {
    let (req_id, what, value) = match frame {
        ClientFrame::Answer { req_id, value } => (req_id, "answer.value", value),
        ClientFrame::SpawnAck { req_id, value, .. } => (req_id, "spawn_ack.value", value),
        _ => return Ok(()),
    };
    size.check_value(what, value)
        .map_err(|e| ReplyOutcome::refused(NoticeCode::TooLarge, req_id, &e.to_string()))
}

/// Why a wait ended without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoReply {
    /// The waiter was dropped unanswered.
    Dropped,
    /// The deadline passed; the owner withdraws the request.
    Expired,
}

/// Waits for the reply to one request, at most `timeout`.
pub(super) async fn wait(
    reply: oneshot::Receiver<ReplyResult>,
    timeout: Duration,
) -> Result<ReplyResult, NoReply> {
    match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(NoReply::Dropped),
        Err(_) => Err(NoReply::Expired),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::frame::ServerBody;
    use super::*;

    fn hook_frame(seq: u64, req_id: &str) -> ServerFrame {
        ServerFrame {
            seq,
            body: ServerBody::Cancel {
                req_id: req_id.into(),
                reason: String::new(),
            },
        }
    }

    fn register(
        p: &mut PendingRequests,
        req_id: &str,
        kind: RequestKind,
        seq: u64,
    ) -> oneshot::Receiver<ReplyResult> {
        let (tx, rx) = oneshot::channel();
        p.register(
            req_id.into(),
            kind,
            "task-1".into(),
            tx,
            hook_frame(seq, req_id),
        );
        rx
    }

    fn hook_ack(req_id: &str) -> ClientFrame {
        ClientFrame::HookAck {
            req_id: req_id.into(),
            ok: true,
            reason: None,
        }
    }

    fn code(outcome: &ReplyOutcome) -> Option<NoticeCode> {
        match outcome {
            ReplyOutcome::Accepted => None,
            ReplyOutcome::Refused { code, .. } => Some(*code),
        }
    }

    #[test]
    fn a_reply_reaches_its_waiter_once_then_is_a_duplicate() {
        let mut p = PendingRequests::new();
        let mut rx = register(&mut p, "r1", RequestKind::Hook, 1);
        assert_eq!(p.resolve("op-1", hook_ack("r1")), ReplyOutcome::Accepted);
        assert!(matches!(rx.try_recv(), Ok(Ok(Reply::Hook))));
        assert_eq!(p.len(), 0);
        let again = p.resolve("op-1", hook_ack("r1"));
        assert_eq!(code(&again), Some(NoticeCode::Duplicate));
    }

    #[test]
    fn a_reply_to_an_id_never_sent_is_unknown() {
        let mut p = PendingRequests::new();
        let outcome = p.resolve("op-1", hook_ack("never"));
        assert_eq!(code(&outcome), Some(NoticeCode::UnknownReq));
        assert!(format!("{outcome:?}").contains("session op-1"));
    }

    #[test]
    fn a_reply_after_a_withdraw_is_stale_and_the_waiter_got_the_reason() {
        let mut p = PendingRequests::new();
        let mut rx = register(&mut p, "r1", RequestKind::Spawn, 1);
        assert!(p.withdraw("r1", "its task ended").is_some());
        assert!(p.withdraw("r1", "again").is_none(), "a request ends once");
        match rx.try_recv() {
            Ok(Err(OperatorRequestError(why))) => assert_eq!(why, "its task ended"),
            other => panic!("waiter got {other:?}"),
        }
        let late = ClientFrame::SpawnAck {
            req_id: "r1".into(),
            value: json!(1),
            ok: true,
            error: None,
        };
        assert_eq!(code(&p.resolve("op-1", late)), Some(NoticeCode::Stale));
    }

    #[test]
    fn a_reply_of_the_wrong_kind_leaves_the_request_pending() {
        let mut p = PendingRequests::new();
        let mut rx = register(&mut p, "r1", RequestKind::Hook, 1);
        let answer = ClientFrame::Answer {
            req_id: "r1".into(),
            value: json!("yes"),
        };
        assert_eq!(
            code(&p.resolve("op-1", answer)),
            Some(NoticeCode::WrongKind)
        );
        assert_eq!(p.len(), 1);
        assert!(rx.try_recv().is_err(), "still waiting");
        assert_eq!(p.resolve("op-1", hook_ack("r1")), ReplyOutcome::Accepted);
    }

    #[test]
    fn a_rejection_and_a_spawn_error_reach_the_waiter_as_errors() {
        let mut p = PendingRequests::new();
        let mut hook = register(&mut p, "h", RequestKind::Hook, 1);
        let mut spawn = register(&mut p, "s", RequestKind::Spawn, 2);
        let reject = ClientFrame::HookAck {
            req_id: "h".into(),
            ok: false,
            reason: Some(" ".into()),
        };
        assert_eq!(p.resolve("op-1", reject), ReplyOutcome::Accepted);
        assert!(
            matches!(hook.try_recv(), Ok(Err(OperatorRequestError(w))) if w == "operator rejected the spawn")
        );
        let failed = ClientFrame::SpawnAck {
            req_id: "s".into(),
            value: Value::Null,
            ok: true,
            error: Some("worker crashed".into()),
        };
        assert_eq!(p.resolve("op-1", failed), ReplyOutcome::Accepted);
        assert!(
            matches!(spawn.try_recv(), Ok(Err(OperatorRequestError(w))) if w == "operator spawn failed: worker crashed")
        );
    }

    #[test]
    fn frames_that_are_no_replies_are_refused() {
        let mut p = PendingRequests::new();
        let outcome = p.resolve("op-1", ClientFrame::Pong { nonce: 1 });
        assert_eq!(code(&outcome), Some(NoticeCode::InvalidFrame));
    }

    #[test]
    fn awaited_requests_are_those_acked_and_unanswered_in_seq_order() {
        let mut p = PendingRequests::new();
        let _a = register(&mut p, "a", RequestKind::Hook, 5);
        let _b = register(&mut p, "b", RequestKind::Hook, 2);
        let _c = register(&mut p, "c", RequestKind::Hook, 9);
        let seqs: Vec<u64> = p.awaited_up_to(5).iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![2, 5]);
        let mut of_task = p.ids(Some("task-1"));
        of_task.sort();
        assert_eq!(of_task, vec!["a", "b", "c"]);
        assert!(p.ids(Some("other")).is_empty());
    }

    #[test]
    fn an_oversized_reply_is_refused_before_it_reaches_the_request() {
        let size = SizePolicy::new(4 << 20, 1024);
        let big = ClientFrame::Answer {
            req_id: "r1".into(),
            value: json!("x".repeat(2000)),
        };
        let refused = check_reply_size(&size, &big).expect_err("over the data limit");
        assert_eq!(code(&refused), Some(NoticeCode::TooLarge));
        assert!(check_reply_size(&size, &hook_ack("r1")).is_ok());
    }

    #[tokio::test]
    async fn a_wait_past_its_deadline_expires_and_the_withdrawn_request_is_stale() {
        let mut p = PendingRequests::new();
        let rx = register(&mut p, "r1", RequestKind::Hook, 1);
        assert_eq!(
            wait(rx, Duration::from_millis(20)).await.err(),
            Some(NoReply::Expired)
        );
        assert!(p
            .withdraw("r1", "operator did not answer in time")
            .is_some());
        assert_eq!(
            code(&p.resolve("op-1", hook_ack("r1"))),
            Some(NoticeCode::Stale)
        );

        let (tx, rx) = oneshot::channel();
        tx.send(Ok(Reply::Hook)).expect("send");
        assert!(matches!(
            wait(rx, Duration::from_secs(5)).await,
            Ok(Ok(Reply::Hook))
        ));
        let (tx, rx) = oneshot::channel::<ReplyResult>();
        drop(tx);
        assert_eq!(
            wait(rx, Duration::from_secs(5)).await.err(),
            Some(NoReply::Dropped)
        );
    }
}
