//! Issue 18: memory stays flat under sustained load. After a warm-up that fills every
//! retained store, a fixed number of one-step operator tasks (operator over gRPC and over
//! the v0.1.0 WebSocket shim, as `mse-grpc bench` B1 drives them) must leave every
//! per-task structure of the server and of the hosted engine at its baseline count.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::engine::{Bound, StructureCounts};
use mlua_swarm_grpc::pb::v1 as pb;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const RETENTION: usize = 20;
const IN_FLIGHT: usize = 8;

fn seat_blueprint(id: &str, seat: &str) -> serde_json::Value {
    json!({
        "schema_version": "0.1.0", "id": id,
        "flow": {"kind": "step", "ref": "worker",
                 "in": {"op": "path", "at": "$.input"}, "out": {"op": "path", "at": "$.output"}},
        "agents": [{"name": "worker", "kind": "operator", "spec": {"operator_ref": seat}}],
        "operators": [{"name": seat}]
    })
}

/// Serves every spawn of a `Connect` stream: acks each frame, does the worker's part with
/// the handle, acks the spawn.
fn serve_grpc(ts: &TestServer, op: Op) -> tokio::task::JoinHandle<()> {
    let channel = ts.channel.clone();
    let Op { tx, mut rx, .. } = op;
    tokio::spawn(async move {
        while let Ok(Some(frame)) = rx.message().await {
            if frame.seq > 0 {
                let ack = C::Ack(pb::Ack { seq: frame.seq });
                if tx.send(pb::ClientFrame { body: Some(ack) }).await.is_err() {
                    break;
                }
            }
            match frame.body {
                Some(S::Spawn(s)) => {
                    let tx = tx.clone();
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        worker(channel, &s.worker_handle).await;
                        let ack = C::SpawnAck(pb::SpawnAck {
                            req_id: s.req_id,
                            ..Default::default()
                        });
                        let _ = tx.send(pb::ClientFrame { body: Some(ack) }).await;
                    });
                }
                Some(S::Ping(p)) => {
                    let pong = C::Pong(pb::Pong { nonce: p.nonce });
                    let _ = tx.send(pb::ClientFrame { body: Some(pong) }).await;
                }
                _ => {}
            }
        }
    })
}

/// The same over the v0.1.0 JSON WebSocket.
async fn serve_ws(ts: &TestServer, sid: &str, token: &str) -> tokio::task::JoinHandle<()> {
    let mut req = format!("ws://{}/v1/operators/{sid}/ws", ts.server.addr)
        .into_client_request()
        .expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connects");
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let channel = ts.channel.clone();
    tokio::spawn(async move {
        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).expect("json frame");
            if v["type"] == "spawn" {
                let tx = tx.clone();
                let channel = channel.clone();
                tokio::spawn(async move {
                    worker(channel, v["worker_handle"].as_str().unwrap_or_default()).await;
                    let ack = json!({"type": "spawn_ack", "req_id": v["req_id"]});
                    let _ = tx.send(ack.to_string()).await;
                });
            }
        }
        writer.abort();
    })
}

async fn worker(channel: tonic::transport::Channel, handle: &str) {
    let mut workers =
        mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient::new(channel);
    workers
        .get_prompt(authed(pb::GetPromptRequest::default(), handle))
        .await
        .expect("get prompt");
    workers
        .submit(authed(
            pb::SubmitRequest {
                body: "ok".into(),
                ..Default::default()
            },
            handle,
        ))
        .await
        .expect("submit");
}

/// Runs `n` tasks of `bp_id`, `IN_FLIGHT` at a time; each must complete.
async fn run_tasks(ts: &TestServer, bp_id: &str, n: usize) {
    let req = stored(bp_id, None, json!({"input": "x"}));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut tasks = ts.tasks();
        let req = req.clone();
        let next = next.clone();
        lanes.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let task = tasks
                    .run_task(req.clone())
                    .await
                    .expect("run task")
                    .into_inner()
                    .task
                    .expect("task");
                assert_eq!(task.state(), pb::TaskState::Completed, "{task:?}");
            }
        }));
    }
    for lane in lanes {
        lane.await.expect("lane");
    }
}

