//! Test harness: a real server on an ephemeral loopback port, and generated clients.

#![allow(dead_code, unreachable_pub)]

pub mod child;
pub mod cluster;
pub mod nats;
pub mod pki;
pub mod postgres;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::grpc::convert::{json_to_struct, struct_to_json};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::blueprint_service_client::BlueprintServiceClient;
use mlua_swarm_grpc::pb::v1::data_service_client::DataServiceClient;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use mlua_swarm_grpc::server::{self, RunningServer};
use mlua_swarm_operator as sdk;
use serde_json::Value;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A running server and a channel to it.
pub struct TestServer {
    pub server: RunningServer,
    pub channel: Channel,
}

impl TestServer {
    /// An ephemeral (in-memory) server with default settings.
    pub async fn start() -> Self {
        Self::with_config(Config {
            storage: Storage::Ephemeral,
            ..Config::default()
        })
        .await
    }

    /// A server with `config` (its bind address is replaced by an ephemeral port).
    pub async fn with_config(config: Config) -> Self {
        Self::connect(config, None).await
    }

    /// A TLS server with `config` (whose `tls` must be set), reached with `tls`.
    pub async fn with_tls(config: Config, tls: ClientTlsConfig) -> Self {
        Self::connect(config, Some(tls)).await
    }

    async fn connect(config: Config, tls: Option<ClientTlsConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let server = server::spawn(listener, config)
            .await
            .expect("server starts");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", server.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).expect("client tls config");
        }
        let channel = endpoint.connect().await.expect("connect");
        let ts = TestServer { server, channel };
        ts.wait_serving().await;
        ts
    }

    /// Polls health until SERVING (bounded).
    pub async fn wait_serving(&self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let req = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(resp) = health.check(req).await {
                if resp.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became SERVING");
            tokio::task::yield_now().await;
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.server.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.server.addr)
    }

    pub fn blueprints(&self) -> BlueprintServiceClient<Channel> {
        BlueprintServiceClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    pub fn operators(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(self.channel.clone())
    }

    /// RunTask: the task at its end.
    pub async fn run(&self, req: pb::RunTaskRequest) -> pb::Task {
        let resp = self.tasks().run_task(req).await.expect("RunTask answers");
        resp.into_inner().task.expect("a task")
    }

    pub fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    pub fn data(&self) -> DataServiceClient<Channel> {
        DataServiceClient::new(self.channel.clone())
    }

    pub async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn to_struct(v: Value) -> prost_types::Struct {
    json_to_struct(v)
}

pub fn from_value(v: Option<prost_types::Value>) -> Value {
    mlua_swarm_grpc::grpc::convert::value_to_json(v.unwrap_or_default())
}

pub fn from_struct(s: Option<prost_types::Struct>) -> Value {
    struct_to_json(s.unwrap_or_default())
}

/// A RunTask/StartTask body for an inline Blueprint.
pub fn inline(bp: Value, init_ctx: Value) -> pb::RunTaskRequest {
    pb::RunTaskRequest {
        blueprint: Some(pb::BlueprintRef {
            source: Some(pb::blueprint_ref::Source::Inline(to_struct(bp))),
        }),
        init_ctx: Some(to_struct(init_ctx)),
        ..Default::default()
    }
}

/// The same as a StartTask body.
pub fn start_inline(bp: Value, init_ctx: Value) -> pb::StartTaskRequest {
    inline(bp, init_ctx).into()
}

/// A RunTask body for a stored Blueprint and selector.
pub fn stored(
    id: &str,
    selector: Option<pb::version_selector::Selector>,
    init_ctx: Value,
) -> pb::RunTaskRequest {
    pb::RunTaskRequest {
        blueprint: Some(pb::BlueprintRef {
            source: Some(pb::blueprint_ref::Source::Stored(pb::StoredBlueprintRef {
                id: id.into(),
                version: selector.map(|s| pb::VersionSelector { selector: Some(s) }),
            })),
        }),
        init_ctx: Some(to_struct(init_ctx)),
        ..Default::default()
    }
}

/// A unique temp directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mse-grpc-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A worker handle as the server mints it: `wh-` + the 8-hex boot id + 32 hex digits
/// (128 random bits), never the engine's short one.
pub fn assert_minted_handle(handle: &str) {
    let digits = handle.strip_prefix("wh-").unwrap_or_default();
    assert!(
        handle.len() == 3 + 8 + 32 && digits.chars().all(|c| c.is_ascii_hexdigit()),
        "not a 128-bit handle: {handle}"
    );
}

/// A scripted operator on a real `Connect` stream.
pub struct Op {
    pub tx: tokio::sync::mpsc::Sender<pb::ClientFrame>,
    pub rx: tonic::Streaming<pb::ServerFrame>,
    pub welcome: pb::Welcome,
    pub sid: String,
    pub token: String,
}

/// Adds `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    req
}

