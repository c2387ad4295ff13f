//! The holder's side: a session whose stream attached here reads `mse.sess.<sid>`.
//! Requests from other replicas are queued with a forwarding waiter (its outcome goes
//! back to `mse.run.<owner>`, retried until the owner answers); an announcement of a newer
//! attach elsewhere hands the stream over.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::oneshot;

use super::super::bus::{FrameBus, Outbound};
use super::super::pending::ReplyResult;
use super::super::session::OperatorSession;
use super::owner::Owned;
use super::wire::{self, Attach, Gone, HolderAnswer, Outcome, ToHolder};
use super::{lock, Held, HubNote, NatsBus, REQUEST_TIMEOUT, RETRY_MAX};

impl NatsBus {
    /// A stream attached here with `epoch`: the sid's frames come here from now on, the
    /// other replicas hear of it, and requests this replica owns for it become local.
    pub(super) fn take_stream(&self, session: &Arc<OperatorSession>, epoch: u64) {
        let sid = session.sid().to_string();
        {
            let mut held = self.held_mut();
            match held.get_mut(&sid) {
                Some(h) => {
                    h.epoch = epoch;
                    let attach = Attach {
                        epoch,
                        replica: self.replica.clone(),
                    };
                    self.publish(wire::attach_subject(&sid), wire::encode(&attach));
                }
                None => {
                    let task = tokio::spawn(read_sess(self.me.clone(), sid.clone(), epoch));
                    held.insert(sid.clone(), Held { epoch, task });
                }
            }
        }
        let mine: Vec<(String, Owned)> = {
            let mut owned = lock(&self.owned);
            let ids: Vec<String> = owned
                .iter()
                .filter(|(_, o)| o.sid == sid)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| owned.remove(&id).map(|o| (id, o)))
                .collect()
        };
        for (req_id, o) in mine {
            let frame = Outbound::Request {
                kind: o.kind,
                req_id,
                task_id: o.task_id,
                body: o.body,
                waiter: o.waiter,
            };
            let _ = self.local.deliver(&sid, frame);
        }
    }

    /// After a reconnect: every stream held here is announced again. An owner that sent a
    /// request while this replica's subscriptions were not back yet got no responders and
    /// parked it until the next announcement; this is that announcement. (The client sends
    /// this after it subscribed again, on the same connection.)
    pub(super) fn announce_held(&self) {
        let held: Vec<(String, u64)> = {
            let held = match self.held.read() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            held.iter().map(|(sid, h)| (sid.clone(), h.epoch)).collect()
        };
        for (sid, epoch) in held {
            let attach = Attach {
                epoch,
                replica: self.replica.clone(),
            };
            self.publish(wire::attach_subject(&sid), wire::encode(&attach));
        }
    }

    /// An attach announcement: a newer stream elsewhere takes the session from this
    /// replica; what this replica owns for the sid is sent to the new holder.
    pub(super) fn on_attach(&self, msg: async_nats::Message) {
        let Some((sid, attach)) = self.announced::<Attach>(&msg, |a| &a.replica) else {
            return;
        };
        let was_held = {
            let mut held = self.held_mut();
            match held.get(sid) {
                // Ours is newer; two attaches that took one epoch: the higher replica id keeps it.
                Some(h) if (h.epoch, &self.replica) > (attach.epoch, &attach.replica) => return,
                Some(_) => held.remove(sid),
                None => None,
            }
        };
        if let Some(held) = was_held {
            held.task.abort();
        }
        if let Some(session) = self.local.holder(sid) {
            self.hand_over(&session, attach.epoch);
        }
        let _ = self.notes.send(HubNote::Attached(sid.to_string()));
        let ids: Vec<String> = {
            let mut owned = lock(&self.owned);
            owned
                .iter_mut()
                .filter(|(_, o)| o.sid == sid && o.accepted_by.as_ref() != Some(&attach.replica))
                .map(|(id, o)| {
                    o.accepted_by = None;
                    id.clone()
                })
                .collect()
        };
        tracing::debug!(sid, epoch = attach.epoch, holder = %attach.replica, resent = ids.len(), "operator stream attached on another replica");
        for id in ids {
            self.start_send(&id);
        }
    }

    /// A deletion on another replica: this replica lets the stream go, fails what it owns
    /// for the session, and its hub drops its object.
    pub(super) fn on_gone(&self, msg: async_nats::Message) {
        let Some((sid, gone)) = self.announced::<Gone>(&msg, |g| &g.replica) else {
            return;
        };
        self.let_go(sid, &gone.reason);
        let _ = self
            .notes
            .send(HubNote::Forget(sid.to_string(), gone.reason));
    }

    /// The sid and body of another replica's announcement (None for this replica's own,
    /// or one that cannot be read).
    fn announced<'m, T: serde::de::DeserializeOwned>(
        &self,
        msg: &'m async_nats::Message,
        replica: impl Fn(&T) -> &String,
    ) -> Option<(&'m str, T)> {
        let sid = wire::sid_of(msg.subject.as_str())?;
        let Ok(body) = serde_json::from_slice::<T>(&msg.payload) else {
            tracing::warn!(sid, subject = %msg.subject, "unreadable announcement ignored");
            return None;
        };
        (*replica(&body) != self.replica).then_some((sid, body))
    }

    /// Stops holding `sid` and fails the requests this replica owns for it.
    pub(super) fn let_go(&self, sid: &str, reason: &str) {
        if let Some(held) = self.held_mut().remove(sid) {
            held.task.abort();
        }
        let why = format!("operator session {sid} {reason}");
        self.withdraw_owned(sid, None, None, &why);
    }

    /// Takes the pending requests out of a session whose stream moved: those owned here
    /// join the owned table (sent to the new holder by the caller), the others are
    /// dropped (their owners re-send them).
    fn hand_over(&self, session: &OperatorSession, epoch: u64) {
        let handed = session.hand_over(epoch);
        let mut forwarded = lock(&self.forwarded);
        let mut owned = lock(&self.owned);
        for h in handed {
            if forwarded.remove(&h.req_id) {
                continue;
            }
            let o = Owned::new(
                session.sid().to_string(),
                h.kind,
                h.task_id,
                h.body,
                h.waiter,
            );
            owned.insert(h.req_id, o);
        }
    }

    /// A message for a session held here.
    async fn on_sess(&self, sid: &str, msg: async_nats::Message) {
        let Ok(body) = serde_json::from_slice::<ToHolder>(&msg.payload) else {
            tracing::warn!(sid, "unreadable frame on the session subject ignored");
            return;
        };
        let session = self.local.holder(sid).filter(|_| self.holds(sid));
        match body {
            ToHolder::Request {
                req_id,
                kind,
                task_id,
                body,
                owner,
            } => {
                let answer = match (session, wire::kind_named(&kind)) {
                    (None, _) => HolderAnswer::Moved,
                    (Some(_), None) => HolderAnswer::Refused {
                        reason: format!("unknown request kind {kind}"),
                    },
                    (Some(session), Some(kind)) => {
                        let give_up = wire::give_up_at(&body);
                        let (waiter, outcome) = oneshot::channel();
                        let frame = Outbound::Request {
                            kind,
                            req_id: req_id.clone(),
                            task_id,
                            body,
                            waiter,
                        };
                        match session.accept_once(frame) {
                            Ok(queued) => {
                                if queued {
                                    lock(&self.forwarded).insert(req_id.clone());
                                    let me = self.me.clone();
                                    tokio::spawn(forward(me, req_id, owner, outcome, give_up));
                                }
                                HolderAnswer::Accepted {
                                    replica: self.replica.clone(),
                                }
                            }
                            Err(e) => HolderAnswer::Refused { reason: e.0 },
                        }
                    }
                };
                if let Some(reply) = msg.reply {
                    let _ = self.client.publish(reply, wire::encode(&answer)).await;
                }
            }
            ToHolder::Info { body } => {
                if let Some(s) = session {
                    let _ = s.accept(Outbound::Info(body));
                }
            }
            ToHolder::Withdraw { req_id, reason } => {
                if let Some(s) = session {
                    let _ = s.accept(Outbound::Withdraw { req_id, reason });
                }
            }
            ToHolder::Client { frame } => {
                if let Some(s) = session {
                    let outcome = s.handle(frame);
                    tracing::debug!(sid, ?outcome, "client frame forwarded by another replica");
                }
            }
        }
    }
}

