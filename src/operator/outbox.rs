//! The outbox of one session: every sequenced frame sent and not yet acknowledged, in seq
//! order, with the seq / cumulative-ack marks. A stream reads it through a cursor, so a
//! re-attach re-sends exactly the unacknowledged frames, in order. A session whose
//! store outlives the process sends a frame only once its seq is reserved in that store
//! ([`Outbox::gate`]), so a restarted server never reuses a seq a client saw.

use std::collections::VecDeque;

use super::frame::{ServerBody, ServerFrame};

/// The seq / ack watermark of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// Highest seq assigned.
    pub last_seq: u64,
    /// Highest seq acknowledged (cumulative).
    pub acked: u64,
}

/// Sent, unacknowledged frames, at most `window` of them.
#[derive(Debug)]
pub(super) struct Outbox {
    marks: Marks,
    frames: VecDeque<ServerFrame>,
    window: usize,
    /// Frames up to this seq may be sent (`u64::MAX`: no gate).
    sendable_to: u64,
}

impl Outbox {
    /// An empty outbox holding at most `window` unacknowledged frames.
    pub(super) fn new(window: usize) -> Self {
        Self {
            marks: Marks::default(),
            frames: VecDeque::new(),
            window,
            sendable_to: u64::MAX,
        }
    }

    /// An empty outbox continuing after the marks of a previous process: every frame up
    /// to `last_seq` counts as sent and acknowledged (none of them will come again).
    pub(super) fn resumed(window: usize, last_seq: u64) -> Self {
        let mut outbox = Self::new(window);
        outbox.marks = Marks {
            last_seq,
            acked: last_seq,
        };
        outbox
    }

    /// The first attach after a restart, from a client that saw up to `seen` from the
    /// previous process (which may have sent seqs past the marks it last stored): the
    /// frames queued since the restart move after `seen`, in order, so none reuses a seq
    /// the client already holds. Returns each moved frame's (old, new) seq.
    pub(super) fn skip_to(&mut self, seen: u64) -> Vec<(u64, u64)> {
        if seen <= self.marks.acked {
            return Vec::new();
        }
        let mut next = seen;
        let moved = self
            .frames
            .iter_mut()
            .map(|frame| {
                next += 1;
                let old = std::mem::replace(&mut frame.seq, next);
                (old, next)
            })
            .collect();
        self.marks = Marks {
            last_seq: next,
            acked: seen,
        };
        moved
    }

    /// Queues `body` with the next seq and returns it; None while the window is full.
    pub(super) fn push(&mut self, body: ServerBody) -> Option<u64> {
        if self.is_full() {
            return None;
        }
        self.marks.last_seq += 1;
        let seq = self.marks.last_seq;
        self.frames.push_back(ServerFrame { seq, body });
        Some(seq)
    }

    /// Cumulative ack: drops every frame up to `seq`. An ack at or below the current one
    /// changes nothing; one beyond the last seq sent is refused with that last seq.
    pub(super) fn ack(&mut self, seq: u64) -> Result<(), u64> {
        if seq > self.marks.last_seq {
            return Err(self.marks.last_seq);
        }
        if seq > self.marks.acked {
            self.marks.acked = seq;
            while self.frames.front().is_some_and(|f| f.seq <= seq) {
                self.frames.pop_front();
            }
        }
        Ok(())
    }

    /// From now on a frame is sent only once its seq is reserved ([`Self::reserved`]);
    /// seqs up to the current last seq count as reserved.
    pub(super) fn gate(&mut self) {
        self.sendable_to = self.marks.last_seq;
    }

    /// Seqs up to `upto` are reserved; their frames may be sent.
    pub(super) fn reserved(&mut self, upto: u64) {
        self.sendable_to = self.sendable_to.max(upto);
    }

    /// The first unacknowledged frame after `cursor` whose seq may be sent: what a stream
    /// that delivered up to `cursor` sends next.
    pub(super) fn next_after(&self, cursor: u64) -> Option<&ServerFrame> {
        self.next_queued_after(cursor)
            .filter(|f| f.seq <= self.sendable_to)
    }

    /// [`Self::next_after`] without the gate: for a closed session's last frames (it is
    /// never restored, so its seqs cannot come again).
    pub(super) fn next_queued_after(&self, cursor: u64) -> Option<&ServerFrame> {
        let cursor = cursor.max(self.marks.acked);
        let idx = self.frames.partition_point(|f| f.seq <= cursor);
        self.frames.get(idx)
    }

    /// Most unacknowledged frames it holds.
    pub(super) fn window(&self) -> usize {
        self.window
    }

    /// True when no further frame fits.
    pub(super) fn is_full(&self) -> bool {
        self.frames.len() >= self.window
    }

