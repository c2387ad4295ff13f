//! The PostgreSQL [`TaskStore`] (`--database-url`): every change is committed before it
//! is answered (see `pg_batch`), and the held tasks are read back at boot. Reads are
//! served by the in-memory [`TaskRegistry`] kept in step, so the seam's rules live in one
//! place; this phase runs one replica per database (a replica taking over another's
//! tasks would read them from the tables instead).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::memory::EvictHook;
use super::pg_batch::{Change, PgWriter};
use super::{
    RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskRegistry, TaskState,
    TaskStore,
};
use crate::engine::census::StructureCounts;
use crate::error::{Error, Result};
use crate::pg::uint;

/// Tasks and their events in PostgreSQL.
pub struct PgTaskStore {
    mem: TaskRegistry,
    writer: Arc<PgWriter>,
}

impl std::fmt::Debug for PgTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskStore").finish_non_exhaustive()
    }
}

impl PgTaskStore {
    /// Reads back the tasks the database holds (finished ones in the order they
    /// finished, with their events).
    pub async fn open(pool: Pool, retention: usize, on_evict: EvictHook) -> Result<Self> {
        let mem = TaskRegistry::new(retention).with_evict_hook(on_evict);
        let fail = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("cannot read the tasks from the database: {e}"))
        };
        let client = crate::pg::client(&pool).await?;
        let tasks = client
            .query(
                "SELECT record::text, launch::text FROM tasks \
                 ORDER BY finished_ms IS NOT NULL, finished_ms, created",
                &[],
            )
            .await
            .map_err(|e| fail(&e))?;
        let event_rows = client
            .query(
                "SELECT task_id, seq, at_ms, kind::text FROM task_events ORDER BY task_id, seq",
                &[],
            )
            .await
            .map_err(|e| fail(&e))?;
        drop(client);
        let mut events: HashMap<String, Vec<TaskEvent>> = HashMap::new();
        for row in &event_rows {
            let task_id: String = row.get(0);
            let kind: TaskEventKind = serde_json::from_str(row.get(3)).map_err(|e| fail(&e))?;
            events.entry(task_id.clone()).or_default().push(TaskEvent {
                seq: uint(row.get(1)),
                at: SystemTime::UNIX_EPOCH + Duration::from_millis(uint(row.get(2))),
                task_id,
                kind,
            });
        }
        for row in &tasks {
            let mut record: TaskRecord = serde_json::from_str(row.get(0)).map_err(|e| fail(&e))?;
            if let Some(launch) = row.get::<_, Option<&str>>(1) {
                record.launch = Some(Arc::new(
                    serde_json::from_str(launch).map_err(|e| fail(&e))?,
                ));
            }
            let held = events.remove(&record.task_id).unwrap_or_default();
            mem.restore(record, held);
        }
        Ok(Self {
            mem,
            writer: PgWriter::new(pool),
        })
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

#[async_trait]
impl TaskStore for PgTaskStore {
    async fn create(&self, record: TaskRecord) -> Result<()> {
        self.writer.reachable().await?;
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
        Ok(finished.map(|(record, dropped)| {
            self.mem.evicted(dropped);
            record
        }))
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
        self.mem.get(task_id).await
    }

    async fn is_running(&self, task_id: &str) -> Result<bool> {
        self.mem.is_running(task_id).await
    }

    async fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&TaskPosition>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        self.mem.list(state, after, limit).await
    }

    async fn events_after(
        &self,
        task_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<TaskEvent>>> {
        self.mem.events_after(task_id, after, limit).await
    }

    async fn subscribe(&self, task_id: &str) -> Result<Option<watch::Receiver<u64>>> {
        self.mem.subscribe(task_id).await
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
