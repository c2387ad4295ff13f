//! Issue 4 acceptance: a client written for mlua-swarm-server 0.1.0 (HTTP + the JSON
//! WebSocket, nothing else) works unchanged, and mixes with gRPC operators.

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use mlua_swarm_grpc::pb::v1 as pb;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends `req`; it must reach the server (any status will do).
async fn call(req: reqwest::RequestBuilder) -> reqwest::Response {
    req.send()
        .await
        .unwrap_or_else(|e| panic!("request not sent: {e}"))
}

/// The status `req` is answered with.
async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    call(req).await.status().as_u16()
}

/// The JSON body of a response.
async fn body_of(resp: reqwest::Response) -> Value {
    resp.json().await.expect("a JSON body")
}

/// The JSON body `req` is answered with.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    body_of(call(req).await).await
}

struct Legacy {
    base: String,
    http: reqwest::Client,
}

impl Legacy {
    fn new(ts: &TestServer) -> Self {
        Legacy {
            base: ts.url(),
            http: reqwest::Client::new(),
        }
    }

    async fn login(&self, roles: &[&str]) -> (String, String) {
        let r = json_of(
            self.http
                .post(format!("{}/v1/operators", self.base))
                .json(&json!({ "roles": roles })),
        )
        .await;
        (
            r["sid"].as_str().expect("sid").into(),
            r["token"].as_str().expect("token").into(),
        )
    }

    async fn ws(&self, sid: &str, token: &str) -> Ws {
        let url = format!(
            "{}/v1/operators/{sid}/ws",
            self.base.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("h"),
        );
        tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect")
            .0
    }

    fn post_task(&self, body: Value) -> tokio::task::JoinHandle<(u16, Value)> {
        let http = self.http.clone();
        let url = format!("{}/v1/tasks", self.base);
        tokio::spawn(async move {
            let resp = call(http.post(url).json(&body)).await;
            let status = resp.status().as_u16();
            (status, body_of(resp).await)
        })
    }

    async fn prompt(&self, step: &str, cred: &str) -> Value {
        json_of(
            self.http
                .get(format!("{}/v1/worker/prompt?task_id={step}", self.base))
                .bearer_auth(cred),
        )
        .await
    }

    async fn submit(&self, cred: &str, body: &str, ok: bool) -> u16 {
        status_of(
            self.http
                .post(format!("{}/v1/worker/submit?ok={ok}", self.base))
                .bearer_auth(cred)
                .body(body.to_string()),
        )
        .await
    }
}

/// A server, a legacy client, and a WebSocket operator logged in with `roles`.
async fn ws_operator(roles: &[&str]) -> (TestServer, Legacy, String, String, Ws) {
    let ts = TestServer::start().await;
    let lg = Legacy::new(&ts);
    let (sid, token) = lg.login(roles).await;
    let ws = lg.ws(&sid, &token).await;
    (ts, lg, sid, token, ws)
}

