//! Worker handles the server mints (hazard H6): 128 bits from the OS RNG, each mapped to
//! the engine's short `wh-` + 8 hex handle, which never leaves the process. A mapping
//! lives while its spawn is outstanding and is dropped when the spawn is answered or its
//! task is freed.
//!
//! Every handle starts with this process's boot id; the data dir remembers the boot ids of
//! earlier processes (`worker-boots`), so a handle minted before a restart is told apart
//! from an unknown one: its step was dispatched again, with new credentials.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use super::Storage;
use crate::error::{Error, Result};

/// `wh-`, the 8-hex boot id, then 32 lowercase hex digits (128 random bits): within the
/// v0.1.0 parse rule (`wh-` and up to 61 alphanumerics), so v0.1.0 clients treat it as the
/// opaque string it always was.
const RANDOM_BYTES: usize = 16;
/// Hex digits of a boot id.
const BOOT_ID_LEN: usize = 8;
/// The file under the data dir listing earlier boot ids, one a line.
const BOOTS_FILE: &str = "worker-boots";
/// Earlier boot ids remembered.
const BOOTS_KEPT: usize = 4096;

/// What a worker gets for a handle minted before the restart.
pub(super) const DISPATCHED_AGAIN: &str =
    "this step was dispatched again after a restart; use the new spawn's credentials";

#[derive(Debug)]
struct Minted {
    engine_handle: String,
    task_id: String,
}

/// Public handle → the engine's handle.
#[derive(Debug)]
pub(super) struct WorkerHandles {
    boot: String,
    earlier_boots: HashSet<String>,
    minted: Mutex<HashMap<String, Minted>>,
}

impl Default for WorkerHandles {
    /// A fresh boot id, no earlier boots (`--ephemeral`).
    fn default() -> Self {
        Self::with_boots(HashSet::new())
    }
}

impl WorkerHandles {
    fn with_boots(earlier_boots: HashSet<String>) -> Self {
        let boot = loop {
            let id = hex::encode(rand::random::<[u8; BOOT_ID_LEN / 2]>());
            if !earlier_boots.contains(&id) {
                break id;
            }
        };
        Self {
            boot,
            earlier_boots,
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// Handles for `storage`: on a data dir, the earlier boot ids are read from
    /// [`BOOTS_FILE`] and this one is added. An unreadable or damaged file fails the boot
    /// with a message naming it.
    pub(super) fn for_storage(storage: &Storage) -> Result<Self> {
        let Some(dir) = storage.dir() else {
            return Ok(Self::default());
        };
        let path = dir.join(BOOTS_FILE);
        let fail = |why: String| {
            Error::FailedPrecondition(format!(
                "cannot use {}: {why}; fix or remove the file (it lists earlier boot ids)",
                path.display()
            ))
        };
        let mut earlier = read_boots(&path).map_err(fail)?;
        let handles = Self::with_boots(earlier.iter().cloned().collect());
        earlier.push(handles.boot.clone());
        let keep = earlier.len().saturating_sub(BOOTS_KEPT);
        write_boots(&path, &earlier[keep..]).map_err(|e| fail(e.to_string()))?;
        Ok(handles)
    }

    /// This process's boot id.
    pub(super) fn boot(&self) -> &str {
        &self.boot
    }

    /// The boot id a handle starts with (None if it is not one of ours in form).
    pub(super) fn boot_of<'h>(&self, public: &'h str) -> Option<&'h str> {
        public.strip_prefix("wh-")?.get(..BOOT_ID_LEN)
    }

    /// The error for a handle that resolves to nothing: minted by an earlier process →
    /// FAILED_PRECONDITION ([`DISPATCHED_AGAIN`]); else UNAUTHENTICATED.
    pub(super) fn unknown(&self, public: &str) -> Error {
        let boot = public
            .strip_prefix("wh-")
            .and_then(|rest| rest.get(..BOOT_ID_LEN));
        match boot {
            Some(b) if self.earlier_boots.contains(b) => {
                Error::FailedPrecondition(DISPATCHED_AGAIN.into())
            }
            _ => Error::Unauthenticated("credential unknown, or its step has finished".into()),
        }
    }

    /// Mints a public handle for `engine_handle`, a step of `task_id`.
    pub(super) fn mint(&self, engine_handle: &str, task_id: &str) -> String {
        let random = hex::encode(rand::random::<[u8; RANDOM_BYTES]>());
        let public = format!("wh-{}{random}", self.boot);
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

/// The boot ids listed in `path` (none if it does not exist yet).
fn read_boots(path: &Path) -> std::result::Result<Vec<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let id = l.trim();
            let ok = id.len() == BOOT_ID_LEN && id.chars().all(|c| c.is_ascii_hexdigit());
            ok.then(|| id.to_ascii_lowercase())
                .ok_or_else(|| format!("'{id}' is not a boot id ({BOOT_ID_LEN} hex digits)"))
        })
        .collect()
}

/// Replaces `path` with `boots`, one a line (written beside it, then renamed).
fn write_boots(path: &Path, boots: &[String]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, boots.join("\n") + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_handles_are_128_bit_and_resolve_until_revoked() {
        let h = WorkerHandles::default();
        let a = h.mint("wh-1a2b3c4d", "task-1");
        let b = h.mint("wh-5e6f7a8b", "task-2");
        assert_eq!(a.len(), 3 + BOOT_ID_LEN + 2 * RANDOM_BYTES);
        assert!(a.starts_with("wh-") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(&a[3..3 + BOOT_ID_LEN], h.boot);
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

    #[test]
    fn a_handle_of_an_earlier_boot_is_told_apart_from_an_unknown_one() {
        let dir = std::env::temp_dir().join(format!("mse-boots-{}", uuid::Uuid::new_v4()));
        let storage = Storage::Dir(dir.clone());
        let first = WorkerHandles::for_storage(&storage).expect("first boot");
        let old = first.mint("wh-1a2b3c4d", "task-1");
        let second = WorkerHandles::for_storage(&storage).expect("second boot");
        assert_ne!(first.boot, second.boot);
        assert_eq!(second.resolve(&old), None);
        let again = second.unknown(&old);
        assert!(
            matches!(&again, Error::FailedPrecondition(m) if m == DISPATCHED_AGAIN),
            "{again:?}"
        );
        let fresh = WorkerHandles::default().mint("wh-1a2b3c4d", "task-1");
        assert!(matches!(second.unknown(&fresh), Error::Unauthenticated(_)));
        assert!(matches!(
            second.unknown("wh-deadbeef"),
            Error::Unauthenticated(_)
        ));
        std::fs::write(dir.join(BOOTS_FILE), "not-a-boot\n").expect("write");
        let err = WorkerHandles::for_storage(&storage).expect_err("damaged file");
        assert!(err.to_string().contains(BOOTS_FILE), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
