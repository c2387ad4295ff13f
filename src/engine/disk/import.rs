//! Moving in the stores of an older build, which kept the engine's own stores in
//! `runs.sqlite`, `journal.sqlite` and `outputs.sqlite`: their rows are copied into the
//! state file in one transaction each, then the old files are renamed `*.imported` (a
//! kill in between copies them again, harmlessly: run records are replaced, replay and
//! output rows kept once).

use std::path::{Path, PathBuf};

use mlua_swarm::store::replay::{ReplayEntry, ReplayStore, SqliteReplayStore};
use mlua_swarm::store::run::{RunListFilter, RunRecord, RunStore, SqliteRunStore};
use rusqlite::params;
use rusqlite_isle::AsyncIsle;

use super::rows::{immediate, insert_replay};
use crate::error::Result;

const OLD_RUNS: &str = "runs.sqlite";
const OLD_JOURNAL: &str = "journal.sqlite";
const OLD_OUTPUTS: &str = "outputs.sqlite";

/// Copies `dir`'s older output file into the state file, if there is one.
pub(super) async fn older_outputs(dir: &Path, isle: &AsyncIsle) -> Result<()> {
    let path = dir.join(OLD_OUTPUTS);
    if !path.exists() {
        return Ok(());
    }
    let old = path.to_string_lossy().into_owned();
    let copied = isle
        .call(move |conn| {
            conn.execute("ATTACH DATABASE ?1 AS old", [old])?;
            let copied = immediate(conn, |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO outputs (id, task_id, attempt, producer_agent, \
                       event_json, parent_refs_json, seq) \
                     SELECT id, task_id, attempt, producer_agent, event_json, \
                       parent_refs_json, seq FROM old.outputs",
                    [],
                )
            });
            conn.execute("DETACH DATABASE old", [])?;
            copied
        })
        .await
        .map_err(|e| super::cannot_open(&path, &e))?;
    retire(&path).map_err(|e| super::cannot_open(&path, &e))?;
    tracing::info!(rows = copied, "moved the data outputs into the state file");
    Ok(())
}

/// Copies `dir`'s older run and journal files into the state file, if there are any.
pub(super) async fn older_journal(dir: &Path, isle: &AsyncIsle) -> Result<()> {
    let runs_path = dir.join(OLD_RUNS);
    let journal_path = dir.join(OLD_JOURNAL);
    if !runs_path.exists() && !journal_path.exists() {
        return Ok(());
    }
    let runs = read_runs(&runs_path).await?;
    let rows = read_rows(&journal_path, &runs).await?;
    let (n_runs, n_rows) = (runs.len(), rows.len());
    let state = dir.join(super::STATE_FILE);
    isle.call(move |conn| immediate(conn, |tx| insert(tx, &runs, &rows)))
        .await
        .map_err(|e| super::cannot_open(&state, &e))?;
    for path in [&runs_path, &journal_path] {
        retire(path).map_err(|e| super::cannot_open(path, &e))?;
    }
    tracing::info!(
        runs = n_runs,
        rows = n_rows,
        "moved the run journal into the state file"
    );
    Ok(())
}

async fn read_runs(path: &Path) -> Result<Vec<RunRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let (store, driver) = SqliteRunStore::open(path)
        .await
        .map_err(|e| super::cannot_open(path, &e))?;
    let runs = store.list(&RunListFilter::default()).await;
    drop(store);
    let _ = driver.shutdown().await;
    runs.map_err(|e| super::cannot_open(path, &e))
}

async fn read_rows(path: &Path, runs: &[RunRecord]) -> Result<Vec<ReplayEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let (store, driver) = SqliteReplayStore::open(path)
        .await
        .map_err(|e| super::cannot_open(path, &e))?;
    let mut rows = Vec::new();
    for run in runs {
        match store.list_by_run(&run.id).await {
            Ok(mut held) => rows.append(&mut held),
            Err(e) => {
                drop(store);
                let _ = driver.shutdown().await;
                return Err(super::cannot_open(path, &e));
            }
        }
    }
    drop(store);
    let _ = driver.shutdown().await;
    Ok(rows)
}

fn insert(
    tx: &rusqlite::Connection,
    runs: &[RunRecord],
    rows: &[ReplayEntry],
) -> rusqlite::Result<()> {
    for run in runs {
        let json = serde_json::to_string(run)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO runs (run_id, version, record) VALUES (?1, 0, ?2)",
        )?
        .execute(params![run.id.as_str(), json])?;
    }
    for e in rows {
        insert_replay(tx, e)?;
    }
    Ok(())
}

