//! B2: request → reply round trips on one operator stream, the session core of an
//! in-process server driven directly.

use std::time::Duration;

use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::engine::{OperatorBackend, StepContext};
use mlua_swarm_grpc::pb::v1 as pb;
use pb::client_frame::Body as C;

use crate::clients::{self, BoxError};
use crate::measure::measure;
use crate::report::Row;
use crate::target::channel;

/// `in_flight` hook_before requests kept going for `dur`; the operator approves each.
pub(super) async fn b2(in_flight: usize, dur: Duration) -> Result<Row, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = Config {
        storage: Storage::Ephemeral,
        ..Config::default()
    };
    let server = mlua_swarm_grpc::server::spawn(listener, config).await?;
    let ch = channel(&server.addr.to_string()).await?;
    let (sid, token) = clients::create_session(&ch, "b2").await?;
    let (tx, mut frames, _) = clients::connect(&ch, &sid, &token, 0).await?;
    let replier = tokio::spawn(async move {
        while let Ok(Some(frame)) = frames.message().await {
            let ack = pb::ClientFrame {
                body: Some(C::Ack(pb::Ack { seq: frame.seq })),
            };
            if let Some(pb::server_frame::Body::HookBefore(h)) = frame.body {
                let reply = pb::ClientFrame {
                    body: Some(C::HookAck(pb::HookAck {
                        req_id: h.req_id,
                        ok: true,
                        reason: String::new(),
                    })),
                };
                if tx.send(reply).await.is_err() || tx.send(ack).await.is_err() {
                    break;
                }
            }
        }
    });
    let session = server.hub.find(&sid)?;
    let mut sample = measure(in_flight, dur, move |n| {
        let session = session.clone();
        async move {
            let step = StepContext {
                task_id: "bench".into(),
                step_id: format!("ST-{n:016x}"),
                agent: "a".into(),
                attempt: 1,
            };
            session.hook_before(step).await.map_err(|e| e.0.into())
        }
    })
    .await?;
    replier.abort();
    clients::delete_session(&ch, &sid, &token).await?;
    let _ = server.shutdown().await;
    let scenario = "one operator stream: hook_before → hook_ack round trip".to_string();
    Ok(Row::measured("B2", scenario, in_flight, &mut sample))
}
