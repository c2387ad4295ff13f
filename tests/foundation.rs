//! Issue 2 acceptance: the contract served, Blueprints stored and versioned, tasks run,
//! watched and cancelled, bad input answered, state kept across restarts and kept flat.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use pb::version_selector::Selector;
use serde_json::{json, Value};
use tonic::Code;

async fn put(ts: &TestServer, id: &str, bp: Value) -> pb::PutBlueprintResponse {
    ts.blueprints()
        .put_blueprint(pb::PutBlueprintRequest {
            id: id.into(),
            blueprint: Some(to_struct(bp)),
        })
        .await
        .expect("put")
        .into_inner()
}

#[tokio::test]
async fn identity_task_runs_to_completion_and_is_listed() {
    let ts = TestServer::start().await;
    let task = ts
        .tasks()
        .run_task(inline(fixture("identity.json"), json!({"input": "hi"})))
        .await
        .expect("run")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(task.state(), pb::TaskState::Completed);
    let ctx = from_value(task.final_ctx.clone());
    assert_eq!(ctx["output"]["echoed"], "hi");
    assert_eq!(ctx["output"]["by"], "baseline-identity");
    assert_eq!(task.ttl_source(), pb::TtlSource::ServerDefault);
    assert_eq!(task.effective_ttl_secs, 1800);
    assert_eq!(task.step_ids.len(), 1);

    let got = ts
        .tasks()
        .get_task(pb::GetTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(got.state(), pb::TaskState::Completed);
    assert!(got.finished_at.is_some());
    let listed = ts
        .tasks()
        .list_tasks(pb::ListTasksRequest {
            state: pb::TaskState::Completed as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert!(listed.iter().any(|t| t.task_id == task.task_id));
    ts.stop().await;
}

#[tokio::test]
async fn blueprints_are_versioned_in_hex_and_selectors_accept_them() {
    let ts = TestServer::start().await;
    let mut bp = fixture("identity.json");
    bp["metadata"] = json!({"version_label": "1.0.0", "default_run_ttl_secs": 600});
    let v1 = put(&ts, "hello", bp.clone()).await;
    assert!(v1.created);
    assert_eq!(v1.version.len(), 64);
    assert!(v1
        .version
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let again = put(&ts, "hello", bp.clone()).await;
    assert!(!again.created, "identical content is not a new version");
    assert_eq!(again.version, v1.version);

    bp["metadata"]["version_label"] = json!("2.0.0");
    let v2 = put(&ts, "hello", bp).await;
    assert!(v2.created);
    let versions = ts
        .blueprints()
        .list_versions(pb::ListVersionsRequest {
            id: "hello".into(),
            limit: 0,
        })
        .await
        .expect("versions")
        .into_inner()
        .versions;
    let hexes: Vec<_> = versions.iter().map(|v| v.version.clone()).collect();
    assert_eq!(
        hexes,
        vec![v2.version.clone(), v1.version.clone()],
        "newest first"
    );
    assert_eq!(versions[1].version_label, "1.0.0");

    let old = ts
        .blueprints()
        .get_blueprint(pb::GetBlueprintRequest {
            id: "hello".into(),
            version: v1.version.clone(),
        })
        .await
        .expect("get old")
        .into_inner();
    assert_eq!(
        from_struct(old.blueprint)["metadata"]["version_label"],
        "1.0.0"
    );

    let run = |sel| async {
        ts.tasks()
            .run_task(stored("hello", sel, json!({"input": "x"})))
            .await
            .expect("run stored")
            .into_inner()
            .task
            .expect("task")
    };
    let fixed = run(Some(Selector::Fixed(v1.version.clone()))).await;
    assert_eq!(fixed.bound_version, v1.version);
    assert_eq!(fixed.ttl_source(), pb::TtlSource::BpMetadata);
    assert_eq!(fixed.effective_ttl_secs, 600);
    let latest = run(None).await;
    assert_eq!(latest.bound_version, v2.version);
    let semver = run(Some(Selector::SemverReq("^1".into()))).await;
    assert_eq!(semver.bound_version, v1.version);

    let listed = ts
        .blueprints()
        .list_blueprints(pb::ListBlueprintsRequest {})
        .await
        .expect("list")
        .into_inner()
        .blueprints;
    let hello = listed
        .iter()
        .find(|b| b.id == "hello")
        .expect("hello listed");
    assert_eq!(hello.head_version, v2.version);
    assert!(
        listed.iter().any(|b| b.id == "main"),
        "the seed Blueprint is there too"
    );
    ts.stop().await;
}

#[tokio::test]
async fn watch_streams_a_started_task_to_its_end() {
    let ts = TestServer::start().await;
    let id = ts
        .tasks()
        .start_task(start_inline(
            fixture("identity.json"),
            json!({"input": "w"}),
        ))
        .await
        .expect("start")
        .into_inner()
        .task_id;
    let mut stream = ts
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut kinds = Vec::new();
    let collect = async {
        while let Some(item) = stream.next().await {
            let event = item.expect("event").event.expect("body");
            kinds.push(event.kind.expect("kind"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("watch ends");
    use pb::task_event::Kind;
    assert!(matches!(kinds.first(), Some(Kind::Started(_))), "{kinds:?}");
    assert!(kinds
        .iter()
        .any(|k| matches!(k, Kind::StepDispatched(s) if s.agent == "echo")));
    assert!(kinds
        .iter()
        .any(|k| matches!(k, Kind::StepFinished(s) if s.ok)));
    assert!(
        matches!(kinds.last(), Some(Kind::Completed(_))),
        "{kinds:?}"
    );
    ts.stop().await;
}

#[tokio::test]
async fn blueprints_in_the_v010_dialect_run() {
    let ts = TestServer::start().await;
    let run = |n: i64| {
        let mut tasks = ts.tasks();
        async move {
            tasks
                .run_task(inline(
                    fixture("legacy-dialect.json"),
                    json!({"n": n, "input": "old"}),
                ))
                .await
                .expect("legacy runs")
                .into_inner()
                .task
                .expect("task")
        }
    };
    let big = run(5).await;
    assert_eq!(big.state(), pb::TaskState::Completed, "{}", big.error);
    let ctx = from_value(big.final_ctx);
    assert_eq!(ctx["verdict"], "BIG");
    assert_eq!(ctx["echo"]["echoed"], "old");
    let small = from_value(run(0).await.final_ctx);
    assert_eq!(small["verdict"], "SMALL");

    let mut delegate = fixture("identity.json");
    delegate["spawner_hints"] = json!({"layers": ["operator_delegate"]});
    let err = ts
        .tasks()
        .run_task(inline(delegate, json!({})))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("operator_ref"), "{}", err.message());
    ts.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_a_useful_message() {
    let ts = TestServer::start().await;
    let mut bps = ts.blueprints();
    let mut tasks = ts.tasks();

    let err = bps
        .put_blueprint(pb::PutBlueprintRequest {
            id: "broken".into(),
            blueprint: Some(to_struct(json!({"id": "broken", "flow": {"kind": "nope"}}))),
        })
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("blueprint:"), "{}", err.message());

    let err = bps
        .put_blueprint(pb::PutBlueprintRequest {
            id: "../etc".into(),
            blueprint: Some(to_struct(fixture("identity.json"))),
        })
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = tasks
        .run_task(stored("nope", None, json!({})))
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("'nope'"), "{}", err.message());

    let v = put(&ts, "hello", fixture("identity.json")).await.version;
    let missing = "0".repeat(64);
    let err = tasks
        .run_task(stored(
            "hello",
            Some(Selector::Fixed(missing.clone())),
            json!({}),
        ))
        .await
        .expect_err("unknown version");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&missing), "{}", err.message());
    let err = bps
        .get_blueprint(pb::GetBlueprintRequest {
            id: "hello".into(),
            version: "BlueprintVersion(x)".into(),
        })
        .await
        .expect_err("debug-form version");
    assert_eq!(err.code(), Code::InvalidArgument);

    bps.archive_blueprint(pb::ArchiveBlueprintRequest { id: "hello".into() })
        .await
        .expect("archive");
    let err = tasks
        .run_task(stored("hello", None, json!({})))
        .await
        .expect_err("archived run");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("UnarchiveBlueprint"),
        "{}",
        err.message()
    );
    let err = bps
        .put_blueprint(pb::PutBlueprintRequest {
            id: "hello".into(),
            blueprint: Some(to_struct(fixture("identity.json"))),
        })
        .await
        .expect_err("archived put");
    assert_eq!(err.code(), Code::FailedPrecondition);
    bps.unarchive_blueprint(pb::UnarchiveBlueprintRequest { id: "hello".into() })
        .await
        .expect("unarchive");
    let ok = tasks
        .run_task(stored("hello", None, json!({"input": 1})))
        .await
        .expect("runs again");
    assert_eq!(ok.into_inner().task.expect("task").bound_version, v);

    let err = tasks
        .get_task(pb::GetTaskRequest {
            task_id: "task-missing".into(),
        })
        .await
        .expect_err("no task");
    assert_eq!(err.code(), Code::NotFound);
    let err = tasks
        .run_task(pb::RunTaskRequest::default())
        .await
        .expect_err("no blueprint");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut pinned = inline(fixture("identity.json"), json!({}));
    pinned.operator_sid = "op-nobody".into();
    let err = tasks.run_task(pinned).await.expect_err("unknown operator");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("CreateSession"), "{}", err.message());

    // Still serving after all of that.
    let fine = tasks
        .run_task(inline(fixture("identity.json"), json!({"input": 2})))
        .await;
    assert!(fine.is_ok());
    ts.stop().await;
}

#[tokio::test]
async fn api_token_guards_task_and_blueprint_rpcs() {
    let ts = TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        api_token: Some("s3cret-token".into()),
        ..Config::default()
    })
    .await;
    let err = ts
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());
    let mut wrong = tonic::Request::new(pb::ListBlueprintsRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("ascii"));
    let err = ts
        .blueprints()
        .list_blueprints(wrong)
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut right = tonic::Request::new(pb::ListBlueprintsRequest {});
    right.metadata_mut().insert(
        "authorization",
        "Bearer s3cret-token".parse().expect("ascii"),
    );
    assert!(ts.blueprints().list_blueprints(right).await.is_ok());
    ts.stop().await;
}