/// Renames a moved-in file (and its WAL companions) to `<name>.imported`.
fn retire(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}.imported{suffix}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mlua_swarm::store::output::{ContentRef, OutputEvent, OutputStore, SqliteOutputStore};
    use mlua_swarm::store::replay::{ReplayEntry, ReplayStore, SqliteReplayStore};
    use mlua_swarm::store::run::{RunRecord, RunStatus, RunStore, SqliteRunStore};
    use mlua_swarm::types::{RunId, TaskId};

    use super::super::{open, DiskOutputStore, DiskReplayStore, DiskRunStore};
    use super::{OLD_JOURNAL, OLD_OUTPUTS, OLD_RUNS};

    fn run(id: &RunId) -> RunRecord {
        RunRecord {
            id: id.clone(),
            task_id: TaskId::parse("T-1").expect("task id"),
            status: RunStatus::Running,
            step_entries: Vec::new(),
            degradations: Vec::new(),
            operator_sid: None,
            current: Default::default(),
            next_generation: 0,
            result_ref: None,
            input_json: Some("{}".into()),
            created_at: 1,
            updated_at: 1,
        }
    }

    fn done(text: &str) -> OutputEvent {
        OutputEvent::Final {
            content: ContentRef::inline_text(text),
            ok: true,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_builds_runs_journal_and_outputs_move_into_the_state_file() {
        let dir = std::env::temp_dir().join(format!("mse-import-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let id = RunId::parse("R-1").expect("run id");
        {
            let (runs, d1) = SqliteRunStore::open(dir.join(OLD_RUNS))
                .await
                .expect("runs");
            runs.create(run(&id)).await.expect("create");
            let (rows, d2) = SqliteReplayStore::open(dir.join(OLD_JOURNAL))
                .await
                .expect("rows");
            for step in ["a", "b"] {
                let entry = ReplayEntry {
                    run_id: id.clone(),
                    step_ref: step.into(),
                    input_hash: "h".into(),
                    occurrence: 0,
                    ctx_snapshot_json: "{}".into(),
                    step_output_json: format!("\"{step}\""),
                    created_at: 1,
                };
                rows.append(entry).await.expect("append");
            }
            let (outs, d3) = SqliteOutputStore::open(dir.join(OLD_OUTPUTS))
                .await
                .expect("outputs");
            outs.append("task-1", 1, "w", done("old"), Vec::new())
                .await
                .expect("output");
            drop((runs, rows, outs));
            for d in [d1, d2, d3] {
                d.shutdown().await.expect("shutdown");
            }
        }

        let (writer, driver) = open(&dir).await.expect("open");
        let runs = DiskRunStore::load(Arc::clone(&writer)).await.expect("runs");
        assert_eq!(runs.get(&id).await.expect("run").status, RunStatus::Running);
        let rows = DiskReplayStore::new(Arc::clone(&writer));
        let steps: Vec<String> = rows
            .list_by_run(&id)
            .await
            .expect("rows")
            .into_iter()
            .map(|r| r.step_ref)
            .collect();
        assert_eq!(steps, ["a", "b"]);
        let outs = DiskOutputStore::open(Arc::clone(&writer))
            .await
            .expect("outputs");
        let old = outs.get_latest_by_name("w").await.expect("old output");
        let new = outs
            .append("task-2", 1, "w", done("new"), Vec::new())
            .await
            .expect("append");
        assert_ne!(old.id, new);
        assert_eq!(outs.get_latest_by_name("w").await.expect("newest").id, new);
        assert_eq!(
            outs.list_for_attempt("task-1", 1)
                .await
                .expect("list")
                .len(),
            1
        );
        for name in [OLD_RUNS, OLD_JOURNAL, OLD_OUTPUTS] {
            assert!(!dir.join(name).exists(), "{name} still there");
            assert!(
                dir.join(format!("{name}.imported")).exists(),
                "{name} not kept"
            );
        }
        // A cut drops the rows from the index on.
        assert_eq!(rows.delete_from(&id, 1).await.expect("cut"), 1);
        assert_eq!(rows.list_by_run(&id).await.expect("rows").len(), 1);
        drop((runs, rows, outs, writer));
        driver.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
