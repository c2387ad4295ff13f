//! The owner's side: requests this replica waits for while another replica (or nobody
//! yet) holds the session's stream. The waiter stays here; the request is sent to
//! `mse.sess.<sid>` until a holder accepts it, parked while nobody holds the stream, and
//! re-sent on every attach announcement and reconnect. The first outcome per req_id is
//! applied; later ones find nothing (exactly-once effect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::super::frame::ServerBody;
use super::super::pending::{RequestKind, Waiter};
use super::wire::{self, HolderAnswer, Outcome, ToHolder};
use super::{lock, NatsBus, REQUEST_TIMEOUT, RETRY_MAX};
use crate::engine::OperatorRequestError;
use crate::limits::clip_text;

/// A request this replica owns, sent through NATS.
pub(super) struct Owned {
    pub(super) sid: String,
    pub(super) kind: RequestKind,
    pub(super) task_id: String,
    pub(super) body: ServerBody,
    pub(super) waiter: Waiter,
    /// The replica whose holder queued it, once one did.
    pub(super) accepted_by: Option<String>,
    /// A send loop runs for it.
    sending: bool,
    /// Something asked for another send while one was running.
    again: bool,
    /// Wakes a running send that waits for its answer when another send is asked for.
    kick: Arc<Notify>,
    /// Parked (nobody holds the stream) since.
    parked_since: Option<Instant>,
}

impl Owned {
    pub(super) fn new(
        sid: String,
        kind: RequestKind,
        task_id: String,
        body: ServerBody,
        waiter: Waiter,
    ) -> Self {
        Self {
            sid,
            kind,
            task_id,
            body,
            waiter,
            accepted_by: None,
            sending: false,
            again: false,
            kick: Arc::default(),
            parked_since: None,
        }
    }
}

/// What a send attempt came to.
enum Verdict {
    Accepted(String),
    Refused(String),
    Park,
    Retry,
}

impl NatsBus {
    /// Keeps the waiter of a request for a session held elsewhere, and sends it.
    pub(super) fn own(
        &self,
        sid: &str,
        req_id: String,
        kind: RequestKind,
        task_id: String,
        body: ServerBody,
        waiter: Waiter,
    ) {
        if self.is_closed() {
            let why = format!("operator session {sid}: this replica closed its frame bus");
            let _ = waiter.send(Err(OperatorRequestError(why)));
            return;
        }
        let owned = Owned::new(sid.to_string(), kind, task_id, body, waiter);
        lock(&self.owned).insert(req_id.clone(), owned);
        self.start_send(&req_id);
    }

    /// Sends `req_id` (again), unless a send runs: that one sends once more when done.
    pub(super) fn start_send(&self, req_id: &str) {
        {
            let mut owned = lock(&self.owned);
            let Some(o) = owned.get_mut(req_id) else {
                return;
            };
            if o.sending {
                o.again = true;
                o.kick.notify_waiters();
                return;
            }
            o.sending = true;
        }
        let Some(bus) = self.me.upgrade() else { return };
        let req_id = req_id.to_string();
        tokio::spawn(async move { bus.send_loop(req_id).await });
    }

    /// Every owned request no holder accepted yet is sent again (after a reconnect).
    pub(super) fn resend_unaccepted(&self) {
        let ids: Vec<String> = lock(&self.owned)
            .iter()
            .filter(|(_, o)| o.accepted_by.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.start_send(&id);
        }
    }

