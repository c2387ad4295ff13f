//! The embedded schema: numbered migrations applied at start in one transaction, under
//! an advisory lock so replicas starting together apply each once, recorded in
//! `mse_schema`. A database newer than this build is refused.

use deadpool_postgres::Object;

use crate::error::Error;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Key of the advisory lock that serialises migrations (any fixed number).
const MIGRATION_LOCK: i64 = 0x6d73_655f_7363_6865;

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// Version 1: tasks, runs, the replay journal, operator sessions, replicas.
///
/// Ready for several replicas, though one process uses it today: `replicas` holds each
/// replica's heartbeat by the database's clock; `runner` / `lease_epoch` on tasks and
/// runs name the replica that drives them and fence a stale one; `gateway` on sessions
/// names the replica holding the stream.
const V1: &str = "
CREATE TABLE replicas (
    id           text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    draining     boolean NOT NULL DEFAULT false
);

CREATE TABLE tasks (
    task_id     text PRIMARY KEY,
    rev         bigint NOT NULL,
    finished_ms bigint,
    record      jsonb NOT NULL,
    launch      jsonb,
    runner      text,
    lease_epoch bigint NOT NULL DEFAULT 0,
    created     bigserial
);
CREATE INDEX tasks_running ON tasks (runner) WHERE finished_ms IS NULL;

CREATE TABLE task_events (
    task_id text NOT NULL,
    seq     bigint NOT NULL,
    at_ms   bigint NOT NULL,
    kind    jsonb NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE runs (
    id          text PRIMARY KEY,
    task_id     text NOT NULL,
    status      text NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    record      jsonb NOT NULL,
    runner      text,
    lease_epoch bigint NOT NULL DEFAULT 0,
    seq         bigserial
);
CREATE INDEX runs_by_task ON runs (task_id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

CREATE TABLE replay_log (
    seq         bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    step_ref    text NOT NULL,
    input_hash  text NOT NULL,
    occurrence  integer NOT NULL,
    ctx_json    text NOT NULL,
    output_json text NOT NULL,
    created_at  bigint NOT NULL,
    UNIQUE (run_id, step_ref, input_hash, occurrence)
);
CREATE INDEX replay_by_run ON replay_log (run_id, seq);

CREATE TABLE sessions (
    sid          text PRIMARY KEY,
    token_hash   text NOT NULL,
    roles        jsonb NOT NULL,
    epoch        bigint NOT NULL,
    last_seq     bigint NOT NULL,
    acked        bigint NOT NULL,
    created_ms   bigint NOT NULL,
    last_seen_ms bigint NOT NULL,
    deleted_ms   bigint,
    gateway      text
);
CREATE INDEX sessions_deleted ON sessions (deleted_ms) WHERE deleted_ms IS NOT NULL;

-- One row per role a live session holds: the primary key is the unique claim.
CREATE TABLE session_roles (
    role text PRIMARY KEY,
    sid  text NOT NULL REFERENCES sessions (sid) ON DELETE CASCADE
);
CREATE INDEX session_roles_by_sid ON session_roles (sid);
";

/// Version 2: Blueprints. `blueprint_versions` holds each version's canonical YAML (its
/// hash is the version), `blueprint_history` each head move, `blueprint_heads` the head
/// (moved by compare-and-set) and the archive mark.
const V2: &str = "
CREATE TABLE blueprint_versions (
    id        text NOT NULL,
    version   text NOT NULL,
    yaml      text NOT NULL,
    trace     jsonb NOT NULL,
    rationale text NOT NULL,
    PRIMARY KEY (id, version)
);

CREATE TABLE blueprint_history (
    seq     bigserial PRIMARY KEY,
    id      text NOT NULL,
    version text NOT NULL
);
CREATE INDEX blueprint_history_by_id ON blueprint_history (id, seq);

CREATE TABLE blueprint_heads (
    id       text PRIMARY KEY,
    version  text NOT NULL,
    archived boolean NOT NULL DEFAULT false
);
";

/// Version 3: data outputs (the engine's `OutputStore`), "latest" by `seq`.
const V3: &str = "
CREATE TABLE outputs (
    seq            bigserial PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    task_id        text NOT NULL,
    attempt        bigint NOT NULL,
    producer_agent text NOT NULL,
    event          jsonb NOT NULL,
    parent_refs    jsonb NOT NULL
);
CREATE INDEX outputs_by_attempt ON outputs (task_id, attempt, seq);
CREATE INDEX outputs_by_producer ON outputs (producer_agent, seq);
CREATE INDEX outputs_by_producer_run ON outputs (producer_agent, task_id, attempt, seq);
";

/// Applies the migrations the database lacks, all in one transaction.
pub(super) async fn migrate(client: &mut Object) -> Result<(), Error> {
    let fail = |e: tokio_postgres::Error| super::error("schema", &e);
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let fresh: bool = tx
        .query_one("SELECT to_regclass('mse_schema') IS NULL", &[])
        .await
        .map_err(fail)?
        .get(0);
    if fresh {
        tx.batch_execute(
            "CREATE TABLE mse_schema (
                version    integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(fail)?;
    }
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM mse_schema", &[])
        .await
        .map_err(fail)?;
    let current: i32 = row.get(0);
    if current > SCHEMA_VERSION {
        return Err(Error::FailedPrecondition(format!(
            "the database schema is version {current}, newer than this build's \
             {SCHEMA_VERSION}; run a newer mse-grpc against it"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute("INSERT INTO mse_schema (version) VALUES ($1)", &[&version])
            .await
            .map_err(fail)?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await.map_err(fail)
}
