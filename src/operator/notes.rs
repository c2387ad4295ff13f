//! The hot-path notes of a durable session store (attach epoch, seq / ack marks, last
//! seen), merged in memory per session and taken in batches by the store's flusher:
//! they only ever rise, so a batch may be written in any order. An attach is written at
//! once (the epoch after a restart must pass every epoch a client saw); marks and last
//! seen gather for [`WRITE_BEHIND`], and a `kill -9` loses at most that window's: a
//! restored session continues past its reserved seqs (`super::reservation`), not past
//! these marks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::outbox::Marks;

/// How long marks and last-seen notes gather before the flusher writes them: an operator
/// acking every frame costs one write per window rather than one per frame (an attach,
/// or a store closing, cuts the window short).
pub(super) const WRITE_BEHIND: Duration = Duration::from_millis(100);

/// Hot-path notes of one session not yet written (0 = nothing to raise).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Note {
    pub(super) epoch: u64,
    pub(super) marks: Marks,
    pub(super) seen_ms: i64,
}

/// The notes of every session, and the flusher's wake-up.
#[derive(Debug, Default)]
pub(super) struct Notes {
    pending: Mutex<HashMap<String, Note>>,
    wake: Notify,
    /// Cuts the flusher's [`WRITE_BEHIND`] short (an attach, the store closing).
    hurry: Notify,
    /// Set when the store closes or drops: the flusher ends.
    done: AtomicBool,
}

impl Notes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Note>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn raise(&self, sid: &str, f: impl FnOnce(&mut Note)) {
        f(self.lock().entry(sid.to_string()).or_default());
        self.wake.notify_one();
    }

    /// Wakes the flusher and has it write without waiting out the window.
    fn write_now(&self) {
        self.wake.notify_one();
        self.hurry.notify_one();
    }

    /// `SessionStore::record_attach`.
    pub(super) fn attach(&self, sid: &str, epoch: u64, at: SystemTime) {
        self.raise(sid, |n| {
            n.epoch = n.epoch.max(epoch);
            n.seen_ms = n.seen_ms.max(unix_ms(at));
        });
        self.write_now();
    }

    /// `SessionStore::record_marks`.
    pub(super) fn marks(&self, sid: &str, marks: Marks) {
        self.raise(sid, |n| {
            n.marks.last_seq = n.marks.last_seq.max(marks.last_seq);
            n.marks.acked = n.marks.acked.max(marks.acked);
        });
    }

    /// `SessionStore::touch`.
    pub(super) fn touch(&self, sid: &str, at: SystemTime) {
        self.raise(sid, |n| n.seen_ms = n.seen_ms.max(unix_ms(at)));
    }

    /// Everything pending, leaving nothing.
    pub(super) fn take(&self) -> HashMap<String, Note> {
        std::mem::take(&mut *self.lock())
    }

    /// Waits for the next note and then up to [`WRITE_BEHIND`], so the notes of that
    /// window are taken together; false once the store is closing.
    pub(super) async fn next(&self) -> bool {
        if self.is_done() {
            return false;
        }
        self.wake.notified().await;
        tokio::select! {
            () = tokio::time::sleep(WRITE_BEHIND) => {}
            () = self.hurry.notified() => {}
        }
        true
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Ends the flusher (it writes what is pending first when woken).
    pub(super) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.write_now();
    }
}

/// Unix milliseconds, as the stores keep times.
pub(super) fn unix_ms(t: SystemTime) -> i64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The time of stored Unix milliseconds.
pub(super) fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
