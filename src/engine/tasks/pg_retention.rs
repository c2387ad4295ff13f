//! Retention when replicas share the database: each replica holds only the tasks it runs,
//! so the finished tasks past the retention count are dropped from the tables by a sweep
//! (at most one every [`SWEEP_EVERY`], after a task ends), newest kept, whoever ran them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

/// The least time between two sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// `$1` finished tasks kept; the ids dropped.
const SWEEP: &str = "
WITH old AS (
    SELECT task_id FROM tasks WHERE finished_ms IS NOT NULL
    ORDER BY finished_ms DESC, task_id DESC
    OFFSET $1
), events AS (
    DELETE FROM task_events WHERE task_id IN (SELECT task_id FROM old)
)
DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM old)
RETURNING task_id";

/// See the module doc.
pub(super) struct Retention {
    keep: i64,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    last: AtomicU64,
    sweeping: AtomicBool,
}

impl Retention {
    pub(super) fn new(keep: usize) -> Self {
        Self {
            keep: crate::pg::int(keep.max(1) as u64),
            started: Instant::now(),
            last: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// A task ended: sweeps now unless one ran within [`SWEEP_EVERY`] or runs; the ids
    /// dropped (a failed sweep is logged; the next one catches up).
    pub(super) async fn after_finish(&self, pool: &Pool) -> Vec<String> {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self.sweeping.swap(true, Ordering::AcqRel)
        {
            return Vec::new();
        }
        self.last.store(now, Ordering::Relaxed);
        let swept = async {
            let client = crate::pg::client(pool).await?;
            let rows = client
                .query(SWEEP, &[&self.keep])
                .await
                .map_err(|e| crate::pg::error("task retention", &e))?;
            Ok::<_, crate::error::Error>(rows.iter().map(|r| r.get(0)).collect())
        }
        .await;
        self.sweeping.store(false, Ordering::Release);
        swept.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "finished tasks past the retention not dropped");
            Vec::new()
        })
    }
}
