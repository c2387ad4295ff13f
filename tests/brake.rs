//! Worker credentials nobody can guess: spawns carry 128-bit handles, and an address that
//! keeps failing credential checks is braked while a worker on another address is not.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use mlua_swarm_grpc::brake::BrakeLimits;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use serde_json::json;
use tonic::Code;

const BUDGET: u32 = 20;

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .expect("client")
}

/// A forged handle of the engine's own short form (8 hex digits).
fn forged(i: u32) -> String {
    format!("wh-{i:08x}")
}

#[tokio::test]
async fn a_guessing_address_is_braked_while_a_worker_elsewhere_is_not() {
    let ts = TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        brake: BrakeLimits {
            failures: BUDGET,
            window: Duration::from_secs(30),
        },
        ..Config::default()
    })
    .await;
    let base = ts.url();
    let mut op = Op::join(&ts, &["remote"]).await;
    let mut tasks = ts.tasks();
    let run = tokio::spawn(async move {
        tasks
            .run_task(inline(
                fixture("operator.json"),
                json!({"input": "guarded"}),
            ))
            .await
            .map(|r| r.into_inner().task.expect("task"))
    });
    let spawn = op.until_spawn().await;
    assert_minted_handle(&spawn.worker_handle);

    // The guesser, on 127.0.0.1: forged short handles, as fast as it can, bounded.
    let guesser = client_from([127, 0, 0, 1]);
    let (mut checked, mut braked) = (0u32, 0u32);
    for i in 0..200 {
        let resp = guesser
            .get(format!("{base}/v1/worker/prompt?task_id={}", spawn.step_id))
            .bearer_auth(forged(i))
            .send()
            .await
            .expect("guess");
        match resp.status().as_u16() {
            401 => checked += 1,
            429 => {
                braked += 1;
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                assert!((1..=30).contains(&retry), "retry-after {retry}");
            }
            other => panic!("a forged handle got {other}"),
        }
    }
    eprintln!("guesses checked: {checked} of 200, braked: {braked}");
    assert!(
        (BUDGET..=BUDGET + 1).contains(&checked),
        "{checked} guesses were checked; the budget is {BUDGET} per window"
    );
    assert_eq!(checked + braked, 200);

    // The same address is braked on the gRPC door too, with retry-after.
    let err = ts
        .workers()
        .get_prompt(authed(pb::GetPromptRequest::default(), &forged(7)))
        .await
        .expect_err("braked");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.metadata().get("retry-after").is_some());
    // Health stays reachable for probes behind the same address.
    let health = guesser
        .get(format!("{base}/v1/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    // The real worker, on 127.0.0.2, is not affected: prompt and submit by the v0.1.0
    // routes with the 128-bit handle.
    let worker = client_from([127, 0, 0, 2]);
    let prompt = worker
        .get(format!("{base}/v1/worker/prompt?task_id={}", spawn.step_id))
        .bearer_auth(&spawn.worker_handle)
        .send()
        .await
        .expect("prompt");
    assert_eq!(prompt.status(), 200);
    let submitted = worker
        .post(format!("{base}/v1/worker/submit"))
        .bearer_auth(&spawn.worker_handle)
        .body("done by the real worker")
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), 204);
    op.spawn_ack(spawn.req_id.clone()).await;
    let f = op.next().await;
    assert!(matches!(f.body, Some(S::HookAfter(_))), "{f:?}");
    op.ack(f.seq).await;
    let task = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("in time")
        .expect("join")
        .expect("run");
    assert_eq!(task.state(), pb::TaskState::Completed, "{}", task.error);
    assert_eq!(
        from_value(task.final_ctx)["output"],
        "done by the real worker"
    );

    // Once the spawn is answered its handle is dead.
    let late = worker
        .get(format!("{base}/v1/worker/prompt?task_id={}", spawn.step_id))
        .bearer_auth(&spawn.worker_handle)
        .send()
        .await
        .expect("late");
    assert_eq!(late.status(), 401);
    ts.stop().await;
}

#[tokio::test]
async fn failed_api_token_checks_count_too() {
    let ts = TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        api_token: Some("the-token".into()),
        brake: BrakeLimits {
            failures: 5,
            window: Duration::from_secs(30),
        },
        ..Config::default()
    })
    .await;
    let mut refused = Vec::new();
    for i in 0..8 {
        let mut req = tonic::Request::new(pb::ListTasksRequest::default());
        req.metadata_mut().insert(
            "x-mse-access-token",
            format!("guess-{i}").parse().expect("ascii"),
        );
        let err = ts.tasks().list_tasks(req).await.expect_err("wrong token");
        refused.push(err.code());
    }
    assert_eq!(refused[..5], [Code::Unauthenticated; 5]);
    assert!(
        refused[5..].iter().all(|c| *c == Code::ResourceExhausted),
        "{refused:?}"
    );
    // The right token from the braked address waits out the cool-down too.
    let mut right = tonic::Request::new(pb::ListTasksRequest::default());
    right
        .metadata_mut()
        .insert("x-mse-access-token", "the-token".parse().expect("ascii"));
    let err = ts.tasks().list_tasks(right).await.expect_err("cooling");
    assert_eq!(err.code(), Code::ResourceExhausted);
    ts.stop().await;
}
