//! Leases of tasks in a shared database: the replica that runs each unfinished task is
//! its `runner`, and `lease_epoch` counts the claims. A claim moves the lease to this
//! replica and bumps the epoch, so every later write of the old runner is refused
//! (`pg_batch`); a replica learns it lost a task from that refusal or from
//! [`moved`], and lets it go.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use deadpool_postgres::Pool;

use super::pg_reads::{decode_task, read_events};
use super::{TaskEvent, TaskRecord};
use crate::error::{Error, Result};
use crate::pg::replicas::DEAD_AFTER;

/// Tasks claimed per statement (a tick claims until fewer come back).
const CLAIM_BATCH: i64 = 200;

/// The leases this replica holds: task id → the `lease_epoch` it claimed, and the tasks
/// found claimed by another replica since they were last reported.
pub(super) struct LeaseBook {
    /// This replica's id, the `runner` of the tasks it writes.
    me: String,
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    held: HashMap<String, i64>,
    lost: HashSet<String>,
}

impl LeaseBook {
    pub(super) fn new(me: &str) -> Self {
        Self {
            me: me.to_string(),
            inner: Mutex::new(Book::default()),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// This replica's id.
    pub(super) fn me(&self) -> &str {
        &self.me
    }

    /// Notes the lease of `task_id` at `epoch` (a task created here, or claimed).
    pub(super) fn hold(&self, task_id: &str, epoch: i64) {
        self.book().held.insert(task_id.to_string(), epoch);
    }

    /// The leases held here, task id → epoch (running or waiting tasks; ended ones are
    /// released).
    pub(super) fn held(&self) -> HashMap<String, i64> {
        self.book().held.clone()
    }

    /// The epoch held for each of `task_ids` (0: none, so a write of it is fenced).
    pub(super) fn epochs<'a>(&self, task_ids: impl Iterator<Item = &'a String>) -> Vec<i64> {
        let book = self.book();
        task_ids
            .map(|id| book.held.get(id).copied().unwrap_or(0))
            .collect()
    }

    /// Gives up the lease of `task_ids` (they ended).
    pub(super) fn release(&self, task_ids: &[String]) {
        let mut book = self.book();
        for id in task_ids {
            book.held.remove(id);
        }
    }

    /// Marks `task_ids` as claimed by another replica; [`Self::take_lost`] reports them.
    pub(super) fn lose(&self, task_ids: impl IntoIterator<Item = String>) {
        let mut book = self.book();
        for id in task_ids {
            book.held.remove(&id);
            book.lost.insert(id);
        }
    }

    /// The tasks found claimed by another replica since the last call.
    pub(super) fn take_lost(&self) -> Vec<String> {
        self.book().lost.drain().collect()
    }
}

/// Whose unfinished tasks a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// Boot of the only replica on the database: every one.
    Every,
    /// Boot of one replica among several: its own (same `--replica-id`) and dead ones'.
    MineAndOrphans,
    /// While serving: those of replicas silent for [`DEAD_AFTER`] (never this one's).
    Orphans,
}

/// A task claimed here, with the lease epoch taken and its newest events.
pub(super) struct Claimed {
    pub(super) epoch: i64,
    pub(super) record: TaskRecord,
    pub(super) events: Vec<TaskEvent>,
}

/// `$1` this replica, `$2` every task, `$3` this replica's own too, `$4` seconds of
/// silence that make a replica dead, `$5` how many. Rows another claimer holds are
/// skipped, so two live replicas split a dead one's tasks.
const CLAIM: &str = "
UPDATE tasks t SET runner = $1, lease_epoch = t.lease_epoch + 1
FROM (
    SELECT task_id FROM tasks
    WHERE finished_ms IS NULL AND (
        $2 OR runner IS NULL OR ($3 AND runner = $1)
        OR (runner <> $1 AND runner NOT IN (
            SELECT id FROM replicas
            WHERE heartbeat_at > now() - make_interval(secs => $4))))
    ORDER BY created
    LIMIT $5
    FOR UPDATE SKIP LOCKED
) c
WHERE t.task_id = c.task_id
RETURNING t.task_id, t.lease_epoch, t.record::text, t.launch::text";