async fn recv(ws: &mut Ws) -> Value {
    common::next_json(ws).await
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

async fn finished(h: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .expect("in time")
        .expect("join")
}

#[tokio::test]
async fn a_v010_client_runs_a_spawn_round_trip_over_http_and_websocket() {
    let (ts, lg, _, _, mut ws) = ws_operator(&["main-ai"]).await;
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("legacy-one-step.json")}, "init_ctx": {}}));
    let spawn = recv(&mut ws).await;
    assert_eq!(spawn["type"], "spawn", "{spawn}");
    let step = spawn["task_id"].as_str().expect("task_id").to_string();
    assert!(
        step.starts_with("ST-"),
        "task_id on the wire is the step id"
    );
    let handle = spawn["worker_handle"].as_str().expect("handle").to_string();
    assert_minted_handle(&handle);
    assert!(spawn["capability_token"]
        .as_str()
        .is_some_and(|t| t.len() > 100));
    assert!(spawn["directive"]
        .as_str()
        .expect("directive")
        .contains(&format!("{}/v1/worker/prompt?task_id={step}", lg.base)));
    let prompt = lg.prompt(&step, &handle).await;
    assert_eq!(prompt["prompt"], "say hello");
    assert_eq!(prompt["system"], "Reply with one word: say hello");
    assert_eq!(prompt["task_id"], step);
    assert_eq!(lg.submit(&handle, "hello\n", true).await, 204);
    send(
        &mut ws,
        json!({"type": "spawn_ack", "req_id": spawn["req_id"], "value": {}, "ok": true}),
    )
    .await;
    let (status, body) = finished(task).await;
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<_> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "bound_version",
            "effective_ttl_secs",
            "final_ctx",
            "ttl_source"
        ]
    );
    assert_eq!(body["final_ctx"], json!({"out": "hello"}));
    assert_eq!(body["bound_version"], Value::Null);
    assert_eq!(body["effective_ttl_secs"], 1800);
    assert_eq!(body["ttl_source"], "server_default");

    // The finished step's handle is refused (v0.1.0 accepted it forever).
    let late = lg
        .http
        .get(format!("{}/v1/worker/prompt?task_id={step}", lg.base))
        .bearer_auth(&handle);
    assert_eq!(status_of(late).await, 401);
    ts.stop().await;
}

#[tokio::test]
async fn hooks_asks_rejections_and_malformed_frames() {
    let (ts, lg, sid, _, mut ws) = ws_operator(&["main-ai"]).await;

    // A malformed frame gets an error frame; the connection stays open.
    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    let err = recv(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "invalid_frame");

    let body = |input: &str| {
        json!({"blueprint": {"kind": "inline", "value": fixture("legacy-hooks.json")},
        "init_ctx": {"input": input},
        "operator": {"spawn_hook_id": sid, "senior_bridge_id": sid}})
    };
    let task = lg.post_task(body("hard"));
    let hb = recv(&mut ws).await;
    assert_eq!(hb["type"], "hook_before");
    assert_eq!(hb["agent"], "worker-a");
    assert_eq!(hb["attempt"], 1);
    send(
        &mut ws,
        json!({"type": "hook_ack", "req_id": hb["req_id"], "ok": true}),
    )
    .await;
    let spawn = recv(&mut ws).await;
    assert_eq!(spawn["type"], "spawn");
    let handle = spawn["worker_handle"].as_str().expect("handle").to_string();
    assert_eq!(lg.submit(&handle, "stuck", false).await, 204);
    send(
        &mut ws,
        json!({"type": "spawn_ack", "req_id": spawn["req_id"]}),
    )
    .await;
    let mut got_ask = false;
    let mut got_after = false;
    while !(got_ask && got_after) {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("ask") => {
                assert_eq!(f["question"]["reason"], "worker reported ok=false");
                send(&mut ws, json!({"type": "answer", "req_id": f["req_id"], "value": {"advice": "ship it"}})).await;
                got_ask = true;
            }
            Some("hook_after") => got_after = true,
            other => panic!("unexpected {other:?}: {f}"),
        }
    }
    let (status, out) = finished(task).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["final_ctx"]["out"]["senior_answer"]["advice"],
        "ship it"
    );
    assert_eq!(out["final_ctx"]["out"]["original"], "stuck");

    // hook_ack ok:false → the task fails with the reason.
    let task = lg.post_task(body("no"));
    let hb = recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "hook_ack", "req_id": hb["req_id"], "ok": false, "reason": "not today"}),
    )
    .await;
    let (status, out) = finished(task).await;
    assert_eq!(status, 400);
    let msg = out["error"].as_str().expect("error");
    assert!(
        msg.starts_with("run: ") && msg.contains("not today"),
        "{msg}"
    );

    // Replies to unknown req_ids are told, not dropped.
    send(
        &mut ws,
        json!({"type": "answer", "req_id": "nope", "value": null}),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(err["code"], "unknown_req");
    ts.stop().await;
}

