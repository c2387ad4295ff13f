//! `kill -9` of the replica holding 25 operator streams while their requests are pending
//! (issue 14, build step 4): each operator attaches again to another replica with its
//! token, its welcome carries the previous epoch + 1, every pending request comes again
//! with its req_id, all 25 tasks complete on the replica running them, and no request is
//! acted on twice. Three `mse-grpc` child processes on one throwaway PostgreSQL and one
//! nats-server (skipped, saying so, only when the PostgreSQL binaries are absent).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::child::{worker_part, Proc};
use common::nats::NatsServer;
use common::postgres::{bounded, Postgres};
use common::{fixture, start_inline, temp_dir, Op, C, S};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// Operator sessions (each its own role, each serving one task).
const SEATS: usize = 25;
const STEPS: [&str; 5] = ["s1", "s2", "s3", "s4", "s5"];
/// What acting on an `ask` is counted as.
const ASK: &str = "ask";

/// Where an operator stands at the kill: it serves s1 and s2, then at s3 …
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// … leaves the spawn alone (pending, not acted on).
    Untouched,
    /// … does the worker's part but has not sent the spawn_ack yet.
    WorkedUnreplied,
    /// … has the worker report BLOCKED and acks the spawn; the engine asks, and the ask
    /// is left pending.
    AskPending,
    /// … does the worker's part and sends the spawn_ack as the kill comes: the reply may
    /// or may not reach the runner first; a request after it (s4) is left pending.
    RepliedAtKill,
}

impl Cut {
    fn of(i: usize) -> Cut {
        [
            Cut::Untouched,
            Cut::WorkedUnreplied,
            Cut::AskPending,
            Cut::RepliedAtKill,
        ][i % 4]
    }
}

/// A request frame an operator acts on.
#[derive(Debug)]
enum Req {
    Spawn(pb::Spawn),
    Ask(pb::Ask),
}

impl Req {
    fn req_id(&self) -> &str {
        match self {
            Req::Spawn(s) => &s.req_id,
            Req::Ask(a) => &a.req_id,
        }
    }

    /// What it asks for: the step agent of a spawn, [`ASK`] for an ask.
    fn what(&self) -> &str {
        match self {
            Req::Spawn(s) => &s.agent,
            Req::Ask(_) => ASK,
        }
    }
}

/// One operator: its session, what it saw and what it did.
struct Seat {
    cut: Cut,
    session: pb::CreateSessionResponse,
    /// Worker calls go to the replica running the steps.
    workers: WorkerServiceClient<Channel>,
    /// Every request frame in order: (req_id, what, before the kill).
    seen: Vec<(String, String, bool)>,
    /// The reply decided per req_id acted on (sent, or not yet for `WorkedUnreplied`).
    replies: HashMap<String, C>,
    sent: HashSet<String>,
    /// Times each thing was acted on (worker's part of a step, answer to an ask).
    acted: HashMap<String, u32>,
    /// req_ids that came again after being acted on: their reply was sent again.
    replied_again: Vec<String>,
    /// Frames other than requests and pings.
    other: Vec<String>,
    last_seq: u64,
    /// The epoch of the welcome on the killed replica, and on the new one.
    epochs: (u64, u64),
    restarted: bool,
}

impl Seat {
    /// The next request (frames acked, pings answered); None once the stream ends or
    /// `stop` is raised.
    async fn next(&mut self, op: &mut Op, stop: &mut watch::Receiver<bool>) -> Option<Req> {
        loop {
            let item = tokio::select! {
                _ = stop.wait_for(|s| *s) => return None,
                item = op.rx.message() => item,
            };
            let Ok(Some(frame)) = item else { return None };
            if frame.seq > 0 {
                // Seqs rise across the move too: the new holder continues past `last_seq`.
                assert!(
                    frame.seq > self.last_seq,
                    "seq {} after {}: {frame:?}",
                    frame.seq,
                    self.last_seq
                );
                self.last_seq = frame.seq;
                send(op, C::Ack(pb::Ack { seq: frame.seq })).await;
            }
            match frame.body {
                Some(S::Ping(p)) => send(op, C::Pong(pb::Pong { nonce: p.nonce })).await,
                Some(S::Spawn(s)) => return Some(Req::Spawn(s)),
                Some(S::Ask(a)) => return Some(Req::Ask(a)),
                other => self.other.push(format!("{other:?}")),
            }
        }
    }

