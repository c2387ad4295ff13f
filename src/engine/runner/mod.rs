//! Task runs: start a prepared launch on its own tokio task (hazard H4), wait for it,
//! cancel it, end it exactly once, and follow its events.

mod launch;
mod paging;
mod resume;
mod router;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use mlua_swarm::store::run::RunStatus;
use mlua_swarm::TaskApplicationError;
use tracing::Instrument;

pub use launch::{
    BlueprintSource, LaunchOperator, OperatorKind, TaskLaunch, VersionPick, SERVER_DEFAULT_TTL_SECS,
};
pub use paging::{TaskPage, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub(super) use router::spawn_event_router;

use super::tasks::follow;
use super::{lock, EngineHost, TaskEvent, TaskEventKind, TaskRecord, TaskState};
use crate::error::{Error, Result};
use crate::limits::clip_text;
use crate::metrics::TaskOutcome;
use launch::Prepared;

impl EngineHost {
    /// Validates a launch and starts its flow in the background. Errors here (bad
    /// Blueprint, unknown id or version, unknown operator) mean no task was created.
    pub async fn start_task(self: &Arc<Self>, launch: TaskLaunch) -> Result<TaskRecord> {
        self.launch_task(launch, true).await
    }

    /// [`Self::start_task`]; `acknowledged`: the caller is answered with the new task, so
    /// its creation is stored first (RunTask answers with the task's end, which is stored
    /// after it).
    async fn launch_task(
        self: &Arc<Self>,
        launch: TaskLaunch,
        acknowledged: bool,
    ) -> Result<TaskRecord> {
        // Time-ordered (v7): rows keyed by task id land at the end of their indexes, so
        // the tasks in flight share a few pages of the state file instead of one each.
        let task_id = format!("task-{}", uuid::Uuid::now_v7());
        let Prepared { input, record } = self.prepare(&task_id, launch).await?;
        if acknowledged {
            self.tasks.create(record.clone()).await?;
        } else {
            self.tasks.create_queued(record.clone()).await?;
        }
        let run = self
            .journal
            .begin(&task_id, record.operator_sid.clone())
            .await;
        let ttl = Duration::from_secs(record.effective_ttl_secs);
        self.drive(&task_id, input, run, ttl);
        crate::metrics::task_started();
        // Per task at debug: two info lines per task cost 2.5 % of B1's server CPU.
        tracing::debug!(task_id = %task_id, blueprint_id = %record.blueprint_id, "task started");
        Ok(record)
    }

    /// Runs a flow on its own tokio task, journaled in `run`, until it ends or `ttl`
    /// passes (the TTL is a run deadline).
    fn drive(
        self: &Arc<Self>,
        task_id: &str,
        input: mlua_swarm::TaskApplicationInput,
        run: mlua_swarm::store::run::RunContext,
        ttl: Duration,
    ) {
        let span = tracing::info_span!("task", task_id = %task_id);
        crate::telemetry::task_started(task_id, &span);
        let host = Arc::clone(self);
        let mut running = lock(&self.running);
        let id = task_id.to_string();
        let handle = tokio::spawn(
            async move {
                let mut flow = Box::pin(host.app.handle_with_run(input, Some(run)));
                tokio::select! {
                    outcome = &mut flow => {
                        host.finish(&id, host.outcome_event(outcome)).await;
                    }
                    _ = tokio::time::sleep(ttl) => {
                        let error = ttl_expired(ttl);
                        if host.claim(&id).is_some() {
                            host.announce_end(&id, &format!("task failed: {error}"));
                            drop(flow);
                            let _ = host.record_end(&id, TaskEventKind::Failed { error }).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
        running.insert(task_id.to_string(), handle.abort_handle());
    }

    /// Starts a task and waits for its end, at most `deadline`.
    pub async fn run_task(
        self: &Arc<Self>,
        launch: TaskLaunch,
        deadline: Option<Duration>,
    ) -> Result<TaskRecord> {
        let record = self.launch_task(launch, false).await?;
        self.wait_task(&record.task_id, deadline).await
    }

    /// Waits until a task ends, at most `deadline`; DEADLINE_EXCEEDED leaves it running.
    pub async fn wait_task(&self, task_id: &str, deadline: Option<Duration>) -> Result<TaskRecord> {
        let wait = async {
            let Some(mut changed) = self.tasks.subscribe(task_id).await? else {
                return Err(unknown_task(task_id));
            };
            let rec = loop {
                let rec = self.get_task(task_id).await?;
                if rec.state.is_terminal() {
                    break rec;
                }
                if changed.changed().await.is_err() {
                    break self.get_task(task_id).await?;
                }
            };
            // The end is reported only once it would survive a kill.
            self.tasks.settled(task_id).await?;
            Ok(rec)
        };
        match deadline {
            None => wait.await,
            // Answer a little before the client gives up, so it reads our message.
            Some(d) => tokio::time::timeout(d - answer_margin(d), wait)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::DeadlineExceeded(format!(
                        "task {task_id} is still running; follow it with GetTask or WatchTask"
                    )))
                }),
        }
    }

    /// Stops a running task: its flow is aborted, its pending operator requests are
    /// withdrawn, and it ends CANCELLED.
    pub async fn cancel_task(&self, task_id: &str, reason: &str) -> Result<TaskRecord> {
        let current = self.get_task(task_id).await?;
        if current.state.is_terminal() {
            return Err(already_ended(&current));
        }
        let reason = if reason.trim().is_empty() {
            "cancelled by CancelTask".to_string()
        } else {
            clip_text(reason.trim())
        };
        // Several replicas: the one running the task cancels it.
        if let Some(answer) = self.cancel_elsewhere(task_id, &reason).await {
            return answer;
        }
        if current.state == TaskState::Interrupted {
            lock(&self.parked).remove(task_id);
            return self
                .record_end(task_id, TaskEventKind::Cancelled { reason })
                .await?
                .ok_or_else(|| already_ended(&current));
        }
        // The cancel owns the end from here: a flow failing because its requests were
        // withdrawn cannot record that failure first.
        let Some(run) = self.claim(task_id) else {
            let rec = self
                .wait_task(task_id, Some(Duration::from_secs(5)))
                .await?;
            return Err(already_ended(&rec));
        };
        // Withdraw the operator requests before the flow stops, so they carry this reason.
        self.announce_end(task_id, &format!("task cancelled: {reason}"));
        run.abort();
        self.record_end(task_id, TaskEventKind::Cancelled { reason })
            .await?
            .ok_or_else(|| unknown_task(task_id))
    }

    /// Reads one task.
    pub async fn get_task(&self, task_id: &str) -> Result<TaskRecord> {
        self.tasks
            .get(task_id)
            .await?
            .ok_or_else(|| unknown_task(task_id))
    }

    /// Follows a task: its events from the first to the terminal one, the history first,
    /// then live.
    pub async fn watch_task(
        &self,
        task_id: &str,
    ) -> Result<impl Stream<Item = Result<TaskEvent>> + Send + 'static> {
        let Some(changed) = self.tasks.subscribe(task_id).await? else {
            return Err(unknown_task(task_id));
        };
        Ok(follow(
            Arc::clone(&self.tasks),
            task_id.to_string(),
            changed,
        ))
    }

    /// Waits up to `within` for every running task to end; true if none is left.
    pub async fn wait_runs(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self.runs_changed.notified();
            if lock(&self.running).is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return lock(&self.running).is_empty();
            }
        }
    }

    /// Aborts every running task (shutdown). With state on disk each becomes
    /// INTERRUPTED and resumes after the restart; in memory each ends FAILED with `why`.
    pub async fn abort_runs(&self, why: &str) {
        let ids: Vec<String> = lock(&self.running).keys().cloned().collect();
        for id in ids {
            let Some(run) = self.claim(&id) else { continue };
            run.abort();
            if self.durable {
                self.announce_end(&id, "task interrupted: server shutdown");
                self.interrupt(&id, "server shutdown").await;
                continue;
            }
            self.announce_end(&id, &format!("task failed: {why}"));
            let error = why.to_string();
            let _ = self.record_end(&id, TaskEventKind::Failed { error }).await;
        }
    }

    /// Task runs in flight now (metrics).
    pub fn runs_in_flight(&self) -> usize {
        lock(&self.running).len()
    }

    /// Takes the right to end a running task; exactly one caller gets its abort handle.
    fn claim(&self, task_id: &str) -> Option<tokio::task::AbortHandle> {
        let run = lock(&self.running).remove(task_id);
        if run.is_some() {
            self.runs_changed.notify_waiters();
        }
        run
    }

    /// The end of a flow that ran its course, unless something else (cancel, TTL,
    /// shutdown) claimed the end first.
    async fn finish(&self, task_id: &str, end: TaskEventKind) {
        if self.claim(task_id).is_some() {
            let _ = self.record_end(task_id, end).await;
        }
    }

    /// Ends a claimed task: frees its engine state (recording any step events not yet
    /// seen), then records the terminal event and tells the operator core. None if the
    /// store no longer knows the task; a store failure is logged here.
    async fn record_end(&self, task_id: &str, end: TaskEventKind) -> Result<Option<TaskRecord>> {
        let steps = self.free_task_state(task_id).await;
        {
            let mut index = lock(&self.steps);
            for step in &steps {
                index.remove(&step.step_id);
            }
        }
        for step in steps {
            let result = self.size.fit(step.result, "step result");
            let dispatched = TaskEventKind::StepDispatched {
                step_id: step.step_id.clone(),
                agent: step.agent,
            };
            if stored(task_id, self.tasks.push(task_id, dispatched).await) {
                crate::metrics::step_dispatched();
            }
            if let Some(ok) = step.ok {
                let finished = TaskEventKind::StepFinished {
                    step_id: step.step_id,
                    ok,
                    result,
                };
                stored(task_id, self.tasks.push(task_id, finished).await);
            }
        }
        let reason = match &end {
            TaskEventKind::Cancelled { reason } => format!("task cancelled: {reason}"),
            TaskEventKind::Failed { error } => format!("task failed: {error}"),
            _ => "task completed".to_string(),
        };
        let status = match &end {
            TaskEventKind::Completed { .. } => RunStatus::Done,
            TaskEventKind::Cancelled { .. } => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        };
        let outcome = metric_outcome(&end);
        crate::telemetry::task_ended(task_id);
        let ended = self.tasks.finish(task_id, end).await;
        crate::metrics::task_ended(outcome, ran_for(&ended));
        // ABORTED: another replica took the task over; its run record is that one's now.
        if !matches!(ended, Err(Error::Aborted(_))) {
            self.journal.set_status(task_id, status).await;
        }
        match &ended {
            Ok(None) => return ended,
            Ok(Some(record)) if record.state == TaskState::Completed => {
                tracing::debug!(task_id, "task completed")
            }
            Ok(Some(record)) => {
                tracing::info!(task_id, state = ?record.state, error = ?record.error, "task ended")
            }
            // The flow is over either way: its operator requests are withdrawn below.
            Err(e) => tracing::error!(task_id, error = %e, "task end not stored"),
        }
        self.announce_end(task_id, &reason);
        ended
    }
}

