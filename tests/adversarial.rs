//! Issue 17: legal but unusual clients. Each test reproduces one defect an outside protocol
//! probe found; none of them may wedge a session, break a read for everyone, or reach into
//! another session's work.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use prost::Message;
use serde_json::{json, Value};
use tonic::Code;

fn ephemeral() -> Config {
    Config {
        storage: Storage::Ephemeral,
        ..Config::default()
    }
}

fn start_req(input: Value) -> pb::StartTaskRequest {
    start_inline(fixture("operator.json"), json!({ "input": input }))
}

async fn start(ts: &TestServer, req: pb::StartTaskRequest) -> String {
    ts.tasks()
        .start_task(req)
        .await
        .expect("start task")
        .into_inner()
        .task_id
}

async fn get(ts: &TestServer, id: &str) -> pb::Task {
    ts.tasks()
        .get_task(pb::GetTaskRequest { task_id: id.into() })
        .await
        .expect("get task")
        .into_inner()
        .task
        .expect("task")
}

/// Polls GetTask until the task leaves RUNNING (bounded).
async fn ended(ts: &TestServer, id: &str, within: Duration) -> pb::Task {
    let deadline = Instant::now() + within;
    loop {
        let t = get(ts, id).await;
        if t.state() != pb::TaskState::Running {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn session(ts: &TestServer, sid: &str, token: &str) -> pb::Session {
    ts.operators()
        .get_session(authed(pb::GetSessionRequest { sid: sid.into() }, token))
        .await
        .expect("get session")
        .into_inner()
        .session
        .expect("session")
}

/// The next frame on a raw stream (pings included), within `within`.
async fn raw_next(
    rx: &mut tonic::Streaming<pb::ServerFrame>,
    within: Duration,
) -> Result<Option<pb::ServerFrame>, tonic::Status> {
    tokio::time::timeout(within, rx.message())
        .await
        .expect("a frame or an end in time")
}

fn hook_of(f: &pb::ServerFrame) -> pb::HookBefore {
    match &f.body {
        Some(S::HookBefore(h)) => h.clone(),
        other => panic!("expected hook_before, got {other:?}"),
    }
}

/// Item 1: CancelTask while a hook_before is pending always ends CANCELLED with the reason,
/// and the operator gets a `cancel` carrying it. Multi-threaded, as the server runs: the
/// flow can wake on one thread while CancelTask runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_pending_hook_always_wins_with_its_reason() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    for i in 0..50 {
        let id = start(&ts, start_req(json!(format!("job {i}")))).await;
        let f = op.next().await;
        let hook = hook_of(&f);
        assert_eq!(hook.task_id, id);
        op.ack(f.seq).await;
        assert_eq!(get(&ts, &id).await.state(), pb::TaskState::Running);
        let reason = format!("stop {i}");
        let cancelled = ts
            .tasks()
            .cancel_task(pb::CancelTaskRequest {
                task_id: id.clone(),
                reason: reason.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("round {i}: cancel refused: {e:?}"))
            .into_inner()
            .task
            .expect("task");
        assert_eq!(cancelled.state(), pb::TaskState::Cancelled, "round {i}");
        assert_eq!(cancelled.error, reason, "round {i}");
        let f = op.next().await;
        let Some(S::Cancel(c)) = f.body else {
            panic!("round {i}: expected cancel, got {f:?}")
        };
        assert_eq!(c.req_id, hook.req_id, "round {i}");
        assert!(c.reason.contains(&reason), "round {i}: {}", c.reason);
        op.ack(f.seq).await;
        let t = get(&ts, &id).await;
        assert_eq!(t.state(), pb::TaskState::Cancelled, "round {i}");
        assert_eq!(t.error, reason, "round {i}");
    }
}

/// A SpawnAck whose encoded frame is exactly `frame_len` bytes.
fn spawn_ack_of_len(req_id: &str, frame_len: usize) -> pb::ClientFrame {
    let frame = |n: usize| pb::ClientFrame {
        body: Some(C::SpawnAck(pb::SpawnAck {
            req_id: req_id.into(),
            value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("x".repeat(n))),
            }),
            ok: None,
            error: String::new(),
        })),
    };
    let mut n = frame_len;
    for _ in 0..16 {
        let len = frame(n).encoded_len();
        if len == frame_len {
            return frame(n);
        }
        if len > frame_len {
            n -= len - frame_len;
        } else {
            n += frame_len - len;
        }
    }
    panic!("no spawn_ack of exactly {frame_len} bytes");
}

