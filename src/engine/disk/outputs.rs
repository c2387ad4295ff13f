//! Worker outputs (the engine's `OutputStore`) in the state file: an append is committed
//! with whatever else the writer has queued instead of in a transaction of its own, and
//! its `seq` comes from memory instead of a `MAX(seq)` read. The table keeps the engine's
//! own layout, so an older `outputs.sqlite` moves in as it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mlua_swarm::store::output::{
    OutputEvent, OutputRecord, OutputRef, OutputStore, OutputStoreError,
};
use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::writer::{GroupWriter, Write};
use crate::error::Result;

/// One output row as written.
pub(in crate::engine) struct OutputRow {
    pub(super) id: String,
    pub(super) task_id: String,
    pub(super) attempt: u32,
    pub(super) producer: String,
    pub(super) event_json: String,
    pub(super) parent_refs_json: String,
    pub(super) seq: i64,
}

/// See the module doc.
pub(in crate::engine) struct DiskOutputStore {
    writer: Arc<GroupWriter>,
    last_seq: AtomicU64,
}

impl DiskOutputStore {
    /// Continues the numbering the state file holds.
    pub(in crate::engine) async fn open(writer: Arc<GroupWriter>) -> Result<Self> {
        let last: i64 = writer
            .isle()
            .call(|conn| {
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM outputs", [], |r| {
                    r.get(0)
                })
            })
            .await
            .map_err(|e| super::cannot_open(writer.path(), &e))?;
        Ok(Self {
            writer,
            last_seq: AtomicU64::new(last.max(0) as u64),
        })
    }

    async fn one(
        &self,
        sql: &'static str,
        params: Vec<Value>,
        missing: String,
    ) -> std::result::Result<OutputRecord, OutputStoreError> {
        let row = self
            .writer
            .isle()
            .call(move |conn| {
                conn.prepare_cached(sql)?
                    .query_row(rusqlite::params_from_iter(params), raw)
                    .optional()
            })
            .await
            .map_err(internal)?;
        match row {
            Some(raw) => decode(raw),
            None => Err(OutputStoreError::NotFound(missing)),
        }
    }
}

/// An output id: `out-` and 10 hex digits, as the engine's, but the row's seq, so ids
/// never repeat across restarts and each lands at the end of the table's key.
fn id_of(seq: u64) -> String {
    format!("out-{seq:010x}")
}

type Raw = (String, String, i64, String, String, String);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode(
    (id, task_id, attempt, producer_agent, event, parents): Raw,
) -> std::result::Result<OutputRecord, OutputStoreError> {
    let fail =
        |what: &str, e: serde_json::Error| OutputStoreError::Internal(format!("{what}: {e}"));
    Ok(OutputRecord {
        id: OutputRef(id),
        task_id,
        attempt: u32::try_from(attempt).unwrap_or_default(),
        producer_agent,
        event: serde_json::from_str(&event).map_err(|e| fail("decode event", e))?,
        parent_refs: serde_json::from_str(&parents).map_err(|e| fail("decode parent_refs", e))?,
    })
}

fn internal(e: impl std::fmt::Display) -> OutputStoreError {
    OutputStoreError::Internal(e.to_string())
}

#[async_trait]
impl OutputStore for DiskOutputStore {
    async fn append(
        &self,
        task_id: &str,
        attempt: u32,
        producer_agent: &str,
        event: OutputEvent,
        parent_refs: Vec<OutputRef>,
    ) -> std::result::Result<OutputRef, OutputStoreError> {
        let seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let id = id_of(seq);
        let row = OutputRow {
            id: id.clone(),
            task_id: task_id.to_string(),
            attempt,
            producer: producer_agent.to_string(),
            event_json: serde_json::to_string(&event).map_err(internal)?,
            parent_refs_json: serde_json::to_string(&parent_refs).map_err(internal)?,
            seq: super::rows::sql_int(seq),
        };
        self.writer
            .commit(Write::Output(row))
            .await
            .map_err(internal)?;
        Ok(OutputRef(id))
    }

    async fn get(&self, id: &OutputRef) -> std::result::Result<OutputRecord, OutputStoreError> {
        const SQL: &str = "SELECT id, task_id, attempt, producer_agent, event_json, \
            parent_refs_json FROM outputs WHERE id = ?1";
        self.one(SQL, vec![Value::Text(id.0.clone())], id.0.clone())
            .await
    }

    async fn get_latest_by_name(
        &self,
        name: &str,
    ) -> std::result::Result<OutputRecord, OutputStoreError> {
        const SQL: &str = "SELECT id, task_id, attempt, producer_agent, event_json, \
            parent_refs_json FROM outputs WHERE producer_agent = ?1 ORDER BY seq DESC LIMIT 1";
        self.one(SQL, vec![Value::Text(name.to_string())], name.to_string())
            .await
    }

    async fn get_latest_by_name_in_run(
        &self,
        task_id: &str,
        attempt: u32,
        name: &str,
    ) -> std::result::Result<OutputRecord, OutputStoreError> {
        const SQL: &str = "SELECT id, task_id, attempt, producer_agent, event_json, \
            parent_refs_json FROM outputs WHERE producer_agent = ?1 AND task_id = ?2 \
            AND attempt = ?3 ORDER BY seq DESC LIMIT 1";
        let params = vec![
            Value::Text(name.to_string()),
            Value::Text(task_id.to_string()),
            Value::Integer(i64::from(attempt)),
        ];
        self.one(SQL, params, format!("{task_id}/{attempt}/{name}"))
            .await
    }

    async fn list_for_attempt(
        &self,
        task_id: &str,
        attempt: u32,
    ) -> std::result::Result<Vec<OutputRecord>, OutputStoreError> {
        const SQL: &str = "SELECT id, task_id, attempt, producer_agent, event_json, \
            parent_refs_json FROM outputs WHERE task_id = ?1 AND attempt = ?2 ORDER BY seq";
        let task_id = task_id.to_string();
        let rows = self
            .writer
            .isle()
            .call(move |conn| {
                conn.prepare_cached(SQL)?
                    .query_map(rusqlite::params![task_id, attempt], raw)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(internal)?;
        rows.into_iter().map(decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::id_of;

    #[test]
    fn ids_do_not_repeat_and_keep_the_engine_form() {
        let ids: std::collections::HashSet<String> = (1..=100_000).map(id_of).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 14 && id.starts_with("out-")));
    }
}
