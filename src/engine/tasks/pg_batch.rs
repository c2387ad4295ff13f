//! The PostgreSQL task store's writer. A change and its place in the queue are taken
//! under one lock (a task's events are queued in seq order); one flusher writes
//! everything queued as ONE statement (a data-modifying `WITH` over arrays: one round
//! trip per batch, atomic), retries it while the database is unreachable (the statement
//! is idempotent), and answers each caller once its change is committed.
//!
//! Every write is fenced by the task's lease: its row must still name this replica as
//! `runner` with the `lease_epoch` it took. A task another replica claimed since is not
//! written; its callers get ABORTED and the task is reported lost (`LeaseBook`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{oneshot, Notify};

use super::pg_leases::LeaseBook;
use super::{unix_ms, TaskEvent, TaskRecord, EVENTS_KEPT};
use crate::error::{Error, Result};
use crate::pg::int;

/// How long a batch is retried while the database is unreachable.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long one try of a batch may take.
const STATEMENT_WAIT: Duration = Duration::from_secs(10);

/// One change: the event, the record it produced, and the tasks retention dropped.
pub(super) struct Change {
    pub(super) record: TaskRecord,
    pub(super) event: TaskEvent,
    pub(super) dropped: Vec<String>,
}

#[derive(Default)]
struct Queued {
    changes: Vec<(Change, oneshot::Sender<Result<()>>)>,
    /// Tasks with a change queued or being written, and how many.
    unsettled: HashMap<String, usize>,
    /// Tasks whose last write failed: their end may not be stored.
    failed: HashSet<String>,
    flushing: bool,
}

/// See the module doc.
pub(super) struct PgWriter {
    pool: Pool,
    queued: Mutex<Queued>,
    /// The leases this replica holds; its id is the `runner` of the tasks it writes.
    pub(super) leases: LeaseBook,
    /// Woken after every batch.
    written: Notify,
}

impl PgWriter {
    pub(super) fn new(pool: Pool, me: &str) -> Arc<Self> {
        Arc::new(Self {
            pool,
            queued: Mutex::new(Queued::default()),
            leases: LeaseBook::new(me),
            written: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        match self.queued.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes a change with `make` and queues it in one step; resolves with what `make`
    /// returned once the change is committed (`None`: nothing changed).
    pub(super) async fn submit<T>(
        self: &Arc<Self>,
        make: impl FnOnce() -> Result<Option<(T, Change)>>,
    ) -> Result<Option<T>> {
        let (tx, rx) = oneshot::channel();
        let (value, start) = {
            let mut q = self.lock();
            let Some((value, change)) = make()? else {
                return Ok(None);
            };
            *q.unsettled
                .entry(change.record.task_id.clone())
                .or_default() += 1;
            q.changes.push((change, tx));
            (value, !std::mem::replace(&mut q.flushing, true))
        };
        if start {
            let writer = Arc::clone(self);
            tokio::spawn(async move { writer.flush().await });
        }
        match rx.await {
            Ok(done) => done.map(|()| Some(value)),
            Err(_) => Err(Error::Unavailable("the task writer stopped".into())),
        }
    }

    /// UNAVAILABLE at once when the database cannot be reached (a new task is refused
    /// rather than held while a change already made waits for the database).
    pub(super) async fn reachable(&self) -> Result<()> {
        crate::pg::client(&self.pool).await.map(drop)
    }

    /// Resolves once no change of `task_id` is queued or in flight; UNAVAILABLE if its
    /// last write failed.
    pub(super) async fn settled(&self, task_id: &str) -> Result<()> {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            {
                let q = self.lock();
                if !q.unsettled.contains_key(task_id) {
                    if q.failed.contains(task_id) {
                        return Err(Error::Unavailable(format!(
                            "the end of task {task_id} was not stored in the database; read \
                             it again with GetTask"
                        )));
                    }
                    return Ok(());
                }
            }
            written.await;
        }
    }

    async fn flush(&self) {
        loop {
            let batch = {
                let mut q = self.lock();
                if q.changes.is_empty() {
                    q.flushing = false;
                    return;
                }
                std::mem::take(&mut q.changes)
            };
            let (changes, waiters): (Vec<Change>, Vec<_>) = batch.into_iter().unzip();
            let epochs = self
                .leases
                .epochs(changes.iter().map(|c| &c.record.task_id));
            let outcome = match Arrays::of(&changes, &epochs, self.leases.me()) {
                Ok(arrays) => self.write(&arrays).await,
                Err(e) => Err(e.to_string()),
            };
            let fenced: HashSet<String> = match &outcome {
                Ok(fenced) => fenced.iter().cloned().collect(),
                Err(_) => HashSet::new(),
            };
            if !fenced.is_empty() {
                tracing::warn!(tasks = ?fenced, "task writes refused: another replica took these tasks over");
                self.leases.lose(fenced.iter().cloned());
            }
            {
                let mut q = self.lock();
                for c in &changes {
                    let id = &c.record.task_id;
                    if let Some(n) = q.unsettled.get_mut(id) {
                        *n -= 1;
                        if *n == 0 {
                            q.unsettled.remove(id);
                        }
                    }
                    if outcome.is_err() {
                        q.failed.insert(id.clone());
                    } else {
                        q.failed.remove(id);
                    }
                }
            }
            self.written.notify_waiters();
            for (change, waiter) in changes.iter().zip(waiters) {
                let id = &change.record.task_id;
                let answer = match &outcome {
                    Err(why) => Err(Error::Unavailable(format!(
                        "task store write failed: {why}"
                    ))),
                    Ok(_) if fenced.contains(id) => Err(Error::Aborted(format!(
                        "task {id} is run by another replica now; this replica let it go"
                    ))),
                    Ok(_) => Ok(()),
                };
                let _ = waiter.send(answer);
            }
        }
    }

    /// Writes one batch, retrying for [`RETRY_FOR`] while the database is unreachable;
    /// the tasks it did not write because another replica holds their lease.
    async fn write(&self, a: &Arrays) -> std::result::Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.attempt(a).await {
                Ok(fenced) => return Ok(fenced),
                Err((true, why)) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(error = %why, "task store: database unreachable, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err((_, why)) => return Err(why),
            }
        }
    }

    /// One try; on failure, whether a retry may cure it, and why. A statement that does
    /// not answer within [`STATEMENT_WAIT`] (a silent network) counts as transient; its
    /// connection is not reused.
    async fn attempt(&self, a: &Arrays) -> std::result::Result<Vec<String>, (bool, String)> {
        let client = crate::pg::client(&self.pool)
            .await
            .map_err(|e| (true, e.to_string()))?;
        let failed = |e: tokio_postgres::Error| (crate::pg::is_transient(&e), e.to_string());
        let run = async {
            let stmt = client.prepare_cached(WRITE).await.map_err(failed)?;
            client.query(&stmt, &a.params()).await.map_err(failed)
        };
        match tokio::time::timeout(STATEMENT_WAIT, run).await {
            Ok(done) => done.map(|rows| rows.iter().map(|r| r.get(0)).collect()),
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err((
                    true,
                    format!("no answer within {} s", STATEMENT_WAIT.as_secs()),
                ))
            }
        }
    }
}

