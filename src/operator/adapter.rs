//! The engine adapter: [`OperatorBackend`] for a session. It builds each request frame,
//! hands it to the frame bus, and waits for the reply up to the request's deadline. It
//! never touches the session's state itself; the bus is its only way in.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::oneshot;

use super::bus::Outbound;
use super::directive::spawn_directive;
use super::frame::{ServerBody, Step};
use super::pending::{wait, NoReply, Reply, ReplyResult, RequestKind};
use super::session::OperatorSession;
use crate::engine::{OperatorBackend, OperatorRequestError, SpawnGrant, SpawnReply, StepContext};

/// Withdraws its request if the waiting future is dropped before the wait ends (its task
/// went away). Once the wait ended the request is answered or withdrawn already.
struct AbandonGuard<'a> {
    session: &'a OperatorSession,
    req_id: &'a str,
    waiting: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.session
                .withdraw(self.req_id, "request abandoned by the engine");
        }
    }
}

impl OperatorSession {
    /// Withdraws one request through the bus: its waiter fails, the operator gets `cancel`.
    fn withdraw(&self, req_id: &str, reason: &str) {
        let withdraw = Outbound::Withdraw {
            req_id: req_id.to_string(),
            reason: reason.to_string(),
        };
        let _ = self.links.bus.deliver(&self.sid, withdraw);
    }

