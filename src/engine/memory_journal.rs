//! The replay journal in memory (`--ephemeral`). The engine's `InMemoryReplayStore` keeps a
//! run's key and row buffer after `delete_from(run, 0)`, so a server that drops finished
//! tasks grew by every run it ever journaled (B8 soak: +70 MiB per 100,000 tasks); this
//! one forgets a run entirely when its last row goes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use mlua_swarm::store::replay::{ReplayEntry, ReplayStore, ReplayStoreError};
use mlua_swarm::types::RunId;

/// Replay rows per run, in insertion order.
#[derive(Default)]
pub(super) struct MemoryReplayStore {
    by_run: Mutex<HashMap<RunId, Vec<ReplayEntry>>>,
}

impl MemoryReplayStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Vec<ReplayEntry>>> {
        match self.by_run.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs with rows held.
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.lock().len()
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    fn name(&self) -> &str {
        "memory"
    }

    async fn append(&self, entry: ReplayEntry) -> Result<(), ReplayStoreError> {
        let mut by_run = self.lock();
        let rows = by_run.entry(entry.run_id.clone()).or_default();
        if rows.iter().any(|e| {
            e.step_ref == entry.step_ref
                && e.input_hash == entry.input_hash
                && e.occurrence == entry.occurrence
        }) {
            return Err(ReplayStoreError::Duplicate {
                run_id: entry.run_id,
                step_ref: entry.step_ref,
                input_hash: entry.input_hash,
                occurrence: entry.occurrence,
            });
        }
        rows.push(entry);
        Ok(())
    }

    async fn list_by_run(&self, run_id: &RunId) -> Result<Vec<ReplayEntry>, ReplayStoreError> {
        Ok(self.lock().get(run_id).cloned().unwrap_or_default())
    }

    async fn delete_from(
        &self,
        run_id: &RunId,
        from_index: usize,
    ) -> Result<usize, ReplayStoreError> {
        let mut by_run = self.lock();
        let Some(rows) = by_run.get_mut(run_id) else {
            return Ok(0);
        };
        let dropped = rows.len().saturating_sub(from_index);
        rows.truncate(from_index);
        if rows.is_empty() {
            by_run.remove(run_id);
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &RunId, step: &str) -> ReplayEntry {
        ReplayEntry {
            run_id: run.clone(),
            step_ref: step.into(),
            input_hash: "h".into(),
            occurrence: 0,
            ctx_snapshot_json: "{}".into(),
            step_output_json: "null".into(),
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn deleting_every_row_forgets_the_run() {
        let store = MemoryReplayStore::default();
        let run = RunId::default();
        store.append(row(&run, "a")).await.expect("a");
        store.append(row(&run, "b")).await.expect("b");
        assert!(store.append(row(&run, "b")).await.is_err(), "duplicate");
        assert_eq!(store.delete_from(&run, 1).await.expect("cut"), 1);
        assert_eq!(store.list_by_run(&run).await.expect("rows").len(), 1);
        assert_eq!(store.delete_from(&run, 0).await.expect("all"), 1);
        assert_eq!(store.runs(), 0);
        assert_eq!(store.delete_from(&run, 0).await.expect("none"), 0);
    }
}
