//! The state file's one writer: changes are queued in the order they were made (a task
//! store change and its place in the queue are taken under one lock, so a task's events
//! are written in seq order and a kill never leaves a gap), and everything queued is
//! written in one transaction (group commit). Task changes and replay rows are answered
//! once committed; run records are queued without waiting, and the queue's order puts
//! them on disk before any later change that is waited for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use mlua_swarm::store::replay::ReplayEntry;
use mlua_swarm::store::run::RunRecord;
use mlua_swarm::types::RunId;
use rusqlite_isle::AsyncIsle;
use tokio::sync::oneshot;

use super::rows;
use crate::engine::tasks::{TaskEvent, TaskRecord};
use crate::error::{Error, Result};

/// One change of the state file.
pub(in crate::engine) enum Write {
    /// A task's event, the record it produced, and the tasks retention dropped.
    Task {
        record: TaskRecord,
        event: TaskEvent,
        dropped: Vec<String>,
    },
    /// A run record as of `version` (a later version of the same run wins).
    Run { version: u64, record: RunRecord },
    /// A run record deleted.
    RunGone(RunId),
    /// A passed step's replay row.
    Replay(ReplayEntry),
    /// A worker output.
    Output(super::outputs::OutputRow),
    /// A run's replay rows from its `from_index`th on deleted; the count goes to `dropped`.
    Cut {
        run_id: RunId,
        from_index: usize,
        dropped: oneshot::Sender<usize>,
    },
}

type Waiter = oneshot::Sender<Result<()>>;

#[derive(Default)]
struct Queue {
    pending: Vec<(Write, Option<Waiter>)>,
    /// A flush task is running; it drains the queue before it stops.
    flushing: bool,
}

/// See the module doc.
pub(in crate::engine) struct GroupWriter {
    isle: AsyncIsle,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Woken after every batch, for `TaskStore::settled`.
    pub(in crate::engine) written: tokio::sync::Notify,
}

impl GroupWriter {
    pub(super) fn new(isle: AsyncIsle, path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            isle,
            path,
            queue: Mutex::new(Queue::default()),
            written: tokio::sync::Notify::new(),
        })
    }

    /// The file's connection, for reads.
    pub(in crate::engine) fn isle(&self) -> &AsyncIsle {
        &self.isle
    }

    /// The file.
    pub(in crate::engine) fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes a change with `make` and queues its write in one step; resolves with what
    /// `make` returned once the write is committed (`None`: nothing changed).
    pub(in crate::engine) async fn change<T>(
        self: &Arc<Self>,
        make: impl FnOnce() -> Result<Option<(T, Write)>>,
    ) -> Result<Option<T>> {
        let (tx, rx) = oneshot::channel();
        let value = {
            let mut queue = self.lock();
            let Some((value, write)) = make()? else {
                return Ok(None);
            };
            self.enqueue(&mut queue, write, Some(tx));
            value
        };
        self.committed(rx).await.map(|()| Some(value))
    }

    /// Queues `write` and resolves once it is committed.
    pub(in crate::engine) async fn commit(self: &Arc<Self>, write: Write) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.lock();
            self.enqueue(&mut queue, write, Some(tx));
        }
        self.committed(rx).await
    }

    /// Queues `write` without waiting for it (a failure is logged).
    pub(in crate::engine) fn send(self: &Arc<Self>, write: Write) {
        let mut queue = self.lock();
        self.enqueue(&mut queue, write, None);
    }

    fn enqueue(self: &Arc<Self>, queue: &mut Queue, write: Write, waiter: Option<Waiter>) {
        queue.pending.push((write, waiter));
        if !std::mem::replace(&mut queue.flushing, true) {
            // Its own task: a caller that goes away must not stop the others' writes.
            let writer = Arc::clone(self);
            tokio::spawn(async move { writer.flush().await });
        }
    }

    async fn committed(&self, rx: oneshot::Receiver<Result<()>>) -> Result<()> {
        match rx.await {
            Ok(done) => done,
            Err(_) => Err(self.failed("the writer stopped")),
        }
    }

    /// Writes batches until the queue is empty.
    async fn flush(&self) {
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.pending.is_empty() {
                    queue.flushing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let (writes, waiters): (Vec<Write>, Vec<Option<Waiter>>) = batch.into_iter().unzip();
            // The error as text: every waiter of the batch gets its own copy.
            let outcome: std::result::Result<(), String> = match rows::encode(writes) {
                Ok(rows) => self
                    .isle
                    .call(move |conn| rows::immediate(conn, |tx| rows::apply(tx, rows)))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            self.written.notify_waiters();
            if let Err(why) = &outcome {
                if waiters.iter().any(Option::is_none) {
                    tracing::error!(path = %self.path.display(), error = %why, "state file write failed");
                }
            }
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(outcome.clone().map_err(|why| self.failed(&why)));
            }
        }
    }

    fn failed(&self, why: &str) -> Error {
        Error::Unavailable(format!(
            "state file {} write failed: {why}",
            self.path.display()
        ))
    }
}