/// Claims the tasks `claim` names for replica `me`, with their events.
pub(super) async fn claim(pool: &Pool, me: &str, claim: Claim) -> Result<Vec<Claimed>> {
    let fail = |e: tokio_postgres::Error| crate::pg::error("task leases", &e);
    let client = crate::pg::client(pool).await?;
    let stmt = client.prepare_cached(CLAIM).await.map_err(fail)?;
    let (every, mine) = (claim == Claim::Every, claim == Claim::MineAndOrphans);
    let dead = DEAD_AFTER.as_secs_f64();
    let mut claimed = Vec::new();
    loop {
        let rows = client
            .query(&stmt, &[&me, &every, &mine, &dead, &CLAIM_BATCH])
            .await
            .map_err(fail)?;
        let more = rows.len() as i64 == CLAIM_BATCH;
        for row in &rows {
            let record = decode_task(row.get(2), row.get(3))?;
            claimed.push((row.get::<_, i64>(1), record));
        }
        if !more {
            break;
        }
    }
    let ids: Vec<String> = claimed.iter().map(|(_, r)| r.task_id.clone()).collect();
    let mut events = read_events(&client, &ids).await?;
    Ok(claimed
        .into_iter()
        .map(|(epoch, record)| Claimed {
            epoch,
            events: events.remove(&record.task_id).unwrap_or_default(),
            record,
        })
        .collect())
}

/// `$1` this replica, `$2` the task, `$3` seconds of silence that make a replica dead.
const CLAIM_ONE: &str = "
UPDATE tasks SET runner = $1, lease_epoch = lease_epoch + 1
WHERE task_id = $2 AND (
    finished_ms IS NOT NULL OR runner IS NULL OR runner = $1
    OR runner NOT IN (
        SELECT id FROM replicas WHERE heartbeat_at > now() - make_interval(secs => $3)))
RETURNING lease_epoch, record::text, launch::text";

/// Claims one task to run it again here (ResumeTask, RerunTask): a finished one, or an
/// unfinished one whose runner is this replica or dead. Err names the live runner.
pub(super) async fn claim_one(pool: &Pool, me: &str, task_id: &str) -> Result<Option<Claimed>> {
    let fail = |e: tokio_postgres::Error| crate::pg::error("task leases", &e);
    let client = crate::pg::client(pool).await?;
    let dead = DEAD_AFTER.as_secs_f64();
    let row = client
        .query_opt(CLAIM_ONE, &[&me, &task_id, &dead])
        .await
        .map_err(fail)?;
    let Some(row) = row else {
        let runner = client
            .query_opt("SELECT runner FROM tasks WHERE task_id = $1", &[&task_id])
            .await
            .map_err(fail)?;
        return match runner {
            None => Ok(None),
            Some(r) => Err(Error::FailedPrecondition(format!(
                "task {task_id} runs on replica {}; send this call there, or wait until it ends",
                r.get::<_, Option<String>>(0).unwrap_or_default()
            ))),
        };
    };
    let record = decode_task(row.get(1), row.get(2))?;
    let mut events = read_events(&client, std::slice::from_ref(&record.task_id)).await?;
    Ok(Some(Claimed {
        epoch: row.get(0),
        events: events.remove(&record.task_id).unwrap_or_default(),
        record,
    }))
}

/// Of the leases `held` (task id → epoch), those whose row names another runner or
/// another epoch now: the row's runner and epoch. Tasks whose row is not written yet are
/// not counted.
pub(super) async fn moved(
    pool: &Pool,
    me: &str,
    held: &HashMap<String, i64>,
) -> Result<Vec<(String, Option<String>, i64)>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, epochs): (Vec<&String>, Vec<i64>) = held.iter().map(|(id, e)| (id, *e)).unzip();
    let client = crate::pg::client(pool).await?;
    let rows = client
        .query(
            "SELECT x.t, cur.runner, cur.lease_epoch \
             FROM unnest($1::text[], $2::int8[]) AS x(t, e) \
             JOIN tasks cur ON cur.task_id = x.t \
             WHERE cur.runner IS DISTINCT FROM $3 OR cur.lease_epoch <> x.e",
            &[&ids, &epochs, &me],
        )
        .await
        .map_err(|e| crate::pg::error("task leases", &e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The error of a lease query that cannot be decoded.
pub(super) fn undecodable(e: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!("cannot read the tasks from the database: {e}"))
}
