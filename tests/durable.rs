//! Durable tasks and runs: real `mse-grpc` child processes on a temp data dir, killed
//! with SIGKILL (`Child::kill`) and started again on the same dir.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{
    finished_tasks_survive_a_kill, operator_flow_resumes_after_a_kill, tasks_survive_kills,
    Operator, Proc, TaskEventBody,
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_survive_five_kills_and_no_completed_step_is_dispatched_twice() {
    tasks_survive_kills(&data_dir("kills"), &[]).await;
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
