//! Run records on disk: served from memory ([`MemoryRunStore`], read back at boot), and
//! every change queued to the state file's writer without waiting. The queue's order puts
//! a record on disk before any later change that is waited for (a step's replay row, the
//! task's end), so nothing a resume reads can be older than what the run acted on.
//!
//! Step entries and degradations are an audit trail nothing resumes from: they reach the
//! disk with the record's next other change (every run ends with a status change), so a
//! kill can lose the entries of the steps in flight, never a status, the launch input
//! or an assignee generation.

use std::sync::Arc;

use async_trait::async_trait;
use mlua_swarm::store::run::{
    Assignee, DegradationEntry, RunListFilter, RunRecord, RunStatus, RunStore, RunStoreError,
    StepEntry, VacateOutcome,
};
use mlua_swarm::types::{RunId, TaskId};

use super::writer::{GroupWriter, Write};
use crate::engine::memory_runs::MemoryRunStore;
use crate::error::Result;

/// See the module doc.
pub(in crate::engine) struct DiskRunStore {
    mem: MemoryRunStore,
    writer: Arc<GroupWriter>,
}

impl DiskRunStore {
    /// Reads back every run record the state file holds.
    pub(in crate::engine) async fn load(writer: Arc<GroupWriter>) -> Result<Self> {
        let rows = writer
            .isle()
            .call(|conn| {
                conn.prepare("SELECT version, record FROM runs ORDER BY rowid")?
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(|e| super::cannot_open(writer.path(), &e))?;
        let mem = MemoryRunStore::default();
        for (version, json) in rows {
            let record: RunRecord =
                serde_json::from_str(&json).map_err(|e| super::cannot_open(writer.path(), &e))?;
            mem.restore(record, version.max(0) as u64);
        }
        Ok(Self { mem, writer })
    }

    /// Queues the run's record as it is now.
    fn persist(&self, id: &RunId) {
        if let Some((version, record)) = self.mem.snapshot(id) {
            self.writer.send(Write::Run { version, record });
        }
    }

    /// Passes on `result` and, if it is a success, queues the run's record.
    fn then_persist<T>(
        &self,
        id: &RunId,
        result: std::result::Result<T, RunStoreError>,
    ) -> std::result::Result<T, RunStoreError> {
        if result.is_ok() {
            self.persist(id);
        }
        result
    }
}

impl std::fmt::Debug for DiskRunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskRunStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl RunStore for DiskRunStore {
    fn name(&self) -> &str {
        "sqlite"
    }

    async fn create(&self, record: RunRecord) -> std::result::Result<(), RunStoreError> {
        let id = record.id.clone();
        let created = self.mem.create(record).await;
        self.then_persist(&id, created)
    }

    async fn get(&self, id: &RunId) -> std::result::Result<RunRecord, RunStoreError> {
        self.mem.get(id).await
    }

    async fn list_by_task(
        &self,
        task_id: &TaskId,
    ) -> std::result::Result<Vec<RunRecord>, RunStoreError> {
        self.mem.list_by_task(task_id).await
    }

    async fn append_step_entry(
        &self,
        id: &RunId,
        entry: StepEntry,
    ) -> std::result::Result<(), RunStoreError> {
        self.mem.append_step_entry(id, entry).await
    }

    async fn append_degradation(
        &self,
        id: &RunId,
        entry: DegradationEntry,
    ) -> std::result::Result<(), RunStoreError> {
        self.mem.append_degradation(id, entry).await
    }

    async fn update_status(
        &self,
        id: &RunId,
        status: RunStatus,
    ) -> std::result::Result<(), RunStoreError> {
        let done = self.mem.update_status(id, status).await;
        self.then_persist(id, done)
    }

    async fn try_transition(
        &self,
        id: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> std::result::Result<bool, RunStoreError> {
        let moved = self.mem.try_transition(id, from, to).await;
        if matches!(moved, Ok(true)) {
            self.persist(id);
        }
        moved
    }

    async fn acquire_assignee(
        &self,
        id: &RunId,
        slot: &str,
        op: &str,
        desc: &str,
    ) -> std::result::Result<(u64, Option<Assignee>), RunStoreError> {
        let done = self.mem.acquire_assignee(id, slot, op, desc).await;
        self.then_persist(id, done)
    }

    async fn vacate_assignee(
        &self,
        id: &RunId,
        slot: &str,
        expected_gen: u64,
    ) -> std::result::Result<VacateOutcome, RunStoreError> {
        let done = self.mem.vacate_assignee(id, slot, expected_gen).await;
        self.then_persist(id, done)
    }

    async fn set_result(
        &self,
        id: &RunId,
        result_ref: serde_json::Value,
    ) -> std::result::Result<(), RunStoreError> {
        let done = self.mem.set_result(id, result_ref).await;
        self.then_persist(id, done)
    }

    async fn set_input_json(
        &self,
        id: &RunId,
        input_json: String,
    ) -> std::result::Result<(), RunStoreError> {
        let done = self.mem.set_input_json(id, input_json).await;
        self.then_persist(id, done)
    }

    async fn list_running(&self) -> std::result::Result<Vec<RunRecord>, RunStoreError> {
        self.mem.list_running().await
    }

    async fn list(
        &self,
        filter: &RunListFilter,
    ) -> std::result::Result<Vec<RunRecord>, RunStoreError> {
        self.mem.list(filter).await
    }

    async fn delete(&self, id: &RunId) -> std::result::Result<(), RunStoreError> {
        self.mem.delete(id).await?;
        self.writer.send(Write::RunGone(id.clone()));
        Ok(())
    }
}