#[tokio::test]
async fn login_routes_keep_the_v010_order_and_delete_closes_the_socket() {
    let ts = TestServer::start().await;
    let lg = Legacy::new(&ts);
    let (sid, token) = lg.login(&["main-ai"]).await;
    let resp = call(
        lg.http
            .post(format!("{}/v1/operators", lg.base))
            .json(&json!({"roles": ["main-ai", "other"]})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(
        body_of(resp).await,
        json!({"error": "roles conflict", "conflicts": ["main-ai"]})
    );

    let get = |sid: String, token: Option<&str>| {
        let mut req = lg.http.get(format!("{}/v1/operators/{sid}", lg.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        call(req)
    };
    assert_eq!(get(sid.clone(), None).await.status().as_u16(), 401);
    assert_eq!(
        get("op-unknown".into(), Some("x")).await.status().as_u16(),
        404
    );
    assert_eq!(get(sid.clone(), Some("wrong")).await.status().as_u16(), 401);
    let info = body_of(get(sid.clone(), Some(&token)).await).await;
    assert_eq!(
        info,
        json!({"sid": sid, "roles": ["main-ai"], "connected": false})
    );

    let mut ws = lg.ws(&sid, &token).await;
    let info = body_of(get(sid.clone(), Some(&token)).await).await;
    assert_eq!(info["connected"], true);
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("legacy-one-step.json")}, "init_ctx": {}}));
    assert_eq!(recv(&mut ws).await["type"], "spawn");
    let delete = || {
        lg.http
            .delete(format!("{}/v1/operators/{sid}", lg.base))
            .bearer_auth(&token)
    };
    assert_eq!(status_of(delete()).await, 204);
    let (status, out) = finished(task).await;
    assert_eq!(status, 400, "pending spawn failed at once: {out}");
    assert!(
        out["error"].as_str().expect("e").contains("deleted"),
        "{out}"
    );
    let mut closed = false;
    for _ in 0..3 {
        if recv(&mut ws).await["type"] == "__closed" {
            closed = true;
            break;
        }
    }
    assert!(closed, "DELETE closes the socket");
    assert_eq!(status_of(delete()).await, 404);
    lg.login(&["main-ai"]).await; // the role is free again
    ts.stop().await;
}

#[tokio::test]
async fn grpc_and_websocket_operators_serve_each_others_tasks() {
    let ts = TestServer::start().await;
    let lg = Legacy::new(&ts);
    // RunTask over gRPC, served by a WebSocket operator.
    let (sid, token) = lg.login(&["main-ai"]).await;
    let mut ws = lg.ws(&sid, &token).await;
    let mut tasks = ts.tasks();
    let grpc_task = tokio::spawn(async move {
        tasks
            .run_task(inline(fixture("legacy-one-step.json"), json!({})))
            .await
            .expect("run")
            .into_inner()
            .task
            .expect("task")
    });
    let spawn = recv(&mut ws).await;
    let handle = spawn["worker_handle"].as_str().expect("h").to_string();
    lg.prompt(spawn["task_id"].as_str().expect("step"), &handle)
        .await;
    assert_eq!(lg.submit(&handle, "from ws", true).await, 204);
    send(
        &mut ws,
        json!({"type": "spawn_ack", "req_id": spawn["req_id"]}),
    )
    .await;
    let t = tokio::time::timeout(Duration::from_secs(20), grpc_task)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    assert_eq!(from_value(t.final_ctx)["out"], "from ws");

    // POST /v1/tasks, served by a gRPC operator.
    let op = Serving::start(&ts, &["remote"], "from grpc").await;
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("operator.json")}, "init_ctx": {"input": "legacy"}}));
    let (status, out) = finished(task).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["final_ctx"]["output"], "from grpc");
    op.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn a_multi_step_v010_verdict_loop_runs_through_post_tasks() {
    let (ts, lg, _, _, mut ws) = ws_operator(&["main-ai"]).await;
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("legacy-verdict-loop.json")}, "init_ctx": {"input": "topic"}, "ttl_secs": 600}));
    let mut reviews = 0;
    loop {
        let spawn = recv(&mut ws).await;
        assert_eq!(spawn["type"], "spawn", "{spawn}");
        let handle = spawn["worker_handle"].as_str().expect("h").to_string();
        let answer = match spawn["agent"].as_str() {
            Some("writer") => "a draft".to_string(),
            Some("reviewer") => {
                reviews += 1;
                if reviews == 1 {
                    "BLOCKED".into()
                } else {
                    "PASS".into()
                }
            }
            other => panic!("agent {other:?}"),
        };
        assert_eq!(lg.submit(&handle, &answer, true).await, 204);
        send(
            &mut ws,
            json!({"type": "spawn_ack", "req_id": spawn["req_id"]}),
        )
        .await;
        if reviews == 2 && spawn["agent"] == "reviewer" {
            break;
        }
    }
    let (status, out) = finished(task).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["final_ctx"]["verdict"], "PASS");
    assert_eq!(out["final_ctx"]["round"], 2);
    assert_eq!(out["ttl_source"], "request_body");
    assert_eq!(out["effective_ttl_secs"], 600);
    ts.stop().await;
}

