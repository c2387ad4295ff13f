//! The state file's one writer: changes are queued in the order they were made (a task
//! store change and its place in the queue are taken under one lock, so a task's events
//! are written in seq order and a kill never leaves a gap), and everything queued is
//! written in one transaction (group commit). Changes someone answers for (a task
//! StartTask acknowledged, a task's end, a worker's output) are waited for; the others
//! (run records, a step's events, replay rows, RunTask's creation) are queued without
//! waiting, and the queue's order puts them on disk before any later change that is
//! waited for. What leaves the process in between waits for [`GroupWriter::settled`]:
//! a frame to an operator, for the replay rows of its run (`EngineOperator::journaled`,
//! `engine/operators.rs`).
//!
//! A change nobody waits for does not start a transaction of its own: it waits up to
//! [`LAZY_DELAY`] for one somebody waits for. While [`BUSY_TASKS`] or more tasks are
//! open, a batch is taken [`GROUP_DELAY`] after the last one, as PostgreSQL's
//! `commit_delay` does, as long as the last batch held changes of two or more waiting
//! callers: the writes of many tasks then share one transaction (its pages, WAL frames,
//! locks and thread hand-off) instead of each paying for its own; a caller alone (one
//! task, a boot resuming its runs one by one) is never delayed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use mlua_swarm::store::replay::ReplayEntry;
use mlua_swarm::store::run::RunRecord;
use mlua_swarm::types::RunId;
use rusqlite_isle::AsyncIsle;
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::commit::WriteConnection;
use super::rows;
use crate::engine::tasks::{TaskEvent, TaskRecord};
use crate::error::{Error, Result};

