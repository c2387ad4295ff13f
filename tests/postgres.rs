//! `--database-url`: tasks, their events and results, runs, the replay journal and
//! operator sessions kept in PostgreSQL survive a `kill -9` of the server. Real
//! `mse-grpc` child processes against a throwaway PostgreSQL cluster (`common::postgres`:
//! skipped, saying so, only when the PostgreSQL binaries are absent).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::child::{
    finished_tasks_survive_a_kill, operator_flow_resumes_after_a_kill, tasks_survive_kills,
    Operator, Proc, TaskEventBody,
};
use common::nats::NatsServer;
use common::postgres::{bounded, Postgres, Scratch};
use common::{fixture, start_inline, Op};
use futures::StreamExt;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::blueprint_service_client::BlueprintServiceClient;
use mlua_swarm_grpc::pb::v1::data_service_client::DataServiceClient;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use serde_json::json;

/// Nothing of the system of record was written under the data dir.
fn assert_no_sqlite_stores(dir: &Path) {
    for file in [
        "tasks.sqlite",
        "runs.sqlite",
        "journal.sqlite",
        "sessions.sqlite",
    ] {
        assert!(
            !dir.join(file).exists(),
            "{file} written beside --database-url"
        );
    }
}

#[tokio::test]
async fn finished_tasks_their_events_and_results_survive_a_kill() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-finished");
    bounded(120, async {
        let url = pg.database().await;
        finished_tasks_survive_a_kill(&dir, &["--database-url", &url]).await;
        assert_no_sqlite_stores(&dir);
    })
    .await;
}

#[tokio::test]
async fn an_operator_flow_killed_after_step_two_completes_without_dispatching_steps_again() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-operator");
    bounded(120, async {
        let url = pg.database().await;
        let flags = ["--database-url", url.as_str()];
        operator_flow_resumes_after_a_kill(&dir, &flags).await;
        assert_no_sqlite_stores(&dir);
        // The workers' results (data outputs) are in the database too.
        let server = Proc::start(&dir, &flags).await;
        let got = DataServiceClient::new(server.channel.clone())
            .get(pb::GetRequest { key: "s5".into() })
            .await
            .expect("the last step's output")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(got.producer_agent, "s5");
        server.kill();
    })
    .await;
}

