//! A rolling restart of three replicas on one PostgreSQL and one nats-server, under a
//! steady stream of StartTask calls: each replica in turn gets SIGTERM (drains, hands
//! what still runs over) and starts again on its data dir. No accepted task is lost.
//! Skipped, saying so, only when the PostgreSQL binaries are absent.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::Proc;
use common::cluster::{replica_flags, signal};
use common::nats::NatsServer;
use common::postgres::{bounded, Postgres, Scratch};
use common::{fixture, start_inline};
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::task_service_client::TaskServiceClient;
use serde_json::json;
use tonic::transport::Channel;

/// How often the load starts a task.
const START_EVERY: Duration = Duration::from_millis(25);
/// Every this many tasks, one is a long in-process loop (still running when its
/// replica drains); the others are five in-process steps.
const LONG_EVERY: usize = 8;
/// How far the long loop counts.
const LONG_COUNT: u64 = 100_000;

/// A flow counting to `n` in the engine: no steps, so nothing journaled; resumed, it
/// runs again from the start.
fn count_to(n: u64) -> serde_json::Value {
    json!({
        "schema_version": "0.1.0",
        "id": "count",
        "flow": {
            "kind": "loop",
            "counter": { "op": "path", "at": "$.i" },
            "cond": { "op": "lit", "value": true },
            "max": n,
            "body": { "kind": "let", "at": "$.last", "value": { "op": "path", "at": "$.i" } }
        },
        "agents": [ { "name": "echo", "kind": "rust_fn", "spec": { "fn_id": "identity" } } ]
    })
}

/// The replicas' channels, None while one restarts; the load takes them in turn.
type Live = Arc<Mutex<Vec<Option<Channel>>>>;

/// What the load saw.
#[derive(Default)]
struct Load {
    accepted: Vec<String>,
    refused: u32,
}

/// Tasks the load starts between two restarts.
const BETWEEN_RESTARTS: usize = 40;

/// Starts a task every [`START_EVERY`] on the next live replica until `stop`.
fn load(live: Live, seen: Arc<Mutex<Load>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(START_EVERY);
        let mut next = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let channel = {
                let live = live.lock().expect("live");
                let n = live.len();
                (0..n).find_map(|k| live[(next + k) % n].clone())
            };
            next += 1;
            let Some(channel) = channel else { continue };
            let req = match next % LONG_EVERY {
                0 => start_inline(count_to(LONG_COUNT), json!({})),
                _ => start_inline(fixture("five-local.json"), json!({"input": next})),
            };
            match TaskServiceClient::new(channel).start_task(req).await {
                Ok(started) => seen
                    .lock()
                    .expect("load")
                    .accepted
                    .push(started.into_inner().task_id),
                // The replica is shutting down (UNAVAILABLE, a cut connection): the
                // caller knows the task was not accepted and tries elsewhere.
                Err(_) => seen.lock().expect("load").refused += 1,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_replicas_under_load_loses_no_accepted_task() {
    let Some(pg) = Postgres::start() else { return };
    let dirs = [
        Scratch::new("roll-a"),
        Scratch::new("roll-b"),
        Scratch::new("roll-c"),
    ];
    bounded(300, async {
        let nats = NatsServer::start();
        let db = pg.database().await;
        let ids = ["a", "b", "c"];
        let start = |k: usize| {
            let flags = replica_flags(&db, &nats.url(), ids[k]);
            let dir: &std::path::Path = &dirs[k];
            async move {
                let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                flags.extend(["--drain-secs", "1"]);
                Proc::start(dir, &flags).await
            }
        };
        // All three boot at once on the fresh database (they race to seed it).
        let (a, b, c) = tokio::join!(start(0), start(1), start(2));
        let mut procs = [a, b, c];
        let live: Live = Arc::new(Mutex::new(
            procs.iter().map(|p| Some(p.channel.clone())).collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Load::default()));
        let driver = load(live.clone(), seen.clone(), stop.clone());
        let rolled = Instant::now();
        for k in 0..3 {
            // The load runs on all three for a while (tasks in flight everywhere).
            let goal = (k + 1) * BETWEEN_RESTARTS;
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.lock().expect("load").accepted.len() < goal {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(START_EVERY).await;
            }
            live.lock().expect("live")[k] = None;
            signal(&procs[k], "-TERM");
            let exit = procs[k].child.wait().expect("exits");
            assert!(
                exit.success(),
                "replica {} drained and exited 0: {exit:?}",
                ids[k]
            );
            procs[k] = start(k).await;
            live.lock().expect("live")[k] = Some(procs[k].channel.clone());
        }
        let roll_took = rolled.elapsed();
        stop.store(true, Ordering::Relaxed);
        driver.await.expect("the load");
        let seen = std::mem::take(&mut *seen.lock().expect("load"));
        // Every accepted task completes, whichever replica ran it to the end; any
        // replica reads it.
        let mut handed_over = 0;
        let mut longest = 0f64;
        for (n, id) in seen.accepted.iter().enumerate() {
            let t = procs[n % 3].wait_state(id, pb::TaskState::Completed).await;
            let ctx = common::from_value(t.final_ctx);
            assert!(
                !ctx["o5"].is_null() || !ctx["last"].is_null(),
                "{id}: {ctx}"
            );
            if t.runs.len() > 1 {
                handed_over += 1;
            }
            if let (Some(a), Some(b)) = (&t.created_at, &t.finished_at) {
                let ran = (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9;
                longest = longest.max(ran);
            }
        }
        eprintln!(
            "rolling restart of 3 replicas in {:.1} s: {} tasks accepted, all completed ({} \
             resumed after their replica drained, the longest took {longest:.1} s); {} starts \
             refused by a replica shutting down",
            roll_took.as_secs_f64(),
            seen.accepted.len(),
            handed_over,
            seen.refused
        );
        assert!(
            handed_over > 0,
            "some long loops were still running when their replica's drain ended"
        );
        assert!(
            seen.accepted.len() >= 100,
            "the load kept going: {}",
            seen.accepted.len()
        );
    })
    .await;
}
