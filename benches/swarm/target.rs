//! The server under test: a child `mse-grpc serve --ephemeral` (or durable, on a data dir)
//! process (so its memory and CPU time are read alone from `/proc`), or a running server
//! given with `--target` (its pid with `--target-pid`) or `--baseline`.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::args::Plan;
use crate::clients::BoxError;

/// The server binary of this package, built by cargo alongside the bench.
const SERVER_BIN: &str = env!("CARGO_BIN_EXE_mse-grpc");

/// A server to measure, and its process when the bench started it.
pub(crate) struct Target {
    pub(crate) addr: String,
    /// The server's process id (the child's, or the one given), for its CPU time.
    pub(crate) pid: Option<u32>,
    child: Option<tokio::process::Child>,
}

impl Target {
    /// `plan.target` if given, else a fresh child server; ready either way.
    pub(crate) async fn start(plan: &Plan) -> Result<Self, BoxError> {
        match &plan.target {
            Some(addr) => Self::attach(addr, plan.target_pid, "/healthz").await,
            None => Self::spawn().await,
        }
    }

    /// A running server at `addr` (process `pid` if known), once `health` answers 2xx.
    pub(crate) async fn attach(
        addr: &str,
        pid: Option<u32>,
        health: &str,
    ) -> Result<Self, BoxError> {
        let t = Target {
            addr: addr.trim_start_matches("http://").to_string(),
            pid,
            child: None,
        };
        t.wait_ready(health).await?;
        Ok(t)
    }

    /// Starts `mse-grpc serve --ephemeral` on a free loopback port; killed on drop.
    pub(crate) async fn spawn() -> Result<Self, BoxError> {
        Self::spawn_with(&["--ephemeral"]).await
    }

    /// Starts `mse-grpc serve --data-dir <dir>` (durable); killed on drop.
    pub(crate) async fn spawn_durable(dir: &std::path::Path) -> Result<Self, BoxError> {
        let dir = dir.to_string_lossy().into_owned();
        Self::spawn_with(&["--data-dir", &dir]).await
    }

    /// SIGKILL, and reap.
    pub(crate) async fn kill(mut self) -> Result<(), BoxError> {
        if let Some(child) = self.child.as_mut() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts `mse-grpc serve <storage>` on a free loopback port; killed on drop.
    async fn spawn_with(storage: &[&str]) -> Result<Self, BoxError> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let addr = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(SERVER_BIN)
            .arg("serve")
            .args(storage)
            .args(["--bind", &addr])
            .args(["--max-unacked-frames", "1000000"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let t = Target {
            addr,
            pid: child.id(),
            child: Some(child),
        };
        t.wait_ready("/healthz").await?;
        Ok(t)
    }

    /// Polls `health` until it answers 2xx, for 30 s at most.
    async fn wait_ready(&self, health: &str) -> Result<(), BoxError> {
        let url = format!("http://{}{health}", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("server at {} not ready in 30s", self.addr).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set of the child server, KiB (None for `--target` or off Linux).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// A new HTTP/2 connection to the server.
    pub(crate) async fn channel(&self) -> Result<Channel, BoxError> {
        channel(&self.addr).await
    }

    /// `n` new HTTP/2 connections to the server (behind a balancer, to as many replicas).
    pub(crate) async fn channels(&self, n: usize) -> Result<Vec<Channel>, BoxError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            out.push(self.channel().await?);
        }
        Ok(out)
    }
}

/// An HTTP/2 connection to `addr` (host:port), without Nagle.
pub(crate) async fn channel(addr: &str) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}
