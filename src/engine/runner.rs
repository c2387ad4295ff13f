//! Task runs: prepare a launch (resolve, TTL cascade, operator pins, compile check), run the
//! flow on its own tokio task (hazard H4), cancel it, and turn engine events into task
//! events.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use mlua_swarm::blueprint::store::{BlueprintId, BlueprintVersion};
use mlua_swarm::types::{Role, StepId};
use mlua_swarm::{
    Blueprint, BlueprintRef, Event, TaskApplicationError, TaskApplicationInput, TaskStatus,
    VersionSelector,
};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use super::blueprints::{check_id, parse_blueprint, parse_version};
use super::errors::from_application;
use super::{compat, EngineHost, TaskEventKind, TaskPosition, TaskRecord, TaskState, TtlSource};
use crate::error::{Error, Result};
use crate::limits::clip_text;

/// TTL of a task's engine session when neither the request nor the Blueprint sets one.
pub const SERVER_DEFAULT_TTL_SECS: u64 = 1800;

/// Tasks a ListTasks page holds when the caller gives no size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most tasks a ListTasks page holds.
pub const MAX_PAGE_SIZE: usize = 1000;

/// One page of a task listing.
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskRecord>,
    /// Where the next page starts; None on the last page.
    pub next_page_token: Option<String>,
}

fn encode_page_token(pos: &TaskPosition) -> String {
    let nanos = pos
        .created_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    hex::encode(format!("{nanos}:{}", pos.task_id))
}

fn decode_page_token(token: &str) -> Result<TaskPosition> {
    let bad = || {
        Error::invalid(
            "page_token",
            "not a next_page_token from ListTasks; list again without one",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (nanos, task_id) = text.split_once(':').ok_or_else(bad)?;
    let nanos: u64 = nanos.parse().map_err(|_| bad())?;
    Ok(TaskPosition {
        created_at: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
        task_id: task_id.to_string(),
    })
}

/// Operator kind (the tier that makes spawn hooks fire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    /// Hooks fire.
    MainAi,
    /// No hooks.
    Automate,
    /// Hooks fire.
    Composite,
}

/// Which stored version to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPick {
    /// The head.
    Latest,
    /// One exact hex version.
    Fixed(String),
    /// Highest `version_label` matching a semver requirement.
    SemverReq(String),
}

/// Where a task's Blueprint comes from.
#[derive(Debug, Clone)]
pub enum BlueprintSource {
    /// A document passed with the request.
    Inline(Value),
    /// A stored Blueprint.
    Stored {
        /// Its id.
        id: String,
        /// Which version.
        version: VersionPick,
    },
}

/// Runtime operator options of a launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchOperator {
    /// Runtime-global kind.
    pub kind: Option<OperatorKind>,
    /// Session (sid or role) receiving hook_before / hook_after.
    pub spawn_hook_id: Option<String>,
    /// Session (sid or role) receiving `ask`.
    pub senior_bridge_id: Option<String>,
    /// Per-agent kinds.
    pub per_agent_kinds: HashMap<String, OperatorKind>,
    /// Free-form label of the launcher (v0.1.0 `operator.id`).
    pub label: Option<String>,
}

/// A request to run a Blueprint.
#[derive(Debug, Clone)]
pub struct TaskLaunch {
    /// Which Blueprint.
    pub blueprint: BlueprintSource,
    /// Initial flow context.
    pub init_ctx: Value,
    /// Requested TTL.
    pub ttl_secs: Option<u64>,
    /// Operator options.
    pub operator: LaunchOperator,
    /// Operator session (sid or role) the task is pinned to.
    pub operator_sid: Option<String>,
}

struct Prepared {
    input: TaskApplicationInput,
    record: TaskRecord,
}

