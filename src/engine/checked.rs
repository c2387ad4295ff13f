//! Stored Blueprint versions that already passed the launch's compile check. A stored
//! version never changes and the engine's compile is pure, so a launch of a version seen
//! before skips the check (the engine still compiles once to run it).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// How many versions are remembered; past it the set starts again (a re-check is cheap).
const CAPACITY: usize = 4096;

/// Version hexes that compiled, by Blueprint id (looked up without allocating).
#[derive(Default)]
pub(super) struct CheckedBlueprints {
    seen: Mutex<HashMap<String, HashSet<String>>>,
}

impl CheckedBlueprints {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// True if this version compiled before.
    pub(super) fn contains(&self, id: &str, version: &str) -> bool {
        self.lock().get(id).is_some_and(|v| v.contains(version))
    }

    /// Remembers that this version compiled.
    pub(super) fn insert(&self, id: &str, version: &str) {
        let mut seen = self.lock();
        if seen.values().map(HashSet::len).sum::<usize>() >= CAPACITY {
            seen.clear();
        }
        seen.entry(id.to_string())
            .or_default()
            .insert(version.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_versions_and_stays_bounded() {
        let checked = CheckedBlueprints::default();
        assert!(!checked.contains("main", "v1"));
        checked.insert("main", "v1");
        assert!(checked.contains("main", "v1"));
        assert!(!checked.contains("main", "v2"));
        for n in 0..CAPACITY + 10 {
            checked.insert("bp", &n.to_string());
        }
        assert!(checked.lock().values().map(HashSet::len).sum::<usize>() <= CAPACITY);
    }
}
