//! The PostgreSQL [`TaskStore`] (`--database-url`): every change is committed before it
//! is answered (see `pg_batch`). The tasks this replica runs, and the finished ones at
//! boot, are held in the in-memory [`TaskRegistry`] kept in step, so the seam's rules
//! live in one place; a task held by no one here (it runs on another replica) is read
//! from the tables. Unfinished tasks are leased (`pg_leases`): a replica writes only
//! the tasks it claimed, and takes over those of replicas that died.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::memory::EvictHook;
use super::pg_batch::{Change, PgWriter};
use super::pg_leases::{claim, claim_one, moved, undecodable, Claim, Claimed};
use super::{
    pg_reads, RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskRegistry,
    TaskState, TaskStore,
};
use crate::engine::census::StructureCounts;
use crate::engine::Replica;
use crate::error::{Error, Result};

/// Tasks and their events in PostgreSQL.
pub struct PgTaskStore {
    mem: TaskRegistry,
    writer: Arc<PgWriter>,
    pool: Pool,
    /// Other replicas share the database: read through to it, take over dead ones.
    shared: bool,
    /// Shared: finished tasks past the retention count are dropped from the tables.
    retention: super::pg_retention::Retention,
    /// Taken by whatever claims or checks leases, so a check never sees a claim halfway.
    leasing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PgTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskStore").finish_non_exhaustive()
    }
}

impl PgTaskStore {
    /// Claims the unfinished tasks this replica takes at boot (every one when it is alone
    /// on the database, else its own and dead replicas') and, alone, reads back the
    /// finished ones (in the order they finished, with their events).
    pub async fn open(
        pool: Pool,
        retention: usize,
        on_evict: EvictHook,
        replica: &Replica,
    ) -> Result<Self> {
        let mem = TaskRegistry::new(retention).with_evict_hook(on_evict);
        // Shared: every read of a task not run here goes to the tables.
        if !replica.shared {
            restore_finished(&pool, &mem).await?;
        }
        let store = Self {
            mem,
            writer: PgWriter::new(pool.clone(), &replica.id),
            pool,
            shared: replica.shared,
            retention: super::pg_retention::Retention::new(retention),
            leasing: tokio::sync::Mutex::new(()),
        };
        let at_boot = match replica.shared {
            true => Claim::MineAndOrphans,
            false => Claim::Every,
        };
        store.hold(claim(&store.pool, &replica.id, at_boot).await?);
        Ok(store)
    }

    /// Holds claimed tasks here: their leases and their records.
    fn hold(&self, claimed: Vec<Claimed>) -> Vec<String> {
        let mut ids = Vec::with_capacity(claimed.len());
        for c in claimed {
            self.writer.leases.hold(&c.record.task_id, c.epoch);
            ids.push(c.record.task_id.clone());
            self.mem.restore(c.record, c.events);
        }
        ids
    }

    fn event(&self, task_id: &str, seq: u64) -> Result<TaskEvent> {
        self.mem
            .event(task_id, seq)
            .ok_or_else(|| Error::Internal(format!("event {seq} of {task_id} vanished")))
    }

    /// Writes a change that produced a record and the event `seq`; answers with what
    /// `keep` takes of the record.
    async fn commit<T>(
        &self,
        change: impl FnOnce() -> Option<(TaskRecord, u64)>,
        keep: impl FnOnce(&TaskRecord) -> T,
    ) -> Result<Option<T>> {
        self.writer
            .submit(|| {
                let Some((record, seq)) = change() else {
                    return Ok(None);
                };
                let event = self.event(&record.task_id, seq)?;
                let kept = keep(&record);
                Ok(Some((
                    kept,
                    Change {
                        record,
                        event,
                        dropped: Vec::new(),
                    },
                )))
            })
            .await
    }
}

/// Puts the finished tasks back into `mem`, in the order they finished, with their events.
async fn restore_finished(pool: &Pool, mem: &TaskRegistry) -> Result<()> {
    let client = crate::pg::client(pool).await?;
    let rows = client
        .query(
            "SELECT task_id, record::text, launch::text FROM tasks \
             WHERE finished_ms IS NOT NULL ORDER BY finished_ms, created",
            &[],
        )
        .await
        .map_err(|e| undecodable(&e))?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut events = pg_reads::read_events(&client, &ids).await?;
    for row in &rows {
        let record = pg_reads::decode_task(row.get(1), row.get(2))?;
        let held = events.remove(&record.task_id).unwrap_or_default();
        mem.restore(record, held);
    }
    Ok(())
}

#[async_trait]
impl TaskStore for PgTaskStore {
    async fn create(&self, record: TaskRecord) -> Result<()> {
        self.writer.reachable().await?;
        self.writer.leases.hold(&record.task_id, 1);
        self.writer
            .submit(|| {
                let event = self.mem.create_noting(record.clone());
                let dropped = Vec::new();
                Ok(Some((
                    (),
                    Change {
                        record,
                        event,
                        dropped,
                    },
                )))
            })
            .await
            .map(|_| ())
    }

