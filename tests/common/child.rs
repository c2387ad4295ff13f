//! Real `mse-grpc` child processes (killed with SIGKILL, started again on the same
//! state), a scripted operator, and the kill-and-restart scenarios the durable test
//! files share (SQLite under a data dir, PostgreSQL with `--database-url`).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::{authed, fixture, start_inline, C, S};

/// A server child process on `dir`.
pub struct Proc {
    pub child: Child,
    pub channel: Channel,
}

impl Proc {
    /// Starts the binary on `dir` with `extra` flags and waits until it serves.
    pub async fn start(dir: &Path, extra: &[&str]) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env_remove("MSE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mse-grpc");
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        // From here on, Drop kills and reaps the child whatever happens.
        let proc = Proc { child, channel };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut health = tonic_health::pb::health_client::HealthClient::new(proc.channel.clone());
        loop {
            let req = tonic_health::pb::HealthCheckRequest::default();
            if let Ok(r) = health.check(req).await {
                if r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return proc;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server on {} never served",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replica `id` on `dir`, sharing the database at `database_url` and the nats-server
    /// at `nats_url` with the others ([`super::cluster::replica_flags`]).
    pub async fn replica(dir: &Path, database_url: &str, nats_url: &str, id: &str) -> Proc {
        let flags = super::cluster::replica_flags(database_url, nats_url, id);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Proc::start(dir, &flags).await
    }

    /// SIGKILL, and reap.
    pub fn kill(self) {
        drop(self);
    }

    /// Starts the fixture Blueprint `bp` on `input`; its task id.
    pub async fn start_flow(&self, bp: &str, input: serde_json::Value) -> String {
        let req = start_inline(fixture(bp), input);
        let started = self.tasks().start_task(req).await.expect("start task");
        started.into_inner().task_id
    }

    pub fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    /// StartTask `req` on this replica once it learned the operator seat the task names
    /// (another replica's attach announcement may still be on its way: retried while the
    /// seat is unknown here, bounded); the task id.
    pub async fn start_once_seated(&self, req: pb::StartTaskRequest) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.tasks().start_task(req.clone()).await {
                Ok(started) => return started.into_inner().task_id,
                // An agent's operator_ref, or the launch's operator_sid, names no seat yet.
                Err(e)
                    if e.message().contains("held by no live operator session")
                        || e.message().contains("no operator session or role") =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "the seat never reached it: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("start task: {e:?}"),
            }
        }
    }

