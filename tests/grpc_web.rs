//! gRPC-Web (HTTP/1.1, as browsers send it) on unary and server-streaming RPCs, CORS, and
//! the browser operator door (Subscribe + Send) with the same guarantees as Connect.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use prost::Message;
use serde_json::json;

/// Frames a message as gRPC-Web does (flag 0, big-endian length).
fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a gRPC-Web response body into data messages and the trailer block.
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut data = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let chunk = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(chunk));
        } else {
            data.push(chunk.to_vec());
        }
        body = &body[5 + len..];
    }
    (data, trailers)
}

async fn grpc_web(
    base: &str,
    path: &str,
    msg: &impl Message,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame(msg));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("grpc-web request")
}

#[tokio::test]
async fn unary_and_server_streaming_rpcs_work_over_grpc_web() {
    let ts = TestServer::start().await;
    let resp = grpc_web(
        &ts.url(),
        "/mlua_swarm.v1.BlueprintService/ListBlueprints",
        &pb::ListBlueprintsRequest {},
        None,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc-web+proto");
    let (data, trailers) = unframe(&resp.bytes().await.expect("body"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let list = pb::ListBlueprintsResponse::decode(data[0].as_slice()).expect("decode");
    assert!(list.blueprints.iter().any(|b| b.id == "main"));

    // Server streaming: WatchTask of a started task streams to its end.
    let id = ts
        .tasks()
        .start_task(start_inline(
            fixture("identity.json"),
            json!({"input": "web"}),
        ))
        .await
        .expect("start")
        .into_inner()
        .task_id;
    let resp = grpc_web(
        &ts.url(),
        "/mlua_swarm.v1.TaskService/WatchTask",
        &pb::WatchTaskRequest { task_id: id },
        None,
    )
    .await;
    let (data, trailers) = unframe(&resp.bytes().await.expect("body"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let last =
        pb::WatchTaskResponse::decode(data.last().expect("events").as_slice()).expect("decode");
    assert!(matches!(
        last.event.and_then(|e| e.kind),
        Some(pb::task_event::Kind::Completed(_))
    ));

    // Errors travel as trailers-only responses with a message.
    let resp = grpc_web(
        &ts.url(),
        "/mlua_swarm.v1.TaskService/GetTask",
        &pb::GetTaskRequest {
            task_id: "nope".into(),
        },
        None,
    )
    .await;
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = resp.bytes().await.expect("body");
    let (_, trailers) = unframe(&body);
    assert!(
        grpc_status.as_deref() == Some("5") || trailers.contains("grpc-status:5"),
        "{grpc_status:?} {trailers}"
    );
    ts.stop().await;
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let ts = TestServer::with_config(Config {
        storage: Storage::Ephemeral,
        cors_origins: vec!["http://console.example".into()],
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/mlua_swarm.v1.TaskService/ListTasks", ts.url()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
    };
    let ok = preflight("http://console.example")
        .await
        .expect("preflight");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"http://console.example"[..])
    );
    let allowed_headers = ok.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(
        allowed_headers.contains("x-grpc-web") && allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let bad = preflight("http://evil.example").await.expect("preflight");
    assert!(
        bad.headers().get("access-control-allow-origin").is_none(),
        "a disallowed origin gets no CORS grant"
    );

    let resp = grpc_web(
        &ts.url(),
        "/mlua_swarm.v1.TaskService/ListTasks",
        &pb::ListTasksRequest::default(),
        Some("http://console.example"),
    )
    .await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://console.example"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    for h in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let resp = grpc_web(
        &ts.url(),
        "/mlua_swarm.v1.TaskService/ListTasks",
        &pb::ListTasksRequest::default(),
        Some("http://evil.example"),
    )
    .await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    ts.stop().await;
}

#[tokio::test]
async fn subscribe_and_send_give_a_browser_acks_resume_and_reply_outcomes() {
    let ts = TestServer::start().await;
    let created = create_session(&ts, &["remote"]).await;
    let (sid, token) = (created.sid, created.token);
    let subscribe = |last_seq: u64| {
        let mut ops = ts.operators();
        let req = authed(
            pb::SubscribeRequest {
                sid: sid.clone(),
                last_seq,
            },
            &token,
        );
        async move { ops.subscribe(req).await.expect("subscribe").into_inner() }
    };
    let send = |frame: C| {
        let mut ops = ts.operators();
        let req = authed(
            pb::SendRequest {
                sid: sid.clone(),
                frame: Some(pb::ClientFrame { body: Some(frame) }),
            },
            &token,
        );
        async move { ops.send(req).await.expect("send").into_inner() }
    };
    async fn next(s: &mut tonic::Streaming<pb::ServerFrame>) -> pb::ServerFrame {
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("ok");
            if !matches!(f.body, Some(S::Ping(_))) {
                return f;
            }
        }
    }

    let mut stream = subscribe(0).await;
    assert!(matches!(next(&mut stream).await.body, Some(S::Welcome(_))));
    let mut tasks = ts.tasks();
    let task = tokio::spawn(async move {
        tasks
            .run_task(inline(
                fixture("operator.json"),
                json!({"input": "browser"}),
            ))
            .await
            .expect("run")
            .into_inner()
            .task
            .expect("task")
    });
    let hb_frame = next(&mut stream).await;
    let Some(S::HookBefore(hb)) = hb_frame.body else {
        panic!("hook_before expected")
    };

    // The page reloads before acking: resubscribe, the hook comes again.
    drop(stream);
    let mut stream = subscribe(0).await;
    let Some(S::Welcome(w)) = next(&mut stream).await.body else {
        panic!("welcome")
    };
    assert_eq!(w.epoch, 2);
    assert_eq!(w.replayed, 1);
    let again = next(&mut stream).await;
    assert_eq!(again.seq, hb_frame.seq);

    let ok = send(C::HookAck(pb::HookAck {
        req_id: hb.req_id.clone(),
        ok: true,
        reason: String::new(),
    }))
    .await;
    assert_eq!(ok.outcome(), pb::SendOutcome::Accepted);
    let dup = send(C::HookAck(pb::HookAck {
        req_id: hb.req_id.clone(),
        ok: true,
        reason: String::new(),
    }))
    .await;
    assert_eq!(dup.outcome(), pb::SendOutcome::Duplicate);
    let unknown = send(C::Answer(pb::Answer {
        req_id: "nope".into(),
        value: None,
    }))
    .await;
    assert_eq!(unknown.outcome(), pb::SendOutcome::Unknown);
    assert_eq!(
        send(C::Ack(pb::Ack { seq: hb_frame.seq })).await.outcome(),
        pb::SendOutcome::Accepted
    );

    let Some(S::Spawn(spawn)) = next(&mut stream).await.body else {
        panic!("spawn")
    };
    assert_minted_handle(&spawn.worker_handle);
    let wrong = send(C::Answer(pb::Answer {
        req_id: spawn.req_id.clone(),
        value: None,
    }))
    .await;
    assert_eq!(wrong.outcome(), pb::SendOutcome::WrongKind);
    work(
        &ts,
        &spawn,
        "from the browser door",
        pb::SubmitOutcome::Pass,
        false,
    )
    .await;
    let acked = send(C::SpawnAck(pb::SpawnAck {
        req_id: spawn.req_id,
        ..Default::default()
    }))
    .await;
    assert_eq!(acked.outcome(), pb::SendOutcome::Accepted);
    let t = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    assert_eq!(from_value(t.final_ctx)["output"], "from the browser door");
    ts.stop().await;
}

/// Decodes a grpc-web-text body: base64 chunks, each padded on its own.
fn decode_text_body(text: &str) -> Vec<u8> {
    use base64::Engine;
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    compact
        .chunks(4)
        .flat_map(|group| {
            base64::engine::general_purpose::STANDARD
                .decode(group)
                .expect("base64 group")
        })
        .collect()
}

#[tokio::test]
async fn health_check_answers_over_grpc_web_binary_and_text() {
    use base64::Engine;
    let ts = TestServer::start().await;
    let base = format!("http://{}", ts.server.addr);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "mlua_swarm.v1.TaskService".into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

    let resp = grpc_web(&base, "/grpc.health.v1.Health/Check", &request, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/grpc-web+proto",
        "binary gRPC-Web answers in its own content type"
    );
    let (data, trailers) = unframe(&resp.bytes().await.expect("body"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let answer =
        tonic_health::pb::HealthCheckResponse::decode(data[0].as_slice()).expect("response");
    assert_eq!(answer.status, serving);

    let body = base64::engine::general_purpose::STANDARD.encode(frame(&request));
    let resp = reqwest::Client::new()
        .post(format!("{base}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .expect("grpc-web-text request");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].clone();
    assert!(
        content_type
            .to_str()
            .expect("ascii")
            .starts_with("application/grpc-web-text"),
        "{content_type:?} {:?}",
        resp.headers()
    );
    let raw = decode_text_body(&resp.text().await.expect("text body"));
    let (data, trailers) = unframe(&raw);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let answer =
        tonic_health::pb::HealthCheckResponse::decode(data[0].as_slice()).expect("response");
    assert_eq!(answer.status, serving);
    ts.stop().await;
}
