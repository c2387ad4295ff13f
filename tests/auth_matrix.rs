//! The API-token matrix: every RPC the server's descriptor sets declare, over native gRPC
//! and gRPC-Web, and every v0.1.0 route, each called with no token, a wrong token and the
//! right one. The expectations below are the test's own: an RPC or route that appears in
//! the server without being listed here fails the test, so the matrix cannot go stale.

mod common;

use std::time::Duration;

use common::*;
use mlua_swarm_grpc::brake::BrakeLimits;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::gate::{Access, GATED_PATHS, LEGACY_ROUTES};
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request};

const TOKEN: &str = "s3cret-matrix";

/// An empty message: encodes as any request with no fields set, and decodes any response
/// (unknown fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every RPC the server serves and whether it needs the API token. Open ones carry their
/// own credential (worker handle, capability token, session token), are health, or are
/// reflection (the public contract; grpcurl needs it for every call).
const EXPECTED_RPCS: &[(&str, Access)] = &[
    ("grpc.health.v1.Health/Check", Access::Open),
    ("grpc.health.v1.Health/Watch", Access::Open),
    (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Open,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Open,
    ),
    (
        "mlua_swarm.v1.BlueprintService/PutBlueprint",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.BlueprintService/GetBlueprint",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.BlueprintService/ListBlueprints",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.BlueprintService/ListVersions",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.BlueprintService/ArchiveBlueprint",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.BlueprintService/UnarchiveBlueprint",
        Access::ApiToken,
    ),
    ("mlua_swarm.v1.TaskService/StartTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/RunTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/GetTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/ListTasks", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/WatchTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/CancelTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/ResumeTask", Access::ApiToken),
    ("mlua_swarm.v1.TaskService/RerunTask", Access::ApiToken),
    (
        "mlua_swarm.v1.OperatorService/CreateSession",
        Access::ApiToken,
    ),
    ("mlua_swarm.v1.OperatorService/GetSession", Access::ApiToken),
    (
        "mlua_swarm.v1.OperatorService/ListSessions",
        Access::ApiToken,
    ),
    (
        "mlua_swarm.v1.OperatorService/DeleteSession",
        Access::ApiToken,
    ),
    ("mlua_swarm.v1.OperatorService/Connect", Access::Open),
    ("mlua_swarm.v1.OperatorService/Subscribe", Access::Open),
    ("mlua_swarm.v1.OperatorService/Send", Access::Open),
    ("mlua_swarm.v1.WorkerService/GetPrompt", Access::Open),
    ("mlua_swarm.v1.WorkerService/Submit", Access::Open),
    ("mlua_swarm.v1.WorkerService/PostResult", Access::Open),
    ("mlua_swarm.v1.DataService/Emit", Access::Open),
    ("mlua_swarm.v1.DataService/EmitNamed", Access::Open),
    ("mlua_swarm.v1.DataService/Get", Access::ApiToken),
    ("mlua_swarm.v1.ServerService/GetStats", Access::ApiToken),
];

/// Paths outside `/v1/` that need the API token: the Prometheus exposition.
const EXPECTED_GATED_PATHS: &[&str] = &["/metrics"];

/// Every v0.1.0 route, as `(method, path pattern, access)`.
const EXPECTED_ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/v1/healthz", Access::Open),
    ("POST", "/v1/operators", Access::ApiToken),
    ("GET", "/v1/operators/{sid}", Access::ApiToken),
    ("DELETE", "/v1/operators/{sid}", Access::ApiToken),
    ("GET", "/v1/operators/{sid}/ws", Access::Open),
    ("GET", "/v1/worker/prompt", Access::Open),
    ("POST", "/v1/worker/result", Access::Open),
    ("POST", "/v1/worker/submit", Access::Open),
    ("POST", "/v1/data/emit", Access::Open),
    ("POST", "/v1/data/{key}", Access::Open),
    ("GET", "/v1/data/{key}", Access::ApiToken),
    ("POST", "/v1/tasks", Access::ApiToken),
    ("POST", "/v1/blueprints/{id}", Access::ApiToken),
    ("DELETE", "/v1/blueprints/{id}", Access::ApiToken),
    ("GET", "/v1/blueprints/{id}/head", Access::ApiToken),
    ("GET", "/v1/blueprints/{id}/history", Access::ApiToken),
    ("POST", "/v1/blueprints/{id}/unarchive", Access::ApiToken),
    ("GET", "/v1/doctor", Access::ApiToken),
    ("POST", "/v1/sessions", Access::ApiToken),
    ("DELETE", "/v1/sessions", Access::ApiToken),
];