    /// Runs the fixture Blueprint `bp` on `input` to its end; it must complete.
    pub async fn run_completed(&self, bp: &str, input: serde_json::Value) -> pb::Task {
        let req: pb::RunTaskRequest = super::inline(fixture(bp), input);
        let resp = self.tasks().run_task(req).await.expect("run");
        let t = resp.into_inner().task.expect("task");
        assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
        t
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

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted operator holding the role `remote`: answers every spawn with the step's
/// prompt upper-cased, counting spawns per (task, agent).
pub struct Operator {
    tx: tokio::sync::mpsc::Sender<pb::ClientFrame>,
    rx: tonic::Streaming<pb::ServerFrame>,
    workers: WorkerServiceClient<Channel>,
}

impl Operator {
    pub async fn join(server: &Proc) -> (Operator, pb::CreateSessionResponse) {
        let mut ops = OperatorServiceClient::new(server.channel.clone());
        let created = ops
            .create_session(pb::CreateSessionRequest {
                roles: vec!["remote".into()],
            })
            .await
            .expect("session")
            .into_inner();
        (Operator::attach(server, &created).await, created)
    }

    /// Connects to the session `created` (which survives a restart).
    pub async fn attach(server: &Proc, created: &pb::CreateSessionResponse) -> Operator {
        let mut ops = OperatorServiceClient::new(server.channel.clone());
        let (tx, out) = tokio::sync::mpsc::channel(1024);
        let hello = pb::Hello {
            sid: created.sid.clone(),
            last_seq: 0,
        };
        tx.send(pb::ClientFrame {
            body: Some(C::Hello(hello)),
        })
        .await
        .expect("hello");
        let stream = tokio_stream::wrappers::ReceiverStream::new(out);
        let mut rx = ops
            .connect(authed(stream, &created.token))
            .await
            .expect("connect")
            .into_inner();
        let first = rx.message().await.expect("welcome").expect("frame");
        assert!(matches!(first.body, Some(S::Welcome(_))), "{first:?}");
        Operator {
            tx,
            rx,
            workers: WorkerServiceClient::new(server.channel.clone()),
        }
    }

    /// Where this operator's frames go (to answer on its own tokio tasks).
    pub fn frames(&self) -> tokio::sync::mpsc::Sender<pb::ClientFrame> {
        self.tx.clone()
    }

    /// Does the worker's part of spawns on `server` (the replica running the steps).
    pub fn workers_on(mut self, server: &Proc) -> Operator {
        self.workers = WorkerServiceClient::new(server.channel.clone());
        self
    }

    pub async fn send(&self, body: C) {
        let _ = self.tx.send(pb::ClientFrame { body: Some(body) }).await;
    }

    /// The next spawn (other frames acked), or None when the stream ends.
    pub async fn next_spawn(&mut self) -> Option<pb::Spawn> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
                .await
                .expect("a frame in time")
                .ok()??;
            self.send(C::Ack(pb::Ack { seq: frame.seq })).await;
            match frame.body {
                Some(S::Ping(p)) => self.send(C::Pong(pb::Pong { nonce: p.nonce })).await,
                Some(S::Spawn(s)) => return Some(s),
                _ => {}
            }
        }
    }

    /// Answers spawns until one for `agent` arrives, which it returns unanswered; every
    /// spawn seen is counted in `seen` by agent.
    pub async fn answer_until(
        &mut self,
        agent: &str,
        seen: &mut HashMap<String, u32>,
    ) -> pb::Spawn {
        loop {
            let s = self.next_spawn().await.expect("spawn");
            *seen.entry(s.agent.clone()).or_default() += 1;
            if s.agent == agent {
                return s;
            }
            self.answer(&s).await;
        }
    }

    /// Does the worker's part of a spawn and acks it.
    pub async fn answer(&mut self, spawn: &pb::Spawn) {
        answer(self.workers.clone(), self.tx.clone(), spawn)
            .await
            .expect("answer");
    }

    /// Answers every spawn on its own tokio task until the stream ends (the server was
    /// killed), counting spawns per (task, agent) in `tally`.
    pub fn answer_all(mut self, tally: Arc<Mutex<Tally>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok(Some(spawn)) = self.next_frame_spawn().await {
                tally.lock().expect("tally").saw(&spawn);
                let (workers, tx) = (self.workers.clone(), self.tx.clone());
                // A kill can cut the answer; the resumed run spawns the step again.
                tokio::spawn(async move { answer(workers, tx, &spawn).await });
            }
        })
    }

    /// The next spawn, with no deadline (pings keep the stream busy); Ok(None) or an
    /// error once the stream ends.
    pub async fn next_frame_spawn(&mut self) -> Result<Option<pb::Spawn>, tonic::Status> {
        loop {
            let Some(frame) = self.rx.message().await? else {
                return Ok(None);
            };
            self.send(C::Ack(pb::Ack { seq: frame.seq })).await;
            match frame.body {
                Some(S::Ping(p)) => self.send(C::Pong(pb::Pong { nonce: p.nonce })).await,
                Some(S::Spawn(s)) => return Ok(Some(s)),
                _ => {}
            }
        }
    }
}

/// The worker's part of a spawn (the prompt, a body naming the agent), then the ack.
pub async fn answer(
    workers: WorkerServiceClient<Channel>,
    tx: tokio::sync::mpsc::Sender<pb::ClientFrame>,
    spawn: &pb::Spawn,
) -> Result<(), tonic::Status> {
    worker_part(workers, spawn, pb::SubmitOutcome::Pass).await?;
    let ack = pb::SpawnAck {
        req_id: spawn.req_id.clone(),
        ..Default::default()
    };
    let _ = tx
        .send(pb::ClientFrame {
            body: Some(C::SpawnAck(ack)),
        })
        .await;
    Ok(())
}

