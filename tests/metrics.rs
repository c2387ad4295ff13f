//! `/metrics`: a known workload against a real server, scraped and parsed as Prometheus
//! text, with exact counts; the API token in front of it; `--metrics-bind` serving it apart.
//!
//! The recorder is one per process, so counters are compared before and after the
//! workload, and the tests here take turns.

mod common;

use std::time::Duration;

use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::engine::ResumeMode;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::server_service_client::ServerServiceClient;
use prometheus_parse::{Scrape, Value as Sampled};
use serde_json::json;
use tokio::sync::Mutex;

/// One test at a time: they share the process's counters.
static TURN: Mutex<()> = Mutex::const_new(());

const TOKEN: &str = "s3cret-metrics";

fn config() -> Config {
    Config {
        storage: Storage::Ephemeral,
        ..Config::default()
    }
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("http call")
}

async fn scrape(ts: &TestServer) -> Scrape {
    scrape_at(&format!("{}/metrics", ts.url()), None).await
}

async fn scrape_at(url: &str, token: Option<&str>) -> Scrape {
    let resp = get(url, token).await;
    assert_eq!(resp.status(), 200, "GET {url}");
    let text = resp.text().await.expect("body");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The value of `name` whose labels include `labels` (0 if absent).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Sampled::Counter(v) | Sampled::Gauge(v) | Sampled::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// How much `name{labels}` grew from `before` to `after`.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

fn rpc<'a>(service: &'a str, method: &'a str, code: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("door", "grpc"),
        ("service", service),
        ("method", method),
        ("code", code),
    ]
}

const TASKS: &str = "mlua_swarm.v1.TaskService";
const WORKERS: &str = "mlua_swarm.v1.WorkerService";

#[tokio::test]
async fn a_known_workload_is_counted_exactly() {
    let _turn = TURN.lock().await;
    let ts = TestServer::with_config(config()).await;
    let before = scrape(&ts).await;

    // Three inline tasks, run to their end.
    run_identity_tasks(&ts, 3).await;
    // One operator task: hook, spawn, the worker's GetPrompt and Submit.
    let (mut op, started) = start_operator_task(&ts).await;
    // The first frame is left unacknowledged and the operator resumes from 0: one frame
    // is delivered again.
    let first = op.next().await;
    assert!(matches!(first.body, Some(S::HookBefore(_))), "{first:?}");
    let mut op = Op::connect(&ts, &op.sid, &op.token, 0)
        .await
        .expect("resume");
    op.serve_until_hook_after(&ts, "done").await;
    let ended = ts
        .tasks()
        .run_task(pb::RunTaskRequest::default())
        .await
        .expect_err("an empty RunTask is refused");
    assert_eq!(ended.code(), tonic::Code::InvalidArgument);
    wait_completed(&ts, &started.task_id).await;
    // One notice: an answer to a request never sent.
    op.send(C::Answer(pb::Answer {
        req_id: "never-sent".into(),
        value: None,
    }))
    .await;
    let notice = op.next().await;
    assert!(matches!(notice.body, Some(S::Notice(_))), "{notice:?}");
    // One NOT_FOUND, and one v0.1.0 route.
    let missing = ts
        .tasks()
        .get_task(pb::GetTaskRequest {
            task_id: "task-none".into(),
        })
        .await
        .expect_err("unknown task");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        get(&format!("{}/v1/healthz", ts.url()), None)
            .await
            .status(),
        200
    );
    // One gRPC-Web call: its status rides in the body's trailer frame.
    let web = reqwest::Client::new()
        .post(format!("{}/grpc.health.v1.Health/Check", ts.url()))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0u8; 5])
        .send()
        .await
        .expect("grpc-web call");
    assert_eq!(web.status(), 200);
    let _ = web.bytes().await.expect("grpc-web body");

    let after = scrape(&ts).await;
    let d = |name: &str| grew(&before, &after, name, &[]);
    assert_eq!(d("mse_tasks_started_total"), 4.0);
    assert_eq!(d("mse_tasks_completed_total"), 4.0);
    assert_eq!(d("mse_tasks_failed_total"), 0.0);
    assert_eq!(d("mse_tasks_cancelled_total"), 0.0);
    assert_eq!(value(&after, "mse_tasks_in_flight", &[]), 0.0);
    let completed = [("outcome", "completed")];
    assert_eq!(
        grew(
            &before,
            &after,
            "mse_task_duration_seconds_count",
            &completed
        ),
        4.0
    );
    assert_eq!(d("mse_steps_dispatched_total"), 4.0);
    let steps = "mse_step_duration_seconds_count";
    for (kind, n) in [("in_process", 3.0), ("operator", 1.0)] {
        assert_eq!(grew(&before, &after, steps, &[("kind", kind)]), n, "{kind}");
    }
    assert_eq!(d("mse_operator_frames_replayed_total"), 1.0);
    assert_eq!(d("mse_operator_parking_expirations_total"), 0.0);
    assert_eq!(d("mse_gc_runs_total"), 4.0);
    assert!(d("mse_gc_entries_freed_total") >= 4.0);
    let req = "mse_requests_total";
    let healthz = [
        ("door", "http"),
        ("service", "/v1/healthz"),
        ("method", "GET"),
        ("code", "200"),
    ];
    let web_check = [
        ("door", "grpc-web"),
        ("service", "grpc.health.v1.Health"),
        ("method", "Check"),
        ("code", "OK"),
    ];
    for (labels, calls) in [
        (rpc(TASKS, "RunTask", "OK"), 3.0),
        (rpc(TASKS, "StartTask", "OK"), 1.0),
        (rpc(TASKS, "RunTask", "INVALID_ARGUMENT"), 1.0),
        (rpc(TASKS, "GetTask", "NOT_FOUND"), 1.0),
        (rpc(WORKERS, "GetPrompt", "OK"), 1.0),
        (rpc(WORKERS, "Submit", "OK"), 1.0),
        (healthz, 1.0),
        (web_check, 1.0),
    ] {
        assert_eq!(grew(&before, &after, req, &labels), calls, "{labels:?}");
    }
    let seconds = "mse_request_duration_seconds_count";
    assert_eq!(
        grew(&before, &after, seconds, &rpc(TASKS, "RunTask", "OK")),
        3.0
    );
    let unknown_req = [("code", "unknown_req")];
    assert_eq!(
        grew(&before, &after, "mse_operator_notices_total", &unknown_req),
        1.0
    );
    // The operator's stream is open: one live, attached session, nothing pending.
    assert_eq!(value(&after, "mse_operator_sessions_live", &[]), 1.0);
    assert_eq!(value(&after, "mse_operator_sessions_attached", &[]), 1.0);
    let pending = "mse_operator_pending_requests";
    for kind in ["ask", "hook_before", "spawn"] {
        assert_eq!(value(&after, pending, &[("kind", kind)]), 0.0, "{kind}");
    }
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&after, "process_open_fds", &[]) > 0.0);
    assert!(value(&after, "process_cpu_seconds_total", &[]) > 0.0);
    drop(op);
    ts.stop().await;
}