/// A batch in one statement: the events, the newest record of each task (its launch
/// with its first event), the event windows trimmed, the tasks retention dropped. Rows
/// of a task whose lease ($14 = this replica, with the epoch in $13) another replica
/// took are left alone; the statement answers their ids.
const WRITE: &str = "
WITH fenced AS (
    SELECT cur.task_id FROM tasks cur
    JOIN unnest($5::text[], $13::int8[]) AS x(t, e) ON cur.task_id = x.t
    WHERE cur.runner IS DISTINCT FROM $14 OR cur.lease_epoch <> x.e
), ev AS (
    INSERT INTO task_events (task_id, seq, at_ms, kind)
    SELECT t, s, a, k::jsonb FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[])
        AS x(t, s, a, k)
    WHERE t NOT IN (SELECT task_id FROM fenced)
    ON CONFLICT DO NOTHING
), rec AS (
    INSERT INTO tasks AS cur (task_id, rev, finished_ms, record, launch, runner, lease_epoch)
    SELECT t, r, f, j::jsonb, l::jsonb, $14, e
    FROM unnest($5::text[], $6::int8[], $7::int8[], $8::text[], $9::text[], $13::int8[])
        AS x(t, r, f, j, l, e)
    ON CONFLICT (task_id) DO UPDATE SET rev = excluded.rev,
        finished_ms = excluded.finished_ms, record = excluded.record
    WHERE excluded.rev > cur.rev AND cur.runner = $14 AND cur.lease_epoch = excluded.lease_epoch
), trimmed AS (
    DELETE FROM task_events e USING unnest($10::text[], $11::int8[]) AS x(t, upto)
    WHERE e.task_id = x.t AND e.seq <= x.upto AND x.t NOT IN (SELECT task_id FROM fenced)
), gone_events AS (
    DELETE FROM task_events WHERE task_id = ANY($12::text[])
), gone AS (
    DELETE FROM tasks WHERE task_id = ANY($12::text[])
)
SELECT task_id FROM fenced";

/// The parameters of [`WRITE`].
#[derive(Default)]
struct Arrays {
    ev_task: Vec<String>,
    ev_seq: Vec<i64>,
    ev_at: Vec<i64>,
    ev_kind: Vec<String>,
    rec_task: Vec<String>,
    rec_rev: Vec<i64>,
    rec_finished: Vec<Option<i64>>,
    rec_json: Vec<String>,
    rec_launch: Vec<Option<String>>,
    rec_epoch: Vec<i64>,
    /// This replica, the runner every written task must still name.
    runner: String,
    trim_task: Vec<String>,
    trim_upto: Vec<i64>,
    dropped: Vec<String>,
}