    /// The seq / ack marks.
    pub(super) fn marks(&self) -> Marks {
        self.marks
    }

    /// Highest seq assigned.
    pub(super) fn last_seq(&self) -> u64 {
        self.marks.last_seq
    }

    /// Highest seq acknowledged.
    pub(super) fn acked(&self) -> u64 {
        self.marks.acked
    }

    /// Unacknowledged frames held.
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Forgets the unacknowledged frames (nobody will read them); the marks stay.
    pub(super) fn clear(&mut self) {
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(n: u64) -> ServerBody {
        ServerBody::Ping { nonce: n }
    }

    fn filled(window: usize, n: u64) -> Outbox {
        let mut o = Outbox::new(window);
        for i in 0..n {
            assert!(o.push(ping(i)).is_some());
        }
        o
    }

    fn read_from(o: &Outbox, mut cursor: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(f) = o.next_after(cursor) {
            cursor = f.seq;
            seqs.push(f.seq);
        }
        seqs
    }

    #[test]
    fn seqs_strictly_increase_from_one() {
        let mut o = Outbox::new(100);
        let seqs: Vec<u64> = (0..5).filter_map(|i| o.push(ping(i))).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        o.ack(5).expect("ack");
        assert_eq!(o.push(ping(9)), Some(6), "acks never reuse a seq");
    }

    #[test]
    fn a_cumulative_ack_drops_exactly_the_frames_up_to_it() {
        let mut o = filled(100, 5);
        o.ack(3).expect("ack 3");
        assert_eq!(o.len(), 2);
        assert_eq!(read_from(&o, 0), vec![4, 5]);
        assert_eq!(
            o.marks(),
            Marks {
                last_seq: 5,
                acked: 3
            }
        );
        o.ack(2).expect("an older ack is harmless");
        assert_eq!(o.acked(), 3, "acks never go backwards");
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn an_ack_beyond_the_last_seq_is_refused_and_changes_nothing() {
        let mut o = filled(100, 3);
        assert_eq!(o.ack(4), Err(3));
        assert_eq!(o.acked(), 0);
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn replay_from_the_last_ack_yields_the_unacked_frames_in_order() {
        let mut o = filled(100, 6);
        o.ack(2).expect("ack");
        assert_eq!(read_from(&o, o.acked()), vec![3, 4, 5, 6]);
        assert_eq!(
            read_from(&o, 4),
            vec![5, 6],
            "a cursor resumes after itself"
        );
        assert_eq!(read_from(&o, 1), vec![3, 4, 5, 6], "never below the ack");
        assert_eq!(read_from(&o, o.last_seq()), Vec::<u64>::new());
    }

    #[test]
    fn a_full_window_refuses_until_acked() {
        let mut o = filled(3, 3);
        assert!(o.is_full());
        assert_eq!(o.push(ping(9)), None);
        assert_eq!(o.last_seq(), 3, "a refused frame takes no seq");
        o.ack(1).expect("ack");
        assert_eq!(o.push(ping(9)), Some(4));
    }

    #[test]
    fn clear_keeps_the_marks() {
        let mut o = filled(10, 4);
        o.ack(1).expect("ack");
        o.clear();
        assert_eq!(o.len(), 0);
        assert_eq!(
            o.marks(),
            Marks {
                last_seq: 4,
                acked: 1
            }
        );
    }

    #[test]
    fn a_gated_outbox_sends_only_reserved_seqs() {
        let mut o = Outbox::resumed(10, 5);
        o.gate();
        assert_eq!(o.push(ping(0)), Some(6));
        assert_eq!(o.push(ping(0)), Some(7));
        assert_eq!(
            read_from(&o, 5),
            Vec::<u64>::new(),
            "6 and 7 are not reserved yet"
        );
        assert_eq!(o.next_queued_after(5).map(|f| f.seq), Some(6));
        o.reserved(6);
        assert_eq!(read_from(&o, 5), vec![6]);
        o.reserved(3);
        assert_eq!(
            read_from(&o, 5),
            vec![6],
            "a late, lower reservation lowers nothing"
        );
        o.reserved(1029);
        assert_eq!(read_from(&o, 5), vec![6, 7]);
    }

    #[test]
    fn frames_queued_after_a_restart_move_past_what_the_client_saw() {
        let mut outbox = Outbox::resumed(10, 5);
        assert_eq!(outbox.push(ping(0)), Some(6));
        assert_eq!(outbox.push(ping(0)), Some(7));
        assert!(outbox.skip_to(3).is_empty(), "the stored marks cover it");
        assert_eq!(outbox.skip_to(9), vec![(6, 10), (7, 11)]);
        assert_eq!(outbox.acked(), 9);
        assert_eq!(outbox.last_seq(), 11);
        assert_eq!(outbox.push(ping(0)), Some(12));
    }
}