#[tokio::test]
async fn a_session_its_token_and_its_roles_survive_a_kill() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-sessions");
    bounded(120, async {
        let url = pg.database().await;
        let flags = ["--database-url", url.as_str()];
        let first = Proc::start(&dir, &flags).await;
        let mut ops = OperatorServiceClient::new(first.channel.clone());
        let created = ops
            .create_session(pb::CreateSessionRequest {
                roles: vec!["remote".into(), "lead".into()],
            })
            .await
            .expect("create session")
            .into_inner();
        let op = Op::connect_on(&first.channel, &created.sid, &created.token, 0)
            .await
            .expect("connect");
        assert_eq!(op.welcome.epoch, 1);
        // The attach epoch is written behind; once stored, the restart steps past it.
        let stored = format!("SELECT epoch FROM sessions WHERE sid = '{}'", created.sid);
        assert_eq!(Postgres::wait_for(&url, &stored, |e| e == 1).await, 1);
        drop(op);
        first.kill();

        let second = Proc::start(&dir, &flags).await;
        let mut ops = OperatorServiceClient::new(second.channel.clone());
        let listed = ops
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .expect("list")
            .into_inner();
        let sids: Vec<&str> = listed.sessions.iter().map(|s| s.sid.as_str()).collect();
        assert_eq!(sids, [created.sid.as_str()]);
        let op = Op::connect_on(&second.channel, &created.sid, &created.token, 0)
            .await
            .expect("the same sid + token connect after the restart");
        assert!(op.welcome.server_restarted, "{:?}", op.welcome);
        assert!(op.welcome.epoch > 1, "{:?}", op.welcome);
        assert_eq!(op.welcome.roles, ["remote", "lead"]);
        let wrong = Op::connect_on(&second.channel, &created.sid, "0123456789abcdef", 0).await;
        assert_eq!(
            wrong.err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let clash = ops
            .create_session(pb::CreateSessionRequest {
                roles: vec!["lead".into()],
            })
            .await;
        assert_eq!(
            clash.err().map(|s| s.code()),
            Some(tonic::Code::AlreadyExists),
            "the role is still held"
        );
        second.kill();
        assert_no_sqlite_stores(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_stopped_database_fails_the_boot_naming_it_without_its_password() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-down");
    bounded(120, async {
        pg.database().await;
        let url = format!(
            "postgres://postgres:hunter2-secret@127.0.0.1:{}/postgres",
            pg.port
        );
        pg.stop();
        let out = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&*dir)
            .args(["--database-url", &url])
            .env_remove("MSE_CONFIG")
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "an unreachable database fails the boot"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot reach the database"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{}", pg.port)), "{err}");
        assert!(err.contains("--database-url"), "says what to fix: {err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
        assert!(!err.contains("panicked"), "{err}");

        let out = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
            .args(["serve", "--bind", "127.0.0.1:0", "--ephemeral"])
            .args(["--database-url", &url])
            .env_remove("MSE_CONFIG")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("--ephemeral"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_database_outage_refuses_new_tasks_and_the_end_of_a_running_one_is_retried() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-outage");
    bounded(240, async {
        let url = pg.database().await;
        let flags = ["--database-url", url.as_str()];
        let server = Proc::start(&dir, &flags).await;
        let (mut op, _session) = Operator::join(&server).await;
        let id = server
            .start_flow("five-steps.json", json!({"input": "job"}))
            .await;
        let spawn = op.answer_until("s5", &mut Default::default()).await;

        pg.stop();
        eprintln!("outage: database stopped");
        let refused = server
            .tasks()
            .start_task(start_inline(fixture("identity.json"), json!({"input": 1})))
            .await
            .expect_err("no new task while the database is down");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(!refused.message().contains("postgres://"), "{refused:?}");
        // The operator answers the last step while the database is down: the task's
        // writes (the step's end, the task's end) wait for it.
        op.answer(&spawn).await;
        eprintln!("outage: s5 answered");
        let mut watch = server
            .tasks()
            .watch_task(pb::WatchTaskRequest {
                task_id: id.clone(),
            })
            .await
            .expect("watch")
            .into_inner();
        let mut finished = 0;
        while finished < 5 {
            let event = watch.message().await.expect("event").expect("open");
            let kind = event.event.and_then(|e| e.kind);
            if matches!(kind, Some(pb::task_event::Kind::StepFinished(_))) {
                finished += 1;
            }
        }
        drop(watch);
        eprintln!("outage: s5 finished in memory");
        pg.start_again();
        eprintln!("outage: database started again");
        let stored = format!(
            "SELECT count(*) FROM tasks WHERE task_id = '{id}' AND finished_ms IS NOT NULL"
        );
        assert_eq!(
            Postgres::wait_for(&url, &stored, |n| n == 1).await,
            1,
            "the end was written once the database was back"
        );
        server.kill();
        let server = Proc::start(&dir, &flags).await;
        assert_eq!(server.get(&id).await.state(), pb::TaskState::Completed);
        server
            .run_completed("identity.json", json!({"input": 2}))
            .await;
        server.kill();
    })
    .await;
}

/// `identity.json` as the Blueprint `hello`, its step and agent named `name`.
fn hello(name: &str) -> prost_types::Struct {
    let text = fixture("identity.json")
        .to_string()
        .replace("\"echo\"", &format!("\"{name}\""));
    common::to_struct(serde_json::from_str(&text).expect("json"))
}

async fn put(server: &Proc, name: &str) -> Result<pb::PutBlueprintResponse, tonic::Status> {
    let req = pb::PutBlueprintRequest {
        id: "hello".into(),
        blueprint: Some(hello(name)),
    };
    BlueprintServiceClient::new(server.channel.clone())
        .put_blueprint(req)
        .await
        .map(|r| r.into_inner())
}

async fn head(server: &Proc) -> String {
    let req = pb::GetBlueprintRequest {
        id: "hello".into(),
        version: String::new(),
    };
    let got = BlueprintServiceClient::new(server.channel.clone())
        .get_blueprint(req)
        .await
        .expect("get blueprint");
    got.into_inner().version
}

#[tokio::test]
async fn blueprints_live_in_the_database_and_a_write_from_a_stale_head_is_aborted() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (Scratch::new("pg-bp-a"), Scratch::new("pg-bp-b"));
    bounded(120, async {
        let url = pg.database().await;
        let flags = ["--database-url", url.as_str()];
        let a = Proc::start(&dir_a, &flags).await;
        let v1 = put(&a, "first").await.expect("put v1").version;
        assert_eq!(head(&a).await, v1, "a reads (and keeps) the head");
        // A second server on the same database moves the head.
        let b = Proc::start(&dir_b, &flags).await;
        let v2 = put(&b, "second").await.expect("put v2");
        assert!(v2.created);
        let stale = put(&a, "third")
            .await
            .expect_err("a wrote from the head it read");
        assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");
        assert!(stale.message().contains(&v2.version), "{stale:?}");
        let v3 = put(&a, "third")
            .await
            .expect("the retry reads the new head")
            .version;
        let versions = BlueprintServiceClient::new(b.channel.clone())
            .list_versions(pb::ListVersionsRequest {
                id: "hello".into(),
                limit: 0,
            })
            .await
            .expect("versions")
            .into_inner();
        let listed: Vec<&str> = versions
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect();
        assert_eq!(listed, [v3.as_str(), v2.version.as_str(), v1.as_str()]);
        let live = "SELECT count(*) FROM replicas WHERE heartbeat_at > now() - interval '15 s'";
        assert_eq!(Postgres::wait_for(&url, live, |n| n == 2).await, 2);
        a.kill();
        b.kill();
        let log = std::fs::read_to_string(dir_b.with_extension("log")).expect("b's log");
        assert!(log.contains("another server uses this database"), "{log}");

        let a = Proc::start(&dir_a, &flags).await;
        assert_eq!(head(&a).await, v3);
        let req = common::stored("hello", None, json!({"input": "x"}));
        let t = a.tasks().run_task(req).await.expect("run").into_inner();
        assert_eq!(t.task.expect("task").state(), pb::TaskState::Completed);
        a.kill();
        assert!(
            !dir_a.join("blueprints").exists(),
            "no git store beside --database-url"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_survive_five_kills_and_no_completed_step_is_dispatched_twice() {
    let Some(pg) = Postgres::start() else { return };
    let dir = Scratch::new("pg-kills");
    bounded(300, async {
        let url = pg.database().await;
        tasks_survive_kills(&dir, &["--database-url", &url]).await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_claims_of_one_role_leave_exactly_one_holder() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (Scratch::new("pg-role-a"), Scratch::new("pg-role-b"));
    bounded(120, async {
        let url = pg.database().await;
        let flags = ["--database-url", url.as_str()];
        // Two servers on one database: the database decides.
        let servers = [
            Proc::start(&dir_a, &flags).await,
            Proc::start(&dir_b, &flags).await,
        ];
        let claims = (0..16).map(|i| {
            let mut ops = OperatorServiceClient::new(servers[i % 2].channel.clone());
            async move {
                ops.create_session(pb::CreateSessionRequest {
                    roles: vec!["lead".into(), format!("r{i}")],
                })
                .await
            }
        });
        let results = futures::future::join_all(claims).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for lost in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(lost.code(), tonic::Code::AlreadyExists, "{lost:?}");
        }
        // Each server lists the sessions it created (one hub per process in this phase).
        let mut listed = 0;
        for server in &servers {
            listed += OperatorServiceClient::new(server.channel.clone())
                .list_sessions(pb::ListSessionsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .sessions
                .len();
        }
        assert_eq!(listed, 1, "a refused claim stores nothing");
    })
    .await;
}

#[tokio::test]
async fn an_operator_attached_to_one_replica_serves_a_task_started_on_another() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (Scratch::new("pg-x-a"), Scratch::new("pg-x-b"));
    bounded(120, async {
        let nats = NatsServer::start();
        let (url, nats_url) = (pg.database().await, nats.url());
        let flags = [
            "--database-url",
            url.as_str(),
            "--nats-url",
            nats_url.as_str(),
            // Every replica signs capability tokens with the same secret.
            "--token-secret",
            "5eed5eed5eed5eed5eed5eed5eed5eed",
        ];
        let a = Proc::start(&dir_a, &flags).await;
        let b = Proc::start(&dir_b, &flags).await;
        // The session is created and attached on A; its record is in the database, and B
        // learns of it from the attach announcement.
        let (op, _session) = Operator::join(&a).await;
        // Frames cross over NATS. The worker calls go to A, which did not mint the
        // handles: A relays them to B, the replica running the steps.
        let mut op = op.workers_on(&a);
        // B routes to the seat once the announcement reached it.
        let req = start_inline(fixture("five-steps.json"), json!({"input": "x"}));
        let id = b.start_once_seated(req).await;
        // A follows the task B runs: it reads it from the database, polled.
        let followed = tokio::spawn({
            let a = a.channel.clone();
            let id = id.clone();
            async move {
                let mut tasks = TaskServiceClient::new(a);
                let req = pb::WatchTaskRequest { task_id: id };
                let stream = tasks.watch_task(req).await.expect("watch on A");
                let events: Vec<_> = stream.into_inner().collect().await;
                events
                    .into_iter()
                    .map(|e| e.expect("event").event.expect("event").kind.expect("kind"))
                    .collect::<Vec<_>>()
            }
        });
        let mut seen = HashMap::new();
        loop {
            let s = op.next_spawn().await.expect("a spawn through A");
            assert_eq!(s.task_id, id);
            *seen.entry(s.agent.clone()).or_insert(0) += 1;
            op.answer(&s).await;
            if s.agent == "s5" {
                break;
            }
        }
        let done = b.wait_state(&id, pb::TaskState::Completed).await;
        let ctx = common::from_value(done.final_ctx);
        assert!(
            ctx["o5"].as_str().is_some_and(|s| s.ends_with("+s5")),
            "{ctx}"
        );
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        // Any replica answers for any task: A reads, lists and replays what B ran.
        assert_eq!(a.get(&id).await.state(), pb::TaskState::Completed);
        let states = a.states().await;
        assert_eq!(
            states.get(&id),
            Some(&pb::TaskState::Completed),
            "{states:?}"
        );
        let events = followed.await.expect("the watch on A");
        let dispatched = events
            .iter()
            .filter(|e| matches!(e, TaskEventBody::StepDispatched(_)))
            .count();
        assert_eq!(dispatched, 5, "{events:?}");
        assert!(
            matches!(events.last(), Some(TaskEventBody::Completed(_))),
            "{events:?}"
        );
        // A reruns from step 4 the task B ran: A takes its lease, the journal answers
        // steps 1-3, and B reads the second run from the database.
        let rerun = pb::RerunTaskRequest {
            task_id: id.clone(),
            from_step: "s4".into(),
        };
        a.tasks().rerun_task(rerun).await.expect("rerun on A");
        for agent in ["s4", "s5"] {
            let s = op.next_spawn().await.expect("a spawn of the rerun");
            assert_eq!((s.task_id.as_str(), s.agent.as_str()), (id.as_str(), agent));
            op.answer(&s).await;
        }
        let again = b.wait_state(&id, pb::TaskState::Completed).await;
        assert_eq!(again.runs.len(), 2, "{:?}", again.runs);
        assert_eq!(again.runs[1].replayed_steps, 3, "{:?}", again.runs);
        a.kill();
        b.kill();
    })
    .await;
}