/// The worker's part of a spawn alone: reads the prompt and submits a body naming the
/// agent with `outcome`.
pub async fn worker_part(
    mut workers: WorkerServiceClient<Channel>,
    spawn: &pb::Spawn,
    outcome: pb::SubmitOutcome,
) -> Result<(), tonic::Status> {
    let prompt = workers
        .get_prompt(authed(
            pb::GetPromptRequest {
                step_id: spawn.step_id.clone(),
            },
            &spawn.worker_handle,
        ))
        .await?
        .into_inner();
    let body = format!("{}+{}", prompt.prompt, spawn.agent);
    workers
        .submit(authed(
            pb::SubmitRequest {
                body,
                outcome: outcome as i32,
                step_id: String::new(),
            },
            &spawn.worker_handle,
        ))
        .await?;
    Ok(())
}

/// Spawns an operator saw, per (task, agent), and the last agent spawned per task.
#[derive(Default)]
pub struct Tally {
    pub spawns: HashMap<(String, String), u32>,
    pub last: HashMap<String, String>,
}

impl Tally {
    pub fn saw(&mut self, spawn: &pb::Spawn) {
        let key = (spawn.task_id.clone(), spawn.agent.clone());
        *self.spawns.entry(key).or_default() += 1;
        self.last.insert(spawn.task_id.clone(), spawn.agent.clone());
    }
}

/// Three finished tasks are read, listed and watched after a kill and a restart with
/// `--data-dir dir` and `extra`.
pub async fn finished_tasks_survive_a_kill(dir: &Path, extra: &[&str]) {
    let server = Proc::start(dir, extra).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let t = server
            .run_completed("identity.json", json!({ "input": i }))
            .await;
        ids.push(t.task_id);
    }
    server.kill();
    let server = Proc::start(dir, extra).await;
    for (i, id) in ids.iter().enumerate() {
        let t = server.get(id).await;
        assert_eq!(t.state(), pb::TaskState::Completed);
        let ctx = super::from_value(t.final_ctx);
        assert_eq!(ctx["output"]["echoed"], json!(i.to_string()), "{ctx}");
        assert_eq!(t.runs.len(), 1);
        assert_eq!(t.runs[0].end(), pb::RunEnd::Completed);
    }
    let listed = server
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tasks.len(), 3);
    let events: Vec<_> = server
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            task_id: ids[0].clone(),
        })
        .await
        .expect("watch")
        .into_inner()
        .map(|e| e.expect("event").event.expect("event").seq)
        .collect()
        .await;
    assert_eq!(
        events,
        vec![1, 2, 3, 4],
        "started, dispatched, finished, completed"
    );
    server.kill();
}

/// A five-step operator flow killed while step 3 is in flight completes after a
/// restart (`--data-dir dir` and `extra`): steps 1 and 2 are not spawned again.
pub async fn operator_flow_resumes_after_a_kill(dir: &Path, extra: &[&str]) {
    let server = Proc::start(dir, extra).await;
    let (mut op, session) = Operator::join(&server).await;
    let id = server
        .start_flow("five-steps.json", json!({"input": "x"}))
        .await;
    let mut spawns: HashMap<String, u32> = HashMap::new();
    // Steps 1 and 2 are acked and journaled; step 3 is in flight.
    op.answer_until("s3", &mut spawns).await;
    drop(op);
    server.kill();

    let server = Proc::start(dir, extra).await;
    let t = server.get(&id).await;
    assert_eq!(
        t.state(),
        pb::TaskState::Interrupted,
        "waits for its operator"
    );
    // The session and its role survived the restart; its stream resumes the task.
    let mut op = Operator::attach(&server, &session).await;
    loop {
        let s = op.next_spawn().await.expect("spawn");
        *spawns.entry(s.agent.clone()).or_default() += 1;
        op.answer(&s).await;
        if s.agent == "s5" {
            break;
        }
    }
    let done = server.wait_state(&id, pb::TaskState::Completed).await;
    assert_eq!(spawns["s1"], 1, "{spawns:?}");
    assert_eq!(spawns["s2"], 1, "{spawns:?}");
    assert_eq!(spawns["s3"], 2, "the step in flight runs again: {spawns:?}");
    assert_eq!(spawns["s4"], 1, "{spawns:?}");
    assert_eq!(spawns["s5"], 1, "{spawns:?}");
    let ctx = super::from_value(done.final_ctx);
    assert!(
        ctx["o5"].as_str().is_some_and(|s| s.contains("s5")),
        "{ctx}"
    );
    assert_eq!(done.runs.len(), 2);
    assert_eq!(done.runs[1].start(), pb::RunStart::Resume);
    assert_eq!(done.runs[1].replayed_steps, 2);
    server.kill();
}

