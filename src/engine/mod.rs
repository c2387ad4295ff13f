//! The host of the mlua-swarm engine: wiring, stores, task runs, GC and error mapping.
//!
//! This module is the only place that calls `mlua_swarm`. Everything above it (operator
//! sessions, gRPC, HTTP) speaks the domain types re-exported here.

mod archivable;
mod blueprints;
mod census;
mod checked;
mod compat;
mod data;
mod disk;
mod errors;
mod gc;
mod handles;
mod journal;
mod memory_journal;
mod memory_runs;
mod operators;
mod outputs;
mod pg_blueprints;
mod pg_outputs;
mod pg_runs;
mod relay;
mod runner;
mod sessions;
mod settings;
mod sqlite_sync;
mod tasks;
mod timed;
mod wiring;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlua_swarm::store::output::OutputStore;
use mlua_swarm::{Engine, OperatorSpawnerFactory, TaskApplication};

pub use blueprints::{
    BlueprintSummary, BlueprintVersionInfo, PutOutcome, StoredBlueprint, SEED_BLUEPRINT_ID,
};
pub use census::{Bound, Count, StructureCounts};
#[cfg(test)]
pub(crate) use data::every_event_kind;
pub use data::{ContentRef, EmitRequest, OutputEvent, OutputRecord};
pub use gc::StateSizes;
pub use operators::{OperatorBackend, OperatorRequestError, SpawnGrant, SpawnReply, StepContext};
pub use outputs::EPHEMERAL_OUTPUT_CAPACITY;
pub use relay::{WorkerAnswer, WorkerCall, WorkerRelay};
pub use runner::{
    BlueprintSource, LaunchOperator, OperatorKind, TaskLaunch, TaskPage, VersionPick,
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, SERVER_DEFAULT_TTL_SECS,
};
pub use settings::{EngineSettings, Replica, ResumeMode, Storage};
pub use tasks::{
    PgTaskStore, RunEnd, RunStart, SqliteTaskStore, TaskEvent, TaskEventKind, TaskPosition,
    TaskRecord, TaskRegistry, TaskRun, TaskState, TaskStore, TtlSource, EVENTS_KEPT, STEP_IDS_KEPT,
};
pub use worker::{Credential, SubmitOutcome, WorkerPrompt};

use crate::error::Result;
use crate::limits::SizePolicy;

/// Told when a task ends, before its flow is torn down, so pending operator requests of
/// the task are withdrawn with the real reason (implemented by the operator core).
pub trait TaskEndListener: Send + Sync {
    /// `task_id` ended; `reason` is e.g. "task cancelled: <reason>" or "task completed".
    fn task_ended(&self, task_id: &str, reason: &str);
}

/// The in-process engine with its stores and the registry of our task runs.
pub struct EngineHost {
    engine: Engine,
    factory: Arc<OperatorSpawnerFactory>,
    app: Arc<TaskApplication>,
    blueprints: Arc<dyn mlua_swarm::blueprint::store::BlueprintStore>,
    outputs: Arc<dyn OutputStore>,
    /// The same store when it is the in-memory one, for [`EngineHost::structure_counts`].
    bounded_outputs: Option<Arc<outputs::BoundedOutputStore>>,
    /// The SQLite writer threads of the stores on disk.
    drivers: Mutex<Vec<rusqlite_isle::AsyncIsleDriver>>,
    /// The state file's writer (`--data-dir`), drained before the drivers close.
    state_file: Option<Arc<disk::GroupWriter>>,
    tasks: Arc<dyn TaskStore>,
    journal: journal::Journal,
    resume: ResumeMode,
    durable: bool,
    /// Interrupted tasks waiting for the operator sessions they need.
    parked: Mutex<std::collections::HashSet<String>>,
    /// The registered operator sessions by seat (sid and roles), to tell which are attached.
    seats: Mutex<HashMap<String, Arc<dyn OperatorBackend>>>,
    steps: Mutex<HashMap<String, String>>,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    runs_changed: tokio::sync::Notify,
    end_listeners: std::sync::RwLock<Vec<std::sync::Weak<dyn TaskEndListener>>>,
    size: SizePolicy,
    engine_sessions: Mutex<HashMap<String, mlua_swarm::types::CapToken>>,
    worker_handles: handles::WorkerHandles,
    /// Other replicas share the database (PostgreSQL and `--nats-url`).
    shared_database: bool,
    /// Set when shutdown begins: no more claims of other replicas' tasks.
    draining: std::sync::atomic::AtomicBool,
    /// Passes worker calls for handles minted by another replica to it (`--nats-url`).
    relay: std::sync::OnceLock<Arc<dyn relay::WorkerRelay>>,
    store_root: Option<std::path::PathBuf>,
    /// Stored Blueprint versions whose launch check passed.
    checked: checked::CheckedBlueprints,
}

impl std::fmt::Debug for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHost")
            .field("blueprint_store", &self.blueprints.name())
            .finish_non_exhaustive()
    }
}

impl EngineHost {
    /// Builds the engine and its stores as `settings` say (a `&Config` converts), and
    /// starts the background task that turns engine events into task events.
    pub async fn start(settings: impl Into<EngineSettings>) -> Result<Arc<Self>> {
        let settings = settings.into();
        let host = Arc::new(wiring::build(&settings).await?);
        runner::spawn_event_router(&host);
        host.seed_main_blueprint().await?;
        host.recover().await?;
        if host.shared_database {
            host.start_takeover();
        }
        Ok(host)
    }

    /// The store of task runs.
    pub fn tasks(&self) -> &dyn TaskStore {
        self.tasks.as_ref()
    }

    /// The size policy every stored value and built message follows.
    pub fn size(&self) -> SizePolicy {
        self.size
    }

    /// Adds a listener told of every task end (held weakly).
    pub fn add_task_end_listener(&self, listener: std::sync::Weak<dyn TaskEndListener>) {
        if let Ok(mut ls) = self.end_listeners.write() {
            ls.push(listener);
        }
    }

    fn announce_end(&self, task_id: &str, reason: &str) {
        let listeners: Vec<_> = match self.end_listeners.read() {
            Ok(ls) => ls.iter().filter_map(std::sync::Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        for l in listeners {
            l.task_ended(task_id, reason);
        }
    }

    /// Shutdown began: this replica takes over no more tasks (its own runs go on until
    /// the drain window ends).
    pub fn begin_drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Flushes and closes the stores (the SQLite writer threads); a replica sharing its
    /// database hands its unfinished tasks over to the others.
    pub async fn shutdown(&self) {
        if let Err(e) = self.tasks.hand_over().await {
            tracing::warn!(error = %e, "unfinished tasks not handed over; others take them once this replica's heartbeat is stale");
        }
        if let Some(state) = &self.state_file {
            state.drained().await;
            state.close();
        }
        let drivers = std::mem::take(&mut *lock(&self.drivers));
        for driver in drivers {
            if let Err(e) = driver.shutdown().await {
                tracing::warn!(error = %e, "store shutdown");
            }
        }
    }
}

/// Locks `m`, recovering it if a panic poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
