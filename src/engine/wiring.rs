//! Builds the engine, its layers, spawner factories and stores (engine-host-notes §4).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mlua_swarm::blueprint::store::{BlueprintStore, Git2BlueprintStore, InMemoryBlueprintStore};
use mlua_swarm::core::config::CheckPolicy;
use mlua_swarm::service::task_launch::TaskLaunchService;
use mlua_swarm::store::output::OutputStore;
use mlua_swarm::worker::baseline::extend_with_baseline;
use mlua_swarm::{
    Compiler, Engine, EngineCfg, LayerRegistry, MainAIMiddleware, OperatorSpawnerFactory,
    RustFnInProcessSpawnerFactory, SeniorEscalationMiddleware, SpawnerRegistry, TaskApplication,
};

use super::journal::Journal;
use super::tasks::EvictHook;
use super::timed::Timed;
use super::{
    EngineHost, EngineSettings, PgTaskStore, SqliteTaskStore, Storage, TaskRegistry, TaskStore,
};
use crate::error::{Error, Result};
use crate::metrics::StepKind;

/// Engine lock retries: many immediate retries instead of few slow ones (hazard H2).
const LOCK_MAX_RETRY: u32 = 200;

pub(super) async fn build(settings: &EngineSettings) -> Result<EngineHost> {
    let layers = LayerRegistry::new()
        .with_hint("main_ai", |_| Arc::new(MainAIMiddleware::new()))
        .with_hint("senior_escalation", |_| {
            Arc::new(SeniorEscalationMiddleware::new())
        });
    let mut cfg = EngineCfg {
        max_retry: LOCK_MAX_RETRY,
        backoff_ms_step: 0,
        check_policy: CheckPolicy::Silent,
        ..EngineCfg::default()
    };
    // Always inline system prompts: nothing spills to $TMPDIR (hazard H8).
    cfg.system_ref.threshold_bytes = usize::MAX;
    if let Some(secret) = &settings.token_secret {
        cfg.token_secret = secret.clone();
    }
    let engine = Engine::new_with_layers(cfg, layers);
    // The engine keeps its last 1,024 events in a Vec it trims from the front, so every
    // event moved the other 1,023 (9 % of B1's server CPU in memmove). Nothing here reads
    // that tail; subscribers get events from the broadcast channel.
    engine
        .with_state("wiring", |s| s.event_log_max = 0)
        .await
        .map_err(|e| Error::Unavailable(format!("engine state: {e}")))?;

    let factory = Arc::new(OperatorSpawnerFactory::new());
    let mut registry = SpawnerRegistry::new();
    // Each spawner times its steps (`mse_step_duration_seconds`).
    registry.register(Timed::new(factory.clone(), StepKind::Operator));
    registry.register(Timed::new(
        Arc::new(extend_with_baseline(RustFnInProcessSpawnerFactory::new())),
        StepKind::InProcess,
    ));
    let launch = Arc::new(TaskLaunchService::new(
        engine.clone(),
        Compiler::new(registry),
    ));

    // The database first: an unreachable one fails the boot before anything is created.
    let pool = match &settings.storage {
        Storage::Postgres { url, .. } => Some(crate::pg::connect(url).await?),
        _ => None,
    };
    let mut bounded_outputs = None;
    let mut drivers = Vec::new();
    let mut state_file = None;
    let (blueprints, outputs, journal, tasks): Stores = match &settings.storage {
        Storage::Ephemeral => {
            let bounded = Arc::new(super::outputs::BoundedOutputStore::new(
                super::outputs::EPHEMERAL_OUTPUT_CAPACITY,
            ));
            bounded_outputs = Some(bounded.clone());
            let journal = Journal::ephemeral();
            let tasks =
                TaskRegistry::new(settings.task_retention).with_evict_hook(forget(&journal));
            (
                Arc::new(InMemoryBlueprintStore::new()),
                bounded,
                journal,
                Arc::new(tasks),
            )
        }
        Storage::Dir(dir) => {
            let blueprints = open_blueprints(dir).await?;
            let (writer, driver) = super::disk::open(dir).await?;
            drivers.push(driver);
            state_file = Some(Arc::clone(&writer));
            let outputs = super::disk::DiskOutputStore::open(Arc::clone(&writer)).await?;
            let journal = Journal::on_disk(Arc::clone(&writer)).await?;
            let tasks =
                SqliteTaskStore::open(writer, settings.task_retention, forget(&journal)).await?;
            (blueprints, Arc::new(outputs), journal, Arc::new(tasks))
        }
        Storage::Postgres { dir, .. } => {
            // Everything in the database; the data dir keeps the worker handles' boot ids.
            let pool = pool.ok_or_else(|| Error::Internal("no database pool".into()))?;
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
            let journal = Journal::from_stores(
                Arc::new(super::pg_runs::PgRunStore::new(pool.clone())),
                Arc::new(super::pg_runs::PgReplayStore::new(
                    pool.clone(),
                    &settings.replica.id,
                )),
            );
            let blueprints = super::pg_blueprints::PgBlueprintStore::new(pool.clone());
            let outputs = super::pg_outputs::PgOutputStore::new(pool.clone());
            // Registered (and heartbeating) before any claim, so its leases are live.
            let replica = &settings.replica;
            crate::pg::replicas::join(&pool, &replica.id, replica.shared).await?;
            let tasks = PgTaskStore::open(
                pool,
                settings.task_retention,
                forget(&journal),
                &settings.replica,
            )
            .await?;
            (
                Arc::new(blueprints),
                Arc::new(outputs),
                journal,
                Arc::new(tasks),
            )
        }
    };
    let blueprints: Arc<dyn BlueprintStore> =
        Arc::new(super::archivable::Archivable::new(blueprints));
    engine.set_output_store(outputs.clone());
    let app = Arc::new(TaskApplication::new(launch, blueprints.clone()));
    Ok(EngineHost {
        engine,
        factory,
        app,
        blueprints,
        outputs,
        bounded_outputs,
        drivers: Mutex::new(drivers),
        state_file,
        tasks,
        journal,
        resume: settings.resume,
        durable: settings.storage.is_durable(),
        parked: Mutex::new(Default::default()),
        seats: Mutex::new(HashMap::new()),
        steps: Mutex::new(HashMap::new()),
        running: Mutex::new(HashMap::new()),
        runs_changed: tokio::sync::Notify::new(),
        end_listeners: std::sync::RwLock::new(Vec::new()),
        size: settings.size,
        engine_sessions: Mutex::new(HashMap::new()),
        worker_handles: super::handles::WorkerHandles::for_storage(&settings.storage)?,
        relay: std::sync::OnceLock::new(),
        draining: Default::default(),
        shared_database: settings.replica.shared
            && matches!(settings.storage, Storage::Postgres { .. }),
        store_root: settings.blueprint_root(),
        checked: Default::default(),
    })
}

/// Deletes the runs and journal rows of tasks retention dropped.
fn forget(journal: &Journal) -> EvictHook {
    let journal = journal.clone();
    Box::new(move |ids| {
        let journal = journal.clone();
        tokio::spawn(async move { journal.forget(&ids).await });
    })
}

type Stores = (
    Arc<dyn BlueprintStore>,
    Arc<dyn OutputStore>,
    Journal,
    Arc<dyn TaskStore>,
);

/// The git Blueprint store under `dir` (created with the data dir if missing).
async fn open_blueprints(dir: &Path) -> Result<Arc<dyn BlueprintStore>> {
    // Unavailable rather than Internal: the message, naming the file, is what boot prints.
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("cannot open {what} under {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("the data directory", &e))?;
    super::sqlite_sync::install()?;
    let bp_root = dir.join("blueprints");
    let bp = tokio::task::spawn_blocking(move || Git2BlueprintStore::open_or_init(bp_root))
        .await
        .map_err(|e| fail("the blueprint store", &e))?
        .map_err(|e| fail("the blueprint store", &e))?;
    Ok(Arc::new(bp))
}
