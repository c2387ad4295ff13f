//! Metrics: the names the server exports and one-line functions that record them, callable
//! from every layer (engine, operator core, doors). This module depends on nothing else in
//! the crate; [`export`] renders Prometheus text, [`layer`] counts calls per door.
//!
//! Until [`export::install`] runs, the functions here are no-ops (the `metrics` facade
//! has no recorder). No label carries a task id, sid or req_id.

pub mod export;
pub mod layer;
mod live;
mod process;

pub use live::{step_finished, tasks_completed_last_minute, StepKind, WINDOW_SECS};

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// One exported metric: name, Prometheus type and meaning (the doc lists each).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exported name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Its labels, comma-separated (empty: none).
    pub labels: &'static str,
    /// What it measures.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: &'static str,
    labels: &'static str,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Calls answered, per door.
pub const REQUESTS: &str = "mse_requests_total";
/// Call latency, per door.
pub const REQUEST_SECONDS: &str = "mse_request_duration_seconds";
/// Tasks started.
pub const TASKS_STARTED: &str = "mse_tasks_started_total";
/// Tasks completed.
pub const TASKS_COMPLETED: &str = "mse_tasks_completed_total";
/// Tasks failed.
pub const TASKS_FAILED: &str = "mse_tasks_failed_total";
/// Tasks cancelled.
pub const TASKS_CANCELLED: &str = "mse_tasks_cancelled_total";
/// Tasks interrupted by a restart.
pub const TASKS_INTERRUPTED: &str = "mse_tasks_interrupted_total";
/// Tasks resumed after a restart.
pub const TASKS_RESUMED: &str = "mse_tasks_resumed_total";
/// Task run time.
pub const TASK_SECONDS: &str = "mse_task_duration_seconds";
/// Tasks running now.
pub const TASKS_IN_FLIGHT: &str = "mse_tasks_in_flight";
/// Engine steps dispatched.
pub const STEPS_DISPATCHED: &str = "mse_steps_dispatched_total";
/// Step run time, dispatch to result, by who ran it.
pub const STEP_SECONDS: &str = "mse_step_duration_seconds";
/// Operator sessions that exist.
pub const SESSIONS_LIVE: &str = "mse_operator_sessions_live";
/// Operator sessions with a stream attached.
pub const SESSIONS_ATTACHED: &str = "mse_operator_sessions_attached";
/// Operator requests awaiting a reply, by kind.
pub const PENDING_REQUESTS: &str = "mse_operator_pending_requests";
/// Frames sent to operators and not yet acknowledged.
pub const UNACKED_FRAMES: &str = "mse_operator_unacked_frames";
/// Frames delivered again (or late) when a stream attaches.
pub const FRAMES_REPLAYED: &str = "mse_operator_frames_replayed_total";
/// Sessions whose parking grace ran out.
pub const PARKING_EXPIRED: &str = "mse_operator_parking_expirations_total";
/// Notices sent to operators, by code.
pub const NOTICES: &str = "mse_operator_notices_total";
/// Engine-state collections after a task ended.
pub const GC_RUNS: &str = "mse_gc_runs_total";
/// Engine-state entries freed by those collections.
pub const GC_FREED: &str = "mse_gc_entries_freed_total";
/// State file transactions (`--data-dir`).
pub const STATE_COMMITS: &str = "mse_state_commits_total";
/// Changes those transactions wrote.
pub const STATE_WRITES: &str = "mse_state_writes_total";
/// Process CPU time.
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Process resident memory.
pub const RSS_BYTES: &str = "process_resident_memory_bytes";
/// Process open file descriptors.
pub const OPEN_FDS: &str = "process_open_fds";

