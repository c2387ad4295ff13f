//! Issue 6 resilience: load held, faults survived, nothing lost or done twice. Every loop
//! here is bounded in count and time and talks to loopback only.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use rand::Rng;
use serde_json::json;
use tokio::sync::Semaphore;

fn seat_blueprint(seat: &str) -> serde_json::Value {
    let text = fixture("operator.json")
        .to_string()
        .replace("\"remote\"", &format!("\"{seat}\""));
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_operator_that_drops_its_stream_loses_nothing() {
    const TASKS: usize = 1000;
    let ts = TestServer::start().await;
    let created = create_session(&ts, &["remote"]).await;
    let done = Arc::new(AtomicUsize::new(0));
    let runners: Vec<_> = (0..32)
        .map(|r| {
            let mut tasks = ts.tasks();
            let done = done.clone();
            tokio::spawn(async move {
                let mut i = r;
                while i < TASKS {
                    let t = tasks
                        .run_task(inline(
                            fixture("operator.json"),
                            json!({ "input": format!("t{i}") }),
                        ))
                        .await
                        .expect("run")
                        .into_inner()
                        .task
                        .expect("task");
                    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
                    assert_eq!(from_value(t.final_ctx)["output"], format!("done t{i}"));
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 32;
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last_acked = 0u64;
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut acted: HashSet<String> = HashSet::new();
    let mut reconnects = 0;
    let mut resent_requests = 0;
    while done.load(Ordering::Relaxed) < TASKS {
        assert!(
            Instant::now() < deadline,
            "chaos run did not finish in time"
        );
        let mut op = Op::connect(&ts, &created.sid, &created.token, last_acked)
            .await
            .expect("resume");
        reconnects += 1;
        assert_eq!(op.welcome.acked_seq, last_acked);
        let budget = rand::thread_rng().gen_range(1..=8);
        for _ in 0..budget {
            let f = match tokio::time::timeout(Duration::from_millis(500), op.rx.message()).await {
                Ok(Ok(Some(f))) => f,
                _ => break,
            };
            if f.seq > 0 {
                if f.seq <= last_acked {
                    // Only a request whose reply was lost with the old stream comes again.
                    assert!(
                        matches!(f.body, Some(S::HookBefore(_)) | Some(S::Spawn(_))),
                        "{f:?} re-sent after ack {last_acked}"
                    );
                    resent_requests += 1;
                }
                seen.insert(f.seq);
            }
            match f.body {
                Some(S::HookBefore(h)) => op.approve(h.req_id).await,
                Some(S::Spawn(s)) => {
                    if acted.insert(s.req_id.clone()) {
                        let prompt = ts
                            .workers()
                            .get_prompt(authed(pb::GetPromptRequest::default(), &s.worker_handle))
                            .await
                            .expect("prompt")
                            .into_inner();
                        ts.workers()
                            .submit(authed(
                                pb::SubmitRequest {
                                    body: format!("done {}", prompt.prompt),
                                    ..Default::default()
                                },
                                &s.worker_handle,
                            ))
                            .await
                            .expect("submit");
                    }
                    op.spawn_ack(s.req_id).await;
                }
                Some(S::Ping(p)) => op.send(C::Pong(pb::Pong { nonce: p.nonce })).await,
                _ => {}
            }
            // Sometimes the stream drops between acting and acking.
            if f.seq > last_acked && rand::thread_rng().gen_bool(0.8) {
                op.ack(f.seq).await;
                last_acked = f.seq;
            }
        }
        // Let the last frames reach the server before dropping the stream.
        let info = ts
            .operators()
            .get_session(authed(
                pb::GetSessionRequest {
                    sid: created.sid.clone(),
                },
                &created.token,
            ))
            .await
            .expect("session")
            .into_inner()
            .session
            .expect("s");
        assert!(info.acked_seq <= last_acked);
        drop(op);
    }
    for r in runners {
        r.await.expect("runner");
    }
    let max = seen.iter().next_back().copied().unwrap_or(0);
    assert_eq!(
        seen.len() as u64,
        max,
        "every seq 1..={max} was delivered (no gap)"
    );
    assert_eq!(acted.len(), TASKS, "each spawn acted on exactly once");
    assert!(
        reconnects > 100,
        "the stream really was dropped often ({reconnects})"
    );
    eprintln!("chaos: {reconnects} reconnects, {} frames, {resent_requests} requests re-sent after a lost reply", seen.len());
    assert_eq!(ts.server.host.state_sizes().await.total(), 0);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_operator_streams_each_run_a_task() {
    const OPS: usize = 500;
    let ts = TestServer::start().await;
    let mut handles = Vec::new();
    for i in 0..OPS {
        let seat = format!("seat-{i}");
        let mut op = Op::join(&ts, &[&seat]).await;
        let mut tasks = ts.tasks();
        let workers = ts.workers();
        handles.push(tokio::spawn(async move {
            let bp = seat_blueprint(&seat);
            let run = tokio::spawn(async move {
                tasks
                    .run_task(inline(bp, json!({"input": seat})))
                    .await
                    .expect("run")
                    .into_inner()
                    .task
                    .expect("task")
            });
            loop {
                let f = op.next().await;
                op.ack(f.seq).await;
                match f.body {
                    Some(S::HookBefore(h)) => op.approve(h.req_id).await,
                    Some(S::Spawn(s)) => {
                        let mut w = workers.clone();
                        w.submit(authed(
                            pb::SubmitRequest {
                                body: "ok".into(),
                                ..Default::default()
                            },
                            &s.worker_handle,
                        ))
                        .await
                        .expect("submit");
                        op.spawn_ack(s.req_id).await;
                    }
                    Some(S::HookAfter(_)) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            let t = run.await.expect("join");
            assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
            op
        }));
    }
    let mut ops = Vec::new();
    for h in handles {
        ops.push(
            tokio::time::timeout(Duration::from_secs(120), h)
                .await
                .expect("in time")
                .expect("join"),
        );
    }
    let sessions = ts
        .operators()
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(
        sessions.iter().filter(|s| s.connected).count(),
        OPS,
        "all streams still attached"
    );
    drop(ops);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_memory_stays_flat_over_5000_tasks() {
    let ts = TestServer::start().await;
    let bp = fixture("identity.json");
    let permits = Arc::new(Semaphore::new(16));
    let mut handles = Vec::new();
    let mut peak = 0;
    for i in 0..5000 {
        let permit = permits.clone().acquire_owned().await.expect("permit");
        let mut tasks = ts.tasks();
        let bp = bp.clone();
        handles.push(tokio::spawn(async move {
            let t = tasks
                .run_task(inline(bp, json!({"input": i})))
                .await
                .expect("run")
                .into_inner()
                .task
                .expect("task");
            assert_eq!(t.state(), pb::TaskState::Completed);
            drop(permit);
        }));
        if i % 500 == 0 {
            peak = peak.max(ts.server.host.state_sizes().await.total());
        }
    }
    for h in handles {
        h.await.expect("task");
    }
    assert!(
        peak < 16 * 10,
        "engine state bounded by what is in flight (peak {peak})"
    );
    assert_eq!(
        ts.server.host.state_sizes().await.total(),
        0,
        "nothing left after 5000 tasks"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_tasks_in_flight_sends_closing_and_hangs_no_rpc() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let mut tasks = ts.tasks();
            tokio::spawn(async move {
                tasks
                    .run_task(inline(fixture("operator.json"), json!({"input": i})))
                    .await
            })
        })
        .collect();
    for _ in 0..20 {
        assert!(matches!(op.next().await.body, Some(S::HookBefore(_))));
    }
    let started = Instant::now();
    let stop = tokio::spawn(async move { ts.stop().await });
    // Each pending hook is withdrawn with a `cancel` before `closing`.
    let mut cancels = 0;
    let closing = loop {
        let f = op.next().await;
        match f.body {
            Some(S::Cancel(ref c)) if c.reason.contains("shutting down") => cancels += 1,
            _ => break f,
        }
    };
    assert_eq!(cancels, 20);
    let Some(S::Closing(c)) = closing.body else {
        panic!("expected closing: {closing:?}")
    };
    assert!(c.reason.contains("shutting down"), "{}", c.reason);
    assert!(c.retry_after_ms > 0);
    for r in runs {
        let outcome = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("no hung RunTask")
            .expect("join");
        match outcome {
            Ok(resp) => assert_eq!(
                resp.into_inner().task.expect("task").state(),
                pb::TaskState::Failed
            ),
            Err(status) => assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                ),
                "{status:?}"
            ),
        }
    }
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("server stops")
        .expect("join");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_stops_reading_gets_backpressure_not_unbounded_memory() {
    let mut config = Config {
        storage: Storage::Ephemeral,
        ..Config::default()
    };
    config.operator.max_unacked = 50;
    let ts = TestServer::with_config(config).await;
    let slow = Op::join(&ts, &["remote"]).await; // never reads again
    let runs: Vec<_> = (0..80)
        .map(|i| {
            let mut tasks = ts.tasks();
            tokio::spawn(async move {
                tasks
                    .run_task(inline(fixture("operator.json"), json!({"input": i})))
                    .await
                    .expect("run")
                    .into_inner()
                    .task
                    .expect("task")
            })
        })
        .collect();
    // 50 requests fill the window; every further one fails at once with a clear error.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut runs = runs;
    let mut refused = 0;
    while refused < 30 {
        assert!(
            Instant::now() < deadline,
            "only {refused} of 30 refused in time"
        );
        let mut still = Vec::new();
        for r in runs {
            if r.is_finished() {
                let t = r.await.expect("join");
                assert_eq!(t.state(), pb::TaskState::Failed);
                assert!(t.error.contains("unacknowledged frames"), "{}", t.error);
                refused += 1;
            } else {
                still.push(r);
            }
        }
        runs = still;
        tokio::task::yield_now().await;
    }
    assert_eq!(runs.len(), 50, "the first 50 wait for the slow operator");
    let info = ts
        .operators()
        .get_session(authed(
            pb::GetSessionRequest {
                sid: slow.sid.clone(),
            },
            &slow.token,
        ))
        .await
        .expect("get")
        .into_inner()
        .session
        .expect("s");
    assert_eq!(info.pending, 50);
    assert_eq!(
        info.last_seq - info.acked_seq,
        50,
        "the outbox never grew past the limit"
    );
    // Other sessions are unaffected.
    let mut other = Op::join(&ts, &["other"]).await;
    other
        .send(C::Answer(pb::Answer {
            req_id: "x".into(),
            value: None,
        }))
        .await;
    assert!(matches!(other.next().await.body, Some(S::Notice(_))));
    drop(slow);
    for r in runs {
        r.abort();
    }
    ts.stop().await;
}
