//! The replay journal on disk: a passed step's row is queued, not waited for. The queue's
//! order puts it on disk before the run's next step event or its end, and a frame to an
//! operator waits for its run's rows (`EngineOperator::journaled`, `engine/operators.rs`):
//! once an operator is sent a later step, a kill never runs the steps before it again (the
//! step in flight may run again, the documented at-least-once edge). Rows are read only
//! to resume or rerun a run, after the rows queued are written.

use std::sync::Arc;

use async_trait::async_trait;
use mlua_swarm::store::replay::{ReplayEntry, ReplayStore, ReplayStoreError};
use mlua_swarm::types::RunId;
use tokio::sync::oneshot;

use super::writer::{GroupWriter, Write};

/// See the module doc.
pub(in crate::engine) struct DiskReplayStore {
    writer: Arc<GroupWriter>,
}

impl DiskReplayStore {
    pub(in crate::engine) fn new(writer: Arc<GroupWriter>) -> Self {
        Self { writer }
    }
}

fn other(e: impl std::fmt::Display) -> ReplayStoreError {
    ReplayStoreError::Other(e.to_string())
}

#[async_trait]
impl ReplayStore for DiskReplayStore {
    fn name(&self) -> &str {
        "sqlite"
    }

    /// A row whose identity is already held keeps the first (no `Duplicate` error: a
    /// batch cannot fail one row alone).
    async fn append(&self, entry: ReplayEntry) -> Result<(), ReplayStoreError> {
        self.writer.send(Write::Replay(entry));
        Ok(())
    }

    async fn list_by_run(&self, run_id: &RunId) -> Result<Vec<ReplayEntry>, ReplayStoreError> {
        self.writer.settled(run_id.as_str()).await.map_err(other)?;
        let id = run_id.clone();
        let rows = self
            .writer
            .isle()
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT step_ref, input_hash, occurrence, ctx_snapshot_json, \
                       step_output_json, created_at FROM replay WHERE run_id = ?1 ORDER BY id",
                )?
                .query_map([id.as_str()], |r| {
                    Ok(ReplayEntry {
                        run_id: id.clone(),
                        step_ref: r.get(0)?,
                        input_hash: r.get(1)?,
                        occurrence: r.get(2)?,
                        ctx_snapshot_json: r.get(3)?,
                        step_output_json: r.get(4)?,
                        created_at: r.get::<_, i64>(5)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(other)?;
        Ok(rows)
    }

    async fn delete_from(
        &self,
        run_id: &RunId,
        from_index: usize,
    ) -> Result<usize, ReplayStoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .commit(Write::Cut {
                run_id: run_id.clone(),
                from_index,
                dropped: tx,
            })
            .await
            .map_err(other)?;
        rx.await.map_err(other)
    }
}