#[tokio::test]
async fn blueprints_survive_a_restart_on_the_same_data_dir() {
    let dir = temp_dir("restart");
    let config = || Config {
        storage: Storage::Dir(dir.clone()),
        ..Config::default()
    };
    let ts = TestServer::with_config(config()).await;
    let mut bp = fixture("identity.json");
    let v1 = put(&ts, "hello", bp.clone()).await.version;
    bp["metadata"] = json!({"description": "second"});
    let v2 = put(&ts, "hello", bp).await.version;
    ts.stop().await;

    let ts = TestServer::with_config(config()).await;
    let versions = ts
        .blueprints()
        .list_versions(pb::ListVersionsRequest {
            id: "hello".into(),
            limit: 10,
        })
        .await
        .expect("versions after restart")
        .into_inner()
        .versions;
    assert_eq!(
        versions
            .iter()
            .map(|v| v.version.clone())
            .collect::<Vec<_>>(),
        vec![v2, v1.clone()]
    );
    let task = ts
        .tasks()
        .run_task(stored(
            "hello",
            Some(Selector::Fixed(v1.clone())),
            json!({"input": "again"}),
        ))
        .await
        .expect("run after restart")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(task.state(), pb::TaskState::Completed);
    ts.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cancel_stops_a_running_flow_and_deadlines_are_honoured() {
    let ts = TestServer::start().await;
    let mut tasks = ts.tasks();
    let mut req = tonic::Request::new(inline(fixture("endless.json"), json!({})));
    req.set_timeout(Duration::from_secs(3));
    let err = tasks.run_task(req).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("still running"), "{}", err.message());
    let running = tasks
        .list_tasks(pb::ListTasksRequest {
            state: pb::TaskState::Running as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(running.len(), 1);
    let id = running[0].task_id.clone();
    let cancelled = tasks
        .cancel_task(pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: "enough".into(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(cancelled.state(), pb::TaskState::Cancelled);
    assert_eq!(cancelled.error, "enough");
    let err = tasks
        .cancel_task(pb::CancelTaskRequest {
            task_id: id,
            reason: String::new(),
        })
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        ts.server.host.state_sizes().await.total(),
        0,
        "cancelled flow freed"
    );
    ts.stop().await;
}

#[tokio::test]
async fn engine_state_stays_flat_over_2000_tasks() {
    let ts = TestServer::start().await;
    let bp = fixture("identity.json");
    let mut handles = Vec::new();
    for worker in 0..8 {
        let mut tasks = ts.tasks();
        let bp = bp.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..250 {
                let t = tasks
                    .run_task(inline(bp.clone(), json!({"input": worker * 1000 + i})))
                    .await
                    .expect("run")
                    .into_inner()
                    .task
                    .expect("task");
                assert_eq!(t.state(), pb::TaskState::Completed);
            }
        }));
    }
    for h in handles {
        h.await.expect("worker");
    }
    let sizes = ts.server.host.state_sizes().await;
    assert_eq!(sizes.total(), 0, "engine state after 2000 tasks: {sizes:?}");
    assert_eq!(ts.server.host.tasks().len().await.expect("len"), 2000);
    ts.stop().await;
}
