//! Issue 3 acceptance: operators drive real tasks over a Connect stream; workers use the
//! Spawn's credential; nothing is lost when the stream drops.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tonic::Code;

fn run_bg(ts: &TestServer, input: Value) -> JoinHandle<Result<pb::Task, tonic::Status>> {
    let mut tasks = ts.tasks();
    let req = inline(fixture("operator.json"), json!({ "input": input }));
    tokio::spawn(async move {
        tasks
            .run_task(req)
            .await
            .map(|r| r.into_inner().task.expect("task"))
    })
}

async fn finished(h: JoinHandle<Result<pb::Task, tonic::Status>>) -> pb::Task {
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .expect("task ends in time")
        .expect("join")
        .expect("run_task")
}

fn hook_before(f: pb::ServerFrame) -> pb::HookBefore {
    match f.body {
        Some(S::HookBefore(h)) => h,
        other => panic!("expected hook_before, got {other:?}"),
    }
}

fn spawn_of(f: pb::ServerFrame) -> pb::Spawn {
    match f.body {
        Some(S::Spawn(s)) => s,
        other => panic!("expected spawn, got {other:?}"),
    }
}

fn notice_of(f: pb::ServerFrame) -> pb::Notice {
    match f.body {
        Some(S::Notice(n)) => n,
        other => panic!("expected notice, got {other:?}"),
    }
}

async fn approve_next_hook(op: &mut Op) -> pb::HookBefore {
    let f = op.next().await;
    let seq = f.seq;
    let h = hook_before(f);
    op.ack(seq).await;
    op.approve(h.req_id.clone()).await;
    h
}

async fn spawn_ack(op: &Op, req_id: &str) {
    op.send(C::SpawnAck(pb::SpawnAck {
        req_id: req_id.into(),
        value: None,
        ok: None,
        error: String::new(),
    }))
    .await;
}

#[tokio::test]
async fn spawn_round_trip_by_handle_then_by_capability_token() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    assert_eq!(op.welcome.epoch, 1);
    assert_eq!(op.welcome.roles, vec!["remote".to_string()]);

    for (n, by_token) in [(1, false), (2, true)] {
        let task = run_bg(&ts, json!(format!("job {n}")));
        let hb = approve_next_hook(&mut op).await;
        assert_eq!(hb.agent, "worker");
        assert_eq!(hb.attempt, 1);
        assert!(hb.task_id.starts_with("task-") && hb.step_id.starts_with("ST-"));
        let f = op.next().await;
        let seq = f.seq;
        let spawn = spawn_of(f);
        assert_eq!(spawn.step_id, hb.step_id);
        assert_minted_handle(&spawn.worker_handle);
        assert!(spawn.capability_token.len() > 100);
        assert!(
            spawn.directive.contains(&ts.server.addr.to_string()),
            "{}",
            spawn.directive
        );
        let prompt = work(
            &ts,
            &spawn,
            &format!("done {n}  \n"),
            pb::SubmitOutcome::Pass,
            by_token,
        )
        .await;
        assert_eq!(prompt.prompt, format!("job {n}"));
        assert_eq!(prompt.system, "You are a careful worker.");
        assert_eq!(prompt.agent, "worker");
        op.ack(seq).await;
        spawn_ack(&op, &spawn.req_id).await;
        let after = op.next().await;
        let Some(S::HookAfter(ha)) = after.body else {
            panic!("expected hook_after: {after:?}")
        };
        assert_eq!(ha.step_id, spawn.step_id);
        op.ack(after.seq).await;
        let t = finished(task).await;
        assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
        assert_eq!(from_value(t.final_ctx)["output"], format!("done {n}"));
        // The finished step's handle is refused now.
        let err = ts
            .workers()
            .get_prompt(authed(
                pb::GetPromptRequest::default(),
                &spawn.worker_handle,
            ))
            .await
            .expect_err("finished step");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    ts.stop().await;
}