    async fn push(&self, task_id: &str, kind: TaskEventKind) -> Result<bool> {
        let pushed = self
            .commit(|| self.mem.push_noting(task_id, kind), |_| ())
            .await?;
        Ok(pushed.is_some())
    }

    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>> {
        let finished = self
            .writer
            .submit(|| {
                let Some((record, seq, dropped)) = self.mem.finish_evicting(task_id, end) else {
                    return Ok(None);
                };
                let event = self.event(task_id, seq)?;
                let answer = (record.clone(), dropped.clone());
                Ok(Some((
                    answer,
                    Change {
                        record,
                        event,
                        dropped,
                    },
                )))
            })
            .await?;
        let Some((record, dropped)) = finished else {
            return Ok(None);
        };
        self.writer
            .leases
            .release(std::slice::from_ref(&record.task_id));
        self.mem.evicted(dropped);
        if self.shared {
            // Read from the tables from now on (a rerun may move it elsewhere).
            self.mem.forget(task_id);
            let swept = self.retention.after_finish(&self.pool).await;
            self.mem.evicted(swept);
        }
        Ok(Some(record))
    }

    async fn interrupt(&self, task_id: &str, reason: &str) -> Result<Option<TaskRecord>> {
        self.commit(|| self.mem.interrupt_noting(task_id, reason), Clone::clone)
            .await
    }

    async fn reopen(
        &self,
        task_id: &str,
        start: RunStart,
        replayed_steps: u64,
    ) -> Result<Option<TaskRecord>> {
        let reopen = || self.mem.reopen_noting(task_id, start, replayed_steps);
        self.commit(reopen, Clone::clone).await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>> {
        match self.mem.get(task_id).await? {
            None if self.shared => pg_reads::record(&self.pool, task_id).await,
            held => Ok(held),
        }
    }

    async fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        match self.shared {
            true => pg_reads::list(&self.pool, state, after, limit).await,
            false => self.mem.list(state, after, limit).await,
        }
    }

    async fn events_after(
        &self,
        task_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<TaskEvent>>> {
        match self.mem.events_after(task_id, after, limit).await? {
            None if self.shared => pg_reads::events_after(&self.pool, task_id, after, limit).await,
            held => Ok(held),
        }
    }

    async fn subscribe(&self, task_id: &str) -> Result<Option<watch::Receiver<u64>>> {
        match self.mem.subscribe(task_id).await? {
            None if self.shared => pg_reads::watch_rev(&self.pool, task_id).await,
            held => Ok(held),
        }
    }

    async fn take_over(&self) -> Result<Vec<String>> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let _leasing = self.leasing.lock().await;
        let claimed = claim(&self.pool, self.writer.leases.me(), Claim::Orphans).await?;
        Ok(self.hold(claimed))
    }

    async fn claim_to_run_again(&self, task_id: &str) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let _leasing = self.leasing.lock().await;
        if let Some(claimed) = claim_one(&self.pool, self.writer.leases.me(), task_id).await? {
            self.mem.forget(task_id);
            self.hold(vec![claimed]);
        }
        Ok(())
    }

    async fn runner_elsewhere(&self, task_id: &str) -> Result<Option<String>> {
        if !self.shared {
            return Ok(None);
        }
        let client = crate::pg::client(&self.pool).await?;
        let row = client
            .query_opt(
                "SELECT runner FROM tasks WHERE task_id = $1 AND finished_ms IS NULL \
                 AND runner IS DISTINCT FROM $2",
                &[&task_id, &self.writer.leases.me()],
            )
            .await
            .map_err(|e| crate::pg::error("task leases", &e))?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn hand_over(&self) -> Result<()> {
        match self.shared {
            true => crate::pg::replicas::leave(&self.pool, self.writer.leases.me()).await,
            false => Ok(()),
        }
    }

    async fn lost(&self) -> Result<Vec<String>> {
        let mut lost = self.writer.leases.take_lost();
        if self.shared {
            let _leasing = self.leasing.lock().await;
            let me = self.writer.leases.me();
            let rows = moved(&self.pool, me, &self.writer.leases.held()).await?;
            // A lease this replica renewed while the query ran (a resume re-claims its
            // task) is still held: only a row naming another runner, or an epoch this
            // replica does not hold now, is lost.
            let now = self.writer.leases.held();
            let gone = rows.into_iter().filter_map(|(id, runner, epoch)| {
                let ours = runner.as_deref() == Some(me) && now.get(&id) == Some(&epoch);
                (!ours).then_some(id)
            });
            self.writer.leases.lose(gone);
            lost.extend(self.writer.leases.take_lost());
        }
        lost.sort();
        lost.dedup();
        for id in &lost {
            self.mem.forget(id);
        }
        Ok(lost)
    }

    /// No database read: the writer knows which tasks still have a change in flight.
    async fn settled(&self, task_id: &str) -> Result<()> {
        self.writer.settled(task_id).await
    }

    async fn len(&self) -> Result<usize> {
        self.mem.len().await
    }

    async fn structure_counts(&self) -> StructureCounts {
        self.mem.structure_counts().await
    }
}
