//! [`NatsBus`]: the frame bus between replicas (issue 14; docs/SCALE-OUT.md, "Frames
//! between replicas"). A frame whose holder is in this process is a direct call through
//! the [`LocalBus`] inside; others cross NATS core pub/sub:
//!
//! * `owner.rs`: the requests this replica waits for (the waiter stays here), sent to
//!   `mse.sess.<sid>`, parked while nobody holds the stream, re-sent on attach
//!   announcements and reconnects; their outcomes arrive on `mse.run.<replica>`.
//! * `holder.rs`: the sessions whose stream attached here: requests from other replicas
//!   are queued with a forwarding waiter; attach announcements hand a moved stream over.

mod holder;
mod owner;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::bus::{FrameBus, LocalBus, Outbound};
use super::frame::{ClientFrame, ReplyOutcome};
use super::hub::OperatorHub;
use super::session::OperatorSession;
use crate::engine::OperatorRequestError;
use owner::Owned;

/// How long one NATS request waits for its answer before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between retries of a request or an outcome.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
#[error("NATS at {url}: {why}")]
pub struct NatsStartError {
    url: String,
    why: String,
}

/// What the bus tells the hub of other replicas' sessions.
#[derive(Debug)]
enum HubNote {
    /// A stream attached elsewhere: learn the session (its engine may route to it) and
    /// resume the interrupted runs waiting for it.
    Attached(String),
    /// Deleted elsewhere: drop this process's object of it.
    Forget(String, String),
}

/// A session whose stream attached here: the epoch, and the task reading its subject.
struct Held {
    epoch: u64,
    task: JoinHandle<()>,
}

/// The frame bus between replicas over NATS.
pub struct NatsBus {
    me: Weak<NatsBus>,
    replica: String,
    client: Client,
    local: LocalBus,
    held: RwLock<HashMap<String, Held>>,
    owned: Mutex<HashMap<String, Owned>>,
    /// Requests queued here whose waiter forwards the outcome to another replica.
    forwarded: Mutex<HashSet<String>>,
    park_grace: Duration,
    notes: mpsc::UnboundedSender<HubNote>,
    hub_notes: Mutex<Option<mpsc::UnboundedReceiver<HubNote>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by [`NatsBus::close`]: nothing is sent any more.
    closed: AtomicBool,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl NatsBus {
    /// Connects to `url` as `replica` and subscribes this replica's subjects. An
    /// unreachable server fails here; later outages are reconnected (frames park and are
    /// re-sent). Requests nobody holds fail after `park_grace`, as on one server.
    pub async fn connect(
        url: &str,
        replica: &str,
        park_grace: Duration,
    ) -> Result<Arc<Self>, NatsStartError> {
        let fail = |why: String| NatsStartError {
            url: url.to_string(),
            why,
        };
        if replica.is_empty()
            || !replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(fail(format!(
                "replica id '{replica}' must be letters, digits, '-' or '_'"
            )));
        }
        let (reconnected, mut reconnects) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .name(format!("mse-grpc {replica}"))
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|n| {
                Duration::from_millis((50 * n as u64).min(RETRY_MAX.as_millis() as u64))
            })
            .event_callback(move |event| {
                let reconnected = reconnected.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("NATS connected");
                            let _ = reconnected.send(());
                        }
                        Event::Disconnected => tracing::warn!("NATS disconnected; frames park"),
                        other => tracing::debug!(%other, "NATS event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot connect ({e}); is nats-server running there?"
                ))
            })?;
        let runs = client
            .subscribe(wire::run_subject(replica))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let attaches = client
            .subscribe(wire::ATTACH_ALL)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let deletions = client
            .subscribe(wire::GONE_ALL)
            .await
            .map_err(|e| fail(e.to_string()))?;
        round_trip(&client).await.map_err(fail)?;
        let (notes, hub_notes) = mpsc::unbounded_channel();
        let bus = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            replica: replica.to_string(),
            client,
            local: LocalBus::default(),
            held: RwLock::default(),
            owned: Mutex::default(),
            forwarded: Mutex::default(),
            park_grace,
            notes,
            hub_notes: Mutex::new(Some(hub_notes)),
            tasks: Mutex::default(),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&bus);
        let mut tasks = vec![
            tokio::spawn(each(runs, weak.clone(), |bus, msg| async move {
                bus.on_outcome(msg).await
            })),
            tokio::spawn(each(attaches, weak.clone(), |bus, msg| async move {
                bus.on_attach(msg)
            })),
            tokio::spawn(each(deletions, weak.clone(), |bus, msg| async move {
                bus.on_gone(msg)
            })),
        ];
        tasks.push(tokio::spawn(async move {
            while reconnects.recv().await.is_some() {
                let Some(bus) = weak.upgrade() else { break };
                bus.announce_held();
                bus.resend_unaccepted();
            }
        }));
        *lock(&bus.tasks) = tasks;
        tracing::info!(url, replica, "frame bus on NATS");
        Ok(bus)
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Lets `hub` learn the sessions other replicas announce (so this replica's engine
    /// can route to them) and drop those they delete. Call once, after the hub started.
    pub fn serve_hub(&self, hub: &Arc<OperatorHub>) {
        let Some(mut notes) = lock(&self.hub_notes).take() else {
            return;
        };
        let hub = Arc::downgrade(hub);
        lock(&self.tasks).push(tokio::spawn(async move {
            while let Some(note) = notes.recv().await {
                let Some(hub) = hub.upgrade() else { break };
                match note {
                    HubNote::Attached(sid) => {
                        if let Err(e) = hub.attached_elsewhere(&sid).await {
                            tracing::warn!(sid, error = %e, "could not adopt an announced session");
                        }
                    }
                    HubNote::Forget(sid, reason) => {
                        if hub.forget(&sid, &reason).await {
                            tracing::info!(
                                sid,
                                reason,
                                "operator session deleted on another replica"
                            );
                        }
                    }
                }
            }
        }));
    }

    /// Stops taking and sending frames: every subscription and retry of this replica
    /// ends, as if it died (its streams stay open until their sessions close).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, held) in self.held_mut().drain() {
            held.task.abort();
        }
        for (_, owned) in lock(&self.owned).drain() {
            let why = format!(
                "operator session {}: this replica closed its frame bus",
                owned.sid
            );
            let _ = owned.waiter.send(Err(OperatorRequestError(why)));
        }
    }

    /// True if the stream of `sid` is held in this process.
    fn holds(&self, sid: &str) -> bool {
        let held = match self.held.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        held.contains_key(sid)
    }

    fn held_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Held>> {
        match self.held.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Publishes without waiting (the bus's callers cannot wait).
    fn publish(&self, subject: String, payload: bytes::Bytes) {
        if self.is_closed() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject.clone(), payload).await {
                tracing::warn!(subject, error = %e, "NATS publish failed");
            }
        });
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        self.close();
    }
}

