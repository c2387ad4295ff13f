//! B8: a soak of one-step operator tasks on one server, alternating between an operator on
//! native gRPC and one on the WebSocket shim; the server's RSS is read every 10 % of the
//! run, and its slope once the bounded stores are full is the figure.

use std::sync::Arc;

use mlua_swarm_grpc::engine::EPHEMERAL_OUTPUT_CAPACITY;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;

use crate::clients::BoxError;
use crate::measure::{measure_n, Sample};
use crate::report::Row;
use crate::seat::Seat;

use super::run_completed;
use crate::target::Target;

/// After how many one-step tasks every bounded store of an ephemeral server is full: the
/// output store (one record per task) is the last.
const STORES_FULL_AFTER: usize = EPHEMERAL_OUTPUT_CAPACITY;

/// B8 target: RSS growth once the bounded stores are full.
const SOAK_MB_PER_100K: f64 = 1.0;

/// Least-squares slope of (tasks, MiB) in MiB per 100,000 tasks.
fn slope_per_100k(points: &[(usize, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 as f64 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 as f64 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 100_000.0)
}

/// Runs `n` tasks, `in_flight` at a time, in ten parts with an RSS reading after each.
pub(super) async fn b8(t: &Target, n: usize, in_flight: usize) -> Result<Row, BoxError> {
    let ch = t.channel().await?;
    let seats = [
        Seat::open(&t.addr, &ch, false).await?,
        Seat::open(&t.addr, &ch, true).await?,
    ];
    let reqs = Arc::new([seats[0].run_request(), seats[1].run_request()]);
    let tasks = TaskServiceClient::new(ch.clone());
    let step = (n / 10).max(1);
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let mut samples: Vec<(usize, Option<f64>)> = vec![(0, mib(t.rss_kib()))];
    let mut all = Sample::default();
    let mut done = 0;
    while done < n {
        let chunk = step.min(n - done);
        let (tasks, reqs) = (tasks.clone(), reqs.clone());
        let sample = measure_n(in_flight, chunk as u64, move |i| {
            run_completed(tasks.clone(), reqs[(i % 2) as usize].clone())
        })
        .await?;
        all.absorb(sample);
        done += chunk;
        samples.push((done, mib(t.rss_kib())));
        if let Some(rss) = samples.last().and_then(|s| s.1) {
            eprintln!("bench: B8 {done} tasks, server RSS {rss:.1} MiB");
        }
    }
    for seat in seats {
        seat.close().await?;
    }
    let rss: Vec<(usize, f64)> = samples
        .iter()
        .filter_map(|(k, r)| r.map(|r| (*k, r)))
        .collect();
    let (note, met) = judge_slope(&rss, n);
    let scenario = format!("soak: {n} one-step operator tasks on one server (gRPC + WebSocket)");
    Ok(Row {
        note,
        target: format!("≤ {SOAK_MB_PER_100K} MiB per 100k tasks once the stores are full"),
        met,
        ..Row::measured("B8", scenario, in_flight, &mut all)
    })
}

/// The note and verdict of a soak of `n` tasks from its (tasks, RSS MiB) readings.
///
/// The slope once the stores are full, and over the second half of the run: a full store's
/// hash tables still double once under the churn of inserts and removals (a bounded,
/// one-time step), so the judged figure is the second half. A run too short for the stores
/// to fill says so.
fn judge_slope(rss: &[(usize, f64)], n: usize) -> (String, Option<bool>) {
    let full = n >= 2 * STORES_FULL_AFTER;
    let slope_from = |from: usize| {
        slope_per_100k(
            &rss.iter()
                .copied()
                .filter(|(k, _)| *k >= from)
                .collect::<Vec<_>>(),
        )
    };
    let after_fill = slope_from(STORES_FULL_AFTER);
    let second_half = slope_from(n / 2);
    let trace = rss
        .iter()
        .map(|(_, r)| format!("{r:.1}"))
        .collect::<Vec<_>>()
        .join(" → ");
    let note = match (second_half, after_fill) {
        (Some(half), Some(fill)) if full => format!(
            "RSS MiB every 10 %: {trace}; slope after {STORES_FULL_AFTER} tasks (stores \
             full): {fill:+.2}, over the second half: {half:+.2} MiB per 100k tasks"
        ),
        (Some(half), _) => format!(
            "RSS MiB every 10 %: {trace}; slope over the second half: {half:+.2} MiB per \
             100k tasks (the output store fills at {STORES_FULL_AFTER} tasks, so it still \
             grows here)"
        ),
        _ => "server RSS not readable (--target): no slope".to_string(),
    };
    let met = second_half.filter(|_| full).map(|s| s <= SOAK_MB_PER_100K);
    (note, met)
}