/// Polls until the counts stop moving toward `settled` (nothing in flight: no running
/// task, no pending request, nothing unacknowledged), at most 10 s.
async fn quiet_counts(ts: &TestServer) -> StructureCounts {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = ts.server.hub.structure_counts().await;
        let busy = [
            "registry.running",
            "host.running",
            "session.pending",
            "session.outbox",
        ]
        .iter()
        .any(|name| c.get(name) > 0);
        if !busy || Instant::now() > deadline {
            return c;
        }
        tokio::task::yield_now().await;
    }
}

/// Per-task structures still above `baseline`, polled (the event router may still be
/// draining) for at most 10 s.
async fn grown_after(
    ts: &TestServer,
    baseline: &StructureCounts,
) -> (StructureCounts, Vec<(&'static str, usize, usize)>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = quiet_counts(ts).await;
        let grown = now.per_task_grown_since(baseline);
        if grown.is_empty() || Instant::now() > deadline {
            return (now, grown);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_per_task_structure_returns_to_its_baseline() {
    const WARM_UP: usize = 300;
    const MEASURED: usize = 600;
    let ts = TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        task_retention: RETENTION,
        ..Config::default()
    })
    .await;

    let grpc_op = Op::join(&ts, &["mem-grpc"]).await;
    let grpc_serving = serve_grpc(&ts, grpc_op);
    let ws_session = ts
        .operators()
        .create_session(pb::CreateSessionRequest {
            roles: vec!["mem-ws".into()],
        })
        .await
        .expect("create session")
        .into_inner();
    let ws_serving = serve_ws(&ts, &ws_session.sid, &ws_session.token).await;
    for seat in ["mem-grpc", "mem-ws"] {
        ts.blueprints()
            .put_blueprint(pb::PutBlueprintRequest {
                id: seat.into(),
                blueprint: Some(to_struct(seat_blueprint(seat, seat))),
            })
            .await
            .expect("put blueprint");
    }

    // Warm-up: the task registry holds RETENTION finished tasks, the engine's event tail
    // is full, every session has served requests.
    for seat in ["mem-grpc", "mem-ws"] {
        run_tasks(&ts, seat, WARM_UP / 2).await;
    }
    let baseline = quiet_counts(&ts).await;
    assert_eq!(baseline.get("registry.finished"), RETENTION, "{baseline}");

    for seat in ["mem-grpc", "mem-ws"] {
        run_tasks(&ts, seat, MEASURED / 2).await;
    }
    let (now, grown) = grown_after(&ts, &baseline).await;
    assert!(
        grown.is_empty(),
        "per-task structures grew over {MEASURED} tasks (name, baseline, now): {grown:?}\n\
         baseline: {baseline}\nnow:      {now}"
    );
    assert!(now.over_cap().is_empty(), "over cap: {:?}", now.over_cap());
    // Still filling by design, under their caps: the output store (50,000 records) and
    // each session's memory of ended request ids (4,096).
    let filling = |name: &str| name.starts_with("outputs.") || name.starts_with("session.ended");
    for (name, count) in now.iter() {
        let same = match count.bound {
            Bound::PerTask | Bound::PerClient => count.len == baseline.get(name),
            Bound::Retained(_) => filling(name) || count.len == baseline.get(name),
        };
        assert!(
            same,
            "{name}: {} at baseline, {} now\nbaseline: {baseline}\nnow:      {now}",
            baseline.get(name),
            count.len
        );
    }
    let records = now.get("outputs.records");
    assert_eq!(records, baseline.get("outputs.records") + MEASURED);
    assert_eq!(now.get("outputs.by_attempt"), records);
    assert_eq!(now.get("outputs.by_name_run"), records);
    // One ended request per task (its spawn), remembered as a 16-byte digest rather than
    // two copies of an 80-character id.
    assert_eq!(now.get("session.ended"), WARM_UP + MEASURED);
    assert!(
        now.get("session.ended_bytes") <= 2 * 16 * (WARM_UP + MEASURED),
        "ended-request memory: {} bytes for {} ids",
        now.get("session.ended_bytes"),
        now.get("session.ended")
    );

    grpc_serving.abort();
    ws_serving.abort();
    ts.stop().await;
}
