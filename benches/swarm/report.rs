//! The results: one row per measurement, the targets judged, a Markdown table, JSON.

use serde::Serialize;
use serde_json::json;

use crate::args::Plan;
use crate::clients::BoxError;
use crate::measure::Sample;

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// B1..B5, B8.
    pub(crate) id: &'static str,
    /// What was measured.
    pub(crate) scenario: String,
    /// Requests in flight.
    pub(crate) in_flight: usize,
    /// Completed operations per second.
    pub(crate) ops_per_sec: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Other figures (RSS per stream, frames lost, …).
    pub(crate) note: String,
    /// The target.
    pub(crate) target: String,
    /// Whether the target was met (None: no target or not measurable).
    pub(crate) met: Option<bool>,
}

impl Row {
    /// The rate and latencies of `sample`; no note, no target.
    pub(crate) fn measured(
        id: &'static str,
        scenario: String,
        in_flight: usize,
        sample: &mut Sample,
    ) -> Row {
        Row {
            id,
            scenario,
            in_flight,
            ops_per_sec: sample.rate(),
            p50_us: sample.pct(0.5),
            p99_us: sample.pct(0.99),
            note: String::new(),
            target: String::new(),
            met: None,
        }
    }
}

/// Sets the targets that compare rows with each other or with fixed figures.
pub(crate) fn judge(rows: &mut [Row]) {
    let rate = |rows: &[Row], id: &str, pat: &str, n: usize| {
        rows.iter()
            .find(|r| r.id == id && r.scenario.contains(pat) && r.in_flight == n)
            .map(|r| r.ops_per_sec)
    };
    let grpc64 = rate(rows, "B1", "native gRPC", 64);
    let web1 = rate(rows, "B5", "gRPC-Web", 1);
    let nat1 = rate(rows, "B5", "native", 1);
    let web16 = rate(rows, "B5", "gRPC-Web", 16);
    let nat16 = rate(rows, "B5", "native", 16);
    let ephemeral = |rows: &[Row], n: usize| {
        rows.iter()
            .find(|r| {
                r.id == "B1"
                    && r.scenario.contains("native")
                    && !r.scenario.contains("durable")
                    && r.in_flight == n
            })
            .map(|r| r.ops_per_sec)
    };
    let (eph1, eph64) = (ephemeral(rows, 1), ephemeral(rows, 64));
    for r in rows.iter_mut() {
        match (r.id, r.in_flight) {
            ("B1", n) if r.scenario.contains("durable") => {
                if let Some(e) = if n == 1 { eph1 } else { eph64 } {
                    r.note = format!(
                        "{} · {:.0} % of ephemeral",
                        r.note,
                        r.ops_per_sec / e * 100.0
                    );
                    r.target = "≥ 70 % of ephemeral".into();
                    r.met = Some(r.ops_per_sec >= e * 0.7);
                }
            }
            ("B1", 64) if r.scenario.contains("native") => {
                r.target = "≥ 2,500 tasks/s".into();
                r.met = Some(r.ops_per_sec >= 2500.0);
            }
            ("B1", 64) => {
                r.target = "within 1.5× of gRPC".into();
                r.met = grpc64.map(|g| r.ops_per_sec * 1.5 >= g);
            }
            ("B2", 64) => {
                r.target = "≥ 50,000 round trips/s".into();
                r.met = Some(r.ops_per_sec >= 50_000.0);
            }
            ("B2", 1) => {
                r.target = "p50 ≤ 150 µs".into();
                r.met = Some(r.p50_us <= 150.0);
            }
            ("B5", n) if r.scenario.contains("gRPC-Web") => {
                let native = if n == 1 { nat1 } else { nat16 };
                let web = if n == 1 { web1 } else { web16 };
                if let (Some(native), Some(web)) = (native, web) {
                    r.note = format!("{:+.1} % vs native", (web / native - 1.0) * 100.0);
                    r.target = "≤ 10 % slower than native".into();
                    r.met = Some(web >= native * 0.9);
                }
            }
            _ => {}
        }
    }
}

/// The rows as a Markdown table on stdout.
pub(crate) fn print_table(rows: &[Row]) {
    println!("| id | scenario | in flight | ops/s | p50 µs | p99 µs | notes | target | met |");
    println!("|---|---|---:|---:|---:|---:|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            r.id,
            r.scenario,
            r.in_flight,
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.note,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            }
        );
    }
}

/// The rows and the run's conditions as JSON at `plan.out`.
pub(crate) fn write_json(plan: &Plan, rows: &[Row]) -> Result<(), BoxError> {
    let report = json!({
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "seconds_per_run": plan.dur.as_secs(),
        "rows": rows,
    });
    std::fs::write(&plan.out, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}
