//! The host of the mlua-swarm engine: wiring, stores, task runs, GC and error mapping.
//!
//! This module is the only place that calls `mlua_swarm`. Everything above it (operator
//! sessions, gRPC, HTTP) speaks the domain types re-exported here.

mod blueprints;
mod compat;
mod data;
mod errors;
mod gc;
mod operators;
mod runner;
mod tasks;
mod wiring;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlua_swarm::store::output::OutputStore;
use mlua_swarm::{Engine, OperatorSpawnerFactory, TaskApplication};
use tokio::sync::broadcast;

pub use blueprints::{BlueprintSummary, BlueprintVersionInfo, PutOutcome, StoredBlueprint};
pub use data::{ContentRef, EmitRequest, OutputEvent, OutputRecord};
pub use gc::StateSizes;
pub use operators::{OperatorBackend, OperatorRequestError, SpawnGrant, SpawnReply, StepContext};
pub use runner::{
    BlueprintSource, LaunchOperator, OperatorKind, TaskLaunch, VersionPick, SERVER_DEFAULT_TTL_SECS,
};
pub use tasks::{TaskEvent, TaskEventKind, TaskRecord, TaskRegistry, TaskState, TtlSource};
pub use worker::{Credential, SubmitOutcome, WorkerPrompt};

use crate::config::Config;
use crate::error::Result;

/// A task that ended, as announced to the operator core so it can withdraw the task's
/// pending requests.
#[derive(Debug, Clone)]
pub struct TaskEnded {
    /// Our task id.
    pub task_id: String,
    /// Why it ended, e.g. "task cancelled: <reason>" or "task completed".
    pub reason: String,
}

/// The in-process engine with its stores and the registry of our task runs.
pub struct EngineHost {
    engine: Engine,
    factory: Arc<OperatorSpawnerFactory>,
    app: Arc<TaskApplication>,
    blueprints: Arc<dyn mlua_swarm::blueprint::store::BlueprintStore>,
    outputs: Arc<dyn OutputStore>,
    output_driver: Mutex<Option<rusqlite_isle::AsyncIsleDriver>>,
    tasks: TaskRegistry,
    steps: Mutex<HashMap<String, String>>,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    ended: broadcast::Sender<TaskEnded>,
    max_data_bytes: usize,
}

impl std::fmt::Debug for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHost")
            .field("blueprint_store", &self.blueprints.name())
            .finish_non_exhaustive()
    }
}

impl EngineHost {
    /// Builds the engine and its stores as the configuration says, and starts the
    /// background task that turns engine events into task events.
    pub async fn start(config: &Config) -> Result<Arc<Self>> {
        let host = Arc::new(wiring::build(config).await?);
        runner::spawn_event_router(&host);
        Ok(host)
    }

    /// The registry of task runs.
    pub fn tasks(&self) -> &TaskRegistry {
        &self.tasks
    }

    /// Subscribes to task ends (used by the operator core).
    pub fn subscribe_task_ends(&self) -> broadcast::Receiver<TaskEnded> {
        self.ended.subscribe()
    }

    /// Flushes and closes the stores (the SQLite writer thread).
    pub async fn shutdown(&self) {
        let driver = self.output_driver.lock().ok().and_then(|mut d| d.take());
        if let Some(driver) = driver {
            if let Err(e) = driver.shutdown().await {
                tracing::warn!(error = %e, "data store shutdown");
            }
        }
    }
}