/// How a call presents the API token.
#[derive(Debug, Clone, Copy)]
enum Presented {
    Nothing,
    Wrong,
    RightAccessHeader,
    RightBearer,
}

impl Presented {
    fn headers(self) -> Vec<(&'static str, String)> {
        match self {
            Presented::Nothing => vec![],
            Presented::Wrong => vec![("x-mse-access-token", "not-the-token".into())],
            Presented::RightAccessHeader => vec![("x-mse-access-token", TOKEN.into())],
            Presented::RightBearer => vec![("authorization", format!("Bearer {TOKEN}"))],
        }
    }

    fn is_right(self) -> bool {
        matches!(self, Presented::RightAccessHeader | Presented::RightBearer)
    }
}

/// An RPC from the descriptor sets.
#[derive(Debug)]
struct Rpc {
    path: String,
    client_streaming: bool,
    server_streaming: bool,
}

fn served_rpcs() -> Vec<Rpc> {
    let sets = [
        mlua_swarm_grpc::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut rpcs = Vec::new();
    for bytes in sets {
        let set = prost_types::FileDescriptorSet::decode(bytes).expect("descriptor set");
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for m in service.method {
                    rpcs.push(Rpc {
                        path: format!("{package}.{name}/{}", m.name.unwrap_or_default()),
                        client_streaming: m.client_streaming.unwrap_or(false),
                        server_streaming: m.server_streaming.unwrap_or(false),
                    });
                }
            }
        }
    }
    rpcs
}

fn expected_rpc(path: &str) -> Access {
    EXPECTED_RPCS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| {
            panic!("RPC {path} is served but not in EXPECTED_RPCS: decide its access there")
        })
}

/// What a call came back with: refused by the gate, or anything else.
#[derive(Debug)]
enum Outcome {
    GateRefused(String),
    Passed(String),
}

fn classify(code: Code, message: &str) -> Outcome {
    if code == Code::Unauthenticated && message.contains("api token") {
        Outcome::GateRefused(message.to_string())
    } else {
        Outcome::Passed(format!("{code:?}: {message}"))
    }
}

fn with_headers<T>(how: Presented, mut req: Request<T>) -> Request<T> {
    for (k, v) in how.headers() {
        req.metadata_mut()
            .insert(k, v.parse().expect("ascii header"));
    }
    req
}

async fn call_native(ts: &TestServer, rpc: &Rpc, how: Presented) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(ts.channel.clone());
    grpc.ready().await.expect("channel ready");
    let path = PathAndQuery::try_from(format!("/{}", rpc.path)).expect("path");
    let codec = tonic_prost::ProstCodec::<Empty, Empty>::default();
    let result = if rpc.client_streaming {
        let req = with_headers(how, Request::new(futures::stream::iter(vec![Empty {}])));
        tokio::time::timeout(CALL_TIMEOUT, grpc.streaming(req, path, codec))
            .await
            .map(|r| r.map(|_| ()))
    } else if rpc.server_streaming {
        let req = with_headers(how, Request::new(Empty {}));
        tokio::time::timeout(CALL_TIMEOUT, grpc.server_streaming(req, path, codec))
            .await
            .map(|r| r.map(|_| ()))
    } else {
        let req = with_headers(how, Request::new(Empty {}));
        tokio::time::timeout(CALL_TIMEOUT, grpc.unary(req, path, codec))
            .await
            .map(|r| r.map(|_| ()))
    };
    match result {
        Ok(Ok(())) => Outcome::Passed("OK".into()),
        Ok(Err(status)) => classify(status.code(), status.message()),
        // The gate answers at once; a call still open was let through.
        Err(_) => Outcome::Passed("still open".into()),
    }
}

