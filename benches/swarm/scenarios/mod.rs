//! The scenarios, B0 … B6 and the B8 soak, each in a module of its own.

mod e2e;
mod idle;
mod legacy;
mod recovery;
mod resume;
mod round_trip;
mod soak;
mod web;

use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

use crate::args::Plan;
use crate::clients::BoxError;
use crate::report::Row;
use crate::target::Target;

/// Runs the scenarios `plan` wants, each against a server of its own (or `plan.target`).
pub(crate) async fn run(plan: &Plan) -> Result<Vec<Row>, BoxError> {
    let dur = plan.dur;
    let mut rows = Vec::new();
    if plan.wants("B0") {
        eprintln!("bench: B0 v0.1.0 workload ({} tasks)…", plan.b0_tasks);
        let t = Target::start(plan).await?;
        rows.push(legacy::b0(&t, plan.b0_tasks, false).await?);
        if let Some((addr, pid)) = &plan.baseline {
            let t = Target::attach(addr, *pid, "/v1/healthz").await?;
            rows.push(legacy::b0(&t, plan.b0_tasks, true).await?);
        }
    }
    if plan.wants("B1") {
        eprintln!("bench: B1 end to end ({} ms per run)…", dur.as_millis());
        let t = Target::start(plan).await?;
        for ws in [false, true] {
            for n in [1, 64] {
                rows.push(e2e::b1(&t, ws, n, dur, plan.connections).await?);
            }
        }
        if plan.target.is_none() || plan.smoke {
            // The same over native gRPC on a durable server (state in SQLite).
            let dir = recovery::scratch_dir("b1")?;
            let durable = Target::spawn_durable(&dir).await?;
            rows.extend(e2e::b1_durable(&t, &durable, dur).await?);
            drop(durable);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if plan.wants("B2") {
        eprintln!("bench: B2 operator stream round trips…");
        for n in [1, 64] {
            rows.push(round_trip::b2(n, dur).await?);
        }
    }
    if plan.wants("B3") {
        eprintln!("bench: B3 {} idle streams…", plan.streams);
        let t = Target::start(plan).await?;
        rows.push(idle::b3(&t, plan.streams).await?);
    }
    if plan.wants("B4") {
        eprintln!("bench: B4 resume…");
        let t = Target::start(plan).await?;
        rows.push(resume::b4(&t, plan.pending).await?);
    }
    if plan.wants("B6") {
        eprintln!("bench: B6 recovery of {} interrupted runs…", plan.pending);
        rows.push(recovery::b6(plan.pending).await?);
    }
    if plan.wants("B5") {
        eprintln!("bench: B5 gRPC-Web vs native…");
        let t = Target::start(plan).await?;
        for n in [1, 16] {
            rows.push(web::b5(&t, false, n, dur).await?);
            rows.push(web::b5(&t, true, n, dur).await?);
        }
    }
    if plan.wants("B8") {
        eprintln!("bench: B8 soak of {} tasks…", plan.soak_tasks);
        let t = Target::start(plan).await?;
        rows.push(soak::b8(&t, plan.soak_tasks, 64).await?);
    }
    Ok(rows)
}

/// Runs one task to its end; anything but COMPLETED is an error.
async fn run_completed(
    mut tasks: TaskServiceClient<Channel>,
    req: pb::RunTaskRequest,
) -> Result<(), BoxError> {
    let task = tasks.run_task(req).await?.into_inner().task;
    match task.map(|t| t.state()) {
        Some(pb::TaskState::Completed) => Ok(()),
        other => Err(format!("task ended {other:?}").into()),
    }
}
