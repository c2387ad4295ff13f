//! One stream's life: `hello{sid, last_seq}`, the `welcome`, then frames until the
//! stream ends, the server closes it or the operator shuts down.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::core::Core;
use crate::handler::Handler;
use crate::pb;
use crate::pb::client_frame::Body as C;
use crate::pb::operator_service_client::OperatorServiceClient;
use crate::pb::server_frame::Body as S;

/// The server's bound on the wait for `welcome` (it answers `DEADLINE_EXCEEDED` past it).
const WELCOME_WITHIN: Duration = Duration::from_secs(15);
/// Client frames queued for the stream.
const OUTBOUND: usize = 1024;

/// How a stream ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// [`crate::Shutdown::shutdown`] was called.
    Shutdown,
    /// The server sent `closing` (0: do not reconnect).
    Closed { reason: String, retry_after_ms: u64 },
    /// The transport failed or went silent: reconnect with backoff.
    Lost(String),
    /// The sid is unknown to the server (an `--ephemeral` server restarted).
    NotFound(tonic::Status),
    /// The server refused the session for good.
    Refused(tonic::Status),
}

impl<H: Handler> Core<H> {
    /// Attaches once; the bool says whether the server welcomed the stream.
    pub(crate) async fn attach(&mut self) -> (Exit, bool) {
        self.drain_finished().await;
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let hello = pb::Hello {
            sid: self.session.sid.clone(),
            last_seq: self.ledger.hello_seq(),
        };
        let _ = tx
            .send(pb::ClientFrame {
                body: Some(C::Hello(hello)),
            })
            .await;
        let auth = match self.auth.with_bearer(&self.session.token) {
            Ok(auth) => auth,
            Err(e) => {
                return (
                    Exit::Refused(tonic::Status::invalid_argument(e.to_string())),
                    false,
                )
            }
        };
        let req = auth.request(ReceiverStream::new(rx));
        let mut client = OperatorServiceClient::new(self.channel.clone());
        let shutdown = self.shutdown.clone();
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return (Exit::Shutdown, false),
            r = tokio::time::timeout(WELCOME_WITHIN, client.connect(req)) => r,
        };
        let mut inbound = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return (refused_or_lost(status), false),
            Err(_) => return (Exit::Lost("no answer to Connect in time".into()), false),
        };
        let first = tokio::select! {
            _ = shutdown.cancelled() => return (Exit::Shutdown, false),
            r = tokio::time::timeout(WELCOME_WITHIN, inbound.message()) => r,
        };
        let welcome = match first {
            Ok(Ok(Some(pb::ServerFrame {
                body: Some(S::Welcome(w)),
                ..
            }))) => w,
            Ok(Ok(other)) => {
                return (
                    Exit::Lost(format!("first frame not a welcome: {other:?}")),
                    false,
                )
            }
            Ok(Err(status)) => return (refused_or_lost(status), false),
            Err(_) => return (Exit::Lost("no welcome in time".into()), false),
        };
        self.welcomed(&welcome);
        let silent_after = Duration::from_secs(u64::from(welcome.ping_interval_secs) * 3);
        let out = Some(tx);
        let mut closing = None;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return (Exit::Shutdown, true),
                Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = res {
                        self.on_done(done, &out).await;
                    }
                }
                item = next_within(&mut inbound, heard, silent_after) => match item {
                    Ok(Some(frame)) => {
                        heard = Instant::now();
                        if let Some(c) = self.on_frame(frame, &out).await {
                            closing = Some(c);
                        }
                    }
                    Ok(None) => break,
                    Err(why) => {
                        if closing.is_some() {
                            break;
                        }
                        return (Exit::Lost(why), true);
                    }
                },
            }
        }
        let exit = match closing {
            Some(c) => Exit::Closed {
                reason: c.reason,
                retry_after_ms: c.retry_after_ms,
            },
            None => Exit::Lost("the server ended the stream".into()),
        };
        (exit, true)
    }

    fn welcomed(&mut self, w: &pb::Welcome) {
        let span = tracing::info_span!("operator", sid = %self.session.sid, epoch = w.epoch);
        let _in = span.enter();
        if w.server_restarted {
            tracing::warn!(
                replayed = w.replayed,
                "operator attached: the server restarted; requests from before are void"
            );
            self.void_running();
        } else {
            tracing::info!(
                replayed = w.replayed,
                acked_seq = w.acked_seq,
                "operator attached"
            );
        }
    }
}

/// The next frame; `Err` when the stream failed or nothing came for `silent_after` since
/// `heard` (0: no bound).
async fn next_within(
    inbound: &mut tonic::Streaming<pb::ServerFrame>,
    heard: Instant,
    silent_after: Duration,
) -> Result<Option<pb::ServerFrame>, String> {
    let next = inbound.message();
    let item = if silent_after.is_zero() {
        next.await
    } else {
        tokio::time::timeout_at((heard + silent_after).into(), next)
            .await
            .map_err(|_| format!("nothing from the server for {silent_after:?}"))?
    };
    item.map_err(|status| format!("stream failed: {status}"))
}

fn refused_or_lost(status: tonic::Status) -> Exit {
    match status.code() {
        Code::NotFound => Exit::NotFound(status),
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
            Exit::Refused(status)
        }
        _ => Exit::Lost(format!("connect failed: {status}")),
    }
}