    /// Acts on `req` unless it acted on its req_id before: then it sends the same reply
    /// again (docs/OPERATOR-PROTOCOL.md, "Behind several replicas").
    async fn act_once(&mut self, op: &Op, req: &Req, outcome: pb::SubmitOutcome) {
        let req_id = req.req_id().to_string();
        if let Some(reply) = self.replies.get(&req_id).cloned() {
            self.replied_again.push(req_id.clone());
            self.sent.insert(req_id);
            send(op, reply).await;
            return;
        }
        self.act(req, outcome).await;
        self.sent.insert(req_id.clone());
        send(op, self.replies[&req_id].clone()).await;
    }

    /// Does what `req` asks for and keeps the reply, unsent.
    async fn act(&mut self, req: &Req, outcome: pb::SubmitOutcome) {
        let reply = match req {
            Req::Spawn(s) => {
                worker_part(self.workers.clone(), s, outcome)
                    .await
                    .expect("the worker's part on the runner");
                C::SpawnAck(pb::SpawnAck {
                    req_id: s.req_id.clone(),
                    ..Default::default()
                })
            }
            Req::Ask(a) => C::Answer(pb::Answer {
                req_id: a.req_id.clone(),
                value: Some(mlua_swarm_grpc::grpc::convert::json_to_value(
                    json!({"advice": "go on"}),
                )),
            }),
        };
        *self.acted.entry(req.what().to_string()).or_default() += 1;
        self.replies.insert(req.req_id().to_string(), reply);
    }

    /// Before the kill: acts on `req` as its cut says; true once it reached its cut.
    async fn before_kill(&mut self, op: &Op, req: &Req) -> bool {
        use pb::SubmitOutcome::{Blocked, Pass};
        let at_s3 = req.what() == "s3";
        match (self.cut, req) {
            (_, Req::Spawn(s)) if s.agent == "s1" || s.agent == "s2" => {
                self.act_once(op, req, Pass).await;
                false
            }
            (Cut::Untouched, _) if at_s3 => true,
            (Cut::AskPending, _) if at_s3 => {
                self.act_once(op, req, Blocked).await;
                false
            }
            (Cut::AskPending, Req::Ask(_)) => true,
            (Cut::WorkedUnreplied | Cut::RepliedAtKill, _) if at_s3 => {
                self.act(req, Pass).await;
                true
            }
            (cut, req) => panic!("{cut:?}: unexpected {req:?}"),
        }
    }
}

async fn send(op: &Op, body: C) {
    // A killed replica's stream is gone: what is sent there is lost, as on a real network.
    let _ = op.tx.send(pb::ClientFrame { body: Some(body) }).await;
}

/// The test's cues to the operators.
#[derive(Clone)]
struct Cues {
    /// An operator reached its cut; a `RepliedAtKill` one says so again once its reply
    /// is queued on its stream.
    ready: mpsc::Sender<()>,
    /// The kill comes: `RepliedAtKill` operators send their reply.
    kill: watch::Receiver<bool>,
    /// Every task completed: the operators stop.
    stop: watch::Receiver<bool>,
}

/// One operator's life: its stream on the holder until the kill, then the same session on
/// `next_holder` until `stop`.
async fn serve(mut seat: Seat, mut op: Op, next_holder: Channel, mut cues: Cues) -> Seat {
    seat.epochs.0 = op.welcome.epoch;
    let mut at_cut = false;
    while let Some(req) = seat.next(&mut op, &mut cues.stop).await {
        seat.seen
            .push((req.req_id().into(), req.what().into(), true));
        // Past its cut an operator acts on nothing more before the kill.
        if at_cut || !seat.before_kill(&op, &req).await {
            continue;
        }
        at_cut = true;
        cues.ready.send(()).await.expect("the test waits");
        if seat.cut == Cut::RepliedAtKill {
            let _ = cues.kill.wait_for(|k| *k).await;
            seat.sent.insert(req.req_id().into());
            send(&op, seat.replies[req.req_id()].clone()).await;
            cues.ready.send(()).await.expect("the test waits");
        }
    }
    assert!(at_cut, "the stream ended before the kill");
    let mut op = Op::connect_on(
        &next_holder,
        &seat.session.sid,
        &seat.session.token,
        seat.last_seq,
    )
    .await
    .expect("attach to another replica");
    seat.epochs.1 = op.welcome.epoch;
    seat.restarted = op.welcome.server_restarted;
    while let Some(req) = seat.next(&mut op, &mut cues.stop).await {
        seat.seen
            .push((req.req_id().into(), req.what().into(), false));
        seat.act_once(&op, &req, pb::SubmitOutcome::Pass).await;
    }
    seat
}