#[tokio::test]
async fn blocked_submit_asks_the_operator_and_the_answer_lands_in_ctx() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let task = run_bg(&ts, json!("hard job"));
    approve_next_hook(&mut op).await;
    let spawn = spawn_of(op.next().await);
    work(
        &ts,
        &spawn,
        "cannot do it",
        pb::SubmitOutcome::Blocked,
        false,
    )
    .await;
    spawn_ack(&op, &spawn.req_id).await;
    let mut answered = false;
    while !answered {
        let f = op.next().await;
        op.ack(f.seq).await;
        if let Some(S::Ask(ask)) = f.body {
            assert_eq!(ask.step_id, spawn.step_id);
            assert_eq!(ask.task_id, spawn.task_id);
            op.send(C::Answer(pb::Answer {
                req_id: ask.req_id,
                value: Some(mlua_swarm_grpc::grpc::convert::json_to_value(
                    json!({"advice": "proceed"}),
                )),
            }))
            .await;
            answered = true;
        }
    }
    let t = finished(task).await;
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    let out = &from_value(t.final_ctx)["output"];
    assert_eq!(out["senior_answer"]["advice"], "proceed", "{out}");
    ts.stop().await;
}

#[tokio::test]
async fn rejected_hook_fails_the_task_with_the_reason() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let task = run_bg(&ts, json!("x"));
    let hb = hook_before(op.next().await);
    op.send(C::HookAck(pb::HookAck {
        req_id: hb.req_id,
        ok: false,
        reason: "budget exhausted".into(),
    }))
    .await;
    let t = finished(task).await;
    assert_eq!(t.state(), pb::TaskState::Failed);
    assert!(t.error.contains("budget exhausted"), "{}", t.error);
    ts.stop().await;
}

#[tokio::test]
async fn a_dropped_stream_resumes_and_the_spawn_is_redelivered_once() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let (sid, token) = (op.sid.clone(), op.token.clone());
    let task = run_bg(&ts, json!("survive"));
    let hb_seq = {
        let f = op.next().await;
        let seq = f.seq;
        let h = hook_before(f);
        op.approve(h.req_id).await;
        seq
    };
    op.ack(hb_seq).await;
    let first = op.next().await;
    let spawn_seq = first.seq;
    let spawn = spawn_of(first);
    assert!(spawn_seq > hb_seq);
    drop(op); // the stream drops right after the spawn arrived, before it was acked

    let mut op = Op::connect(&ts, &sid, &token, hb_seq)
        .await
        .expect("resume");
    assert_eq!(op.welcome.epoch, 2);
    assert_eq!(op.welcome.acked_seq, hb_seq);
    assert_eq!(op.welcome.replayed, 1, "exactly the unacked spawn");
    let again = op.next().await;
    assert_eq!(again.seq, spawn_seq);
    assert_eq!(spawn_of(again).req_id, spawn.req_id);
    work(&ts, &spawn, "resumed", pb::SubmitOutcome::Pass, false).await;
    op.ack(spawn_seq).await;
    spawn_ack(&op, &spawn.req_id).await;
    let after = op.next().await;
    assert!(
        after.seq > spawn_seq,
        "nothing at or below an acked seq comes again"
    );
    assert!(matches!(after.body, Some(S::HookAfter(_))), "{after:?}");
    let t = finished(task).await;
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    assert_eq!(from_value(t.final_ctx)["output"], "resumed");

    // A duplicate of the same ack is told, not silently dropped.
    spawn_ack(&op, &spawn.req_id).await;
    let n = notice_of(op.next().await);
    assert_eq!(n.code(), pb::NoticeCode::Duplicate);
    ts.stop().await;
}

#[tokio::test]
async fn no_reconnect_within_the_grace_window_fails_the_task() {
    let mut config = Config {
        storage: Storage::Ephemeral,
        ..Config::default()
    };
    config.operator.park_grace = Duration::from_secs(1);
    let ts = TestServer::with_config(config).await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let task = run_bg(&ts, json!("abandoned"));
    hook_before(op.next().await);
    let dropped_at = Instant::now();
    drop(op);
    let t = finished(task).await;
    let took = dropped_at.elapsed();
    assert_eq!(t.state(), pb::TaskState::Failed);
    assert!(t.error.contains("no stream"), "{}", t.error);
    assert!(
        took <= Duration::from_secs(2),
        "failed after {took:?}, window 1 s"
    );
    ts.stop().await;
}