/// Every metric the server exports (`docs/OBSERVABILITY.md` lists the same).
pub const ALL: &[Metric] = &[
    m(REQUESTS, "counter", "door, service, method, code",
      "Calls answered. `door` is grpc, grpc-web, http or ws; gRPC calls name the service and method \
       (`unknown` when UNIMPLEMENTED) and the gRPC status (OK, NOT_FOUND, ...; CANCELLED when the \
       client left before the end); HTTP calls name the route pattern, the HTTP method and status."),
    m(REQUEST_SECONDS, "histogram", "door, service, method, code",
      "Time from request to the end of the response body (a stream's whole life)."),
    m(TASKS_STARTED, "counter", "", "Tasks started (StartTask, RunTask, POST /v1/tasks)."),
    m(TASKS_COMPLETED, "counter", "", "Tasks that ended COMPLETED."),
    m(TASKS_FAILED, "counter", "", "Tasks that ended FAILED (flow error, TTL, shutdown)."),
    m(TASKS_CANCELLED, "counter", "", "Tasks that ended CANCELLED."),
    m(TASKS_INTERRUPTED, "counter", "", "Tasks a shutdown or crash interrupted (--data-dir)."),
    m(TASKS_RESUMED, "counter", "", "Interrupted tasks resumed (at boot, on attach, ResumeTask)."),
    m(TASK_SECONDS, "histogram", "outcome", "Run time of ended tasks, by outcome."),
    m(TASKS_IN_FLIGHT, "gauge", "", "Task runs in flight now (started or resumed, not ended)."),
    m(STEPS_DISPATCHED, "counter", "", "Engine steps (agent calls) dispatched by tasks."),
    m(STEP_SECONDS, "histogram", "kind",
      "Run time of step attempts, from dispatch to result, by who ran them: `operator` (spawn \
       frame sent to the operator's SpawnAck) or `in_process` (a function of the server)."),
    m(SESSIONS_LIVE, "gauge", "", "Operator sessions that exist, attached or not."),
    m(SESSIONS_ATTACHED, "gauge", "", "Operator sessions with a stream attached."),
    m(PENDING_REQUESTS, "gauge", "kind",
      "Operator requests awaiting a reply, by kind (ask, hook_before, spawn, ...)."),
    m(UNACKED_FRAMES, "gauge", "", "Frames sent to operators and not yet acknowledged."),
    m(FRAMES_REPLAYED, "counter", "",
      "Frames an attaching stream received from the outbox: unacknowledged ones re-sent on \
       resume, requests whose replies were lost, and frames queued while no stream was attached."),
    m(PARKING_EXPIRED, "counter", "",
      "Times a session stayed detached past --park-grace-secs, failing its pending requests."),
    m(NOTICES, "counter", "code", "Notices sent to operators, by code (duplicate, stale, ...)."),
    m(GC_RUNS, "counter", "", "Collections of a finished task's engine state."),
    m(GC_FREED, "counter", "", "Engine-state entries those collections removed."),
    m(STATE_COMMITS, "counter", "",
      "Transactions of the state file (`tasks.sqlite` under --data-dir): each writes every change \
       queued since the last one (group commit)."),
    m(STATE_WRITES, "counter", "",
      "Changes written to the state file (task events and records, runs, journal rows, outputs); \
       divided by `mse_state_commits_total`, the changes per transaction."),
    m(CPU_SECONDS, "counter", "", "CPU time of the server process (user + system)."),
    m(RSS_BYTES, "gauge", "", "Resident memory of the server process."),
    m(OPEN_FDS, "gauge", "", "Open file descriptors of the server process."),
];

/// A task started.
pub fn task_started() {
    if let Some(h) = HOT.get() {
        h.tasks_started.increment(1);
    }
}

/// Handles of the metrics every task records, registered once with the recorder, so a
/// task pays atomic adds, not registry lookups.
struct HotHandles {
    tasks_started: metrics::Counter,
    /// Completed, failed, cancelled (the order of [`TaskOutcome`]).
    tasks_ended: [metrics::Counter; 3],
    task_seconds: [metrics::Histogram; 3],
    steps_dispatched: metrics::Counter,
    gc_runs: metrics::Counter,
    gc_freed: metrics::Counter,
    state_commits: metrics::Counter,
    state_writes: metrics::Counter,
}

static HOT: std::sync::OnceLock<HotHandles> = std::sync::OnceLock::new();

/// Registers the per-task handles (called by [`export::install`]).
fn register_hot() {
    HOT.get_or_init(|| HotHandles {
        tasks_started: counter!(TASKS_STARTED),
        tasks_ended: TaskOutcome::ALL.map(|o| counter!(o.counter_name())),
        task_seconds: TaskOutcome::ALL.map(|o| histogram!(TASK_SECONDS, "outcome" => o.label())),
        steps_dispatched: counter!(STEPS_DISPATCHED),
        gc_runs: counter!(GC_RUNS),
        gc_freed: counter!(GC_FREED),
        state_commits: counter!(STATE_COMMITS),
        state_writes: counter!(STATE_WRITES),
    });
}

/// Sets the number of task runs in flight (sampled at each scrape).
pub fn set_tasks_in_flight(n: usize) {
    gauge!(TASKS_IN_FLIGHT).set(n as f64);
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// COMPLETED.
    Completed,
    /// FAILED.
    Failed,
    /// CANCELLED.
    Cancelled,
}

