//! The SDK against a real `mse-grpc` child process: the happy path, a dropped stream, a
//! server restart, a hook rejection, an ask and a stale reply.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{blueprint, fast_backoff, Logs, Proxy, Server};
use mlua_swarm_operator::{json, pb, BoxError, Handler, Operator, Shutdown, SubmitOutcome, Worker};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What a handler saw, in order: `"hook_before agent"`, `"spawn agent req_id"`, …
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, event: String) {
        self.0.lock().expect("seen").push(event);
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().expect("seen").clone()
    }

    /// How often each event kind + agent was seen.
    fn counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for e in self.all() {
            let key: Vec<&str> = e.split(' ').take(2).collect();
            *out.entry(key.join(" ")).or_default() += 1;
        }
        out
    }
}

/// Approves hooks (or rejects them with `reject`), upper-cases the prompt of each spawn
/// and records everything.
#[derive(Default)]
struct Upper {
    seen: Seen,
    reject: Option<String>,
}

impl Handler for Upper {
    async fn on_hook_before(&self, hook: pb::HookBefore) -> Result<(), String> {
        self.seen.push(format!("hook_before {}", hook.agent));
        self.reject.clone().map_or(Ok(()), Err)
    }

    async fn on_spawn(&self, spawn: pb::Spawn, worker: Worker) -> Result<Value, BoxError> {
        self.seen
            .push(format!("spawn {} {}", spawn.agent, spawn.req_id));
        upper(&worker).await
    }

    async fn on_hook_after(&self, hook: pb::HookAfter) {
        self.seen.push(format!("hook_after {}", hook.agent));
    }

    async fn on_cancel(&self, cancel: pb::Cancel) {
        self.seen
            .push(format!("cancel {} {}", cancel.req_id, cancel.reason));
    }
}

/// An operator running on its own task.
struct Running {
    stop: Shutdown,
    run: tokio::task::JoinHandle<()>,
    sid: String,
    token: String,
}

/// Submits the step's prompt upper-cased.
async fn upper(worker: &Worker) -> Result<Value, BoxError> {
    let prompt = worker.get_prompt().await?;
    let body = prompt.prompt.to_uppercase();
    worker.submit(body, SubmitOutcome::Pass).await?;
    Ok(Value::Null)
}

/// Connects `handler` as the role `remote` at `url` and runs it on its own task.
async fn serve<H: Handler>(url: String, handler: H) -> Running {
    let op = Operator::builder(url)
        .roles(["remote"])
        .backoff(fast_backoff())
        .connect(handler)
        .await
        .expect("session");
    let (sid, token) = (op.sid().to_string(), op.token().to_string());
    let stop = op.shutdown_handle();
    let run = tokio::spawn(async move { op.run().await.expect("run ends cleanly") });
    Running {
        stop,
        run,
        sid,
        token,
    }
}

async fn stop(op: Running) {
    op.stop.shutdown();
    op.run.await.expect("operator task");
}

/// The session as the server sees it.
async fn session(server: &Server, op: &Running) -> pb::Session {
    let mut req = tonic::Request::new(pb::GetSessionRequest {
        sid: op.sid.clone(),
    });
    let bearer = format!("Bearer {}", op.token).parse().expect("ascii");
    req.metadata_mut().insert("authorization", bearer);
    let mut ops = pb::operator_service_client::OperatorServiceClient::new(server.channel.clone());
    let resp = ops.get_session(req).await.expect("get session");
    resp.into_inner().session.expect("session")
}

/// A server and an [`Upper`] operator on it, rejecting hooks with `reject`.
async fn upper_on_a_server(reject: Option<&str>) -> (Server, Seen, Running) {
    let server = Server::ephemeral().await;
    let seen = Seen::default();
    let handler = Upper {
        seen: seen.clone(),
        reject: reject.map(Into::into),
    };
    let op = serve(server.url(), handler).await;
    (server, seen, op)
}

