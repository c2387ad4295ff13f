//! Operator sessions across a `kill -9` (issue 11, test c): real `mse-grpc` child processes
//! on a temp data dir, killed with SIGKILL and started again on the same dir.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{authed, fixture, start_inline, temp_dir, Op};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::transport::{Channel, Endpoint};

const DISPATCHED_AGAIN: &str =
    "this step was dispatched again after a restart; use the new spawn's credentials";

/// One `mse-grpc serve` child process, killed with SIGKILL when dropped.
struct Server {
    child: Child,
    base: String,
    channel: Channel,
}

impl Server {
    /// Starts `mse-grpc serve` with `storage` flags and waits until health says SERVING.
    async fn start(storage: &[&str]) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
            .arg("serve")
            .args(storage)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mse-grpc");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            if let Some(ch) = serving(&base).await {
                break ch;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Server {
            child,
            base,
            channel,
        }
    }

    async fn durable(dir: &Path) -> Server {
        Server::start(&["--data-dir", dir.to_str().expect("utf-8 path")]).await
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    fn operators(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    async fn create_session(
        &self,
        roles: &[&str],
    ) -> Result<pb::CreateSessionResponse, tonic::Status> {
        let req = pb::CreateSessionRequest {
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        self.operators()
            .create_session(req)
            .await
            .map(|r| r.into_inner())
    }

    async fn session_ids(&self) -> Vec<String> {
        let list = self
            .operators()
            .list_sessions(pb::ListSessionsRequest::default())
            .await;
        let sessions = list.expect("list sessions").into_inner().sessions;
        sessions.into_iter().map(|s| s.sid).collect()
    }

    /// Starts a one-step operator task routed to the seat `remote`.
    async fn start_task(&self) {
        let req = start_inline(fixture("operator.json"), json!({ "input": "job" }));
        self.tasks().start_task(req).await.expect("start task");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel to `base` if its health check says SERVING.
async fn serving(base: &str) -> Option<Channel> {
    let ch = Endpoint::from_shared(base.to_string())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let req = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let status = health.check(req).await.ok()?.into_inner().status;
    (status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32).then_some(ch)
}

#[tokio::test]
async fn a_session_its_token_and_its_roles_survive_kill_9() {
    let dir = temp_dir("durable-sessions");
    let first = Server::durable(&dir).await;
    let created = first
        .create_session(&["remote"])
        .await
        .expect("create session");
    let mut op = Op::connect_on(&first.channel, &created.sid, &created.token, 0)
        .await
        .expect("connect");
    assert_eq!(op.welcome.epoch, 1);
    assert!(
        !op.welcome.server_restarted,
        "a first attach is not after a restart"
    );
    first.start_task().await;
    let spawn = op.until_spawn().await;
    let handle = spawn.worker_handle.clone();
    let prompt = pb::GetPromptRequest {
        step_id: spawn.step_id.clone(),
    };
    first
        .workers()
        .get_prompt(authed(prompt.clone(), &handle))
        .await
        .expect("the handle works before the restart");
    drop(op);
    first.kill_9();

    let second = Server::durable(&dir).await;
    assert_eq!(
        second.session_ids().await,
        vec![created.sid.clone()],
        "ListSessions"
    );
    let op = Op::connect_on(&second.channel, &created.sid, &created.token, 0)
        .await
        .expect("the same sid + token connect after the restart");
    assert!(op.welcome.server_restarted, "{:?}", op.welcome);
    assert!(
        op.welcome.epoch > 1,
        "epoch past the stored one: {:?}",
        op.welcome
    );
    assert_eq!(op.welcome.roles, vec!["remote".to_string()]);
    let wrong = Op::connect_on(&second.channel, &created.sid, "0123456789abcdef", 0).await;
    assert_eq!(
        wrong.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let clash = second.create_session(&["remote"]).await;
    assert_eq!(
        clash.err().map(|s| s.code()),
        Some(tonic::Code::AlreadyExists),
        "the role is still held"
    );

    let old = second.workers().get_prompt(authed(prompt, &handle)).await;
    let status = old.expect_err("an old handle never succeeds");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), DISPATCHED_AGAIN);
    let submit = pb::SubmitRequest {
        body: "late".into(),
        outcome: pb::SubmitOutcome::Pass as i32,
        step_id: String::new(),
    };
    let old = second.workers().submit(authed(submit, &handle)).await;
    assert_eq!(
        old.expect_err("refused").code(),
        tonic::Code::FailedPrecondition
    );
    let http = reqwest::Client::new();
    let resp = http
        .get(format!(
            "{}/v1/worker/prompt?task_id={}",
            second.base, spawn.step_id
        ))
        .bearer_auth(&handle)
        .send()
        .await
        .expect("http prompt");
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], DISPATCHED_AGAIN);

    let last_epoch = op.welcome.epoch;
    drop(op);
    let again = Op::connect_on(&second.channel, &created.sid, &created.token, 0)
        .await
        .expect("reconnect");
    assert!(
        !again.welcome.server_restarted,
        "only the first attach after a restart says so"
    );
    assert!(again.welcome.epoch > last_epoch);
}

/// A client that acknowledges only what it handled (the web console) resumes with a
/// `last_seq` below seqs it holds: frames after the restart must not reuse any of them,
/// although the seq marks are written behind and the kill comes right after the frames.
#[tokio::test]
async fn no_seq_a_client_saw_comes_again_after_kill_9() {
    let dir = temp_dir("durable-seqs");
    let first = Server::durable(&dir).await;
    let created = first.create_session(&["remote"]).await.expect("session");
    let mut op = Op::connect_on(&first.channel, &created.sid, &created.token, 0)
        .await
        .expect("connect");
    for _ in 0..3 {
        first.start_task().await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(op.next().await.seq);
    }
    first.kill_9();

    let second = Server::durable(&dir).await;
    let mut op = Op::connect_on(&second.channel, &created.sid, &created.token, 0)
        .await
        .expect("the session resumes with nothing acknowledged");
    assert!(op.welcome.server_restarted, "{:?}", op.welcome);
    second.start_task().await;
    let first_frame = op.next().await;
    let held = seen.iter().max().copied().unwrap_or_default();
    assert!(
        first_frame.seq > held,
        "seq {} after the restart; the client holds {seen:?}",
        first_frame.seq
    );
}

#[tokio::test]
async fn a_v010_websocket_client_reconnects_with_its_token_after_kill_9() {
    let dir = temp_dir("durable-ws");
    let first = Server::durable(&dir).await;
    let http = reqwest::Client::new();
    let (sid, token) = common::legacy_login(&http, &first.base, &["remote"]).await;
    drop(ws(&first.base, &sid, &token).await);
    first.kill_9();

    let second = Server::durable(&dir).await;
    let mut socket = ws(&second.base, &sid, &token).await;
    second.start_task().await;
    let hook = common::next_json(&mut socket).await;
    assert_eq!(hook["type"], "hook_before", "v0.1.0 JSON as before: {hook}");
    assert_eq!(hook["agent"], "worker");
}

#[tokio::test]
async fn an_ephemeral_restart_forgets_every_session() {
    let first = Server::start(&["--ephemeral"]).await;
    let created = first
        .create_session(&["remote"])
        .await
        .expect("create session");
    first.kill_9();
    let second = Server::start(&["--ephemeral"]).await;
    assert!(second.session_ids().await.is_empty());
    let gone = Op::connect_on(&second.channel, &created.sid, &created.token, 0).await;
    assert_eq!(gone.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    second
        .create_session(&["remote"])
        .await
        .expect("the role is free again");
}

#[tokio::test]
async fn a_damaged_session_store_fails_the_boot_naming_the_file() {
    let dir = temp_dir("durable-damaged");
    std::fs::write(dir.join("sessions.sqlite"), b"not a database ".repeat(300)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
        .args([
            "serve",
            "--data-dir",
            dir.to_str().expect("utf-8"),
            "--bind",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mse-grpc");
    assert!(
        !out.status.success(),
        "an unreadable store must not boot an empty server"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sessions.sqlite"), "{stderr}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A v0.1.0 WebSocket connect with `Authorization: Bearer`.
async fn ws(base: &str, sid: &str, token: &str) -> Ws {
    let url = format!("{}/v1/operators/{sid}/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().expect("request");
    let bearer = format!("Bearer {token}").parse().expect("header");
    req.headers_mut().insert("authorization", bearer);
    tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect after restart")
        .0
}
