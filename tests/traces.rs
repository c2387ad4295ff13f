//! OpenTelemetry traces: an in-process OTLP collector (a tonic `TraceService`) receives the
//! spans of one operator task, and the caller's `RunTask`, the task, and the worker's
//! `GetPrompt` and `Submit` (sent with the spawn's `traceparent`) share one trace id, and so
//! do the operator's replies (`operator.reply`, one per hook_before and spawn).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The trace the caller starts (W3C: version, trace id, parent span id, sampled).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().expect("spans").extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves the collector on an ephemeral port; its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// The trace ids (hex) of the spans named `name`.
    fn traces_of(&self, name: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s.name == name)
            .map(|s| hex::encode(&s.trace_id))
            .collect()
    }
}

fn traced<T>(msg: T, credential: &str, traceparent: &str) -> tonic::Request<T> {
    let mut req = authed(msg, credential);
    req.metadata_mut()
        .insert(telemetry::TRACEPARENT, traceparent.parse().expect("ascii"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_task_is_one_trace_from_run_task_to_the_workers_submit() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let (layer, otlp) = telemetry::otlp_layer(&endpoint).expect("exporter");
    tracing_subscriber::registry().with(layer).init();
    assert!(telemetry::enabled());

    let ts = TestServer::start().await;
    let mut op = Op::join(&ts, &["remote"]).await;
    let mut tasks = ts.tasks();
    let run = tokio::spawn(async move {
        let mut req = tonic::Request::new(inline(fixture("operator.json"), json!({ "input": 1 })));
        req.metadata_mut()
            .insert(telemetry::TRACEPARENT, CALLER.parse().expect("ascii"));
        tasks.run_task(req).await
    });
    // The operator approves the hook; the worker joins the trace the spawn names.
    let spawn = op.until_spawn().await;
    assert!(
        spawn.traceparent.contains(TRACE_ID),
        "spawn carries the task's trace: {:?}",
        spawn.traceparent
    );
    assert!(spawn.directive.contains(&spawn.traceparent));
    let cred = spawn.worker_handle.clone();
    ts.workers()
        .get_prompt(traced(
            pb::GetPromptRequest {
                step_id: spawn.step_id.clone(),
            },
            &cred,
            &spawn.traceparent,
        ))
        .await
        .expect("get prompt");
    ts.workers()
        .submit(traced(
            pb::SubmitRequest {
                body: "done".into(),
                outcome: pb::SubmitOutcome::Pass as i32,
                step_id: String::new(),
            },
            &cred,
            &spawn.traceparent,
        ))
        .await
        .expect("submit");
    op.spawn_ack(spawn.req_id).await;
    loop {
        let f = op.next().await;
        op.ack(f.seq).await;
        if let Some(S::HookAfter(_)) = f.body {
            break;
        }
    }
    let done = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("RunTask in time")
        .expect("joined")
        .expect("RunTask")
        .into_inner();
    assert_eq!(done.task.expect("task").state(), pb::TaskState::Completed);

    tokio::task::spawn_blocking(move || otlp.flush())
        .await
        .expect("flushed");
    for name in [
        "/mlua_swarm.v1.TaskService/RunTask",
        "task",
        "/mlua_swarm.v1.WorkerService/GetPrompt",
        "/mlua_swarm.v1.WorkerService/Submit",
        "operator.reply",
    ] {
        let traces = collector.traces_of(name);
        assert!(!traces.is_empty(), "no span named {name}");
        assert!(
            traces.iter().all(|t| t == TRACE_ID),
            "{name} is in {traces:?}, not {TRACE_ID}"
        );
    }
    assert_eq!(
        collector.traces_of("operator.reply").len(),
        2,
        "hook_before and spawn"
    );
    // The replies are children of the task's span.
    {
        let spans = collector.0.lock().expect("spans");
        let task = spans.iter().find(|s| s.name == "task").expect("task span");
        for reply in spans.iter().filter(|s| s.name == "operator.reply") {
            assert_eq!(reply.parent_span_id, task.span_id, "{reply:?}");
        }
    }
    drop(op);
    ts.stop().await;
}
