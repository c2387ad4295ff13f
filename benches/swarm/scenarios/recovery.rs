//! B6: recovery. A durable server holds `n` runs waiting on an operator seat, is killed
//! with SIGKILL and started again on the same data dir; timed from the restart to every
//! run resumed (RUNNING again, a second run in its history) once the seat's session,
//! restored from the data dir, has a stream again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlua_swarm_grpc::grpc::convert::json_to_struct;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use serde_json::json;

use crate::clients::{connect, create_session, BoxError};
use crate::report::Row;
use crate::target::Target;

const SEAT: &str = "b6-remote";

/// A fresh directory under the system temp dir.
pub(super) fn scratch_dir(tag: &str) -> Result<PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("mse-bench-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(super) async fn b6(n: usize) -> Result<Row, BoxError> {
    let dir = scratch_dir("b6")?;
    let t = Target::spawn_durable(&dir).await?;
    let ch = t.channel().await?;
    // The seat's session exists but never connects: every spawn waits.
    let (sid, token) = create_session(&ch, SEAT).await?;
    let mut tasks = TaskServiceClient::new(ch);
    let bp = json!({
        "schema_version": "0.1.0", "id": "b6",
        "flow": {"kind": "step", "ref": "w", "in": {"op": "path", "at": "$.input"},
                 "out": {"op": "path", "at": "$.output"}},
        "agents": [{"name": "w", "kind": "operator", "spec": {"operator_ref": SEAT}}],
        "operators": [{"name": SEAT, "kind": "automate"}]
    });
    let req = pb::StartTaskRequest {
        blueprint: Some(pb::BlueprintRef {
            source: Some(pb::blueprint_ref::Source::Inline(json_to_struct(bp))),
        }),
        init_ctx: Some(json_to_struct(json!({"input": "x"}))),
        ..Default::default()
    };
    for _ in 0..n {
        tasks.start_task(req.clone()).await?;
    }
    t.kill().await?;

    let started = Instant::now();
    let t = Target::spawn_durable(&dir).await?;
    let ch = t.channel().await?;
    // The session survived the restart; its runs resume once a stream attaches to it.
    let (_frames_in, _frames, _welcome) = connect(&ch, &sid, &token, 0).await?;
    let mut tasks = TaskServiceClient::new(ch);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if resumed(&mut tasks).await? >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("B6: not all {n} runs resumed in 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        id: "B6",
        scenario: format!("recovery: restart to all {n} interrupted runs resumed"),
        in_flight: n,
        ops_per_sec: n as f64 / secs,
        p50_us: 0.0,
        p99_us: 0.0,
        cpu_ms_per_task: None,
        note: format!("{secs:.2} s"),
        target: String::new(),
        met: None,
    })
}

/// Tasks that are running again in a resumed run.
async fn resumed(
    tasks: &mut TaskServiceClient<tonic::transport::Channel>,
) -> Result<usize, BoxError> {
    let mut count = 0;
    let mut token = String::new();
    loop {
        let page = tasks
            .list_tasks(pb::ListTasksRequest {
                state: pb::TaskState::Running as i32,
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        count += page.tasks.iter().filter(|t| t.runs.len() >= 2).count();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        token = page.next_page_token;
    }
}
