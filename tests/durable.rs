//! Durable tasks and runs: real `mse-grpc` child processes on a temp data dir, killed
//! with SIGKILL (`Child::kill`) and started again on the same dir.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{authed, fixture, start_inline, temp_dir, C, S};
use futures::StreamExt;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

/// A server child process on `dir`.
struct Proc {
    child: Child,
    channel: Channel,
}

impl Proc {
    /// Starts the binary on `dir` with `extra` flags and waits until it serves.
    async fn start(dir: &Path, extra: &[&str]) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env_remove("MSE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mse-grpc");
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        // From here on, Drop kills and reaps the child whatever happens.
        let proc = Proc { child, channel };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut health = tonic_health::pb::health_client::HealthClient::new(proc.channel.clone());
        loop {
            let req = tonic_health::pb::HealthCheckRequest::default();
            if let Ok(r) = health.check(req).await {
                if r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return proc;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server on {} never served",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap.
    fn kill(self) {
        drop(self);
    }

    fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    async fn get(&self, id: &str) -> pb::Task {
        let req = pb::GetTaskRequest { task_id: id.into() };
        let resp = self.tasks().get_task(req).await.expect("get task");
        resp.into_inner().task.expect("task")
    }

    /// Polls until the task is in `state` (bounded).
    async fn wait_state(&self, id: &str, state: pb::TaskState) -> pb::Task {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.get(id).await;
            if t.state() == state {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{id} stuck in {:?}: {}",
                t.state(),
                t.error
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_dir(tag: &str) -> PathBuf {
    temp_dir(tag).join("data")
}

#[tokio::test]
async fn a_corrupt_store_file_fails_the_boot_naming_the_file() {
    let dir = data_dir("corrupt");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("tasks.sqlite"), vec![0x5a; 8192]).expect("garbage");
    let out = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a corrupt store must fail the boot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tasks.sqlite"), "{err}");
}

#[tokio::test]
async fn finished_tasks_are_read_listed_and_watched_after_a_kill() {
    let dir = data_dir("finished");
    let server = Proc::start(&dir, &[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let req: pb::RunTaskRequest = common::inline(fixture("identity.json"), json!({"input": i}));
        let t = server
            .tasks()
            .run_task(req)
            .await
            .expect("run")
            .into_inner();
        let t = t.task.expect("task");
        assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
        ids.push(t.task_id);
    }
    server.kill();
    let server = Proc::start(&dir, &[]).await;
    for (i, id) in ids.iter().enumerate() {
        let t = server.get(id).await;
        assert_eq!(t.state(), pb::TaskState::Completed);
        let ctx = common::from_value(t.final_ctx);
        assert_eq!(ctx["output"]["echoed"], json!(i.to_string()), "{ctx}");
        assert_eq!(t.runs.len(), 1);
        assert_eq!(t.runs[0].end(), pb::RunEnd::Completed);
    }
    let listed = server
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tasks.len(), 3);
    let events: Vec<_> = server
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            task_id: ids[0].clone(),
        })
        .await
        .expect("watch")
        .into_inner()
        .map(|e| e.expect("event").event.expect("event").seq)
        .collect()
        .await;
    assert_eq!(
        events,
        vec![1, 2, 3, 4],
        "started, dispatched, finished, completed"
    );
    server.kill();
}

#[tokio::test]
async fn manual_mode_waits_for_resume_task_and_rerun_task_runs_again_from_a_step() {
    let dir = data_dir("manual");
    let server = Proc::start(&dir, &[]).await;
    let started = server
        .tasks()
        .start_task(start_inline(fixture("endless.json"), json!({})))
        .await
        .expect("start")
        .into_inner();
    let id = started.task_id;
    // Let the loop journal some steps.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(&id).await.step_count < 20 {
        assert!(Instant::now() < deadline, "the loop never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();

    let server = Proc::start(&dir, &["--resume-interrupted", "manual"]).await;
    let t = server.get(&id).await;
    assert_eq!(t.state(), pb::TaskState::Interrupted);
    assert_eq!(t.error, "server restart");
    assert_eq!(t.runs.len(), 1);
    assert_eq!(t.runs[0].end(), pb::RunEnd::Interrupted);

    let rerun_running = pb::RerunTaskRequest {
        task_id: id.clone(),
        from_step: "nope".into(),
    };
    let err = server
        .tasks()
        .rerun_task(rerun_running)
        .await
        .expect_err("unknown step");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("echo"), "{}", err.message());

    let resumed = server
        .tasks()
        .resume_task(pb::ResumeTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("resume")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(resumed.state(), pb::TaskState::Running);
    assert_eq!(resumed.runs.len(), 2);
    assert_eq!(resumed.runs[1].start(), pb::RunStart::Resume);
    // At least the 20 steps dispatched before the kill, less the one in flight.
    assert!(
        resumed.runs[1].replayed_steps >= 19,
        "{:?}",
        resumed.runs[1]
    );

    let again = server
        .tasks()
        .resume_task(pb::ResumeTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect_err("running");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("RUNNING"), "{}", again.message());

    let cancel = pb::CancelTaskRequest {
        task_id: id.clone(),
        reason: "enough".into(),
    };
    server.tasks().cancel_task(cancel).await.expect("cancel");
    let rerun = server
        .tasks()
        .rerun_task(pb::RerunTaskRequest {
            task_id: id.clone(),
            from_step: "echo".into(),
        })
        .await
        .expect("rerun")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(rerun.state(), pb::TaskState::Running);
    assert_eq!(rerun.runs.len(), 3);
    assert_eq!(rerun.runs[2].start(), pb::RunStart::Rerun);
    assert_eq!(rerun.runs[2].from_step, "echo");
    assert_eq!(rerun.runs[2].replayed_steps, 0, "cut at the first echo");
    server.kill();
}

/// A scripted operator holding the role `remote`: answers every spawn with the step's
/// prompt upper-cased, counting spawns per (task, agent).
struct Operator {
    tx: tokio::sync::mpsc::Sender<pb::ClientFrame>,
    rx: tonic::Streaming<pb::ServerFrame>,
    workers: WorkerServiceClient<Channel>,
}

impl Operator {
    async fn join(server: &Proc) -> (Operator, pb::CreateSessionResponse) {
        let mut ops = OperatorServiceClient::new(server.channel.clone());
        let created = ops
            .create_session(pb::CreateSessionRequest {
                roles: vec!["remote".into()],
            })
            .await
            .expect("session")
            .into_inner();
        (Operator::attach(server, &created).await, created)
    }

    /// Connects to the session `created` (which survives a restart).
    async fn attach(server: &Proc, created: &pb::CreateSessionResponse) -> Operator {
        let mut ops = OperatorServiceClient::new(server.channel.clone());
        let (tx, out) = tokio::sync::mpsc::channel(1024);
        let hello = pb::Hello {
            sid: created.sid.clone(),
            last_seq: 0,
        };
        tx.send(pb::ClientFrame {
            body: Some(C::Hello(hello)),
        })
        .await
        .expect("hello");
        let stream = tokio_stream::wrappers::ReceiverStream::new(out);
        let mut rx = ops
            .connect(authed(stream, &created.token))
            .await
            .expect("connect")
            .into_inner();
        let first = rx.message().await.expect("welcome").expect("frame");
        assert!(matches!(first.body, Some(S::Welcome(_))), "{first:?}");
        Operator {
            tx,
            rx,
            workers: WorkerServiceClient::new(server.channel.clone()),
        }
    }

    async fn send(&self, body: C) {
        let _ = self.tx.send(pb::ClientFrame { body: Some(body) }).await;
    }

    /// The next spawn (other frames acked), or None when the stream ends.
    async fn next_spawn(&mut self) -> Option<pb::Spawn> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
                .await
                .expect("a frame in time")
                .ok()??;
            self.send(C::Ack(pb::Ack { seq: frame.seq })).await;
            match frame.body {
                Some(S::Ping(p)) => self.send(C::Pong(pb::Pong { nonce: p.nonce })).await,
                Some(S::Spawn(s)) => return Some(s),
                _ => {}
            }
        }
    }

    /// Does the worker's part of a spawn and acks it.
    async fn answer(&mut self, spawn: &pb::Spawn) {
        let prompt = self
            .workers
            .get_prompt(authed(
                pb::GetPromptRequest {
                    step_id: spawn.step_id.clone(),
                },
                &spawn.worker_handle,
            ))
            .await
            .expect("prompt")
            .into_inner();
        let body = format!("{}+{}", prompt.prompt, spawn.agent);
        self.workers
            .submit(authed(
                pb::SubmitRequest {
                    body,
                    outcome: pb::SubmitOutcome::Pass as i32,
                    step_id: String::new(),
                },
                &spawn.worker_handle,
            ))
            .await
            .expect("submit");
        self.send(C::SpawnAck(pb::SpawnAck {
            req_id: spawn.req_id.clone(),
            ..Default::default()
        }))
        .await;
    }
}

#[tokio::test]
async fn an_operator_flow_killed_after_step_two_completes_without_dispatching_steps_again() {
    let dir = data_dir("operator");
    let server = Proc::start(&dir, &[]).await;
    let (mut op, session) = Operator::join(&server).await;
    let id = server
        .tasks()
        .start_task(start_inline(
            fixture("five-steps.json"),
            json!({"input": "x"}),
        ))
        .await
        .expect("start")
        .into_inner()
        .task_id;
    let mut spawns: HashMap<String, u32> = HashMap::new();
    loop {
        let s = op.next_spawn().await.expect("spawn");
        *spawns.entry(s.agent.clone()).or_default() += 1;
        if s.agent == "s3" {
            // Steps 1 and 2 are acked and journaled; step 3 is in flight.
            break;
        }
        op.answer(&s).await;
    }
    drop(op);
    server.kill();

    let server = Proc::start(&dir, &[]).await;
    let t = server.get(&id).await;
    assert_eq!(
        t.state(),
        pb::TaskState::Interrupted,
        "waits for its operator"
    );
    // The session and its role survived the restart; its stream resumes the task.
    let mut op = Operator::attach(&server, &session).await;
    loop {
        let s = op.next_spawn().await.expect("spawn");
        *spawns.entry(s.agent.clone()).or_default() += 1;
        op.answer(&s).await;
        if s.agent == "s5" {
            break;
        }
    }
    let done = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(spawns["s1"], 1, "{spawns:?}");
    assert_eq!(spawns["s2"], 1, "{spawns:?}");
    assert_eq!(spawns["s3"], 2, "the step in flight runs again: {spawns:?}");
    assert_eq!(spawns["s4"], 1, "{spawns:?}");
    assert_eq!(spawns["s5"], 1, "{spawns:?}");
    let ctx = common::from_value(done.final_ctx);
    assert!(
        ctx["o5"].as_str().is_some_and(|s| s.contains("s5")),
        "{ctx}"
    );
    assert_eq!(done.runs.len(), 2);
    assert_eq!(done.runs[1].start(), pb::RunStart::Resume);
    assert_eq!(done.runs[1].replayed_steps, 2);
    server.kill();
}