/// Item 2: a reply under the message limit but over what the server stores is refused up
/// front; the session, its reconnects and the task stay usable.
#[tokio::test]
async fn a_reply_too_large_to_echo_is_refused_and_the_session_stays_usable() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let id = start(&ts, start_req(json!("big"))).await;
    let f = op.next().await;
    op.ack(f.seq).await;
    op.approve(hook_of(&f).req_id).await;
    let f = op.next().await;
    let Some(S::Spawn(spawn)) = f.body.clone() else {
        panic!("expected spawn, got {f:?}")
    };
    op.ack(f.seq).await;
    let big = spawn_ack_of_len(&spawn.req_id, 4_194_294);
    assert_eq!(big.encoded_len(), 4_194_294);
    op.tx.send(big).await.expect("stream open");
    let f = op.next().await;
    let Some(S::Notice(n)) = f.body else {
        panic!("expected a notice refusing the oversized reply, got {f:?}")
    };
    assert_eq!(n.req_id, spawn.req_id);
    assert!(n.message.contains("limit"), "{}", n.message);
    // The request is still pending: a normal reply completes the task.
    work(&ts, &spawn, "small", pb::SubmitOutcome::Pass, false).await;
    op.spawn_ack(spawn.req_id.clone()).await;
    let f = op.next().await;
    assert!(matches!(f.body, Some(S::HookAfter(_))), "{f:?}");
    let t = ended(&ts, &id, Duration::from_secs(10)).await;
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    // Reconnecting from the start re-sends the frames and works; the task reads fine.
    let (sid, token) = (op.sid.clone(), op.token.clone());
    drop(op);
    let op = Op::connect(&ts, &sid, &token, 0).await.expect("reconnect");
    assert_eq!(op.welcome.acked_seq, 2);
    let mut events = ts
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut n_events = 0;
    while let Some(_e) = events.message().await.expect("watch works") {
        n_events += 1;
    }
    assert!(n_events >= 4, "{n_events} events");
}

/// Item 2 (resume): a reconnect with an old `last_seq` re-sends everything and works.
#[tokio::test]
async fn a_session_resumes_after_a_large_accepted_reply() {
    let ts = TestServer::start().await;
    let created = create_session(&ts, &["remote"]).await;
    let mut op = Op::connect(&ts, &created.sid, &created.token, 0)
        .await
        .expect("connect");
    let id = start(&ts, start_req(json!("big"))).await;
    let f = op.next().await;
    op.approve(hook_of(&f).req_id).await;
    let f = op.next().await;
    let Some(S::Spawn(spawn)) = f.body.clone() else {
        panic!("expected spawn, got {f:?}")
    };
    // The largest value the server accepts (the data limit) still yields a hook_after that
    // fits its frame, and the stream survives it.
    let largest = 1024 * 1024 - 64;
    op.send(C::SpawnAck(pb::SpawnAck {
        req_id: spawn.req_id.clone(),
        value: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("y".repeat(largest))),
        }),
        ok: None,
        error: String::new(),
    }))
    .await;
    let f = op.next().await;
    assert!(matches!(f.body, Some(S::HookAfter(_))), "{f:?}");
    drop(op);
    let mut op = Op::connect(&ts, &created.sid, &created.token, 0)
        .await
        .expect("reconnect from 0");
    assert_eq!(op.welcome.replayed, 3);
    for _ in 0..3 {
        let f = op.next().await;
        op.ack(f.seq).await;
    }
    let t = ended(&ts, &id, Duration::from_secs(10)).await;
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
}

