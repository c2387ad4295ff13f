//! Run records in memory (`--ephemeral`). The engine's `InMemoryRunStore` keeps an
//! insertion-order `Vec` and deletes with `order.retain(..)`, a walk over every retained
//! run for each task that retention drops: 17 % of the server's CPU under the B1 bench.
//! This one keeps an insertion sequence number beside each record, so a delete is one
//! hash-map removal and only the (rare) list reads sort.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use mlua_swarm::store::run::{
    Assignee, DegradationEntry, RunListFilter, RunRecord, RunStatus, RunStore, RunStoreError,
    StepEntry, VacateOutcome,
};
use mlua_swarm::types::{RunId, TaskId};

#[derive(Default)]
struct Runs {
    next_seq: u64,
    /// Versions handed out by [`MemoryRunStore::snapshot`].
    snapshots: u64,
    by_id: HashMap<RunId, (u64, RunRecord)>,
}

/// Run records by id; see the module doc.
#[derive(Default)]
pub(super) struct MemoryRunStore {
    runs: Mutex<Runs>,
}

/// Unix seconds, as the engine's stores stamp `updated_at`.
fn now() -> u64 {
    super::tasks::unix_ms(std::time::SystemTime::now()) / 1000
}

impl MemoryRunStore {
    fn lock(&self) -> MutexGuard<'_, Runs> {
        match self.runs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies `change` to a run's record and bumps its `updated_at`.
    fn update<T>(
        &self,
        id: &RunId,
        change: impl FnOnce(&mut RunRecord) -> T,
    ) -> Result<T, RunStoreError> {
        let mut runs = self.lock();
        let (_, record) = runs
            .by_id
            .get_mut(id)
            .ok_or_else(|| RunStoreError::NotFound(id.clone()))?;
        let out = change(record);
        record.updated_at = now();
        Ok(out)
    }

    /// The records `keep` selects, oldest insertion first.
    fn select(&self, keep: impl Fn(&RunRecord) -> bool) -> Vec<RunRecord> {
        let runs = self.lock();
        let mut picked: Vec<(u64, RunRecord)> = runs
            .by_id
            .values()
            .filter(|(_, r)| keep(r))
            .cloned()
            .collect();
        picked.sort_by_key(|(seq, _)| *seq);
        picked.into_iter().map(|(_, r)| r).collect()
    }

    /// A copy of a run's record and a version greater than any earlier snapshot's (so a
    /// store that writes records behind keeps the newest).
    pub(super) fn snapshot(&self, id: &RunId) -> Option<(u64, RunRecord)> {
        let mut runs = self.lock();
        runs.snapshots += 1;
        let version = runs.snapshots;
        runs.by_id.get(id).map(|(_, r)| (version, r.clone()))
    }

    /// Puts back a record read from disk at boot, and the version it was written with.
    pub(super) fn restore(&self, record: RunRecord, version: u64) {
        let mut runs = self.lock();
        let seq = runs.next_seq;
        runs.next_seq += 1;
        runs.snapshots = runs.snapshots.max(version);
        runs.by_id.insert(record.id.clone(), (seq, record));
    }

