//! Several replicas on one PostgreSQL and one nats-server (`--database-url`,
//! `--nats-url`): the tasks of a replica killed with `kill -9` are taken over by another
//! once its heartbeat is stale, and resumed from the shared journal: every task
//! completes, and no step the journal holds is dispatched again. Real `mse-grpc` child
//! processes; skipped, saying so, only when the PostgreSQL binaries are absent.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::child::{answer, Operator, Proc};
use common::nats::NatsServer;
use common::postgres::{bounded, Postgres, Scratch};
use common::{fixture, start_inline};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

/// Tasks running on the replica that is killed.
const TASKS: usize = 50;

/// The flags of replica `id` on the shared database and bus.
fn replica_flags(db: &str, nats: &str, id: &str) -> Vec<String> {
    [
        "--database-url",
        db,
        "--nats-url",
        nats,
        // Every replica signs capability tokens with the same secret.
        "--token-secret",
        "5eed5eed5eed5eed5eed5eed5eed5eed",
        "--replica-id",
        id,
    ]
    .map(String::from)
    .to_vec()
}

/// The worker endpoint a spawn's directive names (the replica running the step), as a
/// sub-agent reads it.
fn worker_endpoint(spawn: &pb::Spawn) -> String {
    let marker = "worker endpoint (gRPC, ";
    let at = spawn
        .directive
        .find(marker)
        .unwrap_or_else(|| panic!("no worker endpoint in {}", spawn.directive));
    let rest = &spawn.directive[at + marker.len()..];
    rest[..rest.find(')').expect("endpoint end")].to_string()
}

/// Worker clients by endpoint.
#[derive(Default)]
struct Workers(HashMap<String, Channel>);

impl Workers {
    fn at(&mut self, spawn: &pb::Spawn) -> WorkerServiceClient<Channel> {
        let url = worker_endpoint(spawn);
        let channel = self
            .0
            .entry(url.clone())
            .or_insert_with(|| Endpoint::from_shared(url).expect("endpoint").connect_lazy());
        WorkerServiceClient::new(channel.clone())
    }
}

/// Starts `TASKS` five-step operator flows on `runner`, once it has learned the
/// operator's seat (attached on another replica) from the bus.
async fn start_on(runner: &Proc) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ids = Vec::new();
    while ids.len() < TASKS {
        let req = start_inline(fixture("five-steps.json"), json!({"input": ids.len()}));
        match runner.tasks().start_task(req).await {
            Ok(started) => ids.push(started.into_inner().task_id),
            Err(e) if e.message().contains("held by no live operator session") => {
                assert!(Instant::now() < deadline, "the runner never learned: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("start on the runner: {e:?}"),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tasks_of_a_killed_replica_resume_on_another_without_running_journaled_steps_again() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (Scratch::new("takeover-a"), Scratch::new("takeover-b"));
    bounded(240, async {
        let nats = NatsServer::start();
        let (db, bus) = (pg.database().await, nats.url());
        let flags = |id| replica_flags(&db, &bus, id);
        let (fa, fb) = (flags("a"), flags("b"));
        let a = Proc::start(&dir_a, &fa.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let b = Proc::start(&dir_b, &fb.iter().map(String::as_str).collect::<Vec<_>>()).await;
        // The operator's stream is held by A; the tasks run on B.
        let (mut op, _session) = Operator::join(&a).await;
        let ids = start_on(&b).await;
        let mut workers = Workers::default();
        let mut spawned: HashMap<(String, String), u32> = HashMap::new();
        // Steps 1 and 2 of every task are answered (and journaled); step 3 is left in
        // flight on B.
        let mut in_flight = HashSet::new();
        while in_flight.len() < TASKS {
            let s = op.next_spawn().await.expect("a spawn");
            *spawned
                .entry((s.task_id.clone(), s.agent.clone()))
                .or_default() += 1;
            if s.agent == "s3" {
                in_flight.insert(s.task_id.clone());
                continue;
            }
            answer(workers.at(&s), op.frames(), &s)
                .await
                .expect("answer at B");
        }
        let killed = Instant::now();
        b.kill();

        // A takes the tasks over once B's heartbeat is stale and resumes them: step 3
        // is spawned again (by A now), then 4 and 5.
        let mut last_done = HashSet::new();
        let mut first_resumed = None;
        while last_done.len() < TASKS {
            let s = op
                .next_frame_spawn()
                .await
                .expect("the stream on A")
                .expect("a spawn");
            first_resumed.get_or_insert_with(|| killed.elapsed());
            *spawned
                .entry((s.task_id.clone(), s.agent.clone()))
                .or_default() += 1;
            answer(workers.at(&s), op.frames(), &s)
                .await
                .expect("answer at A");
            if s.agent == "s5" {
                last_done.insert(s.task_id.clone());
            }
        }
        for id in &ids {
            let done = a.wait_state(id, pb::TaskState::Completed).await;
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
                    spawned.get(&key).copied(),
                    Some(times),
                    "{id} {agent}: the step in flight at the kill runs again, no other"
                );
            }
        }
        let all_done = killed.elapsed();
        eprintln!(
            "{TASKS} tasks: the first resumed spawn {:.1} s after the kill, all completed \
             after {:.1} s",
            first_resumed.unwrap_or_default().as_secs_f64(),
            all_done.as_secs_f64()
        );
        assert!(
            first_resumed.is_some_and(|t| t < Duration::from_secs(15 + 2 + 10)),
            "taken over within the lease (15 s) and a tick: {first_resumed:?}"
        );
        a.kill();
    })
    .await;
}