impl Arrays {
    /// Rows of tasks dropped in the same batch are not written at all (the statement's
    /// parts see one snapshot, so a delete would miss rows inserted beside it).
    /// `epochs[i]` is the lease epoch held for the task of `changes[i]`.
    fn of(changes: &[Change], epochs: &[i64], runner: &str) -> Result<Self> {
        let json = |e: serde_json::Error| Error::Internal(format!("task store encode: {e}"));
        let dropped: HashSet<&str> = changes
            .iter()
            .flat_map(|c| c.dropped.iter().map(String::as_str))
            .collect();
        let mut last: HashMap<&str, usize> = HashMap::new();
        let mut first_seen: HashSet<&str> = HashSet::new();
        for (i, c) in changes.iter().enumerate() {
            last.insert(&c.record.task_id, i);
        }
        let mut a = Arrays {
            dropped: dropped.iter().map(|s| s.to_string()).collect(),
            runner: runner.to_string(),
            ..Arrays::default()
        };
        let kept = int(EVENTS_KEPT as u64);
        for (i, c) in changes.iter().enumerate() {
            let id = c.record.task_id.as_str();
            if dropped.contains(id) {
                continue;
            }
            let seq = int(c.event.seq);
            if c.event.seq == 1 {
                first_seen.insert(id);
            }
            a.ev_task.push(id.to_string());
            a.ev_seq.push(seq);
            a.ev_at.push(int(unix_ms(c.event.at)));
            a.ev_kind
                .push(serde_json::to_string(&c.event.kind).map_err(json)?);
            if last.get(id) != Some(&i) {
                continue;
            }
            if seq > kept {
                a.trim_task.push(id.to_string());
                a.trim_upto.push(seq - kept);
            }
            let launch = match (&c.record.launch, first_seen.contains(id)) {
                (Some(l), true) => Some(serde_json::to_string(l).map_err(json)?),
                _ => None,
            };
            a.rec_task.push(id.to_string());
            a.rec_rev.push(seq);
            a.rec_finished
                .push(c.record.finished_at.map(|t| int(unix_ms(t))));
            a.rec_json
                .push(serde_json::to_string(&c.record).map_err(json)?);
            a.rec_launch.push(launch);
            a.rec_epoch.push(epochs.get(i).copied().unwrap_or(0));
        }
        Ok(a)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 14] {
        [
            &self.ev_task,
            &self.ev_seq,
            &self.ev_at,
            &self.ev_kind,
            &self.rec_task,
            &self.rec_rev,
            &self.rec_finished,
            &self.rec_json,
            &self.rec_launch,
            &self.trim_task,
            &self.trim_upto,
            &self.dropped,
            &self.rec_epoch,
            &self.runner,
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::record::running;
    use super::super::TaskEventKind;
    use super::*;

    fn change(id: &str, seq: u64, dropped: &[&str]) -> Change {
        let mut record = running(id);
        record.launch = Some(Arc::new(serde_json::json!({ "of": id })));
        Change {
            record,
            event: TaskEvent {
                seq,
                at: SystemTime::now(),
                task_id: id.into(),
                kind: TaskEventKind::StepDispatched {
                    step_id: format!("{id}-{seq}"),
                    agent: "a".into(),
                },
            },
            dropped: dropped.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_batch_writes_every_event_the_newest_record_and_skips_what_it_drops() {
        let kept = EVENTS_KEPT as u64;
        let batch = [
            change("t1", 1, &[]),
            change("t2", 1, &[]),
            change("t1", 2, &[]),
            change("t3", kept + 3, &["t2"]),
        ];
        let a = Arrays::of(&batch, &[1, 1, 1, 4], "r1").expect("encodes");
        assert_eq!(a.ev_task, ["t1", "t1", "t3"], "t2 is dropped in the batch");
        assert_eq!(a.ev_seq, [1, 2, int(kept + 3)]);
        assert_eq!(a.rec_task, ["t1", "t3"], "one record per task, its newest");
        assert_eq!(a.rec_rev, [2, int(kept + 3)]);
        assert_eq!(a.rec_epoch, [1, 4], "each record carries its task's lease");
        assert!(
            a.rec_launch[0].is_some(),
            "t1's first event is in the batch"
        );
        assert!(a.rec_launch[1].is_none(), "t3's row exists already");
        assert_eq!(
            (a.trim_task.as_slice(), a.trim_upto.as_slice()),
            (&["t3".to_string()][..], &[3][..])
        );
        assert_eq!(a.dropped, ["t2"]);
    }
}