fn output(t: &pb::Task, key: &str) -> Value {
    json::from_proto(t.final_ctx.clone())[key].clone()
}

#[tokio::test]
async fn one_step_with_hooks_completes() {
    let (server, seen, op) = upper_on_a_server(None).await;
    let id = server
        .start_task(blueprint(&["w"], true), json!("hello"))
        .await;
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o1"), "HELLO");
    // hook_after is sent after the step; the task may end first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.counts().contains_key("hook_after w") {
        assert!(std::time::Instant::now() < deadline, "{:?}", seen.all());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let counts = seen.counts();
    assert_eq!(counts["hook_before w"], 1, "{:?}", seen.all());
    assert_eq!(counts["spawn w"], 1, "{:?}", seen.all());
    assert_eq!(counts["hook_after w"], 1, "{:?}", seen.all());
    stop(op).await;
}

#[tokio::test]
async fn three_steps_complete_each_spawned_once() {
    let (server, seen, op) = upper_on_a_server(None).await;
    let id = server
        .start_task(blueprint(&["s1", "s2", "s3"], false), json!("abc"))
        .await;
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o3"), "ABC");
    let spawns: Vec<String> = seen
        .all()
        .into_iter()
        .filter(|e| e.starts_with("spawn"))
        .collect();
    assert_eq!(spawns.len(), 3, "{spawns:?}");
    for (s, agent) in spawns.iter().zip(["s1", "s2", "s3"]) {
        assert!(s.starts_with(&format!("spawn {agent} ")), "{spawns:?}");
    }
    stop(op).await;
}

#[tokio::test]
async fn a_rejected_hook_fails_the_task_with_the_reason() {
    let (server, seen, op) = upper_on_a_server(Some("not today")).await;
    let id = server.start_task(blueprint(&["w"], true), json!("x")).await;
    let t = server.wait_state(&id, pb::TaskState::Failed).await;
    assert!(t.error.contains("not today"), "{}", t.error);
    assert!(
        !seen.all().iter().any(|e| e.starts_with("spawn")),
        "{:?}",
        seen.all()
    );
    stop(op).await;
}

/// Submits BLOCKED, then answers the ask with advice.
struct Asker;

impl Handler for Asker {
    async fn on_spawn(&self, _: pb::Spawn, worker: Worker) -> Result<Value, BoxError> {
        worker
            .submit("cannot do it", SubmitOutcome::Blocked)
            .await?;
        Ok(Value::Null)
    }

    async fn on_ask(&self, ask: pb::Ask) -> Value {
        assert!(!ask.step_id.is_empty());
        json!({"advice": "proceed"})
    }
}

#[tokio::test]
async fn an_ask_is_answered_and_the_answer_lands_in_ctx() {
    let server = Server::ephemeral().await;
    let op = serve(server.url(), Asker).await;
    let id = server
        .start_task(blueprint(&["w"], true), json!("hard job"))
        .await;
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    let out = output(&t, "o1");
    assert_eq!(out["senior_answer"]["advice"], "proceed", "{out}");
    stop(op).await;
}

/// Holds the spawn of `agent` (the first time only) until `release`, after telling
/// `inside`; other spawns as [`Upper`].
struct Holds {
    upper: Upper,
    agent: &'static str,
    inside: Arc<Notify>,
    release: Arc<Notify>,
    /// Return once the request was cancelled instead of waiting for `release`.
    until_cancelled: bool,
    held: Mutex<bool>,
}

impl Holds {
    fn new(agent: &'static str, until_cancelled: bool) -> Holds {
        Holds {
            upper: Upper::default(),
            agent,
            inside: Arc::default(),
            release: Arc::default(),
            until_cancelled,
            held: Mutex::new(false),
        }
    }
}