impl EngineHost {
    /// Validates a launch and starts its flow in the background. Errors here (bad
    /// Blueprint, unknown id or version, unknown operator) mean no task was created.
    pub async fn start_task(self: &Arc<Self>, launch: TaskLaunch) -> Result<TaskRecord> {
        let task_id = format!("task-{}", uuid::Uuid::new_v4());
        let Prepared { input, record } = self.prepare(&task_id, launch).await?;
        self.tasks.create(record.clone());
        let span = tracing::info_span!("task", task_id = %task_id);
        let host = Arc::clone(self);
        let mut running = lock(&self.running);
        let id = task_id.clone();
        let ttl = Duration::from_secs(record.effective_ttl_secs);
        let handle = tokio::spawn(
            async move {
                let mut flow = Box::pin(host.app.handle_with_run(input, None));
                tokio::select! {
                    outcome = &mut flow => {
                        host.finish(&id, host.outcome_event(outcome)).await;
                    }
                    // The TTL is a run deadline.
                    _ = tokio::time::sleep(ttl) => {
                        let error = format!(
                            "ttl expired: the task ran longer than its {}s ttl; raise ttl_secs \
                             (or the Blueprint's metadata.default_run_ttl_secs)",
                            ttl.as_secs()
                        );
                        if host.claim(&id).is_some() {
                            host.announce_end(&id, &format!("task failed: {error}"));
                            drop(flow);
                            host.record_end(&id, TaskEventKind::Failed { error }).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
        running.insert(task_id.clone(), handle.abort_handle());
        drop(running);
        tracing::info!(task_id = %task_id, blueprint_id = %record.blueprint_id, "task started");
        Ok(record)
    }

    /// Starts a task and waits for its end, at most `deadline`.
    pub async fn run_task(
        self: &Arc<Self>,
        launch: TaskLaunch,
        deadline: Option<Duration>,
    ) -> Result<TaskRecord> {
        let record = self.start_task(launch).await?;
        self.wait_task(&record.task_id, deadline).await
    }

    /// Waits until a task ends, at most `deadline`; DEADLINE_EXCEEDED leaves it running.
    pub async fn wait_task(&self, task_id: &str, deadline: Option<Duration>) -> Result<TaskRecord> {
        let wait = async {
            let Some((_, mut changed)) = self.tasks.events_after(task_id, u64::MAX) else {
                return Err(unknown_task(task_id));
            };
            loop {
                match self.tasks.get(task_id) {
                    Some(rec) if rec.state.is_terminal() => return Ok(rec),
                    Some(_) => {}
                    None => return Err(unknown_task(task_id)),
                }
                if changed.changed().await.is_err() {
                    return self.tasks.get(task_id).ok_or_else(|| unknown_task(task_id));
                }
            }
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
        let Some(current) = self.tasks.get(task_id) else {
            return Err(unknown_task(task_id));
        };
        if current.state.is_terminal() {
            return Err(already_ended(&current));
        }
        let reason = if reason.trim().is_empty() {
            "cancelled by CancelTask".to_string()
        } else {
            clip_text(reason.trim())
        };
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
            .await
            .ok_or_else(|| unknown_task(task_id))
    }

    /// One page of tasks, newest first: at most `page_size` (0: 100, capped at 1000), and
    /// fewer where one more would take the page over the response budget.
    pub fn list_tasks(
        &self,
        state: Option<TaskState>,
        page_size: usize,
        page_token: &str,
    ) -> Result<TaskPage> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(decode_page_token(token)?),
        };
        let mut candidates = self.tasks.list(state, after.as_ref(), page_size + 1);
        let more = candidates.len() > page_size;
        candidates.truncate(page_size);
        let total = candidates.len();
        let budget = self.size.response_budget();
        let mut used = 0;
        let mut tasks = Vec::with_capacity(candidates.len());
        for rec in candidates {
            let len = rec.wire_len();
            if !tasks.is_empty() && used + len > budget {
                break;
            }
            used += len;
            tasks.push(rec);
        }
        let next_page_token = match tasks.last() {
            Some(last) if more || tasks.len() < total => {
                Some(encode_page_token(&TaskPosition::of(last)))
            }
            _ => None,
        };
        Ok(TaskPage {
            tasks,
            next_page_token,
        })
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

    /// Aborts every running task (shutdown): each ends FAILED with `why`.
    pub async fn abort_runs(&self, why: &str) {
        let ids: Vec<String> = lock(&self.running).keys().cloned().collect();
        for id in ids {
            let Some(run) = self.claim(&id) else { continue };
            self.announce_end(&id, &format!("task failed: {why}"));
            run.abort();
            self.record_end(
                &id,
                TaskEventKind::Failed {
                    error: why.to_string(),
                },
            )
            .await;
        }
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
    async fn finish(&self, task_id: &str, end: TaskEventKind) -> Option<TaskRecord> {
        self.claim(task_id)?;
        self.record_end(task_id, end).await
    }

    /// Ends a claimed task: frees its engine state (recording any step events not yet
    /// seen), then records the terminal event and tells the operator core.
    async fn record_end(&self, task_id: &str, end: TaskEventKind) -> Option<TaskRecord> {
        let steps = self.free_task_state(task_id).await;
        {
            let mut index = lock(&self.steps);
            for step in &steps {
                index.remove(&step.step_id);
            }
        }
        for step in steps {
            let result = self.size.fit(step.result, "step result");
            self.tasks.push(
                task_id,
                TaskEventKind::StepDispatched {
                    step_id: step.step_id.clone(),
                    agent: step.agent,
                },
            );
            if let Some(ok) = step.ok {
                self.tasks.push(
                    task_id,
                    TaskEventKind::StepFinished {
                        step_id: step.step_id,
                        ok,
                        result,
                    },
                );
            }
        }
        let reason = match &end {
            TaskEventKind::Cancelled { reason } => format!("task cancelled: {reason}"),
            TaskEventKind::Failed { error } => format!("task failed: {error}"),
            _ => "task completed".to_string(),
        };
        let record = self.tasks.finish(task_id, end)?;
        match record.state {
            TaskState::Completed => tracing::info!(task_id, "task completed"),
            _ => {
                tracing::info!(task_id, state = ?record.state, error = ?record.error, "task ended")
            }
        }
        self.announce_end(task_id, &reason);
        Some(record)
    }

    async fn prepare(&self, task_id: &str, launch: TaskLaunch) -> Result<Prepared> {
        let TaskLaunch {
            blueprint,
            init_ctx,
            ttl_secs,
            operator,
            operator_sid,
        } = launch;
        self.size.check_value("init_ctx", &init_ctx)?;
        let (bp, bound_version) = self.resolve(blueprint).await?;
        let (ttl, ttl_source) = match (ttl_secs, bp.metadata.default_run_ttl_secs) {
            (Some(0), _) => return Err(Error::invalid("ttl_secs", "must be at least 1")),
            (Some(t), _) => (t, TtlSource::RequestBody),
            (None, Some(t)) if t > 0 => (t, TtlSource::BpMetadata),
            _ => (SERVER_DEFAULT_TTL_SECS, TtlSource::ServerDefault),
        };
        let registered = self.engine.list_operator_ids().await;
        let known = |field: &str, id: &Option<String>| -> Result<()> {
            match id {
                Some(id) if !registered.iter().any(|r| r == id) => Err(Error::NotFound(format!(
                    "{field}: no operator session or role '{id}' is registered; create one with \
                     OperatorService.CreateSession"
                ))),
                _ => Ok(()),
            }
        };
        let operator_sid = non_empty(operator_sid);
        let spawn_hook_id = non_empty(operator.spawn_hook_id);
        let senior_bridge_id = non_empty(operator.senior_bridge_id);
        known("operator_sid", &operator_sid)?;
        known("operator.spawn_hook_id", &spawn_hook_id)?;
        known("operator.senior_bridge_id", &senior_bridge_id)?;
        // With no explicit pin, a Blueprint with a single operator seat sends its hooks and
        // asks to whoever holds that seat.
        let sole_seat = match bp.operators.as_slice() {
            [only] if registered.iter().any(|r| r == &only.name) => Some(only.name.clone()),
            _ => None,
        };
        let pin = operator_sid.clone().or(sole_seat);
        let blueprint_id = bp.id.to_string();
        let compile_ref = BlueprintRef::Inline {
            value: Box::new(bp),
        };
        self.app
            .precompile(&compile_ref)
            .await
            .map_err(from_application)?;
        let input = TaskApplicationInput {
            blueprint: compile_ref,
            operator_id: task_id.to_string(),
            role: Role::Operator,
            ttl: Duration::from_secs(ttl),
            init_ctx: if init_ctx.is_null() {
                Value::Object(Default::default())
            } else {
                init_ctx
            },
            operator_kind: operator.kind.map(engine_kind),
            bridge_id: senior_bridge_id.or_else(|| pin.clone()),
            hook_id: spawn_hook_id.or_else(|| pin.clone()),
            operator_sid: operator_sid.clone(),
            operator_kind_overrides: operator
                .per_agent_kinds
                .into_iter()
                .map(|(agent, kind)| (agent, engine_kind(kind)))
                .collect(),
            task_input: None,
            check_policy: None,
        };
        let record = TaskRecord {
            task_id: task_id.to_string(),
            state: TaskState::Running,
            final_ctx: None,
            error: None,
            bound_version: bound_version.map(|v| v.to_hex()),
            effective_ttl_secs: ttl,
            ttl_source,
            created_at: SystemTime::now(),
            finished_at: None,
            blueprint_id,
            operator_sid,
            step_ids: Vec::new(),
            step_count: 0,
        };
        Ok(Prepared { input, record })
    }

    async fn resolve(
        &self,
        source: BlueprintSource,
    ) -> Result<(Blueprint, Option<BlueprintVersion>)> {
        match source {
            BlueprintSource::Inline(mut doc) => {
                compat::upgrade_blueprint(&mut doc)?;
                Ok((parse_blueprint(doc)?, None))
            }
            BlueprintSource::Stored { id, version } => {
                check_id(&id)?;
                let version = match version {
                    VersionPick::Latest => VersionSelector::Latest,
                    VersionPick::Fixed(v) => VersionSelector::Fixed {
                        value: parse_version(&v)?,
                    },
                    VersionPick::SemverReq(req) => VersionSelector::SemverReq {
                        req: req.parse().map_err(|e| {
                            Error::invalid(
                                "semver_req",
                                format!("'{req}' is not a semver requirement ({e})"),
                            )
                        })?,
                    },
                };
                let bp_ref = BlueprintRef::Id {
                    id: BlueprintId::new(id),
                    version,
                };
                self.app.resolve(&bp_ref).await.map_err(from_application)
            }
        }
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

fn engine_kind(kind: OperatorKind) -> mlua_swarm::OperatorKind {
    match kind {
        OperatorKind::MainAi => mlua_swarm::OperatorKind::MainAi,
        OperatorKind::Automate => mlua_swarm::OperatorKind::Automate,
        OperatorKind::Composite => mlua_swarm::OperatorKind::Composite,
    }
}

/// How long before the client's deadline RunTask answers, so the client reads our
/// DEADLINE_EXCEEDED (with its message) rather than its own timer's.
fn answer_margin(deadline: Duration) -> Duration {
    (deadline / 10)
        .max(Duration::from_millis(50))
        .min(deadline / 2)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
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

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Starts the background task that maps engine events (keyed by step id) to our tasks.
/// The broadcast can lag (hazard H13); whatever is missed is recovered when the task ends.
pub(super) fn spawn_event_router(host: &Arc<EngineHost>) {
    let mut events = host.engine.subscribe();
    let weak: Weak<EngineHost> = Arc::downgrade(host);
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "engine event router lagged");
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let Some(host) = weak.upgrade() else { break };
            match event {
                Event::TaskCreated { task_id } => host.on_step_created(task_id).await,
                Event::TaskAttemptCompleted {
                    task_id, result, ..
                } => host.on_step_completed(task_id, result).await,
                _ => {}
            }
        }
    });
}

impl EngineHost {
    async fn on_step_created(&self, step: StepId) {
        let step_id = step.as_str().to_string();
        let found = self
            .engine
            .with_state("step-owner", move |s| {
                let agent = s.tasks.get(&step).map(|t| t.spec.agent.clone())?;
                s.sessions
                    .values()
                    .find(|env| env.owned_task_ids.iter().rev().any(|id| id == &step))
                    .map(|env| (env.operator_id.clone(), agent))
            })
            .await
            .ok()
            .flatten();
        let Some((task_id, agent)) = found else {
            return;
        };
        if !self.tasks.is_running(&task_id) {
            return;
        }
        lock(&self.steps).insert(step_id.clone(), task_id.clone());
        self.tasks
            .push(&task_id, TaskEventKind::StepDispatched { step_id, agent });
    }

    async fn on_step_completed(&self, step: StepId, result: Value) {
        let step_id = step.as_str().to_string();
        let Some(task_id) = lock(&self.steps).get(&step_id).cloned() else {
            return;
        };
        let ok = self
            .engine
            .with_state("step-status", move |s| {
                s.tasks.get(&step).map(|t| t.status == TaskStatus::Pass)
            })
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
        self.tasks.push(
            &task_id,
            TaskEventKind::StepFinished {
                step_id,
                ok,
                result: self.size.fit(result, "step result"),
            },
        );
    }
}
