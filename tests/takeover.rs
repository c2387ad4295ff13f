//! Several replicas on one PostgreSQL and one nats-server (`--database-url`,
//! `--nats-url`): the tasks of a replica killed with `kill -9` are taken over by another
//! once its heartbeat is stale, and resumed from the shared journal: every task
//! completes, and no step the journal holds is dispatched again. Real `mse-grpc` child
//! processes; skipped, saying so, only when the PostgreSQL binaries are absent.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::child::{answer, Operator, Proc};
use common::cluster::{replica_flags, signal, worker_endpoint, Workers};
use common::nats::NatsServer;
use common::postgres::{bounded, Postgres, Scratch};
use common::{fixture, start_inline};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::json;
/// Replica A holds the operator's stream; replica B runs `n` five-step tasks, whose
/// steps 1 and 2 were answered (and journaled) and whose step 3 is in flight.
struct Scene {
    a: Proc,
    b: Option<Proc>,
    op: Operator,
    ids: Vec<String>,
    workers: Workers,
    /// Spawns seen per (task, agent).
    spawned: HashMap<(String, String), u32>,
    /// The step-3 spawns B sent, unanswered.
    in_flight: Vec<pb::Spawn>,
}

impl Scene {
    async fn start(db: &str, bus: &str, dirs: [&std::path::Path; 2], n: usize) -> Scene {
        let a = Proc::replica(dirs[0], db, bus, "a").await;
        let b = Proc::replica(dirs[1], db, bus, "b").await;
        let (op, _session) = Operator::join(&a).await;
        let ids = start_on(&b, n).await;
        let mut scene = Scene {
            a,
            b: Some(b),
            op,
            ids,
            workers: Workers::default(),
            spawned: HashMap::new(),
            in_flight: Vec::new(),
        };
        while scene.in_flight.len() < n {
            let s = scene.op.next_spawn().await.expect("a spawn");
            scene.saw(&s);
            if s.agent == "s3" {
                scene.in_flight.push(s);
                continue;
            }
            scene.answer(&s).await;
        }
        scene
    }

    fn saw(&mut self, s: &pb::Spawn) {
        let key = (s.task_id.clone(), s.agent.clone());
        *self.spawned.entry(key).or_default() += 1;
    }

    /// The worker's part at the replica the directive names, then the ack.
    async fn answer(&mut self, s: &pb::Spawn) {
        answer(self.workers.at(s), self.op.frames(), s)
            .await
            .unwrap_or_else(|e| panic!("answer at {}: {e:?}", worker_endpoint(s)));
    }

    /// Answers every spawn until each task's step 5 was; how long after `since` the
    /// first spawn came.
    async fn answer_to_the_end(&mut self, since: Instant) -> Duration {
        let mut last_done = HashSet::new();
        let mut first = None;
        while last_done.len() < self.ids.len() {
            let s = self
                .op
                .next_frame_spawn()
                .await
                .expect("the stream on A")
                .expect("a spawn");
            first.get_or_insert_with(|| since.elapsed());
            self.saw(&s);
            self.answer(&s).await;
            if s.agent == "s5" {
                last_done.insert(s.task_id.clone());
            }
        }
        first.unwrap_or_default()
    }

    /// Every task completed on A in a run resumed from the journal: step 3 (in flight
    /// when B went) was spawned twice, every other step once.
    async fn assert_resumed_on_a(&self) {
        for id in &self.ids {
            let done = self.a.wait_state(id, pb::TaskState::Completed).await;
            let ctx = common::from_value(done.final_ctx);
            assert!(
                ctx["o2"].as_str().is_some_and(|s| s.ends_with("+s2")),
                "step 2's result comes from the journal: {ctx}"
            );
            assert!(
                ctx["o5"].as_str().is_some_and(|s| s.ends_with("+s5")),
                "{ctx}"
            );
            assert_eq!(done.runs.len(), 2, "{id}: one run on B, one resumed on A");
            assert_eq!(done.runs[1].start(), pb::RunStart::Resume);
            assert_eq!(done.runs[1].replayed_steps, 2, "{id}: {:?}", done.runs);
            for (agent, times) in [("s1", 1), ("s2", 1), ("s3", 2), ("s4", 1), ("s5", 1)] {
                let key = (id.clone(), agent.to_string());
                assert_eq!(
                    self.spawned.get(&key).copied(),
                    Some(times),
                    "{id} {agent}: the step in flight runs again, no other"
                );
            }
        }
    }
}

