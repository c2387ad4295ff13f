//! The clients the bench drives the server with: a gRPC operator and a v0.1.0 WebSocket
//! operator that serve every spawn, and the worker's side of a spawn. `tests/memory.rs`
//! drives the server with the same ones.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use pb::client_frame::Body as C;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::transport::Channel;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Server frames of a `Connect` stream.
pub(crate) type Frames = tonic::Streaming<pb::ServerFrame>;

/// `msg` with `authorization: Bearer <token>`.
pub(crate) fn authed<T>(msg: T, token: &str) -> Result<tonic::Request<T>, BoxError> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Calls `check` every 10 ms until it says true; an error, or `limit` passing, ends it.
pub(crate) async fn poll_until<F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await? {
        if std::time::Instant::now() > deadline {
            return Err(format!("{what} in {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A one-step Blueprint whose only agent is the operator seat `seat`.
pub(crate) fn operator_blueprint(id: &str, seat: &str) -> Value {
    json!({
        "schema_version": "0.1.0", "id": id,
        "flow": {"kind": "step", "ref": "worker",
                 "in": {"op": "path", "at": "$.input"}, "out": {"op": "path", "at": "$.output"}},
        "agents": [{"name": "worker", "kind": "operator", "spec": {"operator_ref": seat}}],
        "operators": [{"name": seat}]
    })
}

/// Creates an operator session holding `role`: its (sid, token).
pub(crate) async fn create_session(ch: &Channel, role: &str) -> Result<(String, String), BoxError> {
    let s = OperatorServiceClient::new(ch.clone())
        .create_session(pb::CreateSessionRequest {
            roles: vec![role.to_string()],
        })
        .await?
        .into_inner();
    Ok((s.sid, s.token))
}

/// Deletes a session, so a run leaves none behind on the server.
pub(crate) async fn delete_session(ch: &Channel, sid: &str, token: &str) -> Result<(), BoxError> {
    OperatorServiceClient::new(ch.clone())
        .delete_session(authed(pb::DeleteSessionRequest { sid: sid.into() }, token)?)
        .await?;
    Ok(())
}

/// Opens a Connect stream and reads its welcome.
pub(crate) async fn connect(
    ch: &Channel,
    sid: &str,
    token: &str,
    last_seq: u64,
) -> Result<(mpsc::Sender<pb::ClientFrame>, Frames, pb::Welcome), BoxError> {
    let (tx, rx) = mpsc::channel(4096);
    tx.send(pb::ClientFrame {
        body: Some(C::Hello(pb::Hello {
            sid: sid.into(),
            last_seq,
        })),
    })
    .await?;
    let mut frames = OperatorServiceClient::new(ch.clone())
        .connect(authed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            token,
        )?)
        .await?
        .into_inner();
    match frames.message().await?.and_then(|f| f.body) {
        Some(pb::server_frame::Body::Welcome(w)) => Ok((tx, frames, w)),
        other => Err(format!("expected welcome, got {other:?}").into()),
    }
}

/// The worker side of a spawn: read the prompt, submit a result.
pub(crate) async fn work(ch: Channel, handle: &str) -> Result<(), BoxError> {
    let mut workers = WorkerServiceClient::new(ch);
    workers
        .get_prompt(authed(pb::GetPromptRequest::default(), handle)?)
        .await?;
    let submit = pb::SubmitRequest {
        body: "ok".into(),
        ..Default::default()
    };
    workers.submit(authed(submit, handle)?).await?;
    Ok(())
}

/// A gRPC operator that serves every spawn (worker calls included) until `stop`.
pub(crate) async fn grpc_operator(
    ch: Channel,
    sid: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> Result<(), BoxError> {
    let (tx, mut frames, _) = connect(&ch, &sid, &token, 0).await?;
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), frames.message()).await
        else {
            continue;
        };
        let Some(frame) = next? else { break };
        if frame.seq > 0 {
            tx.send(pb::ClientFrame {
                body: Some(C::Ack(pb::Ack { seq: frame.seq })),
            })
            .await?;
        }
        match frame.body {
            Some(pb::server_frame::Body::Spawn(s)) => {
                let tx = tx.clone();
                let ch = ch.clone();
                tokio::spawn(async move {
                    if work(ch, &s.worker_handle).await.is_ok() {
                        let ack = pb::SpawnAck {
                            req_id: s.req_id,
                            ..Default::default()
                        };
                        let _ = tx
                            .send(pb::ClientFrame {
                                body: Some(C::SpawnAck(ack)),
                            })
                            .await;
                    }
                });
            }
            Some(pb::server_frame::Body::Ping(p)) => {
                tx.send(pb::ClientFrame {
                    body: Some(C::Pong(pb::Pong { nonce: p.nonce })),
                })
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A v0.1.0 WebSocket operator (server at `addr`, host:port) that serves every spawn until
/// `stop`: `work` does the sub-agent's part with the spawn frame, then the operator acks it
/// (`ok: false` if the work failed).
pub(crate) async fn ws_operator<W, Fut>(
    addr: String,
    sid: String,
    token: String,
    work: W,
    stop: Arc<AtomicBool>,
) -> Result<(), BoxError>
where
    W: Fn(Value) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut req = format!("ws://{addr}/v1/operators/{sid}/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(4096);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await else {
            continue;
        };
        let Some(msg) = next else { break };
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        if v["type"] == "spawn" {
            let tx = tx.clone();
            let req_id = v["req_id"].clone();
            let done = work(v);
            tokio::spawn(async move {
                // A failed worker fails the step rather than leaving it waiting.
                let ack = match done.await {
                    Ok(()) => json!({"type": "spawn_ack", "req_id": req_id}),
                    Err(e) => json!({"type": "spawn_ack", "req_id": req_id, "ok": false,
                                     "value": e.to_string()}),
                };
                let _ = tx.send(ack.to_string()).await;
            });
        }
    }
    writer.abort();
    Ok(())
}
