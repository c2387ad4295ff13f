//! Reads of tasks straight from the tables, for a task this replica does not hold (it
//! runs on another replica, or ended there): its record, its events, a watch of its
//! newest seq polled while someone follows it, and lists over every replica's tasks.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::pg_leases::undecodable;
use super::{TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskState};
use crate::error::Result;
use crate::pg::uint;

/// How often a followed task held elsewhere is read for new events.
const POLL: Duration = Duration::from_millis(200);

/// A task row's record and launch, decoded.
pub(super) fn decode_task(record: &str, launch: Option<&str>) -> Result<TaskRecord> {
    let mut task: TaskRecord = serde_json::from_str(record).map_err(|e| undecodable(&e))?;
    if let Some(launch) = launch {
        let launch = serde_json::from_str(launch).map_err(|e| undecodable(&e))?;
        task.launch = Some(std::sync::Arc::new(launch));
    }
    Ok(task)
}

fn decode_event(task_id: String, seq: i64, at_ms: i64, kind: &str) -> Result<TaskEvent> {
    let kind: TaskEventKind = serde_json::from_str(kind).map_err(|e| undecodable(&e))?;
    Ok(TaskEvent {
        seq: uint(seq),
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(uint(at_ms)),
        task_id,
        kind,
    })
}

/// The events of the tasks `ids`, oldest first, by task.
pub(super) async fn read_events(
    client: &deadpool_postgres::Object,
    ids: &[String],
) -> Result<HashMap<String, Vec<TaskEvent>>> {
    let mut events: HashMap<String, Vec<TaskEvent>> = HashMap::new();
    if ids.is_empty() {
        return Ok(events);
    }
    let rows = client
        .query(
            "SELECT task_id, seq, at_ms, kind::text FROM task_events \
             WHERE task_id = ANY($1) ORDER BY task_id, seq",
            &[&ids],
        )
        .await
        .map_err(|e| undecodable(&e))?;
    for row in &rows {
        let task_id: String = row.get(0);
        let event = decode_event(task_id.clone(), row.get(1), row.get(2), row.get(3))?;
        events.entry(task_id).or_default().push(event);
    }
    Ok(events)
}

/// One task's record as stored (without its launch); None if the database has no such
/// task.
pub(super) async fn record(pool: &Pool, task_id: &str) -> Result<Option<TaskRecord>> {
    let client = crate::pg::client(pool).await?;
    let row = client
        .query_opt(
            "SELECT record::text FROM tasks WHERE task_id = $1",
            &[&task_id],
        )
        .await
        .map_err(|e| undecodable(&e))?;
    row.map(|r| decode_task(r.get(0), None)).transpose()
}

/// Up to `limit` events of `task_id` with seq > `after`; None if the task is unknown.
pub(super) async fn events_after(
    pool: &Pool,
    task_id: &str,
    after: u64,
    limit: usize,
) -> Result<Option<Vec<TaskEvent>>> {
    let client = crate::pg::client(pool).await?;
    let fail = |e: tokio_postgres::Error| undecodable(&e);
    let known = client
        .query_opt("SELECT 1 FROM tasks WHERE task_id = $1", &[&task_id])
        .await
        .map_err(fail)?;
    if known.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT seq, at_ms, kind::text FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                &task_id,
                &crate::pg::int(after),
                &crate::pg::int(limit as u64),
            ],
        )
        .await
        .map_err(fail)?;
    rows.iter()
        .map(|r| decode_event(task_id.to_string(), r.get(0), r.get(1), r.get(2)))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A receiver of the newest seq of `task_id`, read every [`POLL`] while it is followed;
/// None if the task is unknown. The reads stop when the receiver goes.
pub(super) async fn watch_rev(pool: &Pool, task_id: &str) -> Result<Option<watch::Receiver<u64>>> {
    let Some(first) = newest_seq(pool, task_id).await? else {
        return Ok(None);
    };
    let (tx, rx) = watch::channel(first);
    let (pool, id) = (pool.clone(), task_id.to_string());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            match newest_seq(&pool, &id).await {
                Ok(Some(now)) => {
                    tx.send_if_modified(|seen| std::mem::replace(seen, now) != now);
                }
                // Dropped by retention: the follower ends.
                Ok(None) => return,
                Err(e) => tracing::debug!(task_id = %id, error = %e, "task not polled"),
            }
        }
    });
    Ok(Some(rx))
}

async fn newest_seq(pool: &Pool, task_id: &str) -> Result<Option<u64>> {
    let client = crate::pg::client(pool).await?;
    let row = client
        .query_opt("SELECT rev FROM tasks WHERE task_id = $1", &[&task_id])
        .await
        .map_err(|e| undecodable(&e))?;
    Ok(row.map(|r| uint(r.get(0))))
}

/// Newest first by (created_at, task_id), as [`TaskPosition`] orders them: `$1` a state
/// or NULL, `$2..$4` the position to start after or NULLs, `$5` how many.
const LIST: &str = "
SELECT record::text FROM (
    SELECT record, task_id,
        (record->'created_at'->>'secs_since_epoch')::int8 AS cs,
        (record->'created_at'->>'nanos_since_epoch')::int8 AS cn
    FROM tasks
    WHERE $1::text IS NULL OR record->>'state' = $1
) t
WHERE $2::int8 IS NULL OR (cs, cn, task_id) < ($2, $3, $4)
ORDER BY cs DESC, cn DESC, task_id DESC
LIMIT $5";

/// ListTasks over every replica's tasks.
pub(super) async fn list(
    pool: &Pool,
    state: Option<TaskState>,
    after: Option<&TaskPosition>,
    limit: usize,
) -> Result<Vec<TaskRecord>> {
    let state = match state.map(serde_json::to_value).transpose() {
        Ok(Some(serde_json::Value::String(s))) => Some(s),
        Ok(_) => None,
        Err(e) => return Err(undecodable(&e)),
    };
    let since = |p: &TaskPosition| {
        p.created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    };
    let secs = after.map(|p| crate::pg::int(since(p).as_secs()));
    let nanos = after.map(|p| i64::from(since(p).subsec_nanos()));
    let id = after.map(|p| p.task_id.as_str());
    let client = crate::pg::client(pool).await?;
    let rows = client
        .query(
            LIST,
            &[&state, &secs, &nanos, &id, &crate::pg::int(limit as u64)],
        )
        .await
        .map_err(|e| undecodable(&e))?;
    rows.iter().map(|r| decode_task(r.get(0), None)).collect()
}