/// Runs `n` inline identity tasks to COMPLETED.
async fn run_identity_tasks(ts: &TestServer, n: i32) {
    for i in 0..n {
        let done = ts
            .tasks()
            .run_task(inline(fixture("identity.json"), json!({ "input": i })))
            .await
            .expect("run task")
            .into_inner();
        assert_eq!(done.task.expect("task").state(), pb::TaskState::Completed);
    }
}

/// An operator joined with role `remote`, and an operator task started for it.
async fn start_operator_task(ts: &TestServer) -> (Op, pb::StartTaskResponse) {
    let op = Op::join(ts, &["remote"]).await;
    let started = ts
        .tasks()
        .start_task(start_inline(
            fixture("operator.json"),
            json!({ "input": "x" }),
        ))
        .await
        .expect("start task")
        .into_inner();
    (op, started)
}

async fn wait_completed(ts: &TestServer, task_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = ts
            .tasks()
            .get_task(pb::GetTaskRequest {
                task_id: task_id.into(),
            })
            .await
            .expect("get task")
            .into_inner()
            .task
            .expect("a task");
        if t.state() != pb::TaskState::Running {
            assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "task never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_need_the_api_token_when_one_is_set() {
    let _turn = TURN.lock().await;
    let ts = TestServer::with_config(Config {
        api_token: Some(TOKEN.into()),
        ..config()
    })
    .await;
    let url = format!("{}/metrics", ts.url());
    assert_eq!(get(&url, None).await.status(), 401);
    assert_eq!(get(&url, Some("wrong")).await.status(), 401);
    let s = scrape_at(&url, Some(TOKEN)).await;
    // The refusals above are counted, at the door they came through.
    let refused = [("door", "http"), ("service", "/metrics"), ("code", "401")];
    assert!(value(&s, "mse_requests_total", &refused) >= 2.0);
    ts.stop().await;
}

#[tokio::test]
async fn metrics_bind_serves_them_apart_and_open() {
    let _turn = TURN.lock().await;
    let ts = TestServer::with_config(Config {
        api_token: Some(TOKEN.into()),
        metrics_bind: Some("127.0.0.1:0".parse().expect("addr")),
        ..config()
    })
    .await;
    let apart = ts.server.metrics_addr.expect("a metrics address");
    assert_ne!(apart, ts.server.addr);
    let s = scrape_at(&format!("http://{apart}/metrics"), None).await;
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 0.0);
    // Not on the main port any more, even with the token.
    assert_no_metrics(&format!("{}/metrics", ts.url()), Some(TOKEN)).await;
    ts.stop().await;
}

#[tokio::test]
async fn no_metrics_means_no_route() {
    let _turn = TURN.lock().await;
    let ts = TestServer::with_config(Config {
        metrics: false,
        ..config()
    })
    .await;
    assert_no_metrics(&format!("{}/metrics", ts.url()), None).await;
    ts.stop().await;
}

/// `url` serves no exposition (the console's fallback page, if anything).
async fn assert_no_metrics(url: &str, token: Option<&str>) {
    let text = get(url, token).await.text().await.expect("body");
    assert!(!text.contains("# TYPE"), "{url} serves metrics");
}

