//! The Prometheus recorder (one per process) and the `/metrics` route.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{live, process, ALL, REQUEST_SECONDS, STEP_SECONDS, TASK_SECONDS};

/// Buckets of call latency, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// Buckets of step run time, in seconds (in-process steps take microseconds).
const STEP_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
/// Buckets of task run time, in seconds.
const TASK_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). None if
/// another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), REQUEST_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TASK_SECONDS.into()), TASK_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STEP_SECONDS.into()), STEP_BUCKETS)
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe_all();
                    live::register_steps();
                    super::register_hot();
                    drain_histograms(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Histogram samples wait in the recorder until an upkeep folds them into their buckets;
/// `install_recorder` starts none, so a server nobody scrapes would keep every sample
/// (B8 soak: tens of MiB per 100,000 tasks). A thread runs it every few seconds.
fn drain_histograms(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started");
    }
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Describes every metric and starts the label-free ones at zero, so they are exported
/// (and `rate()` works) before their first event. Process metrics are rendered apart.
fn describe_all() {
    for m in ALL.iter().filter(|m| !m.name.starts_with("process_")) {
        let unlabelled = m.labels.is_empty();
        match m.kind {
            "counter" => {
                metrics::describe_counter!(m.name, m.help);
                if unlabelled {
                    metrics::counter!(m.name).increment(0);
                }
            }
            "gauge" => {
                metrics::describe_gauge!(m.name, m.help);
                if unlabelled {
                    metrics::gauge!(m.name).increment(0.0);
                }
            }
            _ => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// A gauge refresher run before each scrape (gauges read from live state).
pub type Sampler = Arc<dyn Fn() + Send + Sync>;

/// Renders the exposition: the recorder's metrics, the process's, after the samplers ran.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    samplers: Vec<Sampler>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("samplers", &self.samplers.len())
            .finish()
    }
}

impl Exporter {
    /// An exporter over the installed recorder; None if none could be installed.
    pub fn new(samplers: Vec<Sampler>) -> Option<Self> {
        Some(Self {
            handle: install()?,
            samplers,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        for sample in &self.samplers {
            sample();
        }
        self.handle.run_upkeep();
        let mut out = self.handle.render();
        process::render(&mut out);
        out
    }

    /// `GET /metrics`.
    pub fn router(self) -> axum::Router {
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = self.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response()
                }
            }),
        )
    }
}