/// `five-steps.json` served by the seat `role`; a BLOCKED worker makes the engine ask it.
fn flow_for(role: &str) -> Value {
    let mut bp = fixture("five-steps.json");
    for agent in bp["agents"].as_array_mut().expect("agents") {
        agent["spec"]["operator_ref"] = json!(role);
    }
    bp["operators"][0]["name"] = json!(role);
    bp["spawner_hints"] = json!({ "layers": ["senior_escalation"] });
    bp
}

/// The replicas' data dirs and logs, removed unless the test failed.
struct Dirs(PathBuf);

impl Dirs {
    fn of(&self, replica: &str) -> PathBuf {
        self.0.join(replica)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.0.display();
            eprintln!("kept for a look: {logs} (server logs: a.log, b.log, c.log)");
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Every request an operator saw came once, except the last one before the kill: that
/// one comes again on the new holder with its req_id if it was left unanswered, and may
/// if it was answered. Each thing was acted on once; each step had one req_id.
fn check(i: usize, seat: &Seat) {
    let tag = format!("seat {i} ({:?})", seat.cut);
    assert_eq!(
        seat.epochs.1,
        seat.epochs.0 + 1,
        "{tag}: the welcome on the new holder"
    );
    assert!(!seat.restarted, "{tag}: no server restarted");
    let mut times: HashMap<&str, u32> = HashMap::new();
    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (req_id, what, _) in &seat.seen {
        *times.entry(req_id).or_default() += 1;
        ids.entry(what).or_default().insert(req_id);
    }
    let last = seat.seen.iter().rev().find(|(_, _, before)| *before);
    let (last_id, last_what, _) = last.expect("requests before the kill");
    for (req_id, n) in &times {
        let allowed = if req_id == last_id { 2 } else { 1 };
        assert!(
            *n <= allowed,
            "{tag}: {req_id} came {n} times: {:?}",
            seat.seen
        );
    }
    if !seat.sent.contains(last_id) {
        assert_eq!(
            times[last_id.as_str()],
            2,
            "{tag}: the pending {last_what} came again: {:?}",
            seat.seen
        );
    }
    let mut expected: HashMap<String, u32> = STEPS.iter().map(|s| (s.to_string(), 1)).collect();
    if seat.cut == Cut::AskPending {
        expected.insert(ASK.into(), 1);
    }
    assert_eq!(seat.acted, expected, "{tag}: acted on once each");
    for (what, reqs) in &ids {
        assert_eq!(reqs.len(), 1, "{tag}: {what} under several req_ids");
    }
    for again in &seat.replied_again {
        assert_eq!(
            again, last_id,
            "{tag}: only the request at the kill repeats"
        );
    }
    assert!(seat.other.is_empty(), "{tag}: {:?}", seat.other);
}

/// Per cut: how many operators had which request pending at the kill, and how many saw
/// it again on the new holder (e.g. `RepliedAtKill: s3 1/2 again, s4 4/4 again`).
fn summary(seats: &[Seat]) -> String {
    let mut per: HashMap<(String, String), (u32, u32)> = HashMap::new();
    for seat in seats {
        let Some((id, what, _)) = seat.seen.iter().rev().find(|(_, _, before)| *before) else {
            continue;
        };
        let again = seat.seen.iter().any(|(i, _, before)| i == id && !before);
        let e = per
            .entry((format!("{:?}", seat.cut), what.clone()))
            .or_default();
        e.0 += u32::from(again);
        e.1 += 1;
    }
    let mut lines: Vec<String> = per
        .into_iter()
        .map(|((cut, what), (again, n))| format!("{cut}: {what} {again}/{n} again"))
        .collect();
    lines.sort();
    lines.join(", ")
}

/// The tasks that are not running, with their errors.
async fn stuck(runner: &Proc, ids: &[String]) -> String {
    let mut out = Vec::new();
    for id in ids {
        let t = runner.get(id).await;
        if t.state() != pb::TaskState::Running {
            out.push(format!("{id} {:?} {}", t.state(), t.error));
        }
    }
    out.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_of_25_streams_dies_and_every_request_is_served_once_elsewhere() {
    let Some(pg) = Postgres::start() else { return };
    let dirs = Dirs(temp_dir("holder-kill"));
    bounded(240, async {
        let began = Instant::now();
        let nats = NatsServer::start();
        let (url, nats_url) = (pg.database().await, nats.url());
        // A holds the streams, B runs the tasks, C takes the streams after the kill.
        let [a, b, c] = [dirs.of("a"), dirs.of("b"), dirs.of("c")];
        let a = Proc::replica(&a, &url, &nats_url, "a").await;
        let b = Proc::replica(&b, &url, &nats_url, "b").await;
        let c = Proc::replica(&c, &url, &nats_url, "c").await;
        let (ready, mut readies) = mpsc::channel(2 * SEATS);
        let (kill, kill_cue) = watch::channel(false);
        let (stop, stop_cue) = watch::channel(false);
        let cues = Cues {
            ready,
            kill: kill_cue,
            stop: stop_cue,
        };
        let mut seats = Vec::new();
        let mut ids = Vec::new();
        for i in 0..SEATS {
            let role = format!("seat-{i:02}");
            let session = OperatorServiceClient::new(a.channel.clone())
                .create_session(pb::CreateSessionRequest {
                    roles: vec![role.clone()],
                })
                .await
                .expect("create a session on A")
                .into_inner();
            let op = Op::connect_on(&a.channel, &session.sid, &session.token, 0)
                .await
                .expect("attach on A");
            let mut req = start_inline(flow_for(&role), json!({ "input": format!("in-{i}") }));
            // Pinned, and the pin is checked against the seats B registered: named only by
            // the agents' operator_ref, a StartTask racing B's registration of the seat can
            // compile without a pin, and its asks then reach nobody (the launch reads the
            // registered seats before it compiles).
            req.operator_sid = role.clone();
            ids.push(b.start_once_seated(req).await);
            let seat = Seat {
                cut: Cut::of(i),
                session,
                workers: WorkerServiceClient::new(b.channel.clone()),
                seen: Vec::new(),
                replies: HashMap::new(),
                sent: HashSet::new(),
                acted: HashMap::new(),
                replied_again: Vec::new(),
                other: Vec::new(),
                last_seq: 0,
                epochs: (0, 0),
                restarted: false,
            };
            let served = serve(seat, op, c.channel.clone(), cues.clone());
            seats.push(tokio::spawn(served));
        }
        // Every operator at its cut (a `RepliedAtKill` one says so again only after the
        // kill cue), then the replies sent at the kill queued, then the kill.
        for _ in 0..SEATS {
            let ready = tokio::time::timeout(Duration::from_secs(60), readies.recv());
            if ready.await.is_err() {
                panic!(
                    "not every operator reached its cut: {}",
                    stuck(&b, &ids).await
                );
            }
        }
        let set_up = began.elapsed();
        kill.send(true).expect("operators listen");
        let at_kill = (0..SEATS).filter(|i| Cut::of(*i) == Cut::RepliedAtKill);
        for _ in at_kill {
            readies.recv().await.expect("a reply sent at the kill");
        }
        let killed = Instant::now();
        a.kill();
        for id in &ids {
            b.wait_state(id, pb::TaskState::Completed).await;
        }
        let recovered = killed.elapsed();
        stop.send(true).expect("operators listen");
        let mut served = Vec::new();
        for (i, seat) in seats.into_iter().enumerate() {
            let seat = seat.await.expect("operator task");
            check(i, &seat);
            served.push(seat);
        }
        for (i, id) in ids.iter().enumerate() {
            let t = b.get(id).await;
            assert_eq!(t.runs.len(), 1, "{id}: the run was never cut");
            let dispatched = b
                .events(id)
                .await
                .iter()
                .filter(|e| matches!(e, common::child::TaskEventBody::StepDispatched(_)))
                .count();
            assert_eq!(dispatched, STEPS.len(), "{id}: each step dispatched once");
            let ctx = common::from_value(t.final_ctx);
            assert!(
                ctx["o5"].as_str().is_some_and(|s| s.ends_with("+s5")),
                "{ctx}"
            );
            if Cut::of(i) == Cut::AskPending {
                assert_eq!(ctx["o3"]["senior_answer"]["advice"], "go on", "{ctx}");
            }
        }
        eprintln!(
            "holder kill: set-up {:.2} s (3 replicas, {SEATS} seats, tasks to their cut), \
             all {SEATS} tasks completed {:.2} s after the kill; pending at the kill: {}",
            set_up.as_secs_f64(),
            recovered.as_secs_f64(),
            summary(&served)
        );
        b.kill();
        c.kill();
    })
    .await;
    drop(dirs);
}
