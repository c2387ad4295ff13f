//! The session's bookkeeping across reconnects: which frames were handled (the
//! cumulative ack), which `req_id`s were seen (dedupe) and the replies sent (re-sent when
//! the server re-sends a request whose reply it lost).

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::pb::ClientFrame;

/// Finished requests remembered for dedupe and reply re-sends.
const REMEMBERED: usize = 4096;

/// What to do with a request frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Arrival {
    /// New: run the handler.
    Handle,
    /// Its handler is still running; it replies when done.
    Running,
    /// Already handled: re-send this reply (if any), idempotent on the server.
    Resend(Option<ClientFrame>),
}

#[derive(Debug)]
enum Entry {
    /// Its frame's seq (0 once a restart voided it: it holds no ack back).
    Running(u64),
    Done(Option<ClientFrame>),
}

/// Seq and `req_id` state of one session (reset when the session is created again).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Highest request seq received.
    max_seen: u64,
    /// Received request seqs whose handling has not finished.
    open: BTreeSet<u64>,
    /// Keyed by kind + req_id.
    requests: HashMap<String, Entry>,
    /// Finished keys, oldest first (bounded by [`REMEMBERED`]).
    finished: VecDeque<String>,
    /// The last ack sent (or `last_seq` of the last hello).
    acked: u64,
}

impl Ledger {
    /// The cumulative ack: every request frame up to it was handled.
    pub(crate) fn handled_to(&self) -> u64 {
        self.open
            .first()
            .map_or(self.max_seen, |first| first.saturating_sub(1))
    }

    /// Records a request frame `seq` with dedupe `key`.
    pub(crate) fn arrive(&mut self, seq: u64, key: &str) -> Arrival {
        match self.requests.get(key) {
            Some(Entry::Running(_)) => Arrival::Running,
            Some(Entry::Done(reply)) => Arrival::Resend(reply.clone()),
            None => {
                let open = seq > self.handled_to();
                if open {
                    self.open.insert(seq);
                }
                let seq = if open { seq } else { 0 };
                self.requests.insert(key.to_string(), Entry::Running(seq));
                self.max_seen = self.max_seen.max(seq);
                Arrival::Handle
            }
        }
    }

    /// The handler of `key` finished with `reply`.
    pub(crate) fn finish(&mut self, key: &str, reply: Option<ClientFrame>) {
        if let Some(Entry::Running(seq)) = self.requests.get(key) {
            self.open.remove(seq);
        }
        self.requests.insert(key.to_string(), Entry::Done(reply));
        self.finished.push_back(key.to_string());
        while self.finished.len() > REMEMBERED {
            if let Some(old) = self.finished.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    /// The ack to send now, if it moved past the last one.
    pub(crate) fn ack_due(&mut self) -> Option<u64> {
        let to = self.handled_to();
        (to > self.acked).then(|| {
            self.acked = to;
            to
        })
    }

    /// `last_seq` for a hello (it also acks).
    pub(crate) fn hello_seq(&mut self) -> u64 {
        self.acked = self.handled_to();
        self.acked
    }

    /// The server restarted: frames past the hello's `last_seq` are void and never come
    /// again; new ones continue the numbering from there.
    pub(crate) fn server_restarted(&mut self) {
        self.open.clear();
        self.max_seen = self.acked;
        for entry in self.requests.values_mut() {
            if let Entry::Running(seq) = entry {
                *seq = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_stop_below_the_first_open_frame() {
        let mut l = Ledger::default();
        assert_eq!(l.arrive(1, "a"), Arrival::Handle);
        assert_eq!(l.arrive(2, "b"), Arrival::Handle);
        assert_eq!(l.arrive(3, "c"), Arrival::Handle);
        l.finish("b", None);
        assert_eq!(l.ack_due(), None, "1 still open");
        l.finish("a", None);
        assert_eq!(l.ack_due(), Some(2));
        l.finish("c", None);
        assert_eq!(l.ack_due(), Some(3));
        assert_eq!(l.ack_due(), None);
    }

    #[test]
    fn a_seen_req_id_is_not_handled_twice_and_its_reply_is_resent() {
        let mut l = Ledger::default();
        assert_eq!(l.arrive(1, "a"), Arrival::Handle);
        assert_eq!(l.arrive(1, "a"), Arrival::Running);
        let reply = ClientFrame::default();
        l.finish("a", Some(reply.clone()));
        assert_eq!(l.arrive(1, "a"), Arrival::Resend(Some(reply)));
        assert_eq!(l.hello_seq(), 1);
    }

    #[test]
    fn a_restart_drops_open_frames_and_numbering_goes_on_from_the_hello() {
        let mut l = Ledger::default();
        l.arrive(1, "a");
        l.finish("a", None);
        l.arrive(2, "b");
        l.arrive(3, "c");
        l.finish("c", None);
        assert_eq!(l.hello_seq(), 1);
        l.server_restarted();
        assert_eq!(l.handled_to(), 1);
        assert_eq!(
            l.arrive(2, "b2"),
            Arrival::Handle,
            "a new req_id is handled"
        );
        l.finish("b2", None);
        assert_eq!(l.ack_due(), Some(2));
        // The voided request's handler may still finish; it no longer holds acks back.
        l.finish("b", None);
        assert_eq!(l.ack_due(), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = Ledger::default();
        for seq in 1..=(REMEMBERED as u64 + 10) {
            let key = format!("k{seq}");
            l.arrive(seq, &key);
            l.finish(&key, None);
        }
        assert_eq!(l.requests.len(), REMEMBERED);
    }
}
