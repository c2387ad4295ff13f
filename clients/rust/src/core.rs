//! The operator's state across streams and what it does with each frame and each
//! finished handler.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::auth::Auth;
use crate::dispatch::{self, Done};
use crate::handler::Handler;
use crate::ledger::{Arrival, Ledger};
use crate::pb;
use crate::pb::client_frame::Body as C;
use crate::pb::server_frame::Body as S;
use crate::worker::Worker;

/// The reason given to `on_cancel` for requests a server restart made void.
pub(crate) const VOID_BY_RESTART: &str =
    "server restarted: this request is void (its step is dispatched again as a new spawn)";

/// A session's credentials.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) sid: String,
    pub(crate) token: String,
}

/// Everything that outlives one stream.
pub(crate) struct Core<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) channel: Channel,
    /// API token only; the session token is added per call.
    pub(crate) auth: Auth,
    pub(crate) session: Session,
    pub(crate) ledger: Ledger,
    /// Running handlers.
    pub(crate) tasks: JoinSet<Done>,
    /// Cancellation of running requests, by dedupe key.
    cancels: HashMap<String, (String, CancellationToken)>,
    pub(crate) shutdown: CancellationToken,
}

/// Where to send client frames: the current stream, if any.
pub(crate) type Out = Option<mpsc::Sender<pb::ClientFrame>>;

impl<H: Handler> Core<H> {
    pub(crate) fn new(
        handler: Arc<H>,
        channel: Channel,
        auth: Auth,
        session: Session,
        shutdown: CancellationToken,
    ) -> Core<H> {
        Core {
            handler,
            channel,
            auth,
            session,
            ledger: Ledger::default(),
            tasks: JoinSet::new(),
            cancels: HashMap::new(),
            shutdown,
        }
    }

    /// Handles a frame after the welcome; returns the `closing` it carries, if any.
    pub(crate) async fn on_frame(
        &mut self,
        frame: pb::ServerFrame,
        out: &Out,
    ) -> Option<pb::Closing> {
        let body = frame.body?;
        match body {
            S::Ping(p) => send(out, C::Pong(pb::Pong { nonce: p.nonce })).await,
            S::Notice(n) => tracing::warn!(
                code = ?n.code(),
                req_id = %n.req_id,
                message = %n.message,
                "server notice: a frame of ours was not used"
            ),
            S::Closing(c) => return Some(c),
            S::Welcome(w) => tracing::warn!(epoch = w.epoch, "unexpected second welcome"),
            request => self.on_request(frame.seq, request, out).await,
        }
        None
    }

    async fn on_request(&mut self, seq: u64, body: S, out: &Out) {
        let Some((key, req_id)) = dispatch::key_of(&body) else {
            return;
        };
        let req_id = req_id.to_string();
        match self.ledger.arrive(seq, &key) {
            Arrival::Running => tracing::debug!(%req_id, seq, "re-sent request still running"),
            Arrival::Resend(reply) => {
                tracing::debug!(%req_id, seq, "re-sent request already handled: reply again");
                if let Some(body) = reply.and_then(|f| f.body) {
                    send(out, body).await;
                }
            }
            Arrival::Handle => {
                if matches!(body, S::Cancel(_)) {
                    self.cancel_running(&req_id);
                }
                let token = CancellationToken::new();
                self.cancels
                    .insert(key.clone(), (req_id.clone(), token.clone()));
                let span = request_span(&self.session.sid, &req_id, &body);
                let (channel, auth) = (self.channel.clone(), self.auth.clone());
                let worker = move |s: &pb::Spawn| Worker::new(channel, s).with_auth(auth, token);
                dispatch::start(
                    &mut self.tasks,
                    self.handler.clone(),
                    body,
                    Some(key),
                    worker,
                    span,
                );
            }
        }
        self.ack(out).await;
    }

    /// A handler finished: remember and send its reply, then ack what is handled.
    pub(crate) async fn on_done(&mut self, done: Done, out: &Out) {
        let Some(key) = done.key else {
            return;
        };
        self.cancels.remove(&key);
        self.ledger.finish(&key, done.reply.clone());
        if let Some(body) = done.reply.and_then(|f| f.body) {
            send(out, body).await;
        }
        self.ack(out).await;
    }

    /// Records handlers that finished while no stream was attached (their replies go out
    /// when the server re-sends the requests).
    pub(crate) async fn drain_finished(&mut self) {
        while let Some(res) = self.tasks.try_join_next() {
            if let Ok(done) = res {
                self.on_done(done, &None).await;
            }
        }
    }

    /// The server restarted: requests from before are void; their handlers are told
    /// (`Worker::cancelled`, `on_cancel`) and numbering goes on from the hello.
    pub(crate) fn void_running(&mut self) {
        self.ledger.server_restarted();
        for (key, (req_id, token)) in self.cancels.drain() {
            token.cancel();
            if key.starts_with("cancel:") {
                continue;
            }
            let cancel = pb::Cancel {
                req_id: req_id.clone(),
                reason: VOID_BY_RESTART.into(),
            };
            let span = tracing::info_span!("operator_request", sid = %self.session.sid, %req_id, kind = "cancel");
            let body = S::Cancel(cancel);
            let no_worker = |s: &pb::Spawn| Worker::new(self.channel.clone(), s);
            dispatch::start(
                &mut self.tasks,
                self.handler.clone(),
                body,
                None,
                no_worker,
                span,
            );
        }
    }

    /// A `cancel` arrived: running handlers of that req_id see `Worker::cancelled`.
    fn cancel_running(&mut self, req_id: &str) {
        for (id, token) in self.cancels.values() {
            if id == req_id {
                token.cancel();
            }
        }
    }

    async fn ack(&mut self, out: &Out) {
        if out.is_none() {
            return;
        }
        if let Some(seq) = self.ledger.ack_due() {
            send(out, C::Ack(pb::Ack { seq })).await;
        }
    }
}

/// Queues `body` on the current stream; a lost frame is re-sent after the reconnect.
pub(crate) async fn send(out: &Out, body: C) {
    if let Some(tx) = out {
        let _ = tx.send(pb::ClientFrame { body: Some(body) }).await;
    }
}

fn request_span(sid: &str, req_id: &str, body: &S) -> tracing::Span {
    let (kind, task_id, step_id) = match body {
        S::HookBefore(h) => ("hook_before", h.task_id.as_str(), h.step_id.as_str()),
        S::Spawn(s) => ("spawn", s.task_id.as_str(), s.step_id.as_str()),
        S::HookAfter(h) => ("hook_after", h.task_id.as_str(), h.step_id.as_str()),
        S::Ask(a) => ("ask", a.task_id.as_str(), a.step_id.as_str()),
        _ => ("cancel", "", ""),
    };
    tracing::info_span!("operator_request", %sid, %req_id, kind, task_id, step_id)
}
