//! Issue 18: memory stays flat under sustained load. After a warm-up that fills every
//! retained store, a fixed number of one-step operator tasks (operator over gRPC and over
//! the v0.1.0 WebSocket shim: the bench's B1 seats, `benches/swarm/seat.rs`) must leave
//! every per-task structure of the server and of the hosted engine at its baseline count.

#[path = "../benches/swarm/clients.rs"]
mod clients;
mod common;
#[path = "../benches/swarm/seat.rs"]
mod seat;

use std::time::{Duration, Instant};

use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::engine::{Bound, StructureCounts};
use mlua_swarm_grpc::pb::v1 as pb;
use seat::Seat;

const RETENTION: usize = 20;
const IN_FLIGHT: usize = 8;

/// Runs `n` tasks on `seat`, `IN_FLIGHT` at a time; each must complete.
async fn run_tasks(ts: &TestServer, seat: &Seat, n: usize) {
    let req = seat.run_request();
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

    let addr = ts.server.addr.to_string();
    let seats = [
        Seat::open(&addr, &ts.channel, false)
            .await
            .expect("gRPC seat"),
        Seat::open(&addr, &ts.channel, true)
            .await
            .expect("WebSocket seat"),
    ];

    // Warm-up: the task registry holds RETENTION finished tasks, the engine's event tail
    // is full, every session has served requests.
    for seat in &seats {
        run_tasks(&ts, seat, WARM_UP / 2).await;
    }
    let baseline = quiet_counts(&ts).await;
    assert_eq!(baseline.get("registry.finished"), RETENTION, "{baseline}");

    for seat in &seats {
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

    for seat in seats {
        seat.close().await.expect("seat closes");
    }
    ts.stop().await;
}
