//! B1: one-step operator tasks end to end, the operator over gRPC or the WebSocket shim.

use std::time::Duration;

use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;

use crate::clients::BoxError;
use crate::cpu;
use crate::measure::measure;
use crate::report::Row;
use crate::seat::Seat;

use super::run_completed;
use crate::target::Target;

/// `in_flight` RunTask calls kept going for `dur` on a seat of its own, spread round
/// robin over `connections` connections.
pub(super) async fn b1(
    t: &Target,
    ws: bool,
    in_flight: usize,
    dur: Duration,
    connections: usize,
) -> Result<Row, BoxError> {
    let ch = t.channel().await?;
    let seat = Seat::open(&t.addr, &ch, ws).await?;
    let tasks: Vec<_> = t
        .channels(connections)
        .await?
        .into_iter()
        .map(TaskServiceClient::new)
        .collect();
    let req = seat.run_request();
    let run = measure(in_flight, dur, move |i| {
        let on = tasks[i as usize % tasks.len()].clone();
        run_completed(on, req.clone())
    });
    let (mut sample, cpu_ms) = cpu::per_task(t.pid, run, |s| s.count).await?;
    seat.close().await?;
    let door = if ws { "WebSocket shim" } else { "native gRPC" };
    let scenario = format!("1-step operator task end to end, operator over {door}");
    Ok(Row {
        note: format!("{} tasks", sample.count),
        cpu_ms_per_task: cpu_ms,
        ..Row::measured("B1", scenario, in_flight, &mut sample)
    })
}
