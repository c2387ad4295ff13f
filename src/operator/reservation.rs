//! Seq reservations of a session whose store outlives the process. Its marks are written
//! behind, so after a `kill -9` the stored last seq may lag what a client saw; a frame
//! therefore goes out only once its seq is reserved in the store, and a restored (or
//! adopted) session continues past the reservation, never reusing a seq.
//!
//! Seqs are reserved [`SEQ_BLOCK`] at a time, the next block asked for when half of the
//! current one is used: one store write per [`SEQ_BLOCK`] / 2 frames, and a stream waits
//! for one only on the first frame after its session was opened, restored or moved.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::outbox::{Marks, Outbox};
use super::session::OperatorSession;

/// Seqs reserved per store write.
pub(super) const SEQ_BLOCK: u64 = 1024;

/// How long a failed reservation waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl OperatorSession {
    /// Gates `outbox` if the store outlives the process: frames past its last seq wait
    /// for a reservation. A new outbox starts at a seq the store holds (0, or the record's
    /// last seq, which covers every reservation this object was granted).
    pub(super) fn gate(&self, outbox: &mut Outbox) {
        if self.links.store.outlives_process() {
            outbox.gate();
        }
    }

    /// The highest seq this object asked its store to reserve.
    pub(super) fn seqs_asked(&self) -> u64 {
        self.seqs_asked.load(Ordering::Acquire)
    }

    /// The marks moved: they are noted in the store (written behind), and the next block
    /// of seqs is reserved once half of the current one is used.
    pub(super) fn note_marks(&self, marks: Marks) {
        self.links.store.record_marks(&self.sid, marks);
        self.reserve_ahead(marks.last_seq);
    }

    /// Asks for the next block of seqs if `last_seq` used half of the current one.
    pub(super) fn reserve_ahead(&self, last_seq: u64) {
        if !self.links.store.outlives_process() {
            return;
        }
        let asked = &self.seqs_asked;
        if last_seq.saturating_add(SEQ_BLOCK / 2) <= asked.load(Ordering::Acquire) {
            return;
        }
        let upto = last_seq.saturating_add(SEQ_BLOCK);
        if asked.fetch_max(upto, Ordering::AcqRel) >= upto {
            return;
        }
        if let Some(session) = self.me.upgrade() {
            tokio::spawn(session.reserve(upto));
        }
    }

    /// Writes the reservation, then lets the frames up to `upto` go out. A store that
    /// fails is tried again every [`RETRY_AFTER`] (the frames wait) until the session
    /// closes or nothing but this task holds it.
    async fn reserve(self: Arc<Self>, upto: u64) {
        loop {
            match self.links.store.reserve_seqs(&self.sid, upto).await {
                Ok(()) => {
                    self.lock().outbox.reserved(upto);
                    self.bump();
                    return;
                }
                Err(e) => {
                    tracing::warn!(sid = %self.sid, error = %e, "operator session: seqs not reserved; its frames wait, retrying");
                    if self.lock().closed.is_some() || Arc::strong_count(&self) == 1 {
                        return;
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}
