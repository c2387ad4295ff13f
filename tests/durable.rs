//! Durable tasks and runs: real `mse-grpc` child processes on a temp data dir, killed
//! with SIGKILL (`Child::kill`) and started again on the same dir.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::{
    finished_tasks_survive_a_kill, operator_flow_resumes_after_a_kill, Operator, Proc, Tally,
};
use common::{fixture, start_inline, temp_dir};
use futures::StreamExt;
use mlua_swarm_grpc::pb::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn finished_tasks_are_read_listed_and_watched_after_a_kill() {
    finished_tasks_survive_a_kill(&data_dir("finished"), &[]).await;
}

#[tokio::test]
async fn an_operator_flow_killed_after_step_two_completes_without_dispatching_steps_again() {
    operator_flow_resumes_after_a_kill(&data_dir("operator"), &[]).await;
}

fn data_dir(tag: &str) -> PathBuf {
    temp_dir(tag).join("data")
}

#[tokio::test]
async fn a_corrupt_store_file_fails_the_boot_naming_the_file() {
    let dir = data_dir("corrupt");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("tasks.sqlite"), vec![0x5a; 8192]).expect("garbage");
    let out = Command::new(env!("CARGO_BIN_EXE_mse-grpc"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a corrupt store must fail the boot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tasks.sqlite"), "{err}");
}

#[tokio::test]
async fn manual_mode_waits_for_resume_task_and_rerun_task_runs_again_from_a_step() {
    let dir = data_dir("manual");
    let server = Proc::start(&dir, &[]).await;
    let started = server
        .tasks()
        .start_task(start_inline(fixture("endless.json"), json!({})))
        .await
        .expect("start")
        .into_inner();
    let id = started.task_id;
    // Let the loop journal some steps.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(&id).await.step_count < 20 {
        assert!(Instant::now() < deadline, "the loop never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();

    let server = Proc::start(&dir, &["--resume-interrupted", "manual"]).await;
    let t = server.get(&id).await;
    assert_eq!(t.state(), pb::TaskState::Interrupted);
    assert_eq!(t.error, "server restart");
    assert_eq!(t.runs.len(), 1);
    assert_eq!(t.runs[0].end(), pb::RunEnd::Interrupted);

    let rerun_running = pb::RerunTaskRequest {
        task_id: id.clone(),
        from_step: "nope".into(),
    };
    let err = server
        .tasks()
        .rerun_task(rerun_running)
        .await
        .expect_err("unknown step");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("echo"), "{}", err.message());

    let resumed = server
        .tasks()
        .resume_task(pb::ResumeTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("resume")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(resumed.state(), pb::TaskState::Running);
    assert_eq!(resumed.runs.len(), 2);
    assert_eq!(resumed.runs[1].start(), pb::RunStart::Resume);
    // At least the 20 steps dispatched before the kill, less the one in flight.
    assert!(
        resumed.runs[1].replayed_steps >= 19,
        "{:?}",
        resumed.runs[1]
    );

    let again = server
        .tasks()
        .resume_task(pb::ResumeTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect_err("running");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("RUNNING"), "{}", again.message());

    let cancel = pb::CancelTaskRequest {
        task_id: id.clone(),
        reason: "enough".into(),
    };
    server.tasks().cancel_task(cancel).await.expect("cancel");
    let rerun = server
        .tasks()
        .rerun_task(pb::RerunTaskRequest {
            task_id: id.clone(),
            from_step: "echo".into(),
        })
        .await
        .expect("rerun")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(rerun.state(), pb::TaskState::Running);
    assert_eq!(rerun.runs.len(), 3);
    assert_eq!(rerun.runs[2].start(), pb::RunStart::Rerun);
    assert_eq!(rerun.runs[2].from_step, "echo");
    assert_eq!(rerun.runs[2].replayed_steps, 0, "cut at the first echo");
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
    async fn states(&self) -> HashMap<String, pb::TaskState> {
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
    async fn wait_states(
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

    async fn events(&self, id: &str) -> Vec<TaskEventBody> {
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

type TaskEventBody = pb::task_event::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_survive_five_kills_and_no_completed_step_is_dispatched_twice() {
    let dir = data_dir("kills");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (mut local, mut operated) = (Vec::new(), Vec::new());
    // Spawns that may repeat: the last one of each operated task at each kill.
    let mut may_repeat: HashMap<(String, String), u32> = HashMap::new();
    let mut server = Proc::start(&dir, &[]).await;
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
        server = Proc::start(&dir, &[]).await;
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
        let ctx = common::from_value(t.final_ctx);
        assert!(
            ctx["o5"].as_str().is_some_and(|s| s.ends_with("+s5")),
            "{ctx}"
        );
    }
    for (id, input) in &local {
        let t = server.get(id).await;
        local_resumed += usize::from(t.runs.len() > 1);
        let ctx = common::from_value(t.final_ctx);
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

#[tokio::test]
async fn after_a_restart_a_finished_task_reruns_and_a_resumed_task_is_watched_to_its_end() {
    let dir = data_dir("rerun-watch");
    let server = Proc::start(&dir, &[]).await;
    let done = server
        .run_completed("five-local.json", json!({"input": "a"}))
        .await;
    let (mut op, session) = Operator::join(&server).await;
    let start = start_inline(fixture("five-steps.json"), json!({"input": "b"}));
    let cut = server.tasks().start_task(start).await.expect("start");
    let cut = cut.into_inner().task_id;
    op.answer_until("s3", &mut HashMap::new()).await;
    drop(op);
    server.kill();

    let server = Proc::start(&dir, &[]).await;
    let watch = server
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            task_id: cut.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let watched = tokio::spawn(
        watch
            .map(|e| e.expect("event").event.expect("event"))
            .collect::<Vec<_>>(),
    );

    let rerun = pb::RerunTaskRequest {
        task_id: done.task_id.clone(),
        from_step: "s3".into(),
    };
    let rerun = server.tasks().rerun_task(rerun).await.expect("rerun");
    let rerun = rerun.into_inner().task.expect("task");
    assert_eq!(rerun.runs.len(), 2);
    assert_eq!(rerun.runs[1].start(), pb::RunStart::Rerun);
    assert_eq!(rerun.runs[1].replayed_steps, 2, "s1 and s2 answered");
    let again = server
        .wait_state(&done.task_id, pb::TaskState::Completed)
        .await;
    assert_eq!(
        common::from_value(again.final_ctx)["o5"]["echoed"],
        json!("a")
    );
    assert_eq!(again.runs[1].end(), pb::RunEnd::Completed);

    let mut op = Operator::attach(&server, &session).await;
    loop {
        let s = op.next_spawn().await.expect("spawn");
        op.answer(&s).await;
        if s.agent == "s5" {
            break;
        }
    }
    let events = tokio::time::timeout(Duration::from_secs(20), watched)
        .await
        .expect("the watch ends with the task")
        .expect("watch task");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.kind.as_ref().expect("kind") {
            TaskEventBody::Started(_) => "started",
            TaskEventBody::StepDispatched(_) => "dispatched",
            TaskEventBody::StepFinished(_) => "finished",
            TaskEventBody::Interrupted(_) => "interrupted",
            TaskEventBody::RunStarted(r) => {
                assert_eq!(r.replayed_steps, 2, "{r:?}");
                "resumed"
            }
            TaskEventBody::Completed(_) => "completed",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let cut_at = kinds.iter().position(|k| *k == "interrupted").expect("cut");
    // Before the kill: steps 1 and 2 passed and step 3 was dispatched. Task events are
    // recorded from the engine's event stream, just behind the flow, so the kill may beat
    // the last of them (README, "Restarts"): what was recorded is an in-order prefix.
    let before = &kinds[..cut_at];
    let full = [
        "started",
        "dispatched",
        "finished",
        "dispatched",
        "finished",
        "dispatched",
    ];
    assert!(
        !before.is_empty() && before.len() <= full.len() && before == &full[..before.len()],
        "{kinds:?}"
    );
    // After: the resume, its five steps (two answered by the journal), the end.
    let mut after = vec!["interrupted", "resumed"];
    after.extend(["dispatched", "finished"].repeat(5));
    after.push("completed");
    assert_eq!(kinds[cut_at..], after[..], "{kinds:?}");
    server.kill();
}