#[tokio::test]
async fn delete_session_fails_its_task_at_once_and_frees_its_roles() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let err = ts
        .operators()
        .create_session(pb::CreateSessionRequest {
            roles: vec!["remote".into()],
        })
        .await
        .expect_err("role held");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("remote"), "{}", err.message());

    let task = run_bg(&ts, json!("doomed"));
    hook_before(op.next().await);
    let info = ts
        .operators()
        .get_session(authed(
            pb::GetSessionRequest {
                sid: op.sid.clone(),
            },
            &op.token,
        ))
        .await
        .expect("get session")
        .into_inner()
        .session
        .expect("session");
    assert!(info.connected);
    assert_eq!(info.pending, 1);
    let started = Instant::now();
    ts.operators()
        .delete_session(authed(
            pb::DeleteSessionRequest {
                sid: op.sid.clone(),
            },
            &op.token,
        ))
        .await
        .expect("delete");
    let t = finished(task).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(t.state(), pb::TaskState::Failed);
    assert!(t.error.contains("deleted"), "{}", t.error);
    let mut saw_closing = false;
    while let Some(f) = op.try_next().await {
        saw_closing |= matches!(f.body, Some(S::Closing(_)));
    }
    assert!(saw_closing, "the stream got closing before it ended");
    ts.operators()
        .create_session(pb::CreateSessionRequest {
            roles: vec!["remote".into()],
        })
        .await
        .expect("role is free again");
    ts.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_tasks_over_one_stream_complete() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| run_bg(&ts, json!(format!("n{i}"))))
        .collect();
    let workers = ts.workers();
    let driver = tokio::spawn(async move {
        let mut done = 0;
        while done < 200 {
            let Some(f) = op.try_next().await else { break };
            op.ack(f.seq).await;
            match f.body {
                Some(S::HookBefore(h)) => op.approve(h.req_id).await,
                Some(S::Spawn(s)) => {
                    let mut w = workers.clone();
                    let tx = op.tx.clone();
                    tokio::spawn(async move {
                        let p = match w
                            .get_prompt(authed(pb::GetPromptRequest::default(), &s.worker_handle))
                            .await
                        {
                            Ok(p) => p.into_inner(),
                            Err(e) => panic!("prompt: {e:?}"),
                        };
                        if let Err(e) = w
                            .submit(authed(
                                pb::SubmitRequest {
                                    body: format!("ok {}", p.prompt),
                                    ..Default::default()
                                },
                                &s.worker_handle,
                            ))
                            .await
                        {
                            eprintln!("DEBUG submit failed: {e:?}");
                        }
                        let ack = pb::SpawnAck {
                            req_id: s.req_id,
                            value: None,
                            ok: None,
                            error: String::new(),
                        };
                        let _ = tx
                            .send(pb::ClientFrame {
                                body: Some(C::SpawnAck(ack)),
                            })
                            .await;
                    });
                }
                Some(S::HookAfter(_)) => done += 1,
                _ => {}
            }
        }
        op
    });
    for (i, t) in tasks.into_iter().enumerate() {
        let t = finished(t).await;
        assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
        assert_eq!(from_value(t.final_ctx)["output"], format!("ok n{i}"));
    }
    let op = driver.await.expect("driver");
    drop(op);
    assert_eq!(ts.server.host.state_sizes().await.total(), 0);
    ts.stop().await;
}

