//! The engine's run journal in PostgreSQL (`--database-url`): [`PgRunStore`] (one row per
//! run, the record as JSON with its status and `updated_at` in columns) and
//! [`PgReplayStore`] (one row per passed step, ordered by a sequence). Frequent changes
//! (a step entry, a status, a compare-and-set) are one statement each; the assignee
//! slots, rarely used, read and write the record under `FOR UPDATE`.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use mlua_swarm::store::replay::{ReplayEntry, ReplayStore, ReplayStoreError};
use mlua_swarm::store::run::{
    Assignee, DegradationEntry, RunListFilter, RunRecord, RunStatus, RunStore, RunStoreError,
    StepEntry, VacateOutcome,
};
use mlua_swarm::types::{RunId, TaskId};
use tokio_postgres::Row;

use super::memory_runs::{acquire, check_assignee, vacate};
use crate::pg::{int, uint};

/// Unix seconds, as the engine's stores stamp `updated_at`.
fn now() -> i64 {
    int(super::tasks::unix_ms(std::time::SystemTime::now()) / 1000)
}

fn other(e: impl std::fmt::Display) -> RunStoreError {
    RunStoreError::Other(e.to_string())
}

fn status_text(status: RunStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{status:?}").to_ascii_lowercase(),
    }
}

const SELECT_RUN: &str = "SELECT record::text, status, updated_at FROM runs";

fn decode(row: &Row) -> Result<RunRecord, RunStoreError> {
    let mut record: RunRecord = serde_json::from_str(row.get(0)).map_err(other)?;
    record.status = serde_json::from_value(serde_json::Value::String(row.get(1))).map_err(other)?;
    record.updated_at = uint(row.get(2));
    Ok(record)
}

/// Run records in the `runs` table.
pub(super) struct PgRunStore {
    pool: Pool,
}

impl PgRunStore {
    pub(super) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RunStoreError> {
        self.pool.get().await.map_err(other)
    }

    /// Runs one statement; the number of rows it changed.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, RunStoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(other)?;
        client.execute(&stmt, params).await.map_err(other)
    }

    /// Runs one `UPDATE … WHERE id = $1`; NotFound when no run has that id.
    async fn update(
        &self,
        id: &RunId,
        sql: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<(), RunStoreError> {
        match self.execute(sql, &[&id.as_str(), value, &now()]).await? {
            0 => Err(RunStoreError::NotFound(id.clone())),
            _ => Ok(()),
        }
    }

    async fn select(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RunRecord>, RunStoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(other)?;
        let rows = client.query(&stmt, params).await.map_err(other)?;
        rows.iter().map(decode).collect()
    }

    /// Applies `change` to the record under `FOR UPDATE` and writes it back.
    async fn locked<T>(
        &self,
        id: &RunId,
        change: impl FnOnce(&mut RunRecord) -> T,
    ) -> Result<T, RunStoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(other)?;
        let row = tx
            .query_opt(
                &format!("{SELECT_RUN} WHERE id = $1 FOR UPDATE"),
                &[&id.as_str()],
            )
            .await
            .map_err(other)?
            .ok_or_else(|| RunStoreError::NotFound(id.clone()))?;
        let mut record = decode(&row)?;
        let out = change(&mut record);
        let json = serde_json::to_string(&record).map_err(other)?;
        tx.execute(
            "UPDATE runs SET record = $2::text::jsonb, updated_at = $3 WHERE id = $1",
            &[&id.as_str(), &json, &now()],
        )
        .await
        .map_err(other)?;
        tx.commit().await.map_err(other)?;
        Ok(out)
    }
}

/// Appends `$2` (JSON text) to the record's array `key`.
macro_rules! append_sql {
    ($key:literal) => {
        concat!(
            "UPDATE runs SET record = jsonb_set(record, '{",
            $key,
            "}', COALESCE(record->'",
            $key,
            "', '[]'::jsonb) || jsonb_build_array($2::text::jsonb)), updated_at = $3 \
             WHERE id = $1"
        )
    };
}

