//! Data outputs in PostgreSQL (`--database-url`): the engine's `OutputStore`, one row per
//! output in `outputs`, ordered by a sequence ("latest" is the highest `seq`).

use async_trait::async_trait;
use deadpool_postgres::Pool;
use mlua_swarm::store::output::{
    OutputEvent, OutputRecord, OutputRef, OutputStore, OutputStoreError,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

fn internal(e: impl std::fmt::Display) -> OutputStoreError {
    OutputStoreError::Internal(format!("database: {e}"))
}

const SELECT: &str = "SELECT id, task_id, attempt, producer_agent, event::text, \
                      parent_refs::text FROM outputs";

fn decode(row: &Row) -> Result<OutputRecord, OutputStoreError> {
    let event: OutputEvent = serde_json::from_str(row.get(4)).map_err(internal)?;
    let parent_refs: Vec<OutputRef> = serde_json::from_str(row.get(5)).map_err(internal)?;
    Ok(OutputRecord {
        id: OutputRef(row.get(0)),
        task_id: row.get(1),
        attempt: u32::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        producer_agent: row.get(3),
        event,
        parent_refs,
    })
}

/// See the module doc.
pub(super) struct PgOutputStore {
    pool: Pool,
}

impl PgOutputStore {
    pub(super) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn query(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<OutputRecord>, OutputStoreError> {
        let client = self.pool.get().await.map_err(internal)?;
        let stmt = client
            .prepare_cached(&format!("{SELECT} {filter}"))
            .await
            .map_err(internal)?;
        let rows = client.query(&stmt, params).await.map_err(internal)?;
        rows.iter().map(decode).collect()
    }

    async fn one(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
        missing: String,
    ) -> Result<OutputRecord, OutputStoreError> {
        self.query(filter, params)
            .await?
            .pop()
            .ok_or(OutputStoreError::NotFound(missing))
    }
}

#[async_trait]
impl OutputStore for PgOutputStore {
    async fn append(
        &self,
        task_id: &str,
        attempt: u32,
        producer_agent: &str,
        event: OutputEvent,
        parent_refs: Vec<OutputRef>,
    ) -> Result<OutputRef, OutputStoreError> {
        let id = OutputRef::new();
        let event = serde_json::to_string(&event).map_err(internal)?;
        let parents = serde_json::to_string(&parent_refs).map_err(internal)?;
        let client = self.pool.get().await.map_err(internal)?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO outputs (id, task_id, attempt, producer_agent, event, parent_refs) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb)",
            )
            .await
            .map_err(internal)?;
        client
            .execute(
                &stmt,
                &[
                    &id.0,
                    &task_id,
                    &i64::from(attempt),
                    &producer_agent,
                    &event,
                    &parents,
                ],
            )
            .await
            .map_err(internal)?;
        Ok(id)
    }

    async fn get(&self, id: &OutputRef) -> Result<OutputRecord, OutputStoreError> {
        self.one("WHERE id = $1", &[&id.0], id.0.clone()).await
    }

    async fn get_latest_by_name(&self, name: &str) -> Result<OutputRecord, OutputStoreError> {
        let filter = "WHERE producer_agent = $1 ORDER BY seq DESC LIMIT 1";
        self.one(filter, &[&name], name.to_string()).await
    }

    async fn get_latest_by_name_in_run(
        &self,
        task_id: &str,
        attempt: u32,
        name: &str,
    ) -> Result<OutputRecord, OutputStoreError> {
        let filter = "WHERE producer_agent = $1 AND task_id = $2 AND attempt = $3 \
                      ORDER BY seq DESC LIMIT 1";
        let missing = format!("{task_id}/{attempt}/{name}");
        self.one(filter, &[&name, &task_id, &i64::from(attempt)], missing)
            .await
    }

    async fn list_for_attempt(
        &self,
        task_id: &str,
        attempt: u32,
    ) -> Result<Vec<OutputRecord>, OutputStoreError> {
        let filter = "WHERE task_id = $1 AND attempt = $2 ORDER BY seq";
        self.query(filter, &[&task_id, &i64::from(attempt)]).await
    }
}