#[tokio::test]
async fn bad_input_gets_statuses_before_welcome_and_notices_after() {
    let ts = TestServer::start().await;
    let created = create_session(&ts, &["remote"]).await;
    assert_eq!(created.token.len(), 32);
    let err = Op::connect(&ts, "op-unknown", &created.token, 0)
        .await
        .err()
        .expect("unknown sid");
    assert_eq!(err.code(), Code::NotFound);
    let err = Op::connect(&ts, &created.sid, "wrong", 0)
        .await
        .err()
        .expect("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = Op::connect(&ts, &created.sid, &created.token, 99)
        .await
        .err()
        .expect("ahead");
    assert_eq!(err.code(), Code::InvalidArgument);

    // First frame not a hello.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ClientFrame {
        body: Some(C::Ack(pb::Ack { seq: 1 })),
    })
    .await
    .expect("q");
    let err = ts
        .operators()
        .connect(authed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            &created.token,
        ))
        .await
        .expect_err("not hello");
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut op = Op::connect(&ts, &created.sid, &created.token, 0)
        .await
        .expect("connect");
    op.send(C::Answer(pb::Answer {
        req_id: "nope".into(),
        value: None,
    }))
    .await;
    assert_eq!(
        notice_of(op.next().await).code(),
        pb::NoticeCode::UnknownReq
    );
    op.send(C::HookAck(pb::HookAck::default())).await;
    assert_eq!(
        notice_of(op.next().await).code(),
        pb::NoticeCode::InvalidFrame
    );

    let task = run_bg(&ts, json!("kinds"));
    let hb = hook_before(op.next().await);
    op.spawn_ack(hb.req_id.clone()).await;
    let n = notice_of(op.next().await);
    assert_eq!(n.code(), pb::NoticeCode::WrongKind);
    assert!(n.message.contains("hook_ack"), "{}", n.message);

    // CancelTask withdraws the pending hook: a cancel frame, then a late reply is stale.
    let cancelled = ts
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            task_id: hb.task_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(cancelled.state(), pb::TaskState::Cancelled);
    let c = op.next().await;
    let Some(S::Cancel(cancel)) = c.body else {
        panic!("expected cancel: {c:?}")
    };
    assert_eq!(cancel.req_id, hb.req_id);
    assert!(
        cancel.reason.contains("changed my mind"),
        "{}",
        cancel.reason
    );
    op.approve(hb.req_id.clone()).await;
    assert_eq!(notice_of(op.next().await).code(), pb::NoticeCode::Stale);
    assert_eq!(finished(task).await.state(), pb::TaskState::Cancelled);

    // An oversized frame ends this stream with RESOURCE_EXHAUSTED; others keep working.
    let mut other = Op::join(&ts, &["other"]).await;
    let huge = "x".repeat(5 * 1024 * 1024);
    op.send(C::Answer(pb::Answer {
        req_id: "big".into(),
        value: Some(mlua_swarm_grpc::grpc::convert::json_to_value(json!(huge))),
    }))
    .await;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), op.rx.message())
            .await
            .expect("in time")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = end.expect_err("status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    other
        .send(C::Answer(pb::Answer {
            req_id: "still-here".into(),
            value: None,
        }))
        .await;
    assert_eq!(
        notice_of(other.next().await).code(),
        pb::NoticeCode::UnknownReq
    );
    ts.stop().await;
}

#[tokio::test]
async fn a_second_stream_replaces_the_first_cleanly() {
    let ts = TestServer::start().await;
    let mut first = Op::join(&ts, &["remote"]).await;
    let mut second = Op::connect(&ts, &first.sid, &first.token, 0)
        .await
        .expect("second");
    assert_eq!(second.welcome.epoch, 2);
    let closing = first.next().await;
    let Some(S::Closing(c)) = closing.body else {
        panic!("expected closing: {closing:?}")
    };
    assert!(c.reason.contains("replaced"), "{}", c.reason);
    assert!(first.try_next().await.is_none(), "old stream ended");
    drop(first); // the old stream's exit must not detach the new one
    let task = run_bg(&ts, json!("after replace"));
    let hb = hook_before(second.next().await);
    second
        .send(C::HookAck(pb::HookAck {
            req_id: hb.req_id,
            ok: true,
            reason: String::new(),
        }))
        .await;
    let spawn = spawn_of(second.next().await);
    work(&ts, &spawn, "fine", pb::SubmitOutcome::Pass, true).await;
    spawn_ack(&second, &spawn.req_id).await;
    assert_eq!(finished(task).await.state(), pb::TaskState::Completed);
    ts.stop().await;
}