/// Reads `mse.sess.<sid>` while this replica holds the stream; announces the attach once
/// the subscription is in place, so re-sent requests find it.
async fn read_sess(bus: Weak<NatsBus>, sid: String, epoch: u64) {
    let (client, replica) = match bus.upgrade() {
        Some(b) => (b.client.clone(), b.replica.clone()),
        None => return,
    };
    let mut sub = match client.subscribe(wire::sess_subject(&sid)).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(sid, error = %e, "cannot subscribe the session subject");
            return;
        }
    };
    let attach = Attach { epoch, replica };
    if let Err(e) = client
        .publish(wire::attach_subject(&sid), wire::encode(&attach))
        .await
    {
        tracing::warn!(sid, error = %e, "attach announcement not sent");
    }
    while let Some(msg) = sub.next().await {
        let Some(bus) = bus.upgrade() else { break };
        bus.on_sess(&sid, msg).await;
    }
}

/// Hands a request's outcome to its owner, retried until the owner answers or
/// `give_up` passes (the owner is gone; its run resumes elsewhere with new requests).
async fn forward(
    bus: Weak<NatsBus>,
    req_id: String,
    owner: String,
    outcome: oneshot::Receiver<ReplyResult>,
    give_up: Instant,
) {
    let result = outcome.await;
    if let Some(b) = bus.upgrade() {
        lock(&b.forwarded).remove(&req_id);
    }
    // Dropped unanswered: the stream moved and the owner re-sends it.
    let Ok(result) = result else { return };
    let payload = wire::encode(&Outcome::of(req_id.clone(), result));
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(client) = bus
            .upgrade()
            .filter(|b| !b.is_closed())
            .map(|b| b.client.clone())
        else {
            return;
        };
        let request = async_nats::Request::new()
            .payload(payload.clone())
            .timeout(Some(REQUEST_TIMEOUT));
        match client
            .send_request(wire::run_subject(&owner), request)
            .await
        {
            Ok(_) => return,
            Err(e) if Instant::now() >= give_up => {
                tracing::warn!(req_id, owner, error = %e, "outcome not delivered to its owner; giving up");
                return;
            }
            Err(e) => {
                tracing::debug!(req_id, owner, error = %e, "outcome not delivered yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}