impl TaskOutcome {
    const ALL: [TaskOutcome; 3] = [
        TaskOutcome::Completed,
        TaskOutcome::Failed,
        TaskOutcome::Cancelled,
    ];

    fn counter_name(self) -> &'static str {
        match self {
            TaskOutcome::Completed => TASKS_COMPLETED,
            TaskOutcome::Failed => TASKS_FAILED,
            TaskOutcome::Cancelled => TASKS_CANCELLED,
        }
    }

    fn label(self) -> &'static str {
        match self {
            TaskOutcome::Completed => "completed",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Cancelled => "cancelled",
        }
    }
}

/// A started task ended after `ran`.
pub fn task_ended(outcome: TaskOutcome, ran: Duration) {
    if let Some(h) = HOT.get() {
        h.tasks_ended[outcome as usize].increment(1);
        h.task_seconds[outcome as usize].record(ran.as_secs_f64());
    }
    if outcome == TaskOutcome::Completed {
        live::task_completed();
    }
}

/// A restart interrupted a task.
pub fn task_interrupted() {
    counter!(TASKS_INTERRUPTED).increment(1);
}

/// An interrupted task resumed.
pub fn task_resumed() {
    counter!(TASKS_RESUMED).increment(1);
}

/// A task dispatched an engine step.
pub fn step_dispatched() {
    if let Some(h) = HOT.get() {
        h.steps_dispatched.increment(1);
    }
}

/// A notice went to an operator; `code` is its wire name.
pub fn notice(code: &'static str) {
    counter!(NOTICES, "code" => code).increment(1);
}

/// A stream attached and received `n` frames from the outbox.
pub fn frames_replayed(n: u32) {
    counter!(FRAMES_REPLAYED).increment(u64::from(n));
}

/// A detached session's parking grace ran out.
pub fn parking_expired() {
    counter!(PARKING_EXPIRED).increment(1);
}

/// A finished task's engine state was collected, `freed` entries removed.
pub fn gc_run(freed: usize) {
    if let Some(h) = HOT.get() {
        h.gc_runs.increment(1);
        h.gc_freed
            .increment(u64::try_from(freed).unwrap_or(u64::MAX));
    }
}

/// The state file committed one transaction of `writes` changes.
pub fn state_committed(writes: usize) {
    if let Some(h) = HOT.get() {
        h.state_commits.increment(1);
        h.state_writes
            .increment(u64::try_from(writes).unwrap_or(u64::MAX));
    }
}

/// What the operator sessions hold now, sampled at each scrape.
#[derive(Debug, Clone, Default)]
pub struct OperatorGauges {
    /// Sessions that exist.
    pub live: usize,
    /// Sessions with a stream attached.
    pub attached: usize,
    /// Frames not yet acknowledged.
    pub unacked: u64,
    /// Pending requests by kind (every kind, zeros included, keeps the series steady).
    pub pending: Vec<(&'static str, usize)>,
}

/// Sets the operator gauges.
pub fn set_operator_gauges(g: &OperatorGauges) {
    gauge!(SESSIONS_LIVE).set(g.live as f64);
    gauge!(SESSIONS_ATTACHED).set(g.attached as f64);
    gauge!(UNACKED_FRAMES).set(g.unacked as f64);
    for (kind, n) in &g.pending {
        gauge!(PENDING_REQUESTS, "kind" => *kind).set(*n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/OBSERVABILITY.md` lists exactly the metrics of [`ALL`], with their types.
    #[test]
    fn the_doc_lists_every_metric() {
        let doc = include_str!("../../docs/OBSERVABILITY.md");
        let listed: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let name = cells.next()?.strip_suffix('`')?;
                let is_name = name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                is_name.then_some((name, cells.next()?))
            })
            .collect();
        let registered: Vec<(&str, &str)> = ALL.iter().map(|m| (m.name, m.kind)).collect();
        assert_eq!(listed, registered);
    }

    /// The example dashboard queries only metrics the server exports.
    #[test]
    fn the_dashboard_names_known_metrics() {
        let dashboard = include_str!("../../docs/grafana-dashboard.json");
        let words = dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|w| w.starts_with("mse_") || w.starts_with("process_")) {
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            assert!(ALL.iter().any(|m| m.name == name), "{word}");
        }
    }

    #[test]
    fn names_are_unique_and_prometheus_shaped() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for m in ALL {
            assert!(
                ["counter", "gauge", "histogram"].contains(&m.kind),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == "counter",
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }
}