/// A throwaway PostgreSQL and nats-server, and the data dirs of replicas A and B.
struct Stage {
    _pg: Postgres,
    nats: NatsServer,
    db: String,
    dirs: [Scratch; 2],
}

impl Stage {
    /// None (the test is skipped, saying so) without the PostgreSQL binaries.
    async fn open(tag: &str) -> Option<Stage> {
        let pg = Postgres::start()?;
        let db = pg.database().await;
        let dirs = [
            Scratch::new(&format!("{tag}-a")),
            Scratch::new(&format!("{tag}-b")),
        ];
        Some(Stage {
            _pg: pg,
            nats: NatsServer::start(),
            db,
            dirs,
        })
    }

    /// The [`Scene`] of `n` tasks on this stage.
    async fn scene(&self, n: usize) -> Scene {
        Scene::start(
            &self.db,
            &self.nats.url(),
            [&self.dirs[0], &self.dirs[1]],
            n,
        )
        .await
    }
}

/// Starts `n` five-step operator flows on `runner`, once it has learned the
/// operator's seat (attached on another replica) from the bus.
async fn start_on(runner: &Proc, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let req = start_inline(fixture("five-steps.json"), json!({"input": ids.len()}));
        ids.push(runner.start_once_seated(req).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tasks_of_a_killed_replica_resume_on_another_without_running_journaled_steps_again() {
    let Some(stage) = Stage::open("takeover").await else {
        return;
    };
    bounded(240, async {
        let mut scene = stage.scene(50).await;
        let killed = Instant::now();
        if let Some(b) = scene.b.take() {
            b.kill();
        }
        // A takes the tasks over once B's heartbeat is stale and resumes them: step 3
        // is spawned again (by A now), then 4 and 5.
        let first = scene.answer_to_the_end(killed).await;
        scene.assert_resumed_on_a().await;
        eprintln!(
            "50 tasks: the first resumed spawn {:.1} s after the kill, all completed after \
             {:.1} s",
            first.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        assert!(
            first < Duration::from_secs(15 + 2 + 10),
            "taken over within the lease (15 s) and a tick: {first:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_by_sigterm_hands_its_tasks_over_at_once() {
    let Some(stage) = Stage::open("drain").await else {
        return;
    };
    bounded(120, async {
        let mut scene = stage.scene(10).await;
        let Some(mut b) = scene.b.take() else { return };
        let stopped = Instant::now();
        signal(&b, "-TERM");
        let exit = b.child.wait().expect("B exits");
        assert!(exit.success(), "a drained shutdown exits 0: {exit:?}");
        // B interrupted its runs and marked itself gone: A claims them on its next tick,
        // without waiting for the heartbeat to go stale.
        let first = scene.answer_to_the_end(stopped).await;
        scene.assert_resumed_on_a().await;
        eprintln!(
            "10 tasks handed over by SIGTERM: the first resumed spawn {:.1} s after it",
            first.as_secs_f64()
        );
        assert!(
            first < Duration::from_secs(10),
            "handed over without waiting out the lease: {first:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_stopped_past_its_lease_is_fenced_and_lets_go_when_it_wakes() {
    let Some(stage) = Stage::open("fence").await else {
        return;
    };
    bounded(180, async {
        let mut scene = stage.scene(10).await;
        let Some(b) = scene.b.take() else { return };
        let stopped = Instant::now();
        signal(&b, "-STOP");
        // B is silent past its lease: A takes its tasks over and they complete there.
        scene.answer_to_the_end(stopped).await;
        scene.assert_resumed_on_a().await;
        signal(&b, "-CONT");
        // B wakes with the old runs: they are fenced (another replica holds the lease),
        // so B lets them go. Its reads come from the database (COMPLETED, as A wrote),
        // and the worker credentials of its old step-3 spawns are revoked.
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in std::mem::take(&mut scene.in_flight) {
            loop {
                let on_b = b.get(&s.task_id).await;
                let mut workers = WorkerServiceClient::new(b.channel.clone());
                let req = pb::GetPromptRequest {
                    step_id: s.step_id.clone(),
                };
                let prompt = workers
                    .get_prompt(common::authed(req, &s.worker_handle))
                    .await;
                if on_b.state() == pb::TaskState::Completed && prompt.is_err() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "B never let {} go: {:?}, prompt {:?}",
                    s.task_id,
                    on_b.state(),
                    prompt.map(|p| p.into_inner().prompt)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // B is a live replica again: it runs a new task to its end.
        let t = b.run_completed("identity.json", json!({"input": 7})).await;
        assert_eq!(t.state(), pb::TaskState::Completed);
        for id in &scene.ids {
            let events = scene.a.events(id).await;
            let ends = events
                .iter()
                .filter(|e| matches!(e, common::child::TaskEventBody::Completed(_)))
                .count();
            assert_eq!(ends, 1, "{id} ended once: {events:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_retention_keeps_the_newest_finished_tasks_of_every_replica() {
    let Some(stage) = Stage::open("keep").await else {
        return;
    };
    bounded(120, async {
        let start = |dir, id| {
            let mut flags = replica_flags(&stage.db, &stage.nats.url(), id);
            flags.extend(["--task-retention".to_string(), "4".to_string()]);
            async move {
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                Proc::start(dir, &flags).await
            }
        };
        let (a, b) = tokio::join!(start(&stage.dirs[0], "a"), start(&stage.dirs[1], "b"));
        let mut ran = Vec::new();
        for n in 0..6 {
            let on = if n % 2 == 0 { &a } else { &b };
            ran.push(
                on.run_completed("identity.json", json!({"input": n}))
                    .await
                    .task_id,
            );
        }
        // A sweep runs at most every 5 s, after a task ends: keep finishing tasks until
        // one has dropped what is past the newest 4 (of both replicas).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = a
                .run_completed("identity.json", json!({"input": "more"}))
                .await;
            ran.push(t.task_id);
            let held = a.states().await;
            if held.len() <= 4 {
                let newest: HashSet<&String> = ran.iter().rev().take(4).collect();
                assert!(held.keys().all(|id| newest.contains(id)), "{held:?}");
                let gone = &ran[0];
                let err = b
                    .tasks()
                    .get_task(pb::GetTaskRequest {
                        task_id: gone.clone(),
                    })
                    .await;
                assert_eq!(err.expect_err("dropped").code(), tonic::Code::NotFound);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never swept: {} held",
                held.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_task_on_any_replica_cancels_the_task_where_it_runs() {
    let Some(stage) = Stage::open("cancel").await else {
        return;
    };
    bounded(120, async {
        let scene = stage.scene(1).await;
        let Some(b) = &scene.b else { return };
        let id = scene.ids[0].clone();
        // The task runs on B (step 3 in flight); A does not run it and passes the call on.
        let req = pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: "changed my mind".into(),
        };
        let cancelled = scene
            .a
            .tasks()
            .cancel_task(req)
            .await
            .expect("cancel through A")
            .into_inner()
            .task
            .expect("task");
        assert_eq!(cancelled.state(), pb::TaskState::Cancelled);
        assert!(
            cancelled.error.contains("changed my mind"),
            "{}",
            cancelled.error
        );
        assert_eq!(b.get(&id).await.state(), pb::TaskState::Cancelled);
        // Ended: a second cancel, on either replica, is refused as such.
        let again = pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: String::new(),
        };
        let err = scene.a.tasks().cancel_task(again).await.expect_err("ended");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    })
    .await;
}
