//! OpenTelemetry traces over OTLP/gRPC (`--otlp-endpoint`): the `tracing` layer that
//! exports spans, the W3C `traceparent` read from incoming calls (gRPC metadata and HTTP
//! headers alike) and the one handed to a spawned sub-agent, so the operator task and the
//! worker's `GetPrompt` / `Submit` are one trace, with the operator's replies as spans of
//! it. Off by default: nothing here runs then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Instrument;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// Set once an exporter is built: the server then joins incoming traces.
static ON: AtomicBool = AtomicBool::new(false);

/// The W3C header (and gRPC metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporter's provider: flush it before the process ends.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Sends the spans still buffered.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "otlp flush failed");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

/// Why the exporter could not be built.
pub type OtlpError = opentelemetry_otlp::ExporterBuildError;

/// The `tracing` layer exporting spans to the OTLP/gRPC collector at `endpoint`
/// (e.g. `http://127.0.0.1:4317`). Call inside a tokio runtime (the tonic client needs one).
pub fn otlp_layer<S>(
    endpoint: &str,
) -> Result<
    (
        OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Otlp,
    ),
    OtlpError,
>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("mse-grpc").build())
        .build();
    let tracer = provider.tracer("mse-grpc");
    ON.store(true, Ordering::Relaxed);
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Otlp { provider },
    ))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The middleware (only installed when [`enabled`]): each call gets a span, the child of
/// the caller's `traceparent` when it sends one.
pub async fn join_trace(request: Request, next: Next) -> Response {
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let span = tracing::info_span!(
        "call",
        otel.name = %request.uri().path(),
        http.method = %request.method(),
    );
    let _ = span.set_parent(parent);
    next.run(request).instrument(span).await
}

/// The `traceparent` of each running task's span (the engine runs steps on tasks of its
/// own, outside that span); empty when off.
static TASKS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn tasks() -> MutexGuard<'static, Option<HashMap<String, String>>> {
    TASKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Remembers the trace context of `task_id`'s span (no-op when off).
pub fn task_started(task_id: &str, span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    if let Some(tp) = carrier.remove(TRACEPARENT) {
        tasks()
            .get_or_insert_with(HashMap::new)
            .insert(task_id.to_string(), tp);
    }
}

/// Forgets `task_id`'s trace context.
pub fn task_ended(task_id: &str) {
    if enabled() {
        if let Some(map) = tasks().as_mut() {
            map.remove(task_id);
        }
    }
}

/// The `traceparent` a sub-agent of `task_id` sends back; empty when off or unknown.
pub fn traceparent(task_id: &str) -> String {
    if !enabled() {
        return String::new();
    }
    tasks()
        .as_ref()
        .and_then(|map| map.get(task_id).cloned())
        .unwrap_or_default()
}

/// The span of one operator request of `task_id`, from sent to replied (`operator.reply`,
/// child of the task's span); a disabled span when off. Record `outcome` on it at the end.
pub fn reply_span(task_id: &str, sid: &str, req_id: &str, kind: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "operator.reply",
        sid,
        req_id,
        kind,
        task_id,
        outcome = tracing::field::Empty,
    );
    let tp = traceparent(task_id);
    if !tp.is_empty() {
        let carrier = HashMap::from([(TRACEPARENT.to_string(), tp)]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
    span
}
