//! Worker handles the server mints (hazard H6): 128 bits from the OS RNG, each mapped to
//! the engine's short `wh-` + 8 hex handle, which never leaves the process. A mapping
//! lives while its spawn is outstanding and is dropped when the spawn is answered or its
//! task is freed.

use std::collections::HashMap;
use std::sync::Mutex;

/// `wh-` plus 32 lowercase hex digits: within the v0.1.0 parse rule (`wh-` and up to 61
/// alphanumerics), so v0.1.0 clients treat it as the opaque string it always was.
const RANDOM_BYTES: usize = 16;

#[derive(Debug)]
struct Minted {
    engine_handle: String,
    task_id: String,
}

/// Public handle → the engine's handle.
#[derive(Debug, Default)]
pub(super) struct WorkerHandles {
    minted: Mutex<HashMap<String, Minted>>,
}

impl WorkerHandles {
    /// Mints a public handle for `engine_handle`, a step of `task_id`.
    pub(super) fn mint(&self, engine_handle: &str, task_id: &str) -> String {
        let public = format!("wh-{}", hex::encode(rand::random::<[u8; RANDOM_BYTES]>()));
        let entry = Minted {
            engine_handle: engine_handle.to_string(),
            task_id: task_id.to_string(),
        };
        if let Ok(mut m) = self.minted.lock() {
            m.insert(public.clone(), entry);
        }
        public
    }

    /// The engine's handle behind a public one, while it lives.
    pub(super) fn resolve(&self, public: &str) -> Option<String> {
        let m = self.minted.lock().ok()?;
        m.get(public).map(|e| e.engine_handle.clone())
    }

    /// Drops one handle (its spawn was answered).
    pub(super) fn revoke(&self, public: &str) {
        if let Ok(mut m) = self.minted.lock() {
            m.remove(public);
        }
    }

    /// Drops every handle of a task (the task was freed).
    pub(super) fn revoke_task(&self, task_id: &str) {
        if let Ok(mut m) = self.minted.lock() {
            m.retain(|_, e| e.task_id != task_id);
        }
    }

    /// Handles alive now.
    pub(super) fn len(&self) -> usize {
        self.minted.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_handles_are_128_bit_and_resolve_until_revoked() {
        let h = WorkerHandles::default();
        let a = h.mint("wh-1a2b3c4d", "task-1");
        let b = h.mint("wh-5e6f7a8b", "task-2");
        assert_eq!(a.len(), 35);
        assert!(a.starts_with("wh-") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(h.resolve(&a).as_deref(), Some("wh-1a2b3c4d"));
        assert_eq!(
            h.resolve("wh-1a2b3c4d"),
            None,
            "the engine's handle is not a credential"
        );
        h.revoke(&a);
        assert_eq!(h.resolve(&a), None);
        h.revoke_task("task-2");
        assert_eq!(h.resolve(&b), None);
        assert_eq!(h.len(), 0);
    }
}
