//! Task runs as callers see them: records and events, the [`TaskStore`] seam where they
//! live, its in-memory default [`TaskRegistry`], and the replay that follows one task.

mod memory;
mod record;
mod store;
mod watch;

pub use memory::TaskRegistry;
pub use record::{
    TaskEvent, TaskEventKind, TaskPosition, TaskRecord, TaskState, TtlSource, STEP_IDS_KEPT,
};
pub use store::{TaskStore, EVENTS_KEPT};
pub(crate) use watch::follow;
