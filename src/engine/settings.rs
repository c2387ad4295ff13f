//! What the engine host is told at start: where state lives and the limits it keeps. The
//! server's configuration builds these (`From<&Config>` in `config`); the engine never
//! reads the configuration itself.

use std::path::{Path, PathBuf};

use crate::limits::SizePolicy;
use crate::pg::DatabaseUrl;

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Blueprints in a git store and data outputs in SQLite under this directory.
    Dir(PathBuf),
    /// Tasks, runs, the replay journal and operator sessions in PostgreSQL (the system
    /// of record several replicas can share); Blueprints, data outputs and boot ids
    /// still under the directory.
    Postgres {
        /// The database.
        url: DatabaseUrl,
        /// Where Blueprints and data outputs are kept.
        dir: PathBuf,
    },
    /// Everything in memory.
    Ephemeral,
}

impl Storage {
    /// The data directory, unless everything is in memory.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Storage::Dir(dir) | Storage::Postgres { dir, .. } => Some(dir),
            Storage::Ephemeral => None,
        }
    }

    /// True when state survives a restart.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Storage::Ephemeral)
    }
}

/// What happens at boot to tasks a restart interrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResumeMode {
    /// Resume them: at once when they need no operator session, else when the sessions
    /// they need attach.
    #[default]
    Auto,
    /// They wait for `ResumeTask`.
    Manual,
}

/// This process among the replicas sharing a database (`--database-url`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replica {
    /// Its id (`--replica-id`): the `runner` of the tasks it drives.
    pub id: String,
    /// Other replicas share the database (`--nats-url`): boot takes only this replica's
    /// own tasks and those of dead replicas, and the tasks of replicas that go silent are
    /// taken over while serving. Otherwise boot takes every unfinished task.
    pub shared: bool,
}

/// The engine host's settings.
#[derive(Clone)]
pub struct EngineSettings {
    /// Where Blueprints and data outputs are kept.
    pub storage: Storage,
    /// Secret signing worker capability tokens; `None` = random per process.
    pub token_secret: Option<Vec<u8>>,
    /// Finished tasks kept for GetTask / ListTasks.
    pub task_retention: usize,
    /// The size limits of stored values and built messages.
    pub size: SizePolicy,
    /// What boot does with interrupted tasks.
    pub resume: ResumeMode,
    /// This replica, when the database is shared.
    pub replica: Replica,
}

impl std::fmt::Debug for EngineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSettings")
            .field("storage", &self.storage)
            .field("token_secret", &self.token_secret.as_ref().map(|_| "<set>"))
            .field("task_retention", &self.task_retention)
            .field("size", &self.size)
            .field("resume", &self.resume)
            .field("replica", &self.replica)
            .finish()
    }
}

impl EngineSettings {
    /// The directory of the git Blueprint store, when Blueprints are there (not in
    /// memory, not in PostgreSQL).
    pub(super) fn blueprint_root(&self) -> Option<PathBuf> {
        match &self.storage {
            Storage::Dir(dir) => Some(dir.join("blueprints")),
            Storage::Postgres { .. } | Storage::Ephemeral => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_not_printed_and_the_blueprint_root_follows_the_storage() {
        let s = EngineSettings {
            storage: Storage::Dir("/data".into()),
            token_secret: Some(vec![251, 252, 253]),
            task_retention: 3,
            size: SizePolicy::new(4 << 20, 1 << 20),
            resume: ResumeMode::Auto,
            replica: Replica::default(),
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("<set>") && !shown.contains("252"), "{shown}");
        assert_eq!(s.blueprint_root(), Some(PathBuf::from("/data/blueprints")));
        let s = EngineSettings {
            storage: Storage::Ephemeral,
            ..s
        };
        assert_eq!(s.blueprint_root(), None);
    }
}