/// A gRPC-Web call; only the response head is read (the gate answers trailers-only).
async fn call_grpc_web(
    http: &reqwest::Client,
    base: &str,
    rpc: &Rpc,
    how: Presented,
    text: bool,
) -> Outcome {
    let (content_type, body) = if text {
        // An empty message framed, base64: five zero bytes.
        ("application/grpc-web-text", b"AAAAAAA=".to_vec())
    } else {
        ("application/grpc-web+proto", vec![0u8; 5])
    };
    let mut req = http
        .post(format!("{base}/{}", rpc.path))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in how.headers() {
        req = req.header(k, v);
    }
    let resp = tokio::time::timeout(CALL_TIMEOUT, req.send())
        .await
        .expect("grpc-web response head in time")
        .expect("grpc-web request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match header("grpc-status") {
        Some(code) => {
            let code = Code::from(code.parse::<i32>().expect("numeric grpc-status"));
            let message = header("grpc-message").unwrap_or_default();
            let message = message.replace("%20", " ").replace("%27", "'");
            classify(code, &message)
        }
        None => Outcome::Passed(format!("HTTP {}", resp.status())),
    }
}

fn check(door: &str, rpc_or_route: &str, access: Access, how: Presented, outcome: Outcome) {
    match (access, how.is_right(), outcome) {
        (Access::ApiToken, false, Outcome::GateRefused(_)) => {}
        (Access::ApiToken, false, Outcome::Passed(what)) => {
            panic!("{door} {rpc_or_route} with {how:?} got past the gate: {what}")
        }
        (_, _, Outcome::Passed(_)) => {}
        (_, _, Outcome::GateRefused(m)) => {
            panic!("{door} {rpc_or_route} ({access:?}) with {how:?} was refused: {m}")
        }
    }
}

