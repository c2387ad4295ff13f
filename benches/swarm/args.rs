//! The bench's flags, and the sizes one run resolves them to.

use std::path::PathBuf;
use std::time::Duration;

/// Reproducible figures for mse-grpc (B0 … B6, the B8 soak): prints a table, writes JSON.
#[derive(Debug, clap::Parser)]
#[command(name = "swarm", bin_name = "cargo bench --bench swarm --")]
pub(crate) struct BenchArgs {
    /// Short runs (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// Measure a running server instead of starting one (RSS is then not reported).
    #[arg(long)]
    target: Option<String>,
    /// The `--target` server's process id, so its CPU per task is reported.
    #[arg(long, requires = "target")]
    target_pid: Option<u32>,
    /// A running server speaking the v0.1.0 API (e.g. `mse serve`): B0 runs against it too.
    #[arg(long)]
    baseline: Option<String>,
    /// The `--baseline` server's process id, so its CPU per task is reported.
    #[arg(long, requires = "baseline")]
    baseline_pid: Option<u32>,
    /// Tasks of each B0 row [default: 1500, quick 500].
    #[arg(long)]
    b0_tasks: Option<usize>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Idle operator streams for B3 [default: 10000, quick 1000].
    #[arg(long)]
    streams: Option<usize>,
    /// Seconds per throughput scenario [default: 8, quick 2].
    #[arg(long)]
    seconds: Option<u64>,
    /// Connections B1's task calls spread over, round robin (a balancer in front of
    /// several replicas gives each connection to the next one) [default: 1].
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Run only these scenarios (repeatable: B0 … B6, B8) [default: all].
    #[arg(long)]
    only: Vec<String>,
    /// Tasks of the B8 soak [default: 200000, quick 30000].
    #[arg(long)]
    soak_tasks: Option<usize>,
    /// Appended by `cargo bench` (a run without it is `cargo test`'s smoke).
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one run measures, and how much of it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// A running server to measure; None starts one per scenario.
    pub(crate) target: Option<String>,
    /// The process of `target`, for its CPU time.
    pub(crate) target_pid: Option<u32>,
    /// A server speaking the v0.1.0 API that B0 also measures, and its process.
    pub(crate) baseline: Option<(String, Option<u32>)>,
    /// Tasks of each B0 row.
    pub(crate) b0_tasks: usize,
    /// Where the JSON goes.
    pub(crate) out: PathBuf,
    /// Scenario ids to run; empty runs all.
    pub(crate) only: Vec<String>,
    /// Length of each throughput run (B1, B2, B5).
    pub(crate) dur: Duration,
    /// Idle streams of B3.
    pub(crate) streams: usize,
    /// Unacked spawns of B4, interrupted runs of B6.
    pub(crate) pending: usize,
    /// The smoke of `cargo test` (tiny sizes against a given server).
    pub(crate) smoke: bool,
    /// Connections B1's task calls spread over.
    pub(crate) connections: usize,
    /// Tasks of the B8 soak.
    pub(crate) soak_tasks: usize,
}

impl Plan {
    /// The defaults (full or `--quick`) overridden by the flags given.
    pub(crate) fn from_args(args: BenchArgs) -> Self {
        let quick = args.quick;
        let pick = |given: Option<usize>, quick_n: usize, full_n: usize| {
            given.unwrap_or(if quick { quick_n } else { full_n })
        };
        Plan {
            dur: Duration::from_secs(args.seconds.unwrap_or(if quick { 2 } else { 8 })),
            streams: pick(args.streams, 1000, 10_000),
            pending: pick(None, 200, 1000),
            soak_tasks: pick(args.soak_tasks, 30_000, 200_000),
            b0_tasks: pick(args.b0_tasks, 500, 1500),
            smoke: false,
            connections: args.connections.max(1),
            target: args.target,
            target_pid: args.target_pid,
            baseline: args.baseline.map(|addr| (addr, args.baseline_pid)),
            out: args.out,
            only: args.only,
        }
    }

    /// Every scenario at a tiny size against the server at `addr`: a check that the bench
    /// still works, not a measurement.
    pub(crate) fn smoke(addr: String, pid: Option<u32>, out: PathBuf) -> Self {
        Plan {
            target: Some(addr),
            target_pid: pid,
            connections: 1,
            baseline: None,
            b0_tasks: 8,
            out,
            only: Vec::new(),
            dur: Duration::from_millis(100),
            streams: 8,
            pending: 8,
            soak_tasks: 100,
            smoke: true,
        }
    }

    /// Whether scenario `id` is part of this run.
    pub(crate) fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(id))
    }
}