impl Handler for Holds {
    async fn on_spawn(&self, spawn: pb::Spawn, worker: Worker) -> Result<Value, BoxError> {
        let hold = spawn.agent == self.agent
            && !std::mem::replace(&mut *self.held.lock().expect("held"), true);
        if !hold {
            return self.upper.on_spawn(spawn, worker).await;
        }
        self.upper
            .seen
            .push(format!("spawn {} {}", spawn.agent, spawn.req_id));
        self.inside.notify_one();
        if self.until_cancelled {
            worker.cancelled().await;
            return Ok(json!("too late"));
        }
        self.release.notified().await;
        upper(&worker).await
    }

    async fn on_cancel(&self, cancel: pb::Cancel) {
        self.upper.on_cancel(cancel).await;
    }
}

#[tokio::test]
async fn a_stream_dropped_mid_spawn_resumes_and_the_spawn_is_handled_once() {
    let server = Server::ephemeral().await;
    let proxy = Proxy::start(server.addr).await;
    let handler = Holds::new("s1", false);
    let (inside, release, seen) = (
        handler.inside.clone(),
        handler.release.clone(),
        handler.upper.seen.clone(),
    );
    let op = serve(proxy.url(), handler).await;
    let id = server
        .start_task(blueprint(&["s1", "s2"], false), json!("ab"))
        .await;
    inside.notified().await;
    // The spawn is unacked (its handler runs): the server sends it again on the new stream.
    proxy.cut();
    release.notify_one();
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o2"), "AB");
    let counts = seen.counts();
    assert_eq!(counts["spawn s1"], 1, "{:?}", seen.all());
    assert_eq!(counts["spawn s2"], 1, "{:?}", seen.all());
    assert!(
        session(&server, &op).await.epoch >= 2,
        "the operator attached again"
    );
    stop(op).await;
}

