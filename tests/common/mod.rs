//! Test harness: a real server on an ephemeral loopback port, and generated clients.

#![allow(dead_code, unreachable_pub)]

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
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let server = server::spawn(listener, config)
            .await
            .expect("server starts");
        let channel = Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
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
        format!("http://{}", self.server.addr)
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
    let r = inline(bp, init_ctx);
    pb::StartTaskRequest {
        blueprint: r.blueprint,
        init_ctx: r.init_ctx,
        ttl_secs: r.ttl_secs,
        operator: r.operator,
        operator_sid: r.operator_sid,
    }
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
