//! The ended-request memory of an operator session: how each of its most recent ended
//! requests ended, so a late reply is told apart as a duplicate or stale one instead of
//! an unknown one (issue 18).
//!
//! Ids are kept as 64-bit digests (keyed per session) in one ring, 16 bytes an entry: a
//! full memory of 4,096 ids costs 64 KiB. Keeping the id strings in a map and an order
//! queue cost about 1.1 MiB per session, held for as long as the session lives (a day
//! after its last stream by default), whatever the session still does.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

/// The newest `cap` ended request ids with how each ended.
#[derive(Debug)]
pub(super) struct EndedMemory<V> {
    ring: VecDeque<(u64, V)>,
    cap: usize,
    keys: RandomState,
}

impl<V: Copy> EndedMemory<V> {
    /// An empty memory of at most `cap` ids.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            cap: cap.max(1),
            keys: RandomState::new(),
        }
    }

    /// Remembers that `req_id` ended `how`, forgetting the oldest id past the cap. A
    /// request ends once (it leaves the pending map), so ids are not looked up first.
    pub(super) fn remember(&mut self, req_id: &str, how: V) {
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back((self.keys.hash_one(req_id), how));
    }

    /// How `req_id` ended, if it is still remembered. A scan, newest first: only replies
    /// to requests no longer pending come here.
    pub(super) fn get(&self, req_id: &str) -> Option<V> {
        let digest = self.keys.hash_one(req_id);
        self.ring
            .iter()
            .rev()
            .find(|(d, _)| *d == digest)
            .map(|(_, how)| *how)
    }

    /// Ids remembered now.
    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Bytes of the ring's buffer.
    pub(super) fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<(u64, V)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_ids_are_remembered_within_a_fixed_buffer() {
        let mut m = EndedMemory::new(4);
        for i in 0..10 {
            m.remember(&format!("op-1-spawn-{i}"), i);
        }
        assert_eq!(m.len(), 4);
        assert_eq!(m.get("op-1-spawn-9"), Some(9));
        assert_eq!(m.get("op-1-spawn-6"), Some(6));
        assert_eq!(m.get("op-1-spawn-5"), None, "forgotten past the cap");
        assert_eq!(m.get("never-sent"), None);
        assert_eq!(m.heap_bytes(), 4 * 16, "the ring never grows past its cap");
    }
}
