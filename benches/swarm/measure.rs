//! Timed loops: `in_flight` concurrent callers of one operation, each call's latency kept.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clients::BoxError;

/// Calls completed, wall time, and every call's latency.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    pub(crate) count: u64,
    pub(crate) elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    /// Completed calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p` quantile (0..=1) of the latencies, µs.
    pub(crate) fn pct(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.sort_unstable();
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx].as_secs_f64() * 1e6
    }

    /// Adds `other`'s calls and time to this one (a run measured in parts).
    pub(crate) fn absorb(&mut self, other: Sample) {
        self.count += other.count;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

/// When a measurement's loops stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// At this instant.
    At(Instant),
    /// After this many calls in all.
    After(u64),
}

/// Runs `in_flight` loops of `op` for `dur`, recording each call's latency.
pub(crate) async fn measure<F, Fut>(
    in_flight: usize,
    dur: Duration,
    op: F,
) -> Result<Sample, BoxError>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    measure_until(in_flight, Stop::At(Instant::now() + dur), op).await
}

/// Runs `n` calls of `op`, `in_flight` at a time, recording each call's latency.
pub(crate) async fn measure_n<F, Fut>(in_flight: usize, n: u64, op: F) -> Result<Sample, BoxError>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    measure_until(in_flight, Stop::After(n), op).await
}

async fn measure_until<F, Fut>(in_flight: usize, stop: Stop, op: F) -> Result<Sample, BoxError>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..in_flight {
        let op = op.clone();
        let counter = counter.clone();
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                if let Stop::At(deadline) = stop {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if matches!(stop, Stop::After(n) if i >= n) {
                    break;
                }
                let t0 = Instant::now();
                op(i).await?;
                lat.push(t0.elapsed());
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for j in joins {
        latencies.extend(j.await??);
    }
    Ok(Sample {
        count: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    })
}
