//! Builds the engine, its layers, spawner factories and stores (engine-host-notes §4).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use mlua_swarm::blueprint::store::{BlueprintStore, Git2BlueprintStore, InMemoryBlueprintStore};
use mlua_swarm::core::config::CheckPolicy;
use mlua_swarm::service::task_launch::TaskLaunchService;
use mlua_swarm::store::output::{OutputStore, SqliteOutputStore};
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
        Storage::Postgres { url, .. } => {
            let pool = crate::pg::connect(url).await?;
            let replica = crate::pg::replicas::new_id();
            crate::pg::replicas::join(&pool, &replica).await?;
            tracing::info!(%replica, "replica registered in the database");
            Some(pool)
        }
        _ => None,
    };
    let mut bounded_outputs = None;
    let (blueprints, outputs, mut drivers) = match &settings.storage {
        Storage::Ephemeral => {
            let bp: Arc<dyn BlueprintStore> = Arc::new(InMemoryBlueprintStore::new());
            let bounded = Arc::new(super::outputs::BoundedOutputStore::new(
                super::outputs::EPHEMERAL_OUTPUT_CAPACITY,
            ));
            bounded_outputs = Some(bounded.clone());
            let out: Arc<dyn OutputStore> = bounded;
            (bp, out, Vec::new())
        }
        Storage::Dir(dir) => open_dir_stores(dir).await?,
        Storage::Postgres { dir, .. } => pg_stores(dir, pool.as_ref())?,
    };
    let (journal, tasks) = match &settings.storage {
        Storage::Ephemeral => {
            let journal = Journal::ephemeral();
            let tasks: Arc<dyn TaskStore> = Arc::new(
                TaskRegistry::new(settings.task_retention).with_evict_hook(forget(&journal)),
            );
            (journal, tasks)
        }
        Storage::Dir(dir) => {
            let (journal, journal_drivers) = Journal::open(dir).await?;
            drivers.extend(journal_drivers);
            let (store, driver) = SqliteTaskStore::open(
                &dir.join("tasks.sqlite"),
                settings.task_retention,
                forget(&journal),
            )
            .await?;
            drivers.push(driver);
            let tasks: Arc<dyn TaskStore> = Arc::new(store);
            (journal, tasks)
        }
        Storage::Postgres { .. } => {
            let pool = pool.ok_or_else(|| Error::Internal("no database pool".into()))?;
            let journal = Journal::from_stores(
                Arc::new(super::pg_runs::PgRunStore::new(pool.clone())),
                Arc::new(super::pg_runs::PgReplayStore::new(pool.clone())),
            );
            let store = PgTaskStore::open(pool, settings.task_retention, forget(&journal)).await?;
            let tasks: Arc<dyn TaskStore> = Arc::new(store);
            (journal, tasks)
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
    Vec<rusqlite_isle::AsyncIsleDriver>,
);

/// Blueprints in git and data outputs in SQLite under `dir`.
async fn open_dir_stores(dir: &Path) -> Result<Stores> {
    let fail = |what: &str, e: &dyn std::fmt::Display| cannot_open(dir, what, e);
    data_dir(dir)?;
    super::sqlite_sync::install()?;
    let bp_root = dir.join("blueprints");
    let bp = tokio::task::spawn_blocking(move || Git2BlueprintStore::open_or_init(bp_root))
        .await
        .map_err(|e| fail("the blueprint store", &e))?
        .map_err(|e| fail("the blueprint store", &e))?;
    let outputs = dir.join("outputs.sqlite");
    super::journal::use_wal(&outputs).await?;
    let (out, driver) = SqliteOutputStore::open(&outputs)
        .await
        .map_err(|e| fail("the data store", &e))?;
    index_output_seq(outputs)
        .await
        .map_err(|e| fail("the data store", &e))?;
    Ok((Arc::new(bp), Arc::new(out), vec![driver]))
}

/// Blueprints and data outputs in PostgreSQL; `dir` keeps only the boot ids.
fn pg_stores(dir: &Path, pool: Option<&Pool>) -> Result<Stores> {
    let pool = pool.ok_or_else(|| Error::Internal("no database pool".into()))?;
    data_dir(dir)?;
    let bp = super::pg_blueprints::PgBlueprintStore::new(pool.clone());
    let out = super::pg_outputs::PgOutputStore::new(pool.clone());
    Ok((Arc::new(bp), Arc::new(out), Vec::new()))
}

fn data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| cannot_open(dir, "the data directory", &e))
}

/// Unavailable rather than Internal: the message, naming the file, is what boot prints.
fn cannot_open(dir: &Path, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!("cannot open {what} under {}: {e}", dir.display()))
}

/// The engine's output store numbers each row `MAX(seq) + 1` and has no index on `seq`,
/// so every append scanned the whole table (19 % of the durable server's CPU, growing
/// with the store); this index makes it one b-tree lookup.
async fn index_output_seq(path: std::path::PathBuf) -> std::result::Result<(), String> {
    tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("CREATE INDEX IF NOT EXISTS ix_outputs_seq ON outputs(seq)")
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}
