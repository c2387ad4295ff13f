//! `OperatorService`: thin adapter over the operator session core. `Connect` is the native
//! door, `Subscribe` + `Send` the browser door; both attach to the same session.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::auth::bearer;
use super::convert::timestamp;
use super::frames::{client_frame, send_outcome, server_frame};
use crate::door::HELLO_TIMEOUT;
use crate::error::Error;
use crate::operator::{
    Attachment, ClientFrame, NoticeCode, OperatorHub, OperatorSession, ReplyOutcome, ServerBody,
    SessionInfo, MISSED_PINGS,
};
use crate::pb::v1 as pb;
use crate::pb::v1::operator_service_server::OperatorService;

/// Serves `mlua_swarm.v1.OperatorService`.
#[derive(Debug, Clone)]
pub struct OperatorSvc {
    hub: Arc<OperatorHub>,
    ping_interval: Duration,
}

impl OperatorSvc {
    /// A service over `hub`.
    pub fn new(hub: Arc<OperatorHub>, ping_interval: Duration) -> Self {
        Self { hub, ping_interval }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

fn session_pb(info: SessionInfo) -> pb::Session {
    let SessionInfo {
        sid,
        roles,
        connected,
        pending,
        last_seen,
        epoch,
        last_seq,
        acked_seq,
        created_at,
    } = info;
    pb::Session {
        sid,
        roles,
        connected,
        pending,
        last_seen: Some(timestamp(last_seen)),
        epoch,
        last_seq,
        acked_seq,
        created_at: Some(timestamp(created_at)),
    }
}

/// Detaches its attachment when the stream holding it is dropped (client gone), and by
/// dropping `_ended` tells the inbound reader to stop.
struct DetachOnDrop {
    session: Arc<OperatorSession>,
    epoch: u64,
    _ended: Option<oneshot::Sender<()>>,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.session.detach(self.epoch);
    }
}

/// The frames of an attachment as a stream of protobuf frames. It ends when the
/// attachment does (UNAVAILABLE after the `closing` of a stream dropped for missing
/// pings), or with the status `abort` delivers (a broken inbound stream).
fn frames(
    attachment: Attachment,
    ping_interval: Duration,
    abort: oneshot::Receiver<Status>,
    ended: Option<oneshot::Sender<()>>,
) -> impl Stream<Item = Result<pb::ServerFrame, Status>> + Send {
    let guard = DetachOnDrop {
        session: attachment.session().clone(),
        epoch: attachment.epoch(),
        _ended: ended,
    };
    futures::stream::unfold(
        Some((attachment, guard, abort.fuse())),
        move |state| async move {
            let (mut a, g, mut abort) = state?;
            tokio::select! {
                biased;
                Ok(status) = &mut abort => Some((Err(status), None)),
                frame = a.next_frame() => match frame {
                    Some(frame) => Some((Ok(server_frame(frame)), Some((a, g, abort)))),
                    None if a.dropped_silent() => Some((Err(Status::unavailable(format!(
                        "operator stream dropped: no frame from the client for {}s ({MISSED_PINGS} \
                         ping intervals); reconnect with hello{{sid, last_seq}} and answer every \
                         ping with pong",
                        (ping_interval * MISSED_PINGS).as_secs()
                    ))), None)),
                    // Ended because the inbound side broke: deliver its status.
                    None => (&mut abort).now_or_never().and_then(Result::ok).map(|status| (Err(status), None)),
                },
            }
        },
    )
}

/// tonic reports an over-limit message as OUT_OF_RANGE; callers expect RESOURCE_EXHAUSTED
/// with a hint.
fn oversized(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        return Status::resource_exhausted(format!(
            "{}; send large payloads through DataService and pass their out_id",
            status.message()
        ));
    }
    status
}

/// A notice this door sends itself, counted like the session's.
fn counted(code: NoticeCode) -> NoticeCode {
    crate::metrics::notice(code.label());
    code
}