    /// Sends a request frame and waits for its reply, parking while detached.
    async fn request(
        &self,
        kind: RequestKind,
        task_id: &str,
        build: impl FnOnce(&str, u64) -> ServerBody,
    ) -> ReplyResult {
        let timeouts = &self.limits.timeouts;
        let timeout = match kind {
            RequestKind::Ask => timeouts.ask,
            RequestKind::Hook => timeouts.hook,
            RequestKind::Spawn => timeouts.spawn,
        };
        let req_id = format!(
            "{}-{}-{}",
            self.sid,
            kind.name(),
            uuid::Uuid::new_v4().simple()
        );
        let deadline_ms = unix_ms(SystemTime::now() + timeout);
        let (waiter, reply) = oneshot::channel();
        let request = Outbound::Request {
            kind,
            req_id: req_id.clone(),
            task_id: task_id.to_string(),
            body: build(&req_id, deadline_ms),
            waiter,
        };
        let span = crate::telemetry::reply_span(task_id, &self.sid, &req_id, kind.name());
        self.links.bus.deliver(&self.sid, request)?;
        tracing::debug!(sid = %self.sid, req_id = %req_id, task_id, kind = kind.name(), "operator request sent");
        let mut guard = AbandonGuard {
            session: self,
            req_id: &req_id,
            waiting: true,
        };
        let waited = wait(reply, timeout).await;
        guard.waiting = false;
        span.record(
            "outcome",
            match &waited {
                Ok(Ok(_)) => "replied",
                Ok(Err(_)) => "failed",
                Err(NoReply::Dropped) => "dropped",
                Err(NoReply::Expired) => "expired",
            },
        );
        match waited {
            Ok(reply) => reply,
            Err(NoReply::Dropped) => Err(OperatorRequestError(format!(
                "operator session {} dropped request {req_id}",
                self.sid
            ))),
            Err(NoReply::Expired) => {
                let reason = format!(
                    "operator did not answer {} {req_id} within {}s",
                    kind.name(),
                    timeout.as_secs()
                );
                self.withdraw(&req_id, &reason);
                Err(OperatorRequestError(reason))
            }
        }
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

fn unexpected(reply: Reply) -> OperatorRequestError {
    OperatorRequestError(format!("unexpected reply {reply:?}"))
}

#[async_trait]
impl OperatorBackend for OperatorSession {
    fn is_attached(&self) -> bool {
        self.attached_here_or_elsewhere()
    }

    async fn hook_before(
        &self,
        step: StepContext,
    ) -> std::result::Result<(), OperatorRequestError> {
        let frame_step = step_of(&step);
        self.request(RequestKind::Hook, &step.task_id, |req_id, deadline| {
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
        if self
            .links
            .bus
            .deliver(&self.sid, Outbound::Info(body))
            .is_err()
        {
            tracing::warn!(sid = %self.sid, task_id = %step.task_id, step_id = %step.step_id, "hook_after dropped: session closed or full");
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
            .request(RequestKind::Spawn, &step.task_id, |req_id, deadline| {
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
            other => Err(unexpected(other)),
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
            .request(RequestKind::Ask, &task_id.clone(), |req_id, deadline| {
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
            other => Err(unexpected(other)),
        }
    }
}

/// The directive's line asking the sub-agent to join the task's trace (none when off).
fn traced(traceparent: &str) -> String {
    if traceparent.is_empty() {
        return String::new();
    }
    format!("\ntrace: send metadata 'traceparent: {traceparent}' with GetPrompt and Submit")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::operator::frame::{ClientFrame, ReplyOutcome};
    use crate::operator::test_support::{test_limits, test_limits_with, test_step};

    /// The req_id of the newest request frame the session queued.
    fn last_req_id(session: &OperatorSession) -> String {
        let s = session.lock();
        let frame = s.outbox.next_after(s.outbox.last_seq() - 1).cloned();
        frame
            .and_then(|f| f.body.req_id().map(str::to_string))
            .expect("a request frame")
    }

    #[tokio::test]
    async fn an_ask_is_queued_and_its_answer_returned() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let s = session.clone();
        let ask = tokio::spawn(async move { s.ask(test_step(1), json!("which?")).await });
        while session.info().pending == 0 {
            tokio::task::yield_now().await;
        }
        let req_id = last_req_id(&session);
        assert!(req_id.starts_with("op-1-ask-"), "{req_id}");
        let answer = ClientFrame::Answer {
            req_id,
            value: json!("this one"),
        };
        assert_eq!(session.handle(answer), ReplyOutcome::Accepted);
        assert_eq!(
            ask.await.expect("join").expect("answered"),
            json!("this one")
        );
        assert_eq!(session.info().pending, 0);
    }

    #[tokio::test]
    async fn a_dropped_request_is_withdrawn_with_a_cancel_frame() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let s = session.clone();
        let hook = tokio::spawn(async move { s.hook_before(test_step(1)).await });
        while session.info().pending == 0 {
            tokio::task::yield_now().await;
        }
        let req_id = last_req_id(&session);
        hook.abort();
        let _ = hook.await;
        assert_eq!(session.info().pending, 0, "the abandon guard withdrew it");
        let s = session.lock();
        let cancel = s.outbox.next_after(1).map(|f| f.body.clone());
        assert!(
            matches!(cancel, Some(ServerBody::Cancel { req_id: r, reason }) if r == req_id && reason.contains("abandoned"))
        );
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_fails_and_a_late_reply_is_stale() {
        let limits = test_limits_with(|t| t.hook = std::time::Duration::from_millis(30));
        let session = OperatorSession::new("op-1".into(), vec![], limits);
        let _attached = session.attach(0).expect("attach");
        let s = session.clone();
        let hook = tokio::spawn(async move { s.hook_before(test_step(1)).await });
        while session.info().pending == 0 {
            tokio::task::yield_now().await;
        }
        let req_id = last_req_id(&session);
        let failed = hook.await.expect("join").expect_err("deadline");
        assert!(
            failed.0.contains("did not answer hook_before"),
            "{failed:?}"
        );
        let late = ClientFrame::HookAck {
            req_id,
            ok: true,
            reason: None,
        };
        assert!(matches!(
            session.handle(late),
            ReplyOutcome::Refused {
                code: crate::operator::NoticeCode::Stale,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_closed_session_refuses_new_requests() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        session.close("deleted by test", 0);
        let err = session.hook_before(test_step(1)).await.expect_err("closed");
        assert_eq!(err.0, "operator session op-1 deleted by test");
    }
}
