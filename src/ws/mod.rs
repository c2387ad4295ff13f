//! The JSON-over-WebSocket shim: v0.1.0's operator socket as a thin door into the same
//! operator session core as gRPC. No seq/ack on this wire: every frame counts as delivered
//! once written, and every request still pending is re-sent on reconnect.

pub mod protocol;

use std::sync::Arc;
use tracing::Instrument;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::door::HELLO_TIMEOUT;
use crate::legacy::{bearer, ApiError, LegacyState};
use crate::operator::{ClientFrame, OperatorHub, OperatorSession, ReplyOutcome, ServerBody};
use protocol::{client_frame, decode, notice_code, server_msg, ClientMsg, ServerMsg};

/// `?token=` for browsers.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// The socket's route, `/v1/operators/{sid}/ws`.
pub fn router(state: LegacyState) -> Router {
    Router::new()
        .route("/v1/operators/{sid}/ws", get(connect))
        .with_state(state)
}

/// Bytes a WebSocket read fills at most; a larger frame still arrives, over several reads.
const WS_READ_BUFFER: usize = 8 * 1024;

/// `GET /v1/operators/{sid}/ws`. Credentials: `Authorization: Bearer` (v0.1.0), `?token=`,
/// or a first `{"type":"auth","token":...}` message. Missing-header 401 → unknown sid 404 →
/// wrong token 401, before the upgrade.
pub async fn connect(
    State(st): State<LegacyState>,
    Path(sid): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = match bearer(&headers) {
        Ok(Some(t)) => Some(t),
        Ok(None) => q.token.filter(|t| !t.trim().is_empty()),
        Err(e) => return ApiError(e).into_response(),
    };
    let session = match token {
        Some(t) => match st.hub.authenticate(&sid, Some(&t)).await {
            Ok(s) => Some(s),
            Err(e) => return ApiError(e).into_response(),
        },
        None => {
            if let Err(e) = st.hub.find(&sid) {
                return ApiError(e).into_response();
            }
            None
        }
    };
    let hub = st.hub.clone();
    let span = tracing::info_span!("operator_ws", sid = %sid);
    // tungstenite zero-fills its whole read buffer before every read (128 KiB by
    // default: 4.6 % of the server's instructions under load); frames here are small.
    ws.read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, hub, sid, session).instrument(span))
}

async fn send_msg(socket: &mut WebSocket, msg: &ServerMsg) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "ws message not serializable");
            true
        }
    }
}

fn error_msg(code: &str, req_id: Option<String>, message: String) -> ServerMsg {
    ServerMsg::Error {
        code: code.into(),
        req_id,
        message,
    }
}

/// Waits up to [`HELLO_TIMEOUT`] for `{"type":"auth","token":...}` as the first message.
async fn authenticate_in_band(
    socket: &mut WebSocket,
    hub: &OperatorHub,
    sid: &str,
) -> Option<Arc<OperatorSession>> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let why = match first {
        Ok(Some(Ok(Message::Text(text)))) => match decode(&text) {
            Ok(ClientMsg::Auth { token }) => match hub.authenticate(sid, Some(&token)).await {
                Ok(s) => return Some(s),
                Err(e) => e.public_message(),
            },
            _ => "first message must be {\"type\":\"auth\",\"token\":...} (or send the \
                  Authorization header, or ?token=)"
                .to_string(),
        },
        Err(_) => format!("no auth message within {}s", HELLO_TIMEOUT.as_secs()),
        _ => "socket closed before auth".to_string(),
    };
    let _ = send_msg(socket, &error_msg("unauthenticated", None, why.clone())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 4401,
            reason: why.into(),
        })))
        .await;
    None
}

async fn serve(
    mut socket: WebSocket,
    hub: Arc<OperatorHub>,
    sid: String,
    session: Option<Arc<OperatorSession>>,
) {
    let session = match session {
        Some(s) => s,
        None => match authenticate_in_band(&mut socket, &hub, &sid).await {
            Some(s) => s,
            None => return,
        },
    };
    let mut attachment = match session.attach_unsequenced() {
        Ok(a) => a,
        Err(e) => {
            let _ = send_msg(&mut socket, &error_msg("gone", None, e.public_message())).await;
            return;
        }
    };
    let epoch = attachment.epoch();
    loop {
        tokio::select! {
            frame = attachment.next_frame() => {
                let Some(frame) = frame else { break };
                let seq = frame.seq;
                let sent = match frame.body {
                    ServerBody::Welcome(_) => true,
                    ServerBody::Ping { .. } => socket.send(Message::Ping(Vec::new().into())).await.is_ok(),
                    ServerBody::Closing { reason, .. } => {
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame { code: 1001, reason: reason.into() })))
                            .await;
                        break;
                    }
                    body => match server_msg(body) {
                        Some(msg) => send_msg(&mut socket, &msg).await,
                        None => true,
                    },
                };
                if !sent {
                    break;
                }
                if seq > 0 {
                    session.handle(ClientFrame::Ack { seq });
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let msg = error_msg("invalid_frame", None, "binary messages are not used; send JSON text".into());
                        if !send_msg(&mut socket, &msg).await { break }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let reply = match decode(&text) {
                    Err(message) => Some(error_msg("invalid_frame", None, message)),
                    Ok(msg) => match client_frame(msg) {
                        None => Some(error_msg("invalid_frame", None, "already authenticated".into())),
                        Some(frame) => match session.handle(frame) {
                            ReplyOutcome::Accepted => None,
                            ReplyOutcome::Refused { code, req_id, message } => {
                                Some(error_msg(notice_code(code), Some(req_id).filter(|r| !r.is_empty()), message))
                            }
                        },
                    },
                };
                if let Some(msg) = reply {
                    if !send_msg(&mut socket, &msg).await { break }
                }
            }
        }
    }
    session.detach(epoch);
}
