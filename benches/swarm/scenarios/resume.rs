//! B4: an operator holding unacked spawns drops its stream and reconnects; the time to the
//! last re-delivered frame, and frames lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mlua_swarm_grpc::grpc::convert::json_to_struct;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use serde_json::json;

use crate::clients::{self, BoxError, Frames};
use crate::report::Row;
use crate::target::Target;

/// Reads spawn req_ids until `n` arrive or the stream ends (30 s per frame at most).
async fn collect_spawns(frames: &mut Frames, n: usize) -> Result<HashSet<String>, BoxError> {
    let mut seen = HashSet::new();
    while seen.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), frames.message()).await?? {
            Some(pb::ServerFrame {
                body: Some(pb::server_frame::Body::Spawn(s)),
                ..
            }) => {
                seen.insert(s.req_id);
            }
            Some(_) => {}
            None => break,
        }
    }
    Ok(seen)
}

/// Starts `pending` tasks routed to one session, reads their spawns without acking,
/// reconnects from seq 0 and reads them again.
pub(super) async fn b4(t: &Target, pending: usize) -> Result<Row, BoxError> {
    let ch = t.channel().await?;
    let role = format!("b4-{}", uuid::Uuid::new_v4().simple());
    let (sid, token) = clients::create_session(&ch, &role).await?;
    let bp = clients::operator_blueprint("b4", &role);
    // The operator stream gets its own connection: unread frames on it must not eat the
    // connection-level flow-control window the StartTask calls need.
    let op_ch = t.channel().await?;
    let (tx, mut frames, _) = clients::connect(&op_ch, &sid, &token, 0).await?;
    let mut tasks = TaskServiceClient::new(ch.clone());
    let mut last_id = String::new();
    let init_ctx = Some(json_to_struct(json!({"input": "x"})));
    for _ in 0..pending {
        last_id = tasks
            .start_task(pb::StartTaskRequest {
                blueprint: Some(pb::BlueprintRef {
                    source: Some(pb::blueprint_ref::Source::Inline(json_to_struct(
                        bp.clone(),
                    ))),
                }),
                init_ctx: init_ctx.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .task_id;
    }
    let last = tasks
        .get_task(pb::GetTaskRequest { task_id: last_id })
        .await?
        .into_inner()
        .task;
    if let Some(t) = last.filter(|t| t.state() != pb::TaskState::Running) {
        return Err(format!("b4 task ended early: {}", t.error).into());
    }
    let sent = collect_spawns(&mut frames, pending).await?;
    if sent.len() < pending {
        return Err(format!("stream ended after {} spawns", sent.len()).into());
    }
    drop(frames);
    drop(tx);
    let started = Instant::now();
    let (_tx, mut frames, welcome) = clients::connect(&op_ch, &sid, &token, 0).await?;
    let again = collect_spawns(&mut frames, pending).await?;
    let took = started.elapsed();
    let lost = sent.difference(&again).count();
    clients::delete_session(&ch, &sid, &token).await?;
    Ok(Row {
        id: "B4",
        scenario: format!("resume with {pending} unacked spawns"),
        in_flight: pending,
        ops_per_sec: pending as f64 / took.as_secs_f64(),
        p50_us: took.as_secs_f64() * 1e6,
        p99_us: took.as_secs_f64() * 1e6,
        cpu_ms_per_task: None,
        note: format!(
            "reconnect → last re-delivered frame {:.1} ms; welcome.replayed {}; lost {lost}",
            took.as_secs_f64() * 1e3,
            welcome.replayed
        ),
        target: "≤ 50 ms, 0 lost".into(),
        met: Some(took <= Duration::from_millis(50) && lost == 0),
    })
}