#[async_trait]
impl RunStore for PgRunStore {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn create(&self, record: RunRecord) -> Result<(), RunStoreError> {
        record.validate_assignment_generations()?;
        let json = serde_json::to_string(&record).map_err(other)?;
        let added = self
            .execute(
                "INSERT INTO runs (id, task_id, status, created_at, updated_at, record) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT (id) DO NOTHING",
                &[
                    &record.id.as_str(),
                    &record.task_id.as_str(),
                    &status_text(record.status),
                    &int(record.created_at),
                    &int(record.updated_at),
                    &json,
                ],
            )
            .await?;
        match added {
            0 => Err(RunStoreError::Duplicate(record.id)),
            _ => Ok(()),
        }
    }

    async fn get(&self, id: &RunId) -> Result<RunRecord, RunStoreError> {
        self.select(&format!("{SELECT_RUN} WHERE id = $1"), &[&id.as_str()])
            .await?
            .pop()
            .ok_or_else(|| RunStoreError::NotFound(id.clone()))
    }

    async fn list_by_task(&self, task_id: &TaskId) -> Result<Vec<RunRecord>, RunStoreError> {
        self.select(
            &format!("{SELECT_RUN} WHERE task_id = $1 ORDER BY created_at, seq"),
            &[&task_id.as_str()],
        )
        .await
    }

    async fn append_step_entry(&self, id: &RunId, entry: StepEntry) -> Result<(), RunStoreError> {
        let json = serde_json::to_string(&entry).map_err(other)?;
        self.update(id, append_sql!("step_entries"), &json).await
    }

    async fn append_degradation(
        &self,
        id: &RunId,
        entry: DegradationEntry,
    ) -> Result<(), RunStoreError> {
        let json = serde_json::to_string(&entry).map_err(other)?;
        self.update(id, append_sql!("degradations"), &json).await
    }

    async fn update_status(&self, id: &RunId, status: RunStatus) -> Result<(), RunStoreError> {
        let sql = "UPDATE runs SET status = $2, updated_at = $3 WHERE id = $1";
        self.update(id, sql, &status_text(status)).await
    }