#[tokio::test]
async fn a_server_restart_mid_flow_redispatches_only_the_step_in_flight() {
    let dir = common::temp_dir("restart");
    let addr = common::free_addr();
    let server = Server::durable(addr, &dir).await;
    let handler = Holds::new("s2", true);
    let (inside, seen) = (handler.inside.clone(), handler.upper.seen.clone());
    let op = serve(server.url(), handler).await;
    let id = server
        .start_task(blueprint(&["s1", "s2", "s3"], false), json!("abc"))
        .await;
    inside.notified().await;
    server.kill();
    let server = Server::durable(addr, &dir).await;
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o3"), "ABC");
    let all = seen.all();
    let counts = seen.counts();
    assert_eq!(counts["spawn s1"], 1, "{all:?}");
    assert_eq!(
        counts["spawn s2"], 2,
        "the step in flight comes again: {all:?}"
    );
    assert_eq!(counts["spawn s3"], 1, "{all:?}");
    let s2: Vec<&String> = all.iter().filter(|e| e.starts_with("spawn s2")).collect();
    assert_ne!(s2[0], s2[1], "a new req_id: {all:?}");
    // The voided request was cancelled with the restart as its reason.
    let old_req = s2[0].split(' ').nth(2).expect("req_id");
    assert!(
        all.iter()
            .any(|e| e.starts_with(&format!("cancel {old_req} server restarted"))),
        "{all:?}"
    );
    stop(op).await;
    server.kill();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stale_reply_is_a_logged_warning_and_the_operator_keeps_serving() {
    let logs = Logs::global();
    let server = Server::ephemeral().await;
    let handler = Holds::new("s1", true);
    let (inside, seen) = (handler.inside.clone(), handler.upper.seen.clone());
    let op = serve(server.url(), handler).await;
    let id = server
        .start_task(blueprint(&["s1"], false), json!("a"))
        .await;
    inside.notified().await;
    let cancel = pb::CancelTaskRequest {
        task_id: id.clone(),
        reason: "changed my mind".into(),
    };
    server.tasks().cancel_task(cancel).await.expect("cancel");
    server.wait_state(&id, pb::TaskState::Cancelled).await;
    // The handler replies once cancelled; the server answers notice{STALE}.
    let spawned = seen
        .all()
        .into_iter()
        .find(|e| e.starts_with("spawn s1 "))
        .expect("the spawn was seen");
    let req_id = format!("req_id={}", spawned.rsplit(' ').next().expect("req_id"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while logs.lines_with(&["Stale", &req_id]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning for {req_id}:\n{}",
            logs.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let warned = logs.lines_with(&["Stale", &req_id]);
    assert!(warned[0].contains("WARN"), "{warned:?}");
    assert!(
        seen.all().iter().any(|e| e.contains("changed my mind")),
        "on_cancel saw the reason: {:?}",
        seen.all()
    );
    // Still serving.
    let next = server
        .start_task(blueprint(&["s1"], false), json!("b"))
        .await;
    let t = server.wait_state(&next, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o1"), "B");
    stop(op).await;
}

/// Answers the first spawn with a value (no submit) once released, telling `returned`.
#[derive(Default)]
struct ValueWhenReleased {
    seen: Seen,
    inside: Arc<Notify>,
    release: Arc<Notify>,
    returned: Arc<Notify>,
}

impl Handler for ValueWhenReleased {
    async fn on_spawn(&self, spawn: pb::Spawn, _: Worker) -> Result<Value, BoxError> {
        self.seen
            .push(format!("spawn {} {}", spawn.agent, spawn.req_id));
        self.inside.notify_one();
        self.release.notified().await;
        self.returned.notify_one();
        Ok(json!("from the ack"))
    }
}

#[tokio::test]
async fn a_reply_made_while_disconnected_is_sent_when_the_server_sends_the_request_again() {
    let logs = Logs::global();
    let server = Server::ephemeral().await;
    let proxy = Proxy::start(server.addr).await;
    let handler = ValueWhenReleased::default();
    let seen = handler.seen.clone();
    let (inside, release) = (handler.inside.clone(), handler.release.clone());
    let returned = handler.returned.clone();
    let op = serve(proxy.url(), handler).await;
    let id = server
        .start_task(blueprint(&["s1"], false), json!("a"))
        .await;
    inside.notified().await;
    proxy.cut_and_hold();
    release.notify_one();
    // The handler returns while no stream is attached: its frame counts as handled (the
    // next hello acks it) and the server sends the request again, awaiting its reply.
    returned.notified().await;
    proxy.reopen();
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o1"), "from the ack");
    assert_eq!(seen.counts()["spawn s1"], 1, "{:?}", seen.all());
    let spawned = seen.all()[0].clone();
    let req_id = format!("req_id={}", spawned.rsplit(' ').next().expect("req_id"));
    assert!(
        !logs
            .lines_with(&["already handled: reply again", &req_id])
            .is_empty(),
        "{}",
        logs.text()
    );
    stop(op).await;
}

#[tokio::test]
async fn an_existing_session_is_served_and_a_wrong_token_ends_run_with_an_error() {
    let server = Server::ephemeral().await;
    let mut ops = pb::operator_service_client::OperatorServiceClient::new(server.channel.clone());
    let create = pb::CreateSessionRequest {
        roles: vec!["remote".into()],
    };
    let created = ops
        .create_session(create)
        .await
        .expect("session")
        .into_inner();

    let wrong = Operator::builder(server.url())
        .session(created.sid.clone(), "not-the-token")
        .connect(Upper::default())
        .await
        .expect("no call before run");
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), wrong.run())
        .await
        .expect("refused at once, not retried")
        .expect_err("a wrong token");
    assert!(
        matches!(&err, mlua_swarm_operator::Error::Refused(s) if s.code() == tonic::Code::Unauthenticated),
        "{err}"
    );

    let op = Operator::builder(server.url())
        .session(created.sid, created.token)
        .connect(Upper::default())
        .await
        .expect("operator");
    let stop = op.shutdown_handle();
    let run = tokio::spawn(op.run());
    let id = server
        .start_task(blueprint(&["w"], true), json!("ok"))
        .await;
    let t = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(output(&t, "o1"), "OK");
    stop.shutdown();
    run.await.expect("operator task").expect("a clean stop");
}