/// With state on disk, a shutdown interrupts a running task and ResumeTask in the next
/// process resumes it: both are counted.
#[tokio::test]
async fn interrupted_and_resumed_tasks_are_counted() {
    let _turn = TURN.lock().await;
    let dir = temp_dir("metrics-durable");
    let durable = || Config {
        storage: Storage::Dir(dir.clone()),
        drain: Duration::from_millis(50),
        resume: ResumeMode::Manual,
        ..Config::default()
    };
    let ts = TestServer::with_config(durable()).await;
    let before = scrape(&ts).await;
    let id = ts
        .tasks()
        .start_task(start_inline(fixture("endless.json"), json!({})))
        .await
        .expect("start task")
        .into_inner()
        .task_id;
    ts.stop().await;

    let ts = TestServer::with_config(durable()).await;
    let resume = pb::ResumeTaskRequest {
        task_id: id.clone(),
    };
    ts.tasks().resume_task(resume).await.expect("resume");
    let after = scrape(&ts).await;
    let d = |name: &str| grew(&before, &after, name, &[]);
    assert_eq!(d("mse_tasks_interrupted_total"), 1.0);
    assert_eq!(d("mse_tasks_resumed_total"), 1.0);
    assert_eq!(value(&after, "mse_tasks_in_flight", &[]), 1.0);
    let cancel = pb::CancelTaskRequest {
        task_id: id,
        ..Default::default()
    };
    ts.tasks().cancel_task(cancel).await.expect("cancel");
    ts.stop().await;
}

/// With state on disk, the state file's transactions and the changes they wrote are
/// counted: every task writes its creation and its end, several changes share one
/// transaction when tasks run side by side.
#[tokio::test]
async fn state_file_commits_and_writes_are_counted() {
    let _turn = TURN.lock().await;
    let dir = temp_dir("metrics-state");
    let ts = TestServer::with_config(Config {
        storage: Storage::Dir(dir.clone()),
        ..Config::default()
    })
    .await;
    let before = scrape(&ts).await;
    run_identity_tasks(&ts, 10).await;
    let runs = (0..16).map(|i| {
        let tasks = ts.tasks();
        async move {
            let mut tasks = tasks;
            tasks
                .run_task(inline(fixture("identity.json"), json!({ "input": i })))
                .await
                .expect("run task")
        }
    });
    futures::future::join_all(runs).await;
    let after = scrape(&ts).await;
    let commits = grew(&before, &after, "mse_state_commits_total", &[]);
    let writes = grew(&before, &after, "mse_state_writes_total", &[]);
    assert!(commits >= 1.0, "commits {commits}");
    assert!(
        writes >= 2.0 * 26.0,
        "creation and end of 26 tasks: {writes}"
    );
    assert!(writes > commits, "writes {writes} per commits {commits}");
    ts.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn stats(ts: &TestServer) -> pb::GetStatsResponse {
    ServerServiceClient::new(ts.channel.clone())
        .get_stats(pb::GetStatsRequest::default())
        .await
        .expect("get stats")
        .into_inner()
}

/// GetStats until `done` holds (acks reach the session after the call that sent them).
async fn stats_until(
    ts: &TestServer,
    done: impl Fn(&pb::GetStatsResponse) -> bool,
) -> pb::GetStatsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(ts).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never settled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `ServerService.GetStats` (the console's live strip): tasks in flight, completions in
/// the last minute and the operator backlog, exactly, before and after a known workload.
#[tokio::test]
async fn get_stats_reads_the_live_state() {
    let _turn = TURN.lock().await;
    let ts = TestServer::with_config(config()).await;
    let before = stats(&ts).await;
    assert_eq!(before.tasks_in_flight, 0);
    assert_eq!(before.operator_sessions_live, 0);

    run_identity_tasks(&ts, 2).await;
    // An operator task waits on its hook_before: one request pending, one frame unacked.
    let (mut op, started) = start_operator_task(&ts).await;
    let hook = op.next().await;
    let Some(S::HookBefore(h)) = hook.body else {
        panic!("expected hook_before, got {hook:?}");
    };
    let waiting = stats(&ts).await;
    assert_eq!(waiting.tasks_in_flight, 1);
    assert_eq!(waiting.operator_pending_requests, 1);
    assert_eq!(waiting.operator_unacked_frames, 1);
    assert_eq!(waiting.operator_sessions_live, 1);
    assert_eq!(waiting.operator_sessions_attached, 1);
    assert_eq!(
        waiting.tasks_completed_last_minute - before.tasks_completed_last_minute,
        2
    );

    op.ack(hook.seq).await;
    op.approve(h.req_id).await;
    op.serve_until_hook_after(&ts, "done").await;
    wait_completed(&ts, &started.task_id).await;
    let after = stats_until(&ts, |s| s.operator_unacked_frames == 0).await;
    assert_eq!(after.tasks_in_flight, 0);
    assert_eq!(after.operator_pending_requests, 0);
    assert_eq!(after.operator_sessions_live, 1);
    assert_eq!(
        after.tasks_completed_last_minute - before.tasks_completed_last_minute,
        3
    );
    drop(op);
    ts.stop().await;
}