/// Waves of tasks, each started on a fresh server and cut by a kill.
const WAVES: usize = 5;
/// Tasks per wave; every `OPERATED_EVERY`-th is served by the operator.
const PER_WAVE: usize = 40;
const OPERATED_EVERY: usize = 5;
const STEPS: [&str; 5] = ["s1", "s2", "s3", "s4", "s5"];

impl Proc {
    /// Every held task's state (all pages).
    pub async fn states(&self) -> HashMap<String, pb::TaskState> {
        let mut out = HashMap::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListTasksRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = self
                .tasks()
                .list_tasks(req)
                .await
                .expect("list")
                .into_inner();
            for t in &page.tasks {
                out.insert(t.task_id.clone(), t.state());
            }
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }

    /// Polls until `pred` holds of the states (bounded).
    pub async fn wait_states(
        &self,
        what: &str,
        pred: impl Fn(&HashMap<String, pb::TaskState>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let states = self.states().await;
            if pred(&states) {
                return;
            }
            assert!(Instant::now() < deadline, "never {what}: {states:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn events(&self, id: &str) -> Vec<TaskEventBody> {
        let req = pb::WatchTaskRequest { task_id: id.into() };
        self.tasks()
            .watch_task(req)
            .await
            .expect("watch")
            .into_inner()
            .map(|e| e.expect("event").event.expect("event").kind.expect("kind"))
            .collect()
            .await
    }
}

pub type TaskEventBody = pb::task_event::Kind;

/// 200 tasks (every fifth served by an operator) in five waves, each cut by a kill and a
/// restart with `--data-dir dir` and `extra`: all complete, no completed step is
/// dispatched again. Wants a multi-threaded runtime.
pub async fn tasks_survive_kills(dir: &Path, extra: &[&str]) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (mut local, mut operated) = (Vec::new(), Vec::new());
    // Spawns that may repeat: the last one of each operated task at each kill.
    let mut may_repeat: HashMap<(String, String), u32> = HashMap::new();
    let mut server = Proc::start(dir, extra).await;
    let (first, session) = Operator::join(&server).await;
    let mut op = first.answer_all(tally.clone());
    for wave in 0..WAVES {
        let starts = (0..PER_WAVE).map(|i| {
            let served = i % OPERATED_EVERY == 0;
            let input = format!("w{wave}-{i}");
            let bp = if served {
                "five-steps.json"
            } else {
                "five-local.json"
            };
            let req = start_inline(fixture(bp), json!({ "input": input }));
            let mut tasks = server.tasks();
            async move {
                let id = tasks
                    .start_task(req)
                    .await
                    .expect("start")
                    .into_inner()
                    .task_id;
                (served, id, input)
            }
        });
        let started = futures::future::join_all(starts).await;
        let wave_ids: Vec<String> = started.iter().map(|(_, id, _)| id.clone()).collect();
        for (served, id, input) in started {
            if served {
                operated.push(id)
            } else {
                local.push((id, input))
            }
        }
        // Kill once the wave is under way: its first task done, the others in flight.
        server
            .wait_states("a task of the wave completed", |s| {
                wave_ids
                    .iter()
                    .any(|id| s.get(id) == Some(&pb::TaskState::Completed))
            })
            .await;
        let done = server.states().await;
        server.kill();
        tokio::time::timeout(Duration::from_secs(10), op)
            .await
            .expect("the operator's stream ends with its server")
            .expect("operator task");
        // After the kill: every spawn the operator saw is counted, the last of each
        // unfinished task may have been in flight.
        {
            let tally = tally.lock().expect("tally");
            for (task, agent) in &tally.last {
                if done.get(task) != Some(&pb::TaskState::Completed) {
                    *may_repeat.entry((task.clone(), agent.clone())).or_default() += 1;
                }
            }
        }
        server = Proc::start(dir, extra).await;
        // The session survived the kill: the operator re-attaches to it.
        op = Operator::attach(&server, &session)
            .await
            .answer_all(tally.clone());
    }
    let total = WAVES * PER_WAVE;
    server
        .wait_states("all tasks completed", |s| {
            s.len() == total && s.values().all(|st| *st == pb::TaskState::Completed)
        })
        .await;
    op.abort();

    let (mut local_resumed, mut operated_resumed) = (0, 0);
    let tally = tally.lock().expect("tally").spawns.clone();
    for id in &operated {
        let t = server.get(id).await;
        operated_resumed += usize::from(t.runs.len() > 1);
        for step in STEPS {
            let key = (id.clone(), step.to_string());
            let seen = tally.get(&key).copied().unwrap_or(0);
            let allowed = 1 + may_repeat.get(&key).copied().unwrap_or(0);
            assert!(
                (1..=allowed).contains(&seen),
                "{id} {step} spawned {seen} times, {allowed} allowed"
            );
        }
        let ctx = super::from_value(t.final_ctx);
        assert!(
            ctx["o5"].as_str().is_some_and(|s| s.ends_with("+s5")),
            "{ctx}"
        );
    }
    for (id, input) in &local {
        let t = server.get(id).await;
        local_resumed += usize::from(t.runs.len() > 1);
        let ctx = super::from_value(t.final_ctx);
        assert_eq!(ctx["o5"]["echoed"], json!(input), "{ctx}");
        check_local_dispatches(id, &server.events(id).await, &t.runs);
    }
    eprintln!(
        "resumed after a kill: {local_resumed} of {} in-process tasks, {operated_resumed} of {} operated",
        local.len(),
        operated.len()
    );
    assert!(
        local_resumed > 0 && operated_resumed > 0,
        "the kills cut no run"
    );
    server.kill();
}

/// An in-process task's events, run by run: a run's StepDispatched events are the
/// steps its journal answered plus those it really dispatched. A killed run really
/// dispatches the steps it journaled plus at most the one in flight; the last run
/// dispatches exactly the steps its journal could not answer, once each.
fn check_local_dispatches(id: &str, events: &[TaskEventBody], runs: &[pb::TaskRun]) {
    let mut dispatched = vec![0u64; runs.len()];
    let mut run = 0;
    for body in events {
        match body {
            TaskEventBody::RunStarted(_) => run += 1,
            TaskEventBody::StepDispatched(_) => dispatched[run] += 1,
            _ => {}
        }
    }
    assert_eq!(run + 1, runs.len(), "{id}: one RunStarted per resume");
    let last = runs.len() - 1;
    for (k, r) in runs.iter().enumerate() {
        let real = dispatched[k].saturating_sub(r.replayed_steps);
        if k == last {
            assert_eq!(dispatched[k], 5, "{id}: the last run passes each step once");
            assert_eq!(real, 5 - r.replayed_steps, "{id}: {runs:?}");
        } else {
            let journaled = runs[k + 1].replayed_steps - r.replayed_steps;
            assert!(
                real <= journaled + 1,
                "{id}: run {k} dispatched {real} steps, journaled {journaled}: {runs:?}"
            );
        }
    }
}