/// Item 3: results the server accepted never make a read fail: ListTasks pages, GetTask
/// works, and an init_ctx over the data limit is refused up front.
#[tokio::test]
async fn accepted_results_never_break_reads() {
    let ts = TestServer::start().await;
    let body = "z".repeat(1024 * 1024 - 64);
    let op = Serving::start(&ts, &["remote"], &body).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = start(&ts, start_req(json!(format!("big {i}")))).await;
        let t = ended(&ts, &id, Duration::from_secs(10)).await;
        assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
        ids.push(id);
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = ts
            .tasks()
            .list_tasks(pb::ListTasksRequest {
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListTasks works for everyone")
            .into_inner();
        listed.extend(page.tasks.into_iter().map(|t| t.task_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    for id in &ids {
        assert!(listed.contains(id), "{id} listed");
    }
    assert_eq!(listed.len(), ids.len(), "no task twice");
    // Page size is honoured too.
    let page = ts
        .tasks()
        .list_tasks(pb::ListTasksRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page of one")
        .into_inner();
    assert_eq!(page.tasks.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let err = ts
        .tasks()
        .list_tasks(pb::ListTasksRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);

    let huge = "q".repeat(2_100_000);
    let err = ts
        .tasks()
        .run_task(inline(fixture("identity.json"), json!({ "input": huge })))
        .await
        .expect_err("init_ctx over the data limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("init_ctx"), "{}", err.message());
    op.stop().await;
}

/// Item 3: a final context that grew past what one message can carry is stored as a marker,
/// so GetTask and RunTask still answer.
#[tokio::test]
async fn a_final_ctx_too_large_for_a_message_is_stored_as_a_marker() {
    let ts = TestServer::with_config(Config {
        max_message_bytes: 1536 * 1024,
        ..ephemeral()
    })
    .await;
    // identity echoes its input: the final context holds it twice (2 MiB > 1.5 MiB).
    let input = "e".repeat(1000 * 1024);
    let t = ts
        .tasks()
        .run_task(inline(fixture("identity.json"), json!({ "input": input })))
        .await
        .expect("RunTask answers")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    let ctx = from_value(t.final_ctx.clone());
    assert_eq!(ctx["truncated"], json!(true), "{ctx}");
    let again = get(&ts, &t.task_id).await;
    assert_eq!(from_value(again.final_ctx)["truncated"], json!(true));
}

/// Item 4: a sid is a reserved seat; nobody can claim it as a role.
#[tokio::test]
async fn a_live_sid_cannot_be_claimed_as_a_role() {
    let ts = TestServer::start().await;
    let mut a = Op::join(&ts, &[]).await;
    let err = ts
        .operators()
        .create_session(pb::CreateSessionRequest {
            roles: vec![a.sid.clone()],
        })
        .await
        .expect_err("a sid is not a free role");
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    // Requests addressed to A's sid still reach A.
    let mut req = start_req(json!("for a"));
    req.operator_sid = a.sid.clone();
    let mut bp = fixture("operator.json");
    bp["agents"][0]["spec"]["operator_ref"] = json!(a.sid.clone());
    bp["operators"][0]["name"] = json!(a.sid.clone());
    req.blueprint = Some(pb::BlueprintRef {
        source: Some(pb::blueprint_ref::Source::Inline(to_struct(bp))),
    });
    let id = start(&ts, req).await;
    let f = a.next().await;
    assert_eq!(hook_of(&f).task_id, id);
}

/// Item 5: an unknown operator_ref names no session, no role, and no other program's tool.
#[tokio::test]
async fn an_unknown_operator_ref_leaks_nothing_and_says_what_to_do() {
    let ts = TestServer::start().await;
    let a = Op::join(&ts, &["secret-seat"]).await;
    let mut bp = fixture("operator.json");
    bp["agents"][0]["spec"]["operator_ref"] = json!("nobody-holds-this");
    bp["operators"][0]["name"] = json!("nobody-holds-this");
    let err = ts
        .tasks()
        .run_task(inline(bp, json!({ "input": "x" })))
        .await
        .expect_err("unknown operator_ref");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let m = err.message();
    assert!(!m.contains(&a.sid), "leaks a sid: {m}");
    assert!(!m.contains("secret-seat"), "leaks a role: {m}");
    assert!(!m.contains("mse_operator_join"), "foreign hint: {m}");
    assert!(
        m.contains("nobody-holds-this") && m.contains("CreateSession"),
        "{m}"
    );
}

/// Item 6: ttl_secs is a run deadline: the task fails with "ttl expired" and its pending
/// request is withdrawn with `cancel`.
#[tokio::test]
async fn ttl_is_a_run_deadline() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let mut req = start_req(json!("slow"));
    req.ttl_secs = Some(2);
    let id = start(&ts, req).await;
    let f = op.next().await;
    let hook = hook_of(&f);
    op.ack(f.seq).await;
    let t = ended(&ts, &id, Duration::from_secs(8)).await;
    assert_eq!(t.state(), pb::TaskState::Failed);
    assert!(t.error.contains("ttl expired"), "{}", t.error);
    assert_eq!(t.effective_ttl_secs, 2);
    let f = op.next().await;
    let Some(S::Cancel(c)) = f.body else {
        panic!("expected cancel, got {f:?}")
    };
    assert_eq!(c.req_id, hook.req_id);
    assert!(c.reason.contains("ttl expired"), "{}", c.reason);
}

/// Item 8: an ack past the last seq gets a notice (Connect) or INVALID_ARGUMENT (Send) and
/// moves nothing; acks on a replaced stream are void.
#[tokio::test]
async fn acks_past_the_last_seq_are_refused_and_replaced_streams_are_void() {
    let ts = TestServer::start().await;
    let created = create_session(&ts, &["remote"]).await;
    let (sid, token) = (created.sid.clone(), created.token.clone());
    let mut op = Op::connect(&ts, &sid, &token, 0).await.expect("connect");
    let _id = start(&ts, start_req(json!("acks"))).await;
    let f = op.next().await;
    assert_eq!(f.seq, 1);
    op.ack(999).await;
    let f = op.next().await;
    let Some(S::Notice(n)) = f.body else {
        panic!("expected a notice for ack 999, got {f:?}")
    };
    assert_eq!(n.code(), pb::NoticeCode::InvalidFrame);
    assert!(n.message.contains("999"), "{}", n.message);
    assert_eq!(session(&ts, &sid, &token).await.acked_seq, 0);
    let err = ts
        .operators()
        .send(authed(
            pb::SendRequest {
                sid: sid.clone(),
                frame: Some(pb::ClientFrame {
                    body: Some(C::Ack(pb::Ack { seq: 999 })),
                }),
            },
            &token,
        ))
        .await
        .expect_err("ack ahead via Send");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(session(&ts, &sid, &token).await.acked_seq, 0);

    // Replacement rounds: the old stream's ack after the new welcome changes nothing.
    let mut old = op;
    for round in 0..12 {
        let mut new = Op::connect(&ts, &sid, &token, 0).await.expect("replace");
        // The old stream may already be gone on the client side too; that is fine.
        let _ = old
            .tx
            .send(pb::ClientFrame {
                body: Some(C::Ack(pb::Ack { seq: 1 })),
            })
            .await;
        let deadline = Instant::now() + Duration::from_millis(150);
        while Instant::now() < deadline {
            assert_eq!(
                session(&ts, &sid, &token).await.acked_seq,
                0,
                "round {round}: an ack on a replaced stream moved acked_seq"
            );
            tokio::task::yield_now().await;
        }
        let f = new.next().await;
        assert_eq!(f.seq, 1, "round {round}: the hook is re-sent");
        old = new;
    }
}

/// Item 9a: a Connect stream that misses pings ends with `closing` and UNAVAILABLE.
#[tokio::test]
async fn a_connect_stream_that_misses_pings_ends_with_closing_and_unavailable() {
    let mut config = ephemeral();
    config.operator.ping_interval = Duration::from_secs(1);
    let ts = TestServer::with_config(config).await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closing = None;
    let end = loop {
        assert!(Instant::now() < deadline, "silent stream never dropped");
        match raw_next(&mut op.rx, Duration::from_secs(10)).await {
            Ok(Some(f)) => match f.body {
                Some(S::Ping(_)) => continue,
                Some(S::Closing(c)) => closing = Some(c),
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let closing = closing.expect("a closing frame before the end");
    assert!(closing.reason.contains("ping"), "{}", closing.reason);
    assert!(closing.retry_after_ms > 0);
    let status = end.expect("the stream ends with a status, not OK");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
}

/// Item 9b: a Subscribe that never answers pings is detached; its requests park.
#[tokio::test]
async fn a_subscribe_that_misses_pongs_is_detached_and_requests_park() {
    let mut config = ephemeral();
    config.operator.ping_interval = Duration::from_secs(1);
    let ts = TestServer::with_config(config).await;
    let created = create_session(&ts, &["remote"]).await;
    let (sid, token) = (created.sid.clone(), created.token.clone());
    let mut rx = ts
        .operators()
        .subscribe(authed(
            pb::SubscribeRequest {
                sid: sid.clone(),
                last_seq: 0,
            },
            &token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = raw_next(&mut rx, Duration::from_secs(5))
        .await
        .expect("welcome")
        .expect("a frame");
    assert!(matches!(first.body, Some(S::Welcome(_))));
    assert!(session(&ts, &sid, &token).await.connected);
    let mut closing = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        assert!(Instant::now() < deadline, "silent subscribe never dropped");
        match raw_next(&mut rx, Duration::from_secs(10)).await {
            Ok(Some(f)) => match f.body {
                Some(S::Ping(_)) => continue,
                Some(S::Closing(c)) => closing = Some(c),
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert!(closing.is_some(), "closing before the end");
    assert_eq!(end.map(|s| s.code()), Some(Code::Unavailable));
    assert!(!session(&ts, &sid, &token).await.connected, "detached");
    // A request made now parks and is delivered on the next attach.
    let id = start(&ts, start_req(json!("parked"))).await;
    let mut op = Op::connect(&ts, &sid, &token, 0).await.expect("attach");
    let f = op.next().await;
    assert_eq!(hook_of(&f).task_id, id);
}

/// Item 9c: DeleteSession withdraws pending requests with `cancel` before `closing`, and a
/// late reply is STALE, not NOT_FOUND.
#[tokio::test]
async fn delete_session_cancels_before_closing_and_late_replies_are_stale() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let id = start(&ts, start_req(json!("doomed"))).await;
    let f = op.next().await;
    let hook = hook_of(&f);
    op.ack(f.seq).await;
    ts.operators()
        .delete_session(authed(
            pb::DeleteSessionRequest {
                sid: op.sid.clone(),
            },
            &op.token,
        ))
        .await
        .expect("delete");
    let f = op.next().await;
    let Some(S::Cancel(c)) = f.body else {
        panic!("expected cancel before closing, got {f:?}")
    };
    assert_eq!(c.req_id, hook.req_id);
    assert!(c.reason.contains("deleted"), "{}", c.reason);
    let f = op.next().await;
    assert!(matches!(f.body, Some(S::Closing(_))), "{f:?}");
    let sent = ts
        .operators()
        .send(authed(
            pb::SendRequest {
                sid: op.sid.clone(),
                frame: Some(pb::ClientFrame {
                    body: Some(C::HookAck(pb::HookAck {
                        req_id: hook.req_id.clone(),
                        ok: true,
                        reason: String::new(),
                    })),
                }),
            },
            &op.token,
        ))
        .await
        .expect("a late reply is answered")
        .into_inner();
    assert_eq!(sent.outcome(), pb::SendOutcome::Stale, "{}", sent.message);
    let t = ended(&ts, &id, Duration::from_secs(10)).await;
    assert_eq!(t.state(), pb::TaskState::Failed);
    // The deleted session itself is gone for everything else.
    let err = ts
        .operators()
        .get_session(authed(
            pb::GetSessionRequest {
                sid: op.sid.clone(),
            },
            &op.token,
        ))
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
}

/// Item 7: SIGTERM drains for at most `--drain-secs`, then aborts runs and exits, even with
/// a flow that never yields (a pure `let` loop) holding a runtime thread.
#[tokio::test]
async fn sigterm_exits_within_the_drain_window_despite_a_spinning_flow() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let drain_secs = 2u64;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
        .args([
            "serve",
            "--ephemeral",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .env("MSE_DRAIN_SECS", drain_secs.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mse-grpc");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            let ok = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok();
            if ok {
                break ch;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut tasks = pb::task_service_client::TaskServiceClient::new(channel);
    let id = tasks
        .start_task(start_inline(fixture("spin.json"), json!({})))
        .await
        .expect("start the spinning flow")
        .into_inner()
        .task_id;
    let t = tasks
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .expect("get")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(t.state(), pb::TaskState::Running);
    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let limit = Duration::from_secs(drain_secs + 5);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break Some(exit);
        }
        if signalled.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(exit) = exit else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("server still running {limit:?} after SIGTERM");
    };
    assert!(exit.success(), "{exit}");
}