fn notice(outcome: ReplyOutcome) -> Option<ServerBody> {
    match outcome {
        ReplyOutcome::Accepted => None,
        ReplyOutcome::Refused {
            code,
            req_id,
            message,
        } => Some(ServerBody::Notice {
            code,
            req_id,
            message,
        }),
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorSvc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let created = self.hub.create(request.into_inner().roles).await?;
        Ok(Response::new(pb::CreateSessionResponse {
            sid: created.sid,
            token: created.token,
            roles: created.roles,
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let token = bearer(request.metadata())?;
        let session = self
            .hub
            .authenticate(&request.get_ref().sid, token.as_deref())
            .await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session_pb(session.info())),
        }))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self.hub.list().await?.into_iter().map(session_pb).collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let token = bearer(request.metadata())?;
        let sid = request.into_inner().sid;
        self.hub.authenticate(&sid, token.as_deref()).await?;
        self.hub.delete(&sid, "deleted by DeleteSession").await?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    type ConnectStream = FrameStream;

    /// Status codes before `welcome`: UNAUTHENTICATED (missing or wrong token), NOT_FOUND
    /// (unknown sid), INVALID_ARGUMENT (first frame not hello, bad last_seq),
    /// DEADLINE_EXCEEDED (no hello within [`HELLO_TIMEOUT`]). After it, a bad frame gets a
    /// `notice`; a frame over the size limit ends the stream with RESOURCE_EXHAUSTED.
    async fn connect(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let token = bearer(request.metadata())?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no hello within {}s: send hello{{sid, last_seq}} first",
                    HELLO_TIMEOUT.as_secs()
                ))
            })?;
        let first = match first {
            None => return Err(Error::invalid("stream", "ended before hello").into()),
            Some(Err(status)) => return Err(status),
            Some(Ok(frame)) => frame,
        };
        let Ok(ClientFrame::Hello { sid, last_seq }) = client_frame(first) else {
            return Err(Error::invalid("first frame", "must be hello{sid, last_seq}").into());
        };
        let session = self.hub.authenticate(&sid, token.as_deref()).await?;
        let attachment = session.attach(last_seq)?;
        let epoch = attachment.epoch();
        let (err_tx, err_rx) = oneshot::channel::<Status>();
        let (ended_tx, mut ended_rx) = oneshot::channel::<()>();
        let reader_session = session.clone();
        let span = tracing::info_span!("operator_stream", sid = %sid, epoch);
        tokio::spawn(async move {
            let s = reader_session;
            // Silence is watched by the attachment (it pings and drops a silent stream).
            loop {
                let next = tokio::select! {
                    // The response side is over (closing sent, replaced, deleted).
                    _ = &mut ended_rx => break,
                    next = inbound.next() => next,
                };
                let next = match next {
                    None => break,
                    Some(Err(status)) => {
                        let status = oversized(status);
                        tracing::info!(sid = %s.sid(), epoch, code = ?status.code(), "operator stream error");
                        let _ = err_tx.send(status);
                        break;
                    }
                    Some(Ok(frame)) => frame,
                };
                let body = match client_frame(next) {
                    // None: this stream was replaced; its frames are void.
                    Ok(frame) => s.handle_on(epoch, frame).and_then(notice),
                    Err(message) => Some(ServerBody::Notice {
                        code: counted(NoticeCode::InvalidFrame),
                        req_id: String::new(),
                        message,
                    }),
                };
                if let Some(body) = body {
                    s.notify_stream(epoch, body);
                }
            }
            s.detach(epoch);
        }.instrument(span));
        Ok(Response::new(Box::pin(frames(
            attachment,
            self.ping_interval,
            err_rx,
            Some(ended_tx),
        ))))
    }

    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let token = bearer(request.metadata())?;
        let pb::SubscribeRequest { sid, last_seq } = request.into_inner();
        let session = self.hub.authenticate(&sid, token.as_deref()).await?;
        let attachment = session.attach(last_seq)?;
        let (_never, abort) = oneshot::channel();
        Ok(Response::new(Box::pin(frames(
            attachment,
            self.ping_interval,
            abort,
            None,
        ))))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let token = bearer(request.metadata())?;
        let pb::SendRequest { sid, frame } = request.into_inner();
        // A recently deleted session still answers replies (STALE), not NOT_FOUND.
        let session = self.hub.authenticate_reply(&sid, token.as_deref()).await?;
        let frame = frame.ok_or_else(|| Error::invalid("frame", "required"))?;
        let frame = client_frame(frame).map_err(|m| Error::invalid("frame", m))?;
        if matches!(frame, ClientFrame::Hello { .. }) {
            return Err(
                Error::invalid("frame", "hello is not sent with Send; call Subscribe").into(),
            );
        }
        let (outcome, message) = send_outcome(&session.handle(frame))?;
        Ok(Response::new(pb::SendResponse {
            outcome: outcome as i32,
            message,
        }))
    }
}