pub use pb::client_frame::Body as C;
pub use pb::server_frame::Body as S;

/// Creates an operator session holding `roles`.
pub async fn create_session(ts: &TestServer, roles: &[&str]) -> pb::CreateSessionResponse {
    ts.operators()
        .create_session(pb::CreateSessionRequest {
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
        .await
        .expect("create session")
        .into_inner()
}

impl Op {
    /// Creates a session with `roles` and connects it.
    pub async fn join(ts: &TestServer, roles: &[&str]) -> Op {
        let created = create_session(ts, roles).await;
        Op::connect(ts, &created.sid, &created.token, 0)
            .await
            .expect("connect")
    }

    /// Opens a Connect stream with hello{sid, last_seq}.
    pub async fn connect(
        ts: &TestServer,
        sid: &str,
        token: &str,
        last_seq: u64,
    ) -> Result<Op, tonic::Status> {
        Op::connect_on(&ts.channel, sid, token, last_seq).await
    }

    /// As [`Op::connect`], on any channel (a server in a child process).
    pub async fn connect_on(
        channel: &Channel,
        sid: &str,
        token: &str,
        last_seq: u64,
    ) -> Result<Op, tonic::Status> {
        let (tx, rx_out) = tokio::sync::mpsc::channel(1024);
        tx.send(pb::ClientFrame {
            body: Some(C::Hello(pb::Hello {
                sid: sid.into(),
                last_seq,
            })),
        })
        .await
        .expect("queue hello");
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx_out);
        let mut rx = OperatorServiceClient::new(channel.clone())
            .connect(authed(stream, token))
            .await?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), rx.message())
            .await
            .expect("welcome in time")?
            .expect("a frame");
        let Some(S::Welcome(welcome)) = first.body else {
            panic!("first frame must be welcome, got {first:?}");
        };
        Ok(Op {
            tx,
            rx,
            welcome,
            sid: sid.into(),
            token: token.into(),
        })
    }

    pub async fn send(&self, body: C) {
        self.tx
            .send(pb::ClientFrame { body: Some(body) })
            .await
            .expect("stream open");
    }

    pub async fn ack(&self, seq: u64) {
        self.send(C::Ack(pb::Ack { seq })).await;
    }

    /// Approves a hook_before.
    pub async fn approve(&self, req_id: impl Into<String>) {
        let req_id = req_id.into();
        self.send(C::HookAck(pb::HookAck {
            req_id,
            ok: true,
            reason: String::new(),
        }))
        .await;
    }

    /// Acks a spawn (ok, no value: the worker submitted the result itself).
    pub async fn spawn_ack(&self, req_id: impl Into<String>) {
        let req_id = req_id.into();
        self.send(C::SpawnAck(pb::SpawnAck {
            req_id,
            ..Default::default()
        }))
        .await;
    }

    /// Serves one task's frames until its hook_after: approves the hook, does the worker's
    /// part of the spawn (submitting `body` with the handle) and acks the spawn.
    pub async fn serve_until_hook_after(&mut self, ts: &TestServer, body: &str) {
        loop {
            let f = self.next().await;
            self.ack(f.seq).await;
            match f.body {
                Some(S::HookBefore(h)) => self.approve(h.req_id).await,
                Some(S::Spawn(s)) => {
                    work(ts, &s, body, pb::SubmitOutcome::Pass, false).await;
                    self.spawn_ack(s.req_id).await;
                }
                Some(S::HookAfter(_)) => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Approves hooks until a spawn arrives, acks that frame and returns the spawn.
    pub async fn until_spawn(&mut self) -> pb::Spawn {
        loop {
            let f = self.next().await;
            self.ack(f.seq).await;
            match f.body {
                Some(S::HookBefore(h)) => self.approve(h.req_id).await,
                Some(S::Spawn(s)) => return s,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next non-ping frame (pings are answered), within 10 s.
    pub async fn next(&mut self) -> pb::ServerFrame {
        self.try_next().await.expect("a frame")
    }

    /// The next non-ping frame, or None when the stream ends.
    pub async fn try_next(&mut self) -> Option<pb::ServerFrame> {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("a frame within 10s");
            let frame = match item {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => return None,
            };
            if let Some(S::Ping(p)) = &frame.body {
                self.send(C::Pong(pb::Pong { nonce: p.nonce })).await;
                continue;
            }
            return Some(frame);
        }
    }
}

/// Reads a Spawn's prompt and submits `body` as the worker would (the SDK's [`Worker`]),
/// with the handle (`by_token` = false) or the capability token.
///
/// [`Worker`]: mlua_swarm_operator::Worker
pub async fn work(
    ts: &TestServer,
    spawn: &pb::Spawn,
    body: &str,
    outcome: pb::SubmitOutcome,
    by_token: bool,
) -> pb::GetPromptResponse {
    let mut worker = sdk::Worker::new(ts.channel.clone(), &recode(spawn));
    if by_token {
        worker = worker.by_capability_token();
    }
    let prompt = worker.get_prompt().await.expect("get prompt");
    let outcome = sdk::SubmitOutcome::try_from(outcome as i32).expect("a known outcome");
    worker.submit(body, outcome).await.expect("submit");
    recode(&prompt)
}

/// A message as its twin on the other side (the SDK generates its own code from the same
/// `proto/`, so the bytes are the same).
pub fn recode<A: prost::Message, B: prost::Message + Default>(msg: &A) -> B {
    B::decode(msg.encode_to_vec().as_slice()).expect("the same proto message")
}

/// The generic operator, on the SDK: approves every hook and submits `body` for every
/// spawn.
pub struct Submits(pub String);

impl sdk::Handler for Submits {
    async fn on_spawn(
        &self,
        _: sdk::pb::Spawn,
        worker: sdk::Worker,
    ) -> Result<Value, sdk::BoxError> {
        worker.get_prompt().await?;
        worker
            .submit(self.0.as_str(), sdk::SubmitOutcome::Pass)
            .await?;
        Ok(Value::Null)
    }
}

/// An SDK operator running on its own task.
pub struct Serving {
    stop: sdk::Shutdown,
    run: tokio::task::JoinHandle<()>,
    pub sid: String,
}

impl Serving {
    /// A new session holding `roles`, served by [`Submits`] with `body` until stopped.
    pub async fn start(ts: &TestServer, roles: &[&str], body: &str) -> Serving {
        Serving::run(sdk::Operator::builder(ts.url()), roles, body).await
    }

    /// As [`Serving::start`], on a TLS server reached with `tls`.
    pub async fn start_tls(
        ts: &TestServer,
        roles: &[&str],
        body: &str,
        tls: ClientTlsConfig,
    ) -> Serving {
        Serving::run(sdk::Operator::builder(ts.url()).tls(tls), roles, body).await
    }

    async fn run(builder: sdk::OperatorBuilder, roles: &[&str], body: &str) -> Serving {
        let op = builder
            .roles(roles.iter().copied())
            .connect(Submits(body.into()))
            .await
            .expect("operator session");
        let (sid, stop) = (op.sid().to_string(), op.shutdown_handle());
        let run = tokio::spawn(async move { op.run().await.expect("operator runs") });
        Serving { stop, run, sid }
    }

    pub async fn stop(self) {
        self.stop.shutdown();
        self.run.await.expect("operator task");
    }
}

/// The next text message of a WebSocket as JSON, skipping pings (10 s); a Close frame is
/// `{"type":"__closed","frame":…}`.
pub async fn next_json<W>(ws: &mut W) -> Value
where
    W: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10s")
            .expect("socket open")
            .expect("no ws error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
            Message::Close(c) => {
                return serde_json::json!({"type": "__closed", "frame": format!("{c:?}")})
            }
            _ => continue,
        }
    }
}

/// `POST /v1/operators {roles}` (v0.1.0 login) → (sid, token).
pub async fn legacy_login(http: &reqwest::Client, base: &str, roles: &[&str]) -> (String, String) {
    let login: Value = http
        .post(format!("{base}/v1/operators"))
        .json(&serde_json::json!({ "roles": roles }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let field = |k: &str| login[k].as_str().expect("sid and token").to_string();
    (field("sid"), field("token"))
}
