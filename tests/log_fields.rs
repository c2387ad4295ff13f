//! Log lines name what they belong to: inside a task its `task_id`, inside an operator
//! session its `sid`, inside an operator request its `req_id` (and the task and session of
//! that request), from the line's own fields or from a span around it. Debug lines of one
//! in-process and one operator task, read as JSON.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

/// The log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One log line: target, message and every field name it carries (its own and its spans').
#[derive(Debug)]
struct Line {
    target: String,
    message: String,
    fields: Vec<String>,
}

impl Line {
    fn parse(text: &str) -> Line {
        let v: Value = serde_json::from_str(text).expect("a JSON log line");
        let mut fields: Vec<String> = v["fields"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for span in v["spans"].as_array().into_iter().flatten() {
            fields.extend(span.as_object().into_iter().flat_map(|o| o.keys().cloned()));
        }
        Line {
            target: v["target"].as_str().unwrap_or_default().to_string(),
            message: v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            fields,
        }
    }

    fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == field)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_session_and_request_lines_carry_their_ids() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_span_list(true)
        .with_env_filter("warn,mlua_swarm=debug,mlua_swarm_grpc=debug")
        .with_writer(move || writer.clone())
        .init();

    let ts = TestServer::start().await;
    ts.tasks()
        .run_task(inline(fixture("identity.json"), json!({ "input": 1 })))
        .await
        .expect("run task");
    let mut op = Op::join(&ts, &["remote"]).await;
    ts.tasks()
        .start_task(start_inline(
            fixture("operator.json"),
            json!({ "input": "x" }),
        ))
        .await
        .expect("start task");
    op.serve_until_hook_after(&ts, "done").await;
    drop(op);
    ts.stop().await;

    let text = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    let lines: Vec<Line> = text.lines().map(Line::parse).collect();
    let about = |needle: &str| lines.iter().filter(|l| l.message.contains(needle)).count();
    // The lines below were seen, so the rules are not checked against nothing.
    for needle in [
        "task started",
        "worker spawned",
        "operator request sent",
        "operator attached",
    ] {
        assert!(about(needle) > 0, "no line '{needle}' in:\n{text}");
    }
    for l in &lines {
        // The engine logs only while it runs a task's flow or steps.
        let in_task = l.target.starts_with("mlua_swarm::")
            || l.has("step_id")
            || l.has("req_id")
            || l.message.starts_with("task ")
            || l.message.starts_with("worker ");
        if in_task {
            assert!(l.has("task_id"), "no task_id: {l:?}");
        }
        if l.target.starts_with("mlua_swarm_grpc::operator") || l.has("req_id") {
            assert!(l.has("sid"), "no sid: {l:?}");
        }
        if l.message.starts_with("operator request") {
            assert!(l.has("req_id"), "no req_id: {l:?}");
        }
    }
}
