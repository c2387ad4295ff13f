//! Live figures for the console's strip (`ServerService.GetStats`): tasks completed in the
//! last minute, kept in 60 one-second buckets, and the cached handles of the step
//! histogram. A few atomic operations per event, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::Histogram;

use super::STEP_SECONDS;

/// Seconds the rolling window spans.
pub const WINDOW_SECS: u64 = 60;

/// Counts events per second over the last [`WINDOW_SECS`]. Each bucket packs the second it
/// counts (high 32 bits) with its count (low 32 bits), so a stale bucket is reset by the
/// first event of its new second.
#[derive(Debug)]
pub(super) struct Window {
    buckets: [AtomicU64; WINDOW_SECS as usize],
}

impl Window {
    pub(super) const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; WINDOW_SECS as usize],
        }
    }

    /// One event at second `now` (seconds since an epoch of the caller's choosing).
    pub(super) fn add(&self, now: u64) {
        let bucket = &self.buckets[(now % WINDOW_SECS) as usize];
        let stamp = (now & 0xffff_ffff) << 32;
        let mut seen = bucket.load(Ordering::Relaxed);
        loop {
            let next = if seen & !0xffff_ffff == stamp {
                seen.saturating_add(1)
            } else {
                stamp | 1
            };
            match bucket.compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => seen = actual,
            }
        }
    }

    /// Events in the window ending at second `now` (that second included).
    pub(super) fn sum(&self, now: u64) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|v| (v >> 32) <= now && now - (v >> 32) < WINDOW_SECS)
            .map(|v| v & 0xffff_ffff)
            .sum()
    }
}

/// Seconds since the first call (the window's clock).
fn now_secs() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

static COMPLETED: Window = Window::new();

/// A task completed (counted whether or not metrics are exported).
pub(super) fn task_completed() {
    COMPLETED.add(now_secs());
}

/// Tasks completed in the last minute, in this process.
pub fn tasks_completed_last_minute() -> u64 {
    COMPLETED.sum(now_secs())
}

/// Who ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// An operator's sub-agent (the spawn frame sent to the operator's SpawnAck).
    Operator,
    /// A function of the server process (`rust_fn`).
    InProcess,
}

impl StepKind {
    const ALL: [StepKind; 2] = [StepKind::Operator, StepKind::InProcess];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Operator => "operator",
            StepKind::InProcess => "in_process",
        }
    }
}

/// The step histogram's handles, one per kind, taken once the recorder is installed.
static STEP_HANDLES: OnceLock<[Histogram; 2]> = OnceLock::new();

/// Registers the step histograms (called by [`super::export::install`]).
pub(super) fn register_steps() {
    STEP_HANDLES.get_or_init(|| {
        StepKind::ALL.map(|k| metrics::histogram!(STEP_SECONDS, "kind" => k.label()))
    });
}

/// A step of `kind` ran for `took`, from its dispatch to its result.
pub fn step_finished(kind: StepKind, took: Duration) {
    if let Some(handles) = STEP_HANDLES.get() {
        handles[kind as usize].record(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_the_last_sixty_seconds() {
        let w = Window::new();
        assert_eq!(w.sum(0), 0);
        w.add(0);
        w.add(0);
        w.add(30);
        assert_eq!(w.sum(30), 3);
        assert_eq!(w.sum(59), 3);
        // Second 0 leaves the window at 60; its bucket is reused by second 60.
        assert_eq!(w.sum(60), 1);
        w.add(60);
        assert_eq!(w.sum(60), 2);
        assert_eq!(w.sum(89), 2);
        assert_eq!(w.sum(90), 1);
        assert_eq!(w.sum(200), 0);
    }

    #[test]
    fn step_kinds_index_their_handles() {
        for (i, k) in StepKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