    async fn try_transition(
        &self,
        id: &RunId,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool, RunStoreError> {
        let changed = self
            .execute(
                "UPDATE runs SET status = $2, updated_at = $3 WHERE id = $1 AND status = $4",
                &[&id.as_str(), &status_text(to), &now(), &status_text(from)],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn acquire_assignee(
        &self,
        id: &RunId,
        slot: &str,
        op: &str,
        desc: &str,
    ) -> Result<(u64, Option<Assignee>), RunStoreError> {
        check_assignee(slot, Some(desc))?;
        self.locked(id, |r| acquire(r, slot, op, desc)).await
    }

    async fn vacate_assignee(
        &self,
        id: &RunId,
        slot: &str,
        expected_gen: u64,
    ) -> Result<VacateOutcome, RunStoreError> {
        check_assignee(slot, None)?;
        self.locked(id, |r| vacate(r, slot, expected_gen)).await
    }

    async fn set_result(
        &self,
        id: &RunId,
        result_ref: serde_json::Value,
    ) -> Result<(), RunStoreError> {
        let sql = "UPDATE runs SET record = jsonb_set(record, '{result_ref}', $2::text::jsonb), \
                   updated_at = $3 WHERE id = $1";
        self.update(id, sql, &result_ref.to_string()).await
    }

    async fn set_input_json(&self, id: &RunId, input_json: String) -> Result<(), RunStoreError> {
        let sql =
            "UPDATE runs SET record = jsonb_set(record, '{input_json}', to_jsonb($2::text)), \
                   updated_at = $3 WHERE id = $1";
        self.update(id, sql, &input_json).await
    }

    async fn list_running(&self) -> Result<Vec<RunRecord>, RunStoreError> {
        self.select(
            &format!("{SELECT_RUN} WHERE status = 'running' ORDER BY seq"),
            &[],
        )
        .await
    }

    async fn list(&self, filter: &RunListFilter) -> Result<Vec<RunRecord>, RunStoreError> {
        let task = filter.task_id.as_ref().map(|t| t.as_str().to_string());
        let status = filter.status.map(status_text);
        let limit = filter.limit.map(|n| int(n as u64));
        let offset = int(filter.offset.unwrap_or(0) as u64);
        self.select(
            &format!(
                "{SELECT_RUN} WHERE ($1::text IS NULL OR task_id = $1) \
                 AND ($2::text IS NULL OR status = $2) \
                 ORDER BY created_at DESC, seq DESC LIMIT $3 OFFSET $4"
            ),
            &[&task, &status, &limit, &offset],
        )
        .await
    }

    async fn delete(&self, id: &RunId) -> Result<(), RunStoreError> {
        match self
            .execute("DELETE FROM runs WHERE id = $1", &[&id.as_str()])
            .await?
        {
            0 => Err(RunStoreError::NotFound(id.clone())),
            _ => Ok(()),
        }
    }
}

fn replay_error(e: impl std::fmt::Display) -> ReplayStoreError {
    ReplayStoreError::Other(e.to_string())
}

/// Replay rows in the `replay_log` table.
pub(super) struct PgReplayStore {
    pool: Pool,
    /// This replica: a row is written only while the run's task names it as runner.
    me: String,
}

impl PgReplayStore {
    pub(super) fn new(pool: Pool, me: &str) -> Self {
        Self {
            pool,
            me: me.to_string(),
        }
    }
}

/// A journal row, written only while the run's task (`$8`) names this replica (`$9`) as
/// its runner: a runner another replica took the task from writes nothing. Answers
/// whether the lease is held and whether the row was added.
const APPEND: &str = "
WITH mine AS (
    SELECT 1 FROM tasks WHERE task_id = $8 AND runner = $9
), added AS (
    INSERT INTO replay_log (run_id, step_ref, input_hash, occurrence, ctx_json,
        output_json, created_at)
    SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM mine)
    ON CONFLICT (run_id, step_ref, input_hash, occurrence) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM mine), EXISTS (SELECT 1 FROM added)";

/// The task of run `R-<uuid>` (`task-<uuid>`; see `TaskRecord::run_id_of`).
fn task_of(run_id: &str) -> String {
    format!("task-{}", run_id.strip_prefix("R-").unwrap_or(run_id))
}

#[async_trait]
impl ReplayStore for PgReplayStore {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn append(&self, entry: ReplayEntry) -> Result<(), ReplayStoreError> {
        let client = self.pool.get().await.map_err(replay_error)?;
        let stmt = client.prepare_cached(APPEND).await.map_err(replay_error)?;
        let task_id = task_of(entry.run_id.as_str());
        let row = client
            .query_one(
                &stmt,
                &[
                    &entry.run_id.as_str(),
                    &entry.step_ref,
                    &entry.input_hash,
                    &i32::try_from(entry.occurrence).unwrap_or(i32::MAX),
                    &entry.ctx_snapshot_json,
                    &entry.step_output_json,
                    &int(entry.created_at),
                    &task_id,
                    &self.me,
                ],
            )
            .await
            .map_err(replay_error)?;
        let (held, added): (bool, bool) = (row.get(0), row.get(1));
        if !held {
            return Err(ReplayStoreError::Other(format!(
                "task {task_id} is run by another replica now; journal row not written"
            )));
        }
        if !added {
            return Err(ReplayStoreError::Duplicate {
                run_id: entry.run_id,
                step_ref: entry.step_ref,
                input_hash: entry.input_hash,
                occurrence: entry.occurrence,
            });
        }
        Ok(())
    }

    async fn list_by_run(&self, run_id: &RunId) -> Result<Vec<ReplayEntry>, ReplayStoreError> {
        let client = self.pool.get().await.map_err(replay_error)?;
        let rows = client
            .query(
                "SELECT step_ref, input_hash, occurrence, ctx_json, output_json, created_at \
                 FROM replay_log WHERE run_id = $1 ORDER BY seq",
                &[&run_id.as_str()],
            )
            .await
            .map_err(replay_error)?;
        Ok(rows
            .iter()
            .map(|r| ReplayEntry {
                run_id: run_id.clone(),
                step_ref: r.get(0),
                input_hash: r.get(1),
                occurrence: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                ctx_snapshot_json: r.get(3),
                step_output_json: r.get(4),
                created_at: uint(r.get(5)),
            })
            .collect())
    }

    async fn delete_from(
        &self,
        run_id: &RunId,
        from_index: usize,
    ) -> Result<usize, ReplayStoreError> {
        let client = self.pool.get().await.map_err(replay_error)?;
        let deleted = client
            .execute(
                "DELETE FROM replay_log WHERE seq IN (SELECT seq FROM replay_log \
                 WHERE run_id = $1 ORDER BY seq OFFSET $2)",
                &[&run_id.as_str(), &int(from_index as u64)],
            )
            .await
            .map_err(replay_error)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