impl EngineHost {
    /// The terminal event of a flow's outcome, sized to fit every message that carries it.
    fn outcome_event(
        &self,
        outcome: std::result::Result<mlua_swarm::TaskApplicationOutput, TaskApplicationError>,
    ) -> TaskEventKind {
        match outcome {
            Ok(out) => TaskEventKind::Completed {
                final_ctx: self.size.fit(out.final_ctx, "final_ctx"),
            },
            Err(e) => TaskEventKind::Failed {
                error: clip_text(&e.to_string()),
            },
        }
    }
}

fn metric_outcome(end: &TaskEventKind) -> TaskOutcome {
    match end {
        TaskEventKind::Completed { .. } => TaskOutcome::Completed,
        TaskEventKind::Cancelled { .. } => TaskOutcome::Cancelled,
        _ => TaskOutcome::Failed,
    }
}

/// How long an ended task ran (zero when its record is gone).
fn ran_for(ended: &Result<Option<TaskRecord>>) -> Duration {
    let Ok(Some(rec)) = ended else {
        return Duration::ZERO;
    };
    rec.finished_at
        .and_then(|end| end.duration_since(rec.created_at).ok())
        .unwrap_or_default()
}

fn ttl_expired(ttl: Duration) -> String {
    format!(
        "ttl expired: the task ran longer than its {}s ttl; raise ttl_secs \
         (or the Blueprint's metadata.default_run_ttl_secs)",
        ttl.as_secs()
    )
}

/// How long before the client's deadline RunTask answers, so the client reads our
/// DEADLINE_EXCEEDED (with its message) rather than its own timer's.
fn answer_margin(deadline: Duration) -> Duration {
    (deadline / 10)
        .max(Duration::from_millis(50))
        .min(deadline / 2)
}

/// The answer of a store call whose failure loses one event: logged, and taken as false.
fn stored(task_id: &str, answer: Result<bool>) -> bool {
    answer.unwrap_or_else(|e| {
        tracing::warn!(task_id, error = %e, "task event not stored");
        false
    })
}

fn unknown_task(task_id: &str) -> Error {
    Error::NotFound(format!(
        "task '{task_id}' not found; ListTasks shows known tasks"
    ))
}

fn already_ended(rec: &TaskRecord) -> Error {
    Error::FailedPrecondition(format!(
        "task {} already ended ({:?})",
        rec.task_id, rec.state
    ))
}