    async fn send_loop(&self, req_id: String) {
        let Some(kick) = lock(&self.owned).get(&req_id).map(|o| o.kick.clone()) else {
            return;
        };
        let mut pause = Duration::from_millis(50);
        loop {
            // Made before `again` is cleared: a later ask for another send wakes it.
            let kicked = kick.notified();
            let (sid, payload) = {
                let mut owned = lock(&self.owned);
                let Some(o) = owned.get_mut(&req_id) else {
                    return;
                };
                o.again = false;
                let msg = ToHolder::Request {
                    req_id: req_id.clone(),
                    kind: o.kind.name().to_string(),
                    task_id: o.task_id.clone(),
                    body: o.body.clone(),
                    owner: self.replica.clone(),
                };
                (o.sid.clone(), wire::encode(&msg))
            };
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(REQUEST_TIMEOUT));
            let sent = tokio::select! {
                sent = self.client.send_request(wire::sess_subject(&sid), request) => sent,
                // An attach announcement or a reconnect asked again: the holder this went
                // to may have died with it, so it is sent again now instead of after the
                // request's timeout.
                () = kicked => {
                    tracing::debug!(sid, req_id, "operator request sent again before its answer");
                    continue;
                }
            };
            let verdict = match sent {
                Ok(msg) => match serde_json::from_slice::<HolderAnswer>(&msg.payload) {
                    Ok(HolderAnswer::Accepted { replica }) => Verdict::Accepted(replica),
                    Ok(HolderAnswer::Refused { reason }) => Verdict::Refused(reason),
                    Ok(HolderAnswer::Moved) => Verdict::Park,
                    Err(_) => Verdict::Retry,
                },
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Verdict::Park,
                Err(e) => {
                    tracing::debug!(sid, req_id, error = %e, "operator request not delivered yet; retrying");
                    Verdict::Retry
                }
            };
            if self.settle(&req_id, verdict) {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Applies a send's verdict to `req_id`; false when it must be sent again (after a
    /// pause: it may be sent at once, since an announcement asked again meanwhile).
    fn settle(&self, req_id: &str, verdict: Verdict) -> bool {
        let mut owned = lock(&self.owned);
        let Some(o) = owned.get_mut(req_id) else {
            return true;
        };
        if o.again {
            return false;
        }
        match verdict {
            Verdict::Accepted(replica) => {
                tracing::debug!(sid = %o.sid, req_id, holder = %replica, "operator request accepted by its holder");
                o.accepted_by = Some(replica);
                o.parked_since = None;
                o.sending = false;
            }
            Verdict::Refused(reason) => {
                if let Some(o) = owned.remove(req_id) {
                    let _ = o.waiter.send(Err(OperatorRequestError(reason)));
                }
            }
            Verdict::Park => {
                o.sending = false;
                if o.parked_since.is_none() {
                    o.parked_since = Some(Instant::now());
                    tracing::debug!(sid = %o.sid, req_id, "no replica holds the stream; request parked");
                    drop(owned);
                    self.expire_parked(req_id.to_string());
                }
            }
            Verdict::Retry => return false,
        }
        true
    }

    /// Fails `req_id` if it is still parked once the grace window passed.
    fn expire_parked(&self, req_id: String) {
        let Some(bus) = self.me.upgrade() else { return };
        let grace = self.park_grace;
        tokio::spawn(async move {
            let mut wait = grace;
            loop {
                tokio::time::sleep(wait).await;
                let mut owned = lock(&bus.owned);
                let Some(since) = owned.get(&req_id).and_then(|o| o.parked_since) else {
                    return;
                };
                if since.elapsed() < grace {
                    wait = grace - since.elapsed();
                    continue;
                }
                if let Some(o) = owned.remove(&req_id) {
                    crate::metrics::parking_expired();
                    let why = format!(
                        "operator session {} has had no stream for over {}s; connect an operator",
                        o.sid,
                        grace.as_secs()
                    );
                    let _ = o.waiter.send(Err(OperatorRequestError(why)));
                }
                return;
            }
        });
    }

    /// Ends the owned requests of `sid` matching `req_id` or `task_id`: each waiter fails
    /// with `reason`, and the holder that queued one sends the operator `cancel`.
    pub(super) fn withdraw_owned(
        &self,
        sid: &str,
        req_id: Option<&str>,
        task_id: Option<&str>,
        reason: &str,
    ) {
        let ended: Vec<(String, Owned)> = {
            let mut owned = lock(&self.owned);
            if owned.is_empty() {
                return;
            }
            let ids: Vec<String> = owned
                .iter()
                .filter(|(id, o)| {
                    o.sid == sid
                        && req_id.is_none_or(|r| r == id.as_str())
                        && task_id.is_none_or(|t| t == o.task_id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| owned.remove(&id).map(|o| (id, o)))
                .collect()
        };
        let reason = clip_text(reason);
        for (req_id, o) in ended {
            let _ = o.waiter.send(Err(OperatorRequestError(reason.clone())));
            if o.accepted_by.is_some() {
                let msg = ToHolder::Withdraw {
                    req_id,
                    reason: reason.clone(),
                };
                self.publish(wire::sess_subject(sid), wire::encode(&msg));
            }
        }
    }

    /// An outcome on `mse.run.<replica>`: the first per req_id reaches its waiter.
    pub(super) async fn on_outcome(&self, msg: async_nats::Message) {
        let Ok(outcome) = serde_json::from_slice::<Outcome>(&msg.payload) else {
            tracing::warn!("unreadable outcome on the run subject ignored");
            return;
        };
        let owned = lock(&self.owned).remove(&outcome.req_id);
        let applied = match owned {
            Some(o) => {
                let _ = o.waiter.send(outcome.into_result());
                "applied"
            }
            None => {
                tracing::debug!(req_id = %outcome.req_id, "outcome of a request no longer owned here ignored");
                "unknown"
            }
        };
        if let Some(reply) = msg.reply {
            let _ = self.client.publish(reply, applied.into()).await;
        }
    }
}
