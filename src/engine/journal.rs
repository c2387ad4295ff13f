//! The engine's run journal: one `RunRecord` per task (every run of a task, launch,
//! resume or rerun, shares its run id) and the replay rows of its passed steps, in the
//! state file under the data dir (`disk`) or in memory (`--ephemeral`).

use std::sync::{Arc, Mutex};

use mlua_swarm::store::replay::{ReplayCursor, ReplayEntry, ReplayStore};
use mlua_swarm::store::run::{RunContext, RunRecord, RunStatus, RunStore};
use mlua_swarm::types::{RunId, TaskId};

use super::TaskRecord;
use crate::error::{Error, Result};

/// The run and replay stores.
#[derive(Clone)]
pub(super) struct Journal {
    runs: Arc<dyn RunStore>,
    replay: Arc<dyn ReplayStore>,
}

impl Journal {
    /// In memory.
    pub(super) fn ephemeral() -> Self {
        Self {
            runs: Arc::new(super::memory_runs::MemoryRunStore::default()),
            replay: Arc::new(super::memory_journal::MemoryReplayStore::default()),
        }
    }

    /// On run and replay stores opened elsewhere (PostgreSQL).
    pub(super) fn from_stores(runs: Arc<dyn RunStore>, replay: Arc<dyn ReplayStore>) -> Self {
        Self { runs, replay }
    }

    /// In the state file (`disk`), sharing its writer.
    pub(super) async fn on_disk(writer: Arc<super::disk::GroupWriter>) -> Result<Self> {
        Ok(Self {
            runs: Arc::new(super::disk::DiskRunStore::load(Arc::clone(&writer)).await?),
            replay: Arc::new(super::disk::DiskReplayStore::new(writer)),
        })
    }

    /// Records a new run of `task_id` and returns the context its launch carries.
    pub(super) async fn begin(&self, task_id: &str, operator_sid: Option<String>) -> RunContext {
        let run_id = run_id(task_id);
        let now = super::tasks::unix_ms(std::time::SystemTime::now()) / 1000;
        let record = RunRecord {
            id: run_id.clone(),
            task_id: engine_task_id(task_id),
            status: RunStatus::Running,
            step_entries: Vec::new(),
            degradations: Vec::new(),
            operator_sid,
            current: Default::default(),
            next_generation: 0,
            result_ref: None,
            // An object: the engine pins the launch's agent bindings in it, so a resume
            // hashes step inputs as the launch did.
            input_json: Some("{}".into()),
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.runs.create(record).await {
            tracing::warn!(task_id, error = %e, "run record not stored");
        }
        self.context(run_id)
    }

    /// The context of a resume or rerun: the journal's rows answer the steps they hold.
    /// With `from_step`, the rows from that step's first row on are cut first. Returns
    /// the context and the number of rows that can answer.
    pub(super) async fn reopen(
        &self,
        task_id: &str,
        from_step: Option<&str>,
    ) -> Result<(RunContext, u64)> {
        let run_id = run_id(task_id);
        let mut rows = self.rows(&run_id).await?;
        if let Some(step) = from_step {
            let Some(index) = rows.iter().position(|r| r.step_ref == step) else {
                let mut held: Vec<&str> = rows.iter().map(|r| r.step_ref.as_str()).collect();
                held.dedup();
                return Err(Error::invalid(
                    "from_step",
                    format!(
                        "the journal of task {task_id} holds no step '{step}'; it holds [{}]",
                        held.join(", ")
                    ),
                ));
            };
            self.replay
                .delete_from(&run_id, index)
                .await
                .map_err(|e| Error::Unavailable(format!("journal: {e}")))?;
            rows.truncate(index);
        }
        if self.runs.get(&run_id).await.is_err() {
            self.begin(task_id, None).await;
        }
        self.set_status(task_id, RunStatus::Running).await;
        let answered = rows.len() as u64;
        let cursor = ReplayCursor::from_entries(rows);
        let ctx = self
            .context(run_id)
            .with_replay_cursor(Arc::new(Mutex::new(cursor)))
            .with_resume();
        Ok((ctx, answered))
    }

    /// Sets the status of a task's run.
    pub(super) async fn set_status(&self, task_id: &str, status: RunStatus) {
        if let Err(e) = self.runs.update_status(&run_id(task_id), status).await {
            tracing::warn!(task_id, error = %e, "run status not stored");
        }
    }

    /// Runs the engine still holds as running (a crash left them so).
    pub(super) async fn running(&self) -> Vec<String> {
        match self.runs.list_running().await {
            Ok(runs) => runs.into_iter().map(|r| r.id.into_string()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "running runs not read");
                Vec::new()
            }
        }
    }

    /// Marks a run left running interrupted; true if it was running.
    pub(super) async fn interrupt_run(&self, run_id: &str) -> bool {
        let Ok(id) = RunId::parse(run_id) else {
            return false;
        };
        self.runs
            .try_transition(&id, RunStatus::Running, RunStatus::Interrupted)
            .await
            .unwrap_or(false)
    }

    /// Deletes the runs and journal rows of dropped tasks.
    pub(super) async fn forget(&self, task_ids: &[String]) {
        for task_id in task_ids {
            let id = run_id(task_id);
            if let Err(e) = self.replay.delete_from(&id, 0).await {
                tracing::warn!(task_id, error = %e, "journal rows not deleted");
            }
            let _ = self.runs.delete(&id).await;
        }
    }

    async fn rows(&self, run_id: &RunId) -> Result<Vec<ReplayEntry>> {
        self.replay
            .list_by_run(run_id)
            .await
            .map_err(|e| Error::Unavailable(format!("journal: {e}")))
    }

    fn context(&self, run_id: RunId) -> RunContext {
        RunContext::new(run_id, self.runs.clone()).with_replay_store(self.replay.clone())
    }
}

fn run_id(task_id: &str) -> RunId {
    RunId::parse(TaskRecord::run_id_of(task_id)).unwrap_or_default()
}

fn engine_task_id(task_id: &str) -> TaskId {
    let uuid = task_id.strip_prefix("task-").unwrap_or(task_id);
    TaskId::parse(format!("T-{uuid}")).unwrap_or_default()
}
