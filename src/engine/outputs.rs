//! A bounded in-memory data store for `--ephemeral`: the engine dual-writes every worker
//! `Final` into the output store and never prunes it (hazard H1), so the in-memory store
//! keeps the newest records only, dropping the oldest first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use mlua_swarm::store::output::{
    OutputEvent, OutputRecord, OutputRef, OutputStore, OutputStoreError,
};

use super::census::{Bound, StructureCounts};

/// Records an ephemeral server keeps.
pub const EPHEMERAL_OUTPUT_CAPACITY: usize = 50_000;

#[derive(Default)]
struct Inner {
    order: VecDeque<OutputRef>,
    by_id: HashMap<OutputRef, OutputRecord>,
    by_attempt: HashMap<(String, u32), VecDeque<OutputRef>>,
    by_name: HashMap<String, VecDeque<OutputRef>>,
    by_name_run: HashMap<(String, u32, String), VecDeque<OutputRef>>,
}

/// In-memory output store holding at most `capacity` records.
pub(super) struct BoundedOutputStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl BoundedOutputStore {
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Sized for twice the records up front: a hash map under steady FIFO churn at a
        // fixed size grows once more, when tombstones use up its free slots (a one-time
        // ~20 MiB step in the B8 soak, at the 74,164th insert); at twice the size it never
        // does. Untouched buckets cost address space, not resident memory.
        let room = capacity.saturating_mul(2);
        let inner = Inner {
            order: VecDeque::with_capacity(capacity),
            by_id: HashMap::with_capacity(room),
            by_attempt: HashMap::with_capacity(room),
            by_name: HashMap::new(),
            by_name_run: HashMap::with_capacity(room),
        };
        Self {
            inner: Mutex::new(inner),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// The records and each index, all capped by the capacity.
    pub(super) fn structure_counts(&self) -> StructureCounts {
        let g = self.lock();
        let cap = Bound::Retained(self.capacity);
        let mut c = StructureCounts::default();
        c.insert("outputs.records", g.by_id.len(), cap);
        c.insert("outputs.order", g.order.len(), cap);
        c.insert("outputs.by_attempt", g.by_attempt.len(), cap);
        c.insert("outputs.by_name", g.by_name.len(), cap);
        c.insert("outputs.by_name_run", g.by_name_run.len(), cap);
        c
    }
}

/// Drops the front of `map[key]` if it is `id` (records leave in insertion order, so the
/// oldest of every index list is at its front), and the list once empty.
fn pop_index<K: Eq + Hash>(map: &mut HashMap<K, VecDeque<OutputRef>>, key: K, id: &OutputRef) {
    if let Some(list) = map.get_mut(&key) {
        if list.front() == Some(id) {
            list.pop_front();
        }
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

fn latest(
    g: &Inner,
    ids: Option<&VecDeque<OutputRef>>,
    what: String,
) -> Result<OutputRecord, OutputStoreError> {
    ids.and_then(|ids| ids.back())
        .and_then(|id| g.by_id.get(id))
        .cloned()
        .ok_or(OutputStoreError::NotFound(what))
}

#[async_trait]
impl OutputStore for BoundedOutputStore {
    async fn append(
        &self,
        task_id: &str,
        attempt: u32,
        producer_agent: &str,
        event: OutputEvent,
        parent_refs: Vec<OutputRef>,
    ) -> Result<OutputRef, OutputStoreError> {
        let id = OutputRef::new();
        let record = OutputRecord {
            id: id.clone(),
            task_id: task_id.to_string(),
            attempt,
            producer_agent: producer_agent.to_string(),
            event,
            parent_refs,
        };
        let mut g = self.lock();
        g.order.push_back(id.clone());
        g.by_attempt
            .entry((task_id.to_string(), attempt))
            .or_default()
            .push_back(id.clone());
        g.by_name
            .entry(producer_agent.to_string())
            .or_default()
            .push_back(id.clone());
        g.by_name_run
            .entry((task_id.to_string(), attempt, producer_agent.to_string()))
            .or_default()
            .push_back(id.clone());
        g.by_id.insert(id.clone(), record);
        while g.order.len() > self.capacity {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(r) = g.by_id.remove(&old) {
                pop_index(&mut g.by_attempt, (r.task_id.clone(), r.attempt), &old);
                pop_index(&mut g.by_name, r.producer_agent.clone(), &old);
                pop_index(
                    &mut g.by_name_run,
                    (r.task_id, r.attempt, r.producer_agent),
                    &old,
                );
            }
        }
        Ok(id)
    }

    async fn get(&self, id: &OutputRef) -> Result<OutputRecord, OutputStoreError> {
        self.lock()
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| OutputStoreError::NotFound(id.0.clone()))
    }

    async fn get_latest_by_name(&self, name: &str) -> Result<OutputRecord, OutputStoreError> {
        let g = self.lock();
        latest(&g, g.by_name.get(name), name.to_string())
    }

    async fn get_latest_by_name_in_run(
        &self,
        task_id: &str,
        attempt: u32,
        name: &str,
    ) -> Result<OutputRecord, OutputStoreError> {
        let g = self.lock();
        let key = (task_id.to_string(), attempt, name.to_string());
        latest(
            &g,
            g.by_name_run.get(&key),
            format!("{task_id}/{attempt}/{name}"),
        )
    }

    async fn list_for_attempt(
        &self,
        task_id: &str,
        attempt: u32,
    ) -> Result<Vec<OutputRecord>, OutputStoreError> {
        let g = self.lock();
        Ok(g.by_attempt
            .get(&(task_id.to_string(), attempt))
            .into_iter()
            .flatten()
            .filter_map(|id| g.by_id.get(id).cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use mlua_swarm::store::output::ContentRef;

    use super::*;

    fn event(n: i64) -> OutputEvent {
        OutputEvent::Final {
            content: ContentRef::Inline { value: n.into() },
            ok: true,
        }
    }

    #[tokio::test]
    async fn the_oldest_records_leave_and_indexes_follow() {
        let store = BoundedOutputStore::new(3);
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(
                store
                    .append("ST-1", 1, "w", event(n), vec![])
                    .await
                    .expect("append"),
            );
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(&ids[0]).await.is_err());
        assert_eq!(
            store.get_latest_by_name("w").await.expect("latest").id,
            ids[4]
        );
        assert_eq!(
            store.list_for_attempt("ST-1", 1).await.expect("list").len(),
            3
        );
        let inner = store.lock();
        assert_eq!(inner.by_name["w"].len(), 3);
    }
}
