//! Task runs as callers see them: records and events, the [`TaskStore`] seam where they
//! live, its in-memory default [`TaskRegistry`], and the replay that follows one task.

mod memory;
mod pg_batch;
mod pg_leases;
mod pg_reads;
mod pg_retention;
mod postgres;
mod record;
mod sqlite;
mod store;
mod watch;

pub(crate) use memory::EvictHook;
pub use memory::TaskRegistry;
pub use postgres::PgTaskStore;
pub(crate) use record::unix_ms;
pub use record::{
    RunEnd, RunStart, TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskRun, TaskState,
    TtlSource, STEP_IDS_KEPT,
};
pub use sqlite::SqliteTaskStore;
pub use store::{TaskStore, EVENTS_KEPT};
pub(crate) use watch::follow;
