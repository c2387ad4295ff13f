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

/// Interleaved pairs per in-flight count in [`b1_durable`].
const PAIRS: usize = 3;

/// B1 over native gRPC on a durable server, next to the ephemeral one in interleaved
/// pairs (ephemeral, then durable, [`PAIRS`] times per in-flight count), so both see
/// the same machine: a noisy host moves a single comparison by ±20 %. The row is the
/// durable run of the median pair; its note lists every pair's ratio.
pub(super) async fn b1_durable(
    ephemeral: &Target,
    durable: &Target,
    dur: Duration,
) -> Result<Vec<Row>, BoxError> {
    let mut rows = Vec::new();
    for n in [1, 64] {
        let mut pairs = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let e = b1(ephemeral, false, n, dur, 1).await?;
            let d = b1(durable, false, n, dur, 1).await?;
            pairs.push((d.ops_per_sec / e.ops_per_sec.max(f64::MIN_POSITIVE), d));
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let all: Vec<String> = pairs
            .iter()
            .map(|(r, _)| format!("{:.0}", r * 100.0))
            .collect();
        let (ratio, mut row) = pairs.swap_remove(PAIRS / 2);
        row.scenario.push_str(" (durable, --data-dir)");
        row.note = format!(
            "{} · {:.0} % of ephemeral (median of {PAIRS} interleaved pairs: {} %)",
            row.note,
            ratio * 100.0,
            all.join(", ")
        );
        row.target = "≥ 70 % of ephemeral".into();
        row.met = Some(ratio >= 0.7);
        rows.push(row);
    }
    Ok(rows)
}