/// One change of the state file.
pub(in crate::engine) enum Write {
    /// A task's event, the record it produced (`None` for a step's event: the task store
    /// derives the record's step count from those events at boot), and the tasks
    /// retention dropped.
    Task {
        record: Option<TaskRecord>,
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

/// How long a busy writer gathers changes before it takes the next batch.
const GROUP_DELAY: Duration = Duration::from_millis(1);

/// How long a change nobody waits for (a run record, a step's event) waits for one that
/// somebody does, to share its transaction: one task alone then commits once per change
/// it answers for, not once per change. Longer than an operator's round trip (hook,
/// spawn, submit: about 2 ms on one host), so a task's creation rides with its first
/// output; it bounds what a `kill -9` can take of changes nobody was answered for.
const LAZY_DELAY: Duration = Duration::from_millis(10);

/// The largest emptied batch buffers kept for the next batch, in changes (a boot's or a
/// burst's larger ones are freed): about 400 KB of changes and 150 KB of rows.
const SPARE_CAPACITY: usize = 1024;

/// Open tasks from which the writer counts as busy.
const BUSY_TASKS: usize = 4;

/// Counts the open tasks (set by the task store).
type LoadGauge = Box<dyn Fn() -> usize + Send + Sync>;

#[derive(Default)]
struct Queue {
    pending: Vec<Write>,
    /// Callers waiting for a change in `pending` (at most one per change).
    waiters: Vec<Waiter>,
    spare: Spare,
    /// A flush task is running; it drains the queue before it stops.
    flushing: bool,
    /// Tasks (by task id) and runs' journals (by run id) with a change queued or being
    /// written, and how many.
    unsettled: HashMap<String, usize>,
    /// Tasks and journals whose last write failed.
    failed: HashSet<String>,
    /// Keys callers of [`GroupWriter::settled`] wait on, and how many callers.
    settling: HashMap<String, usize>,
}

/// The emptied buffers of the last batch, reused for the next (a batch's buffers grown
/// anew each time cost the allocator fresh pages).
#[derive(Default)]
struct Spare {
    writes: Vec<Write>,
    rows: Vec<rows::Row>,
}

impl Spare {
    /// Keeps emptied buffers up to [`SPARE_CAPACITY`] (a boot's or a burst's are freed).
    fn keep(&mut self, writes: Vec<Write>, mut rows: Vec<rows::Row>) {
        rows.clear();
        if writes.capacity() <= SPARE_CAPACITY {
            self.writes = writes;
        }
        if rows.capacity() <= SPARE_CAPACITY {
            self.rows = rows;
        }
    }
}

/// See the module doc.
pub(in crate::engine) struct GroupWriter {
    /// The file's connection for reads.
    isle: AsyncIsle,
    conn: WriteConnection,
    checkpoints: Mutex<Checkpointer>,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Open tasks, for the group delay.
    load: OnceLock<LoadGauge>,
    /// Woken after every batch, for [`Self::settled`].
    written: tokio::sync::Notify,
    /// Cuts a lazy flush's wait short: a change somebody waits for was queued.
    hurry: tokio::sync::Notify,
    /// The last batch held changes of two or more waiting callers.
    crowded: std::sync::atomic::AtomicBool,
}

/// What [`GroupWriter::settled`] waits on for `write`: its task, or its run's journal.
fn settle_key(write: &Write) -> Option<&str> {
    match write {
        Write::Task { event, .. } => Some(&event.task_id),
        Write::Replay(entry) => Some(entry.run_id.as_str()),
        Write::Cut { run_id, .. } => Some(run_id.as_str()),
        _ => None,
    }
}

impl GroupWriter {
    pub(super) fn new(
        isle: AsyncIsle,
        conn: WriteConnection,
        path: PathBuf,
        checkpoints: Checkpointer,
    ) -> Arc<Self> {
        Arc::new(Self {
            isle,
            conn,
            checkpoints: Mutex::new(checkpoints),
            path,
            queue: Mutex::new(Queue::default()),
            load: OnceLock::new(),
            written: tokio::sync::Notify::new(),
            hurry: tokio::sync::Notify::new(),
            crowded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The file's connection for reads.
    pub(in crate::engine) fn isle(&self) -> &AsyncIsle {
        &self.isle
    }

    /// The file.
    pub(in crate::engine) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Counts the open tasks with `gauge` from now on (the first gauge set stays).
    pub(in crate::engine) fn measure_load(&self, gauge: LoadGauge) {
        let _ = self.load.set(gauge);
    }

    /// [`BUSY_TASKS`] or more tasks are open. Then a batch is delayed if several callers
    /// waited on the last one (one caller after another, a boot resuming its runs, never
    /// is), and commits off the runtime ([`WriteConnection::commit`]).
    fn loaded(&self) -> bool {
        self.load.get().is_some_and(|open| open() >= BUSY_TASKS)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        crate::engine::lock(&self.queue)
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

    /// [`Self::change`] without waiting for the commit (a failure is logged).
    pub(in crate::engine) fn change_queued<T>(
        self: &Arc<Self>,
        make: impl FnOnce() -> Result<Option<(T, Write)>>,
    ) -> Result<Option<T>> {
        let mut queue = self.lock();
        let Some((value, write)) = make()? else {
            return Ok(None);
        };
        self.enqueue(&mut queue, write, None);
        Ok(Some(value))
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

    /// Resolves once no change of `key` (a task id, or a run id for its journal) is
    /// queued or being written; UNAVAILABLE if its last write failed. A change of a key
    /// somebody waits on here is written without waiting for another.
    pub(in crate::engine) async fn settled(&self, key: &str) -> Result<()> {
        let mut waiting: Option<Settling<'_>> = None;
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            {
                let mut queue = self.lock();
                if !queue.unsettled.contains_key(key) {
                    if queue.failed.contains(key) {
                        return Err(self.failed(&format!(
                            "the last change of {key} was not stored; read it again"
                        )));
                    }
                    return Ok(());
                }
                if waiting.is_none() {
                    *queue.settling.entry(key.to_string()).or_default() += 1;
                    waiting = Some(Settling(self, key));
                    // A flush already waiting lazily stops waiting; a later one sees the key.
                    self.hurry.notify_waiters();
                }
            }
            written.await;
        }
    }

    /// Ends the checkpoint thread and closes the write connection (the file is about to
    /// close; call after [`Self::drained`]).
    pub(in crate::engine) fn close(&self) {
        crate::engine::lock(&self.checkpoints).stop();
        self.conn.close();
    }

    /// Resolves once everything queued is written (or failed): before the file closes.
    pub(in crate::engine) async fn drained(&self) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            {
                let queue = self.lock();
                if queue.pending.is_empty() && !queue.flushing {
                    return;
                }
            }
            written.await;
        }
    }

    fn enqueue(self: &Arc<Self>, queue: &mut Queue, write: Write, waiter: Option<Waiter>) {
        if let Some(key) = settle_key(&write) {
            match queue.unsettled.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    queue.unsettled.insert(key.to_string(), 1);
                }
            }
        }
        let waited = waiter.is_some();
        queue.pending.push(write);
        queue.waiters.extend(waiter);
        if !std::mem::replace(&mut queue.flushing, true) {
            // Its own task: a caller that goes away must not stop the others' writes.
            let writer = Arc::clone(self);
            tokio::spawn(async move { writer.flush().await });
        } else if waited {
            self.hurry.notify_waiters();
        }
    }

    async fn committed(&self, rx: oneshot::Receiver<Result<()>>) -> Result<()> {
        match rx.await {
            Ok(done) => done,
            Err(_) => Err(self.failed("the writer stopped")),
        }
    }

    /// Writes batches until the queue is empty. Changes nobody waits for (nor waits on in
    /// [`Self::settled`]) first wait up to [`LAZY_DELAY`] for one that somebody does.
    async fn flush(&self) {
        loop {
            // Listening before looking: a change queued after the look wakes the wait.
            let hurry = self.hurry.notified();
            tokio::pin!(hurry);
            hurry.as_mut().enable();
            let loaded = self.loaded();
            let lazy = {
                let queue = self.lock();
                !queue.pending.is_empty()
                    && queue.waiters.is_empty()
                    && queue.pending.iter().all(|write| {
                        settle_key(write).is_none_or(|k| !queue.settling.contains_key(k))
                    })
            };
            if lazy {
                tokio::select! {
                    () = tokio::time::sleep(LAZY_DELAY) => {}
                    () = hurry => {}
                }
            } else if loaded && self.crowded.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(GROUP_DELAY).await;
            }
            let (mut writes, waiters, mut rows) = {
                let mut queue = self.lock();
                if queue.pending.is_empty() {
                    queue.flushing = false;
                    drop(queue);
                    self.written.notify_waiters();
                    return;
                }
                let Spare { writes, rows } = std::mem::take(&mut queue.spare);
                (
                    std::mem::replace(&mut queue.pending, writes),
                    std::mem::take(&mut queue.waiters),
                    rows,
                )
            };
            self.crowded
                .store(waiters.len() >= 2, std::sync::atomic::Ordering::Relaxed);
            let count = writes.len();
            let keys: Vec<String> = writes
                .iter()
                .filter_map(|w| settle_key(w).map(str::to_string))
                .collect();
            let outcome = match rows::encode(&mut writes, &mut rows) {
                Ok(()) => {
                    let (emptied, outcome) = self.conn.commit(rows, !loaded).await;
                    rows = emptied;
                    outcome
                }
                Err(e) => Err(e.to_string()),
            };
            if outcome.is_ok() {
                crate::metrics::state_committed(count);
            }
            self.settle(keys, outcome.is_ok(), writes, rows);
            if let Err(why) = &outcome {
                if waiters.len() < count {
                    // Changes nobody waits for: nobody else hears of the failure.
                    tracing::error!(path = %self.path.display(), error = %why, "state file write failed");
                }
            }
            for waiter in waiters {
                let _ = waiter.send(outcome.clone().map_err(|why| self.failed(&why)));
            }
        }
    }

    /// Counts the written changes of `keys` off, keeps the batch's emptied buffers
    /// ([`Spare`]), and wakes [`Self::settled`].
    fn settle(&self, keys: Vec<String>, ok: bool, writes: Vec<Write>, rows: Vec<rows::Row>) {
        {
            let mut queue = self.lock();
            queue.spare.keep(writes, rows);
            for id in keys {
                if let Some(n) = queue.unsettled.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        queue.unsettled.remove(&id);
                    }
                }
                if ok {
                    if !queue.failed.is_empty() {
                        queue.failed.remove(&id);
                    }
                } else {
                    queue.failed.insert(id);
                }
            }
        }
        self.written.notify_waiters();
    }

    fn failed(&self, why: &str) -> Error {
        Error::Unavailable(format!(
            "state file {} write failed: {why}",
            self.path.display()
        ))
    }
}

/// A caller counted in [`Queue::settling`] under its key, uncounted when it stops
/// waiting (done or dropped).
struct Settling<'a>(&'a GroupWriter, &'a str);

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        if let Some(n) = queue.settling.get_mut(self.1) {
            *n -= 1;
            if *n == 0 {
                queue.settling.remove(self.1);
            }
        }
    }
}