#[tokio::test]
async fn a_dropped_websocket_gets_the_pending_request_again_and_browsers_can_auth() {
    let (ts, lg, sid, token, mut ws) = ws_operator(&["main-ai"]).await;
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("legacy-one-step.json")}, "init_ctx": {}}));
    let spawn = recv(&mut ws).await;
    assert_eq!(spawn["type"], "spawn");
    drop(ws); // dropped mid-task

    // Reconnect the browser way: ?token= in the URL.
    let url = format!(
        "{}/v1/operators/{sid}/ws?token={token}",
        lg.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("reconnect");
    let again = recv(&mut ws).await;
    assert_eq!(again["type"], "spawn");
    assert_eq!(
        again["req_id"], spawn["req_id"],
        "the pending spawn is re-sent"
    );
    let handle = again["worker_handle"].as_str().expect("h").to_string();
    assert_eq!(lg.submit(&handle, "survived", true).await, 204);
    send(
        &mut ws,
        json!({"type": "spawn_ack", "req_id": again["req_id"]}),
    )
    .await;
    let (status, out) = finished(task).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["final_ctx"]["out"], "survived");
    drop(ws);

    // And the first-message way.
    let url = format!(
        "{}/v1/operators/{sid}/ws",
        lg.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone())
        .await
        .expect("connect");
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    send(
        &mut ws,
        json!({"type": "answer", "req_id": "x", "value": 1}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await["code"],
        "unknown_req",
        "authenticated: frames are handled"
    );
    let (mut bad, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    send(&mut bad, json!({"type": "auth", "token": "wrong"})).await;
    assert_eq!(recv(&mut bad).await["code"], "unauthenticated");
    ts.stop().await;
}

#[tokio::test]
async fn blueprint_routes_data_routes_and_doctor_speak_v010_json() {
    let ts = TestServer::start().await;
    let lg = Legacy::new(&ts);
    let url = |p: &str| format!("{}{p}", lg.base);
    let healthz = call(lg.http.get(url("/v1/healthz"))).await;
    assert_eq!(healthz.text().await.expect("t"), "ok");
    let bp = fixture("identity.json");
    let seed = |id: &str| lg.http.post(url(&format!("/v1/blueprints/{id}"))).json(&bp);
    let first = call(seed("hello")).await;
    assert_eq!(first.status().as_u16(), 201);
    let first = body_of(first).await;
    assert_eq!(first["seeded"], true);
    let version = first["version"].as_str().expect("v").to_string();
    assert_eq!(version.len(), 64, "hex, not Rust debug text");
    assert_eq!(status_of(seed("hello")).await, 200);
    let mismatch = call(seed("other")).await;
    assert_eq!(mismatch.status().as_u16(), 400);
    assert_eq!(
        body_of(mismatch).await["error"],
        "path id=other != body.id=hello"
    );
    let head = json_of(lg.http.get(url("/v1/blueprints/hello/head"))).await;
    assert_eq!(head["version"], version);
    let hist = json_of(lg.http.get(url("/v1/blueprints/hello/history"))).await;
    assert_eq!(hist["count"], 1);
    assert_eq!(hist["entries"][0]["hash"], version);
    // A returned version is accepted back as a fixed selector.
    let run = json_of(lg.http.post(url("/v1/tasks")).json(&json!({"blueprint": {"kind": "id", "id": "hello", "version": {"kind": "fixed", "value": version}}, "init_ctx": {"input": 1}}))).await;
    assert_eq!(run["bound_version"], version);
    assert_eq!(
        status_of(lg.http.delete(url("/v1/blueprints/hello"))).await,
        204
    );
    assert_eq!(status_of(seed("hello")).await, 409);
    assert_eq!(
        status_of(lg.http.post(url("/v1/blueprints/hello/unarchive"))).await,
        204
    );
    let doctor = json_of(lg.http.get(url("/v1/doctor"))).await;
    assert_eq!(doctor["seed_blueprint_id"], "main");
    assert_eq!(doctor["registered_blueprint_ids"], json!(["hello", "main"]));
    let attach = |body: Value| lg.http.post(url("/v1/sessions")).json(&body);
    let sess = json_of(attach(
        json!({"agent_id": "a", "role": "Operator", "ttl_secs": 60}),
    ))
    .await;
    assert_eq!(sess["role"], "Operator");
    let sid = sess["session_id"].as_str().expect("sid");
    assert_eq!(sid.len(), 32);
    assert_eq!(
        status_of(lg.http.delete(url("/v1/sessions")).bearer_auth(sid)).await,
        204
    );
    let bad_role = json_of(attach(
        json!({"agent_id": "a", "role": "boss", "ttl_secs": 1}),
    ))
    .await;
    assert_eq!(bad_role["error"], "unknown role: boss");

    // Data: emit with the worker handle the directive advertises; read by id and name.
    let (osid, otoken) = lg.login(&["main-ai"]).await;
    let mut ws = lg.ws(&osid, &otoken).await;
    let task = lg.post_task(json!({"blueprint": {"kind": "inline", "value": fixture("legacy-one-step.json")}, "init_ctx": {}}));
    let spawn = recv(&mut ws).await;
    let handle = spawn["worker_handle"].as_str().expect("h").to_string();
    let step = spawn["task_id"].as_str().expect("step").to_string();
    let event =
        json!({"type": "final", "content": {"kind": "inline", "value": {"notes": 3}}, "ok": true});
    let out = json_of(
        lg.http
            .post(url(&format!("/v1/data/emit?token={handle}")))
            .json(&json!({"task_id": step, "attempt": 1, "producer_agent": "summary", "event": event})),
    )
    .await;
    let out_id = out["out_id"].as_str().expect("out_id").to_string();
    for key in [out_id.clone(), "summary".to_string()] {
        let rec = json_of(lg.http.get(url(&format!("/v1/data/{key}")))).await;
        assert_eq!(rec["id"], out_id);
        assert_eq!(rec["event"], event);
        assert_eq!(rec["task_id"], step);
    }
    let missing = call(lg.http.get(url("/v1/data/nothing"))).await;
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        body_of(missing).await["error"],
        "output not found (id nor name): nothing"
    );
    let bad = lg
        .http
        .post(url("/v1/worker/submit"))
        .bearer_auth("garbage")
        .body("x");
    assert_eq!(status_of(bad).await, 401, "401, not v0.1.0's 500");
    assert_eq!(lg.submit(&handle, "done", true).await, 204);
    send(
        &mut ws,
        json!({"type": "spawn_ack", "req_id": spawn["req_id"]}),
    )
    .await;
    assert_eq!(finished(task).await.0, 200);
    ts.stop().await;
}