#[tokio::test]
async fn worker_and_data_credentials_are_checked() {
    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let t1 = run_bg(&ts, json!("one"));
    approve_next_hook(&mut op).await;
    let s1 = spawn_of(op.next().await);

    let err = ts
        .workers()
        .get_prompt(pb::GetPromptRequest::default())
        .await
        .expect_err("no cred");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = ts
        .workers()
        .get_prompt(authed(pb::GetPromptRequest::default(), "garbage"))
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = ts
        .workers()
        .get_prompt(authed(pb::GetPromptRequest::default(), "wh-deadbeef"))
        .await
        .expect_err("unknown handle");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = ts
        .workers()
        .get_prompt(authed(
            pb::GetPromptRequest {
                step_id: "ST-0000000000000000".into(),
            },
            &s1.worker_handle,
        ))
        .await
        .expect_err("other step");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = ts
        .workers()
        .post_result(authed(pb::PostResultRequest::default(), &s1.worker_handle))
        .await
        .expect_err("post_result needs the token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Data plane: emit with the handle, read back by id and by name; size limit enforced.
    let event = pb::OutputEvent {
        kind: Some(pb::output_event::Kind::Final(pb::Final {
            content: Some(pb::ContentRef {
                kind: Some(pb::content_ref::Kind::Inline(
                    mlua_swarm_grpc::grpc::convert::json_to_value(json!({"k": 1})),
                )),
            }),
            ok: true,
        })),
    };
    let out = ts
        .data()
        .emit_named(authed(
            pb::EmitNamedRequest {
                name: "notes".into(),
                step_id: s1.step_id.clone(),
                event: Some(event.clone()),
                ..Default::default()
            },
            &s1.worker_handle,
        ))
        .await
        .expect("emit")
        .into_inner()
        .out_id;
    assert!(out.starts_with("out-"));
    for key in [out.clone(), "notes".to_string()] {
        let rec = ts
            .data()
            .get(pb::GetRequest { key })
            .await
            .expect("get")
            .into_inner()
            .record
            .expect("rec");
        assert_eq!(rec.out_id, out);
        assert_eq!(rec.producer_agent, "notes");
        assert_eq!(rec.step_id, s1.step_id);
    }
    let err = ts
        .data()
        .get(pb::GetRequest {
            key: "missing".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    let big = pb::OutputEvent {
        kind: Some(pb::output_event::Kind::Progress(pb::Progress {
            stage: "x".repeat(2 * 1024 * 1024),
            note: String::new(),
        })),
    };
    let err = ts
        .data()
        .emit(authed(
            pb::EmitRequest {
                step_id: s1.step_id.clone(),
                event: Some(big),
                ..Default::default()
            },
            &s1.capability_token,
        ))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);

    work(&ts, &s1, "one done", pb::SubmitOutcome::Pass, false).await;
    spawn_ack(&op, &s1.req_id).await;
    assert_eq!(finished(t1).await.state(), pb::TaskState::Completed);
    ts.stop().await;
}

/// `--public-url` (a balancer in front, say) is what a spawn's directive tells the worker
/// to call, in place of the bound address.
#[tokio::test]
async fn a_spawn_directive_names_the_public_url() {
    let ts = TestServer::with_config(Config {
        public_url: Some("https://swarm.example.com".into()),
        ..Config::default()
    })
    .await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let _task = run_bg(&ts, json!("job"));
    approve_next_hook(&mut op).await;
    let spawn = spawn_of(op.next().await);
    assert!(
        spawn.directive.contains("https://swarm.example.com")
            && !spawn.directive.contains(&ts.server.addr.to_string()),
        "{}",
        spawn.directive
    );
}
