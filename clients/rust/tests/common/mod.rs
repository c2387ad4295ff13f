//! Test harness: a real `mse-grpc` child process, Blueprints, a TCP proxy that can cut
//! every connection, and a log capture.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua_swarm_operator::pb::task_service_client::TaskServiceClient;
use mlua_swarm_operator::{json, pb, BackoffPolicy};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// The server binary: `$MSE_GRPC_BIN`, else `mse-grpc` next to this test's target dir
/// (`cargo test` at the repo root builds it).
pub fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MSE_GRPC_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/<test> → <target>/debug/mse-grpc
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("mse-grpc"))
        .expect("a target dir");
    assert!(
        bin.exists(),
        "no server binary at {}: run `cargo build` at the repo root (or `cargo test` there, \
         which builds it), or set MSE_GRPC_BIN",
        bin.display()
    );
    bin
}

/// A server child process; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub channel: Channel,
}

impl Server {
    /// An in-memory server on a free port.
    pub async fn ephemeral() -> Server {
        Server::start(free_addr(), None).await
    }

    /// A durable server on `addr` keeping its state in `dir`.
    pub async fn durable(addr: SocketAddr, dir: &Path) -> Server {
        Server::start(addr, Some(dir)).await
    }

    async fn start(addr: SocketAddr, dir: Option<&Path>) -> Server {
        let mut cmd = Command::new(server_bin());
        cmd.arg("serve").args(["--bind", &addr.to_string()]);
        match dir {
            Some(dir) => cmd.arg("--data-dir").arg(dir),
            None => cmd.arg("--ephemeral"),
        };
        let child = cmd
            .env_remove("MSE_CONFIG")
            .env_remove("MSE_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mse-grpc");
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let server = Server {
            child,
            addr,
            channel,
        };
        server.wait_serving().await;
        server
    }

    async fn wait_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let req = tonic_health::pb::HealthCheckRequest::default();
            if let Ok(r) = health.check(req).await {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server on {} never served",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, and reap.
    pub fn kill(self) {
        drop(self);
    }

    pub fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    /// Starts `bp` on `input`; the task id.
    pub async fn start_task(&self, bp: Value, input: Value) -> String {
        let req = pb::StartTaskRequest {
            blueprint: Some(pb::BlueprintRef {
                source: Some(pb::blueprint_ref::Source::Inline(to_struct(bp))),
            }),
            init_ctx: Some(to_struct(json!({ "input": input }))),
            ..Default::default()
        };
        let resp = self.tasks().start_task(req).await.expect("start task");
        resp.into_inner().task_id
    }

    pub async fn get(&self, id: &str) -> pb::Task {
        let req = pb::GetTaskRequest { task_id: id.into() };
        let resp = self.tasks().get_task(req).await.expect("get task");
        resp.into_inner().task.expect("task")
    }

    /// Polls until the task is in `state` (bounded).
    pub async fn wait_state(&self, id: &str, state: pb::TaskState) -> pb::Task {
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released for the server).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A unique temp directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("mse-sdk-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Quick reconnects for tests.
pub fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

pub fn to_struct(v: Value) -> prost_types::Struct {
    match json::to_proto(v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => panic!("not an object: {other:?}"),
    }
}

/// A Blueprint whose steps `agents` run in sequence on the operator role `remote`
/// (`main_ai`: with hook_before / hook_after; else `automate`: spawns only).
pub fn blueprint(agents: &[&str], main_ai: bool) -> Value {
    let steps: Vec<Value> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let from = if i == 0 {
                "$.input".to_string()
            } else {
                format!("$.o{i}")
            };
            json!({"kind": "step", "ref": a, "in": {"op": "path", "at": from},
                   "out": {"op": "path", "at": format!("$.o{}", i + 1)}})
        })
        .collect();
    let specs: Vec<Value> = agents
        .iter()
        .map(|a| json!({"name": a, "kind": "operator", "spec": {"operator_ref": "remote"}}))
        .collect();
    let kind = if main_ai { "main_ai" } else { "automate" };
    let mut bp = json!({
        "schema_version": "0.1.0",
        "id": "sdk-test",
        "flow": {"kind": "seq", "children": steps},
        "agents": specs,
        "operators": [{"name": "remote", "kind": kind}],
    });
    if main_ai {
        bp["spawner_hints"] = json!({"layers": ["main_ai", "senior_escalation"]});
    }
    bp
}

/// A TCP forwarder to `upstream` whose open connections can be cut.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// While false, new connections are closed at once.
    open: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = conns.clone();
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                held.lock().expect("conns").push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            conns,
            open,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection and refuses new ones until [`Proxy::reopen`].
    pub fn cut_and_hold(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut();
    }

    pub fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Drops every open connection (both sockets close); new ones are accepted.
    pub fn cut(&self) {
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Captured log output of the current thread (a `current_thread` runtime keeps every
/// task on it).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything the test process logs at DEBUG and above, from the first call on. One
    /// global subscriber: a per-thread one (`set_default`) raced with the other tests'
    /// threads over tracing's cached callsite interest and missed lines now and then.
    /// Tests share it, so each looks for lines naming its own request.
    pub fn global() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            logs
        })
        .clone()
    }

    /// The captured lines that contain every one of `parts`.
    pub fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string)
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