/// A message to itself and back: the server has taken every subscription made before.
async fn round_trip(client: &Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(REQUEST_TIMEOUT * 5, probe.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err("no answer to a round trip through the server".into()),
    }
}

/// Runs `f` on every message of `sub` while the bus lives.
async fn each<F, Fut>(mut sub: async_nats::Subscriber, bus: Weak<NatsBus>, f: F)
where
    F: Fn(Arc<NatsBus>, async_nats::Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some(msg) = sub.next().await {
        let Some(bus) = bus.upgrade() else { break };
        f(bus, msg).await;
    }
}

impl FrameBus for NatsBus {
    fn hold(&self, session: &Arc<OperatorSession>) {
        self.local.hold(session);
    }

    fn release(&self, sid: &str) {
        self.local.release(sid);
        if self.local.holder(sid).is_none() {
            if let Some(held) = self.held_mut().remove(sid) {
                held.task.abort();
            }
        }
    }

    fn attached(&self, session: &Arc<OperatorSession>, epoch: u64) {
        self.take_stream(session, epoch);
    }

    fn deleted(&self, sid: &str, reason: &str) {
        self.let_go(sid, reason);
        let gone = wire::Gone {
            reason: reason.to_string(),
            replica: self.replica.clone(),
        };
        self.publish(wire::gone_subject(sid), wire::encode(&gone));
    }

    fn deliver(&self, sid: &str, frame: Outbound) -> Result<(), OperatorRequestError> {
        match frame {
            // A withdrawal ends what this replica owns, and what the session here holds.
            Outbound::Withdraw { req_id, reason } => {
                self.withdraw_owned(sid, Some(&req_id), None, &reason);
                self.local
                    .deliver(sid, Outbound::Withdraw { req_id, reason })
            }
            Outbound::WithdrawTask { task_id, reason } => {
                self.withdraw_owned(sid, None, Some(&task_id), &reason);
                self.local
                    .deliver(sid, Outbound::WithdrawTask { task_id, reason })
            }
            frame if self.holds(sid) => self.local.deliver(sid, frame),
            Outbound::Request {
                kind,
                req_id,
                task_id,
                body,
                waiter,
            } => {
                self.own(sid, req_id, kind, task_id, body, waiter);
                Ok(())
            }
            Outbound::Info(body) => {
                let msg = wire::ToHolder::Info { body };
                self.publish(wire::sess_subject(sid), wire::encode(&msg));
                Ok(())
            }
        }
    }

    fn route_reply(&self, sid: &str, reply: ClientFrame) -> ReplyOutcome {
        if self.holds(sid) {
            return self.local.route_reply(sid, reply);
        }
        // The holder applies it; a refusal does not come back as a notice (yet).
        let msg = wire::ToHolder::Client { frame: reply };
        self.publish(wire::sess_subject(sid), wire::encode(&msg));
        ReplyOutcome::Accepted
    }
}