async fn gated_server() -> TestServer {
    TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        api_token: Some(TOKEN.into()),
        // The matrix fails checks on purpose, hundreds of times: no brake here
        // (tests/brake.rs covers it).
        brake: BrakeLimits {
            failures: 0,
            ..BrakeLimits::default()
        },
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn every_rpc_on_both_grpc_doors_is_gated_as_expected() {
    let rpcs = served_rpcs();
    for (path, _) in EXPECTED_RPCS {
        assert!(
            rpcs.iter().any(|r| r.path == *path),
            "{path} is in EXPECTED_RPCS but the server does not declare it"
        );
    }
    let ts = gated_server().await;
    let base = format!("http://{}", ts.server.addr);
    let http = reqwest::Client::new();
    let all = [
        Presented::Nothing,
        Presented::Wrong,
        Presented::RightAccessHeader,
        Presented::RightBearer,
    ];
    for rpc in &rpcs {
        let access = expected_rpc(&rpc.path);
        for how in all {
            // A bearer meant as the API token is another credential to open RPCs.
            if matches!(how, Presented::RightBearer) && access == Access::Open {
                continue;
            }
            let outcome = call_native(&ts, rpc, how).await;
            check("grpc", &rpc.path, access, how, outcome);
            if !rpc.client_streaming {
                for text in [false, true] {
                    let outcome = call_grpc_web(&http, &base, rpc, how, text).await;
                    let door = if text { "grpc-web-text" } else { "grpc-web" };
                    check(door, &rpc.path, access, how, outcome);
                }
            }
        }
    }
    ts.server.shutdown().await.expect("shutdown");
}

fn sample_path(pattern: &str) -> String {
    pattern
        .replace("{sid}", "op-matrix")
        .replace("{key}", "k-matrix")
        .replace("{id}", "bp-matrix")
}

#[tokio::test]
async fn every_legacy_route_is_gated_as_expected() {
    assert_eq!(
        LEGACY_ROUTES.len(),
        EXPECTED_ROUTES.len(),
        "the server's route table and EXPECTED_ROUTES differ in length"
    );
    for r in LEGACY_ROUTES {
        let expected = EXPECTED_ROUTES
            .iter()
            .find(|(m, p, _)| *m == r.method && *p == r.path)
            .unwrap_or_else(|| {
                panic!(
                    "route {} {} is served but not in EXPECTED_ROUTES",
                    r.method, r.path
                )
            });
        assert_eq!(expected.2, r.access, "{} {}", r.method, r.path);
    }
    let ts = gated_server().await;
    let base = format!("http://{}", ts.server.addr);
    let http = reqwest::Client::new();
    for (method, pattern, access) in EXPECTED_ROUTES {
        for how in [
            Presented::Nothing,
            Presented::Wrong,
            Presented::RightAccessHeader,
        ] {
            let url = format!("{base}{}", sample_path(pattern));
            let mut req = http
                .request(method.parse().expect("method"), url)
                .header("content-type", "application/json")
                .body("{}");
            for (k, v) in how.headers() {
                req = req.header(k, v);
            }
            let resp = tokio::time::timeout(CALL_TIMEOUT, req.send())
                .await
                .expect("answer in time")
                .expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let route = format!("{method} {pattern}");
            let outcome = if status == 401 && body.contains("api token") {
                Outcome::GateRefused(body.clone())
            } else {
                Outcome::Passed(format!("{status} {body}"))
            };
            check("http", &route, *access, how, outcome);
            if how.is_right() {
                // The route exists: neither the router's empty 404 nor a 405.
                assert!(
                    status != 405 && !(status == 404 && body.is_empty()),
                    "{route} is in the table but not routed ({status})"
                );
            }
        }
    }
    // The console's static files and the plain health path stay open.
    for path in ["/", "/app.js", "/app.css", "/healthz"] {
        let resp = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("static");
        assert_eq!(resp.status(), 200, "{path}");
    }
    // `/metrics` on the main port is gated.
    assert_eq!(GATED_PATHS, EXPECTED_GATED_PATHS);
    for path in EXPECTED_GATED_PATHS {
        for how in [
            Presented::Nothing,
            Presented::Wrong,
            Presented::RightAccessHeader,
            Presented::RightBearer,
        ] {
            let mut req = http.get(format!("{base}{path}"));
            for (k, v) in how.headers() {
                req = req.header(k, v);
            }
            let resp = req.send().await.expect("get");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let outcome = if status == 401 && body.contains("api token") {
                Outcome::GateRefused(body.clone())
            } else {
                Outcome::Passed(format!("{status}"))
            };
            check(
                "http",
                &format!("GET {path}"),
                Access::ApiToken,
                how,
                outcome,
            );
            if how.is_right() {
                assert!(status == 200 && body.contains("# TYPE"), "{path}: {status}");
            }
        }
    }
    ts.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn legacy_client_with_the_token_runs_a_task_and_operator_info_takes_both_tokens() {
    let ts = gated_server().await;
    let base = format!("http://{}", ts.server.addr);
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"blueprint": {"kind": "id", "id": "main"}, "init_ctx": {"input": "x"}});
    let refused = http
        .post(format!("{base}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    assert!(refused
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer")));
    let ran = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(ran.status(), 200, "{:?}", ran.text().await);

    // GET /v1/operators/{sid} takes the session's login token in `authorization`, so the
    // API token rides in `x-mse-access-token`.
    let created: serde_json::Value = http
        .post(format!("{base}/v1/operators"))
        .header("x-mse-access-token", TOKEN)
        .json(&serde_json::json!({"roles": ["matrix"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let sid = created["sid"].as_str().expect("sid");
    let login = created["token"].as_str().expect("token");
    let info = http
        .get(format!("{base}/v1/operators/{sid}"))
        .header("x-mse-access-token", TOKEN)
        .bearer_auth(login)
        .send()
        .await
        .expect("info");
    assert_eq!(info.status(), 200);
    let without_api_token = http
        .get(format!("{base}/v1/operators/{sid}"))
        .bearer_auth(login)
        .send()
        .await
        .expect("info");
    assert_eq!(without_api_token.status(), 401);
    ts.server.shutdown().await.expect("shutdown");
}