    /// Runs held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// The engine's checks on an assignee call: a slot, and (to acquire) a description.
pub(super) fn check_assignee(slot: &str, desc: Option<&str>) -> Result<(), RunStoreError> {
    if slot.is_empty() {
        return Err(RunStoreError::AssigneeSlotRequired);
    }
    if desc.is_some_and(|d| d.trim().is_empty()) {
        return Err(RunStoreError::AssigneeDescRequired);
    }
    Ok(())
}

/// `RunStore::acquire_assignee` on a record: the run-wide generation advances.
pub(super) fn acquire(
    r: &mut RunRecord,
    slot: &str,
    op: &str,
    desc: &str,
) -> (u64, Option<Assignee>) {
    r.next_generation += 1;
    let holder = Assignee {
        op: op.to_string(),
        desc: desc.to_string(),
        gen: r.next_generation,
    };
    let previous = r.current.insert(slot.to_string(), holder);
    (r.next_generation, previous)
}

/// `RunStore::vacate_assignee` on a record: released only by the holder's generation.
pub(super) fn vacate(r: &mut RunRecord, slot: &str, expected_gen: u64) -> VacateOutcome {
    match r.current.get(slot) {
        Some(held) if held.gen == expected_gen => {}
        other => {
            return VacateOutcome::Stale {
                current: other.cloned(),
            }
        }
    }
    let Some(released) = r.current.remove(slot) else {
        return VacateOutcome::Stale { current: None };
    };
    r.next_generation += 1;
    VacateOutcome::Released {
        generation: r.next_generation,
        released,
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    fn name(&self) -> &str {
        "memory"
    }

    async fn create(&self, record: RunRecord) -> Result<(), RunStoreError> {
        record.validate_assignment_generations()?;
        let mut runs = self.lock();
        if runs.by_id.contains_key(&record.id) {
            return Err(RunStoreError::Duplicate(record.id));
        }
        let seq = runs.next_seq;
        runs.next_seq += 1;
        runs.by_id.insert(record.id.clone(), (seq, record));
        Ok(())
    }

    async fn get(&self, id: &RunId) -> Result<RunRecord, RunStoreError> {
        self.lock()
            .by_id
            .get(id)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| RunStoreError::NotFound(id.clone()))
    }

    async fn list_by_task(&self, task_id: &TaskId) -> Result<Vec<RunRecord>, RunStoreError> {
        let mut records = self.select(|r| &r.task_id == task_id);
        records.sort_by_key(|r| r.created_at);
        Ok(records)
    }

    async fn append_step_entry(&self, id: &RunId, entry: StepEntry) -> Result<(), RunStoreError> {
        self.update(id, |r| r.step_entries.push(entry))
    }

    async fn append_degradation(
        &self,
        id: &RunId,
        entry: DegradationEntry,
    ) -> Result<(), RunStoreError> {
        self.update(id, |r| r.degradations.push(entry))
    }

    async fn update_status(&self, id: &RunId, status: RunStatus) -> Result<(), RunStoreError> {
        self.update(id, |r| r.status = status)
    }

    async fn try_transition(
        &self,
        id: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, RunStoreError> {
        let mut runs = self.lock();
        match runs.by_id.get_mut(id) {
            Some((_, record)) if record.status == from => {
                record.status = to;
                record.updated_at = now();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn acquire_assignee(
        &self,
        id: &RunId,
        slot: &str,
        op: &str,
        desc: &str,
    ) -> Result<(u64, Option<Assignee>), RunStoreError> {
        check_assignee(slot, Some(desc))?;
        self.update(id, |r| acquire(r, slot, op, desc))
    }

    async fn vacate_assignee(
        &self,
        id: &RunId,
        slot: &str,
        expected_gen: u64,
    ) -> Result<VacateOutcome, RunStoreError> {
        check_assignee(slot, None)?;
        let mut runs = self.lock();
        let (_, record) = runs
            .by_id
            .get_mut(id)
            .ok_or_else(|| RunStoreError::NotFound(id.clone()))?;
        let outcome = vacate(record, slot, expected_gen);
        if matches!(outcome, VacateOutcome::Released { .. }) {
            record.updated_at = now();
        }
        Ok(outcome)
    }

    async fn set_result(
        &self,
        id: &RunId,
        result_ref: serde_json::Value,
    ) -> Result<(), RunStoreError> {
        self.update(id, |r| r.result_ref = Some(result_ref))
    }

    async fn set_input_json(&self, id: &RunId, input_json: String) -> Result<(), RunStoreError> {
        self.update(id, |r| r.input_json = Some(input_json))
    }

    async fn list_running(&self) -> Result<Vec<RunRecord>, RunStoreError> {
        Ok(self.select(|r| r.status == RunStatus::Running))
    }

    async fn list(&self, filter: &RunListFilter) -> Result<Vec<RunRecord>, RunStoreError> {
        let mut records = self.select(|r| {
            filter.task_id.as_ref().is_none_or(|t| &r.task_id == t)
                && filter.status.is_none_or(|s| r.status == s)
        });
        // Newest first; among equal `created_at`, the later insertion first.
        records.reverse();
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        Ok(records
            .into_iter()
            .skip(filter.offset.unwrap_or(0))
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect())
    }

    async fn delete(&self, id: &RunId) -> Result<(), RunStoreError> {
        match self.lock().by_id.remove(id) {
            Some(_) => Ok(()),
            None => Err(RunStoreError::NotFound(id.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, created_at: u64) -> RunRecord {
        RunRecord {
            id: RunId::parse(id).expect("run id"),
            task_id: TaskId::parse("T-1").expect("task id"),
            status: RunStatus::Running,
            step_entries: Vec::new(),
            degradations: Vec::new(),
            operator_sid: None,
            current: Default::default(),
            next_generation: 0,
            result_ref: None,
            input_json: None,
            created_at,
            updated_at: created_at,
        }
    }

    #[tokio::test]
    async fn delete_forgets_the_run_and_lists_keep_insertion_order() {
        let store = MemoryRunStore::default();
        for id in ["R-a", "R-b", "R-c"] {
            store.create(record(id, 7)).await.expect("create");
        }
        assert!(store.create(record("R-b", 7)).await.is_err(), "duplicate");
        let running: Vec<String> = store
            .list_running()
            .await
            .expect("running")
            .into_iter()
            .map(|r| r.id.into_string())
            .collect();
        assert_eq!(running, ["R-a", "R-b", "R-c"]);
        let newest = store.list(&RunListFilter::default()).await.expect("list");
        assert_eq!(newest[0].id.as_str(), "R-c", "later insertion first");
        store
            .delete(&RunId::parse("R-b").expect("id"))
            .await
            .expect("delete");
        assert_eq!(store.len(), 2);
        assert!(store
            .delete(&RunId::parse("R-b").expect("id"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn assignee_generations_advance_run_wide() {
        let store = MemoryRunStore::default();
        let id = RunId::parse("R-a").expect("id");
        store.create(record("R-a", 1)).await.expect("create");
        let (g1, prev) = store
            .acquire_assignee(&id, "seat", "S-1", "first")
            .await
            .expect("acquire");
        assert_eq!((g1, prev.is_none()), (1, true));
        let stale = store.vacate_assignee(&id, "seat", 9).await.expect("stale");
        assert!(matches!(stale, VacateOutcome::Stale { .. }));
        let released = store.vacate_assignee(&id, "seat", 1).await.expect("vacate");
        assert!(matches!(
            released,
            VacateOutcome::Released { generation: 2, .. }
        ));
        assert!(store.acquire_assignee(&id, "", "S-1", "x").await.is_err());
    }
}
