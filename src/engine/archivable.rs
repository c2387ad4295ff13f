//! The Blueprint store every caller uses: archiving for backends that cannot, and each
//! id's head kept in memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use mlua_swarm::blueprint::store::{
    BlueprintId, BlueprintStore, BlueprintStoreError, BlueprintVersion, CommitMetadata, Traced,
};
use mlua_swarm::Blueprint;

/// A Blueprint store that can archive even when its backend cannot (the in-memory store),
/// delegating to the backend when it can (git). It also keeps each id's head: every write
/// goes through here, and reading a head from git cost 7 % of the durable server's CPU
/// (every launch of a stored Blueprint reads it).
pub(super) struct Archivable {
    inner: Arc<dyn BlueprintStore>,
    archived: RwLock<HashSet<BlueprintId>>,
    heads: RwLock<HashMap<BlueprintId, Traced<Blueprint>>>,
    /// Bumped by every change, so a head read before a change is not kept after it.
    changes: AtomicU64,
}

impl Archivable {
    pub(super) fn new(inner: Arc<dyn BlueprintStore>) -> Self {
        Self {
            inner,
            archived: RwLock::new(HashSet::new()),
            heads: RwLock::new(HashMap::new()),
            changes: AtomicU64::new(0),
        }
    }

    fn forget_head(&self, id: &BlueprintId) {
        if let Ok(mut heads) = self.heads.write() {
            self.changes.fetch_add(1, Ordering::SeqCst);
            heads.remove(id);
        }
    }

    fn locally_archived(&self, id: &BlueprintId) -> bool {
        self.archived
            .read()
            .map(|s| s.contains(id))
            .unwrap_or(false)
    }

    fn set_local(&self, id: &BlueprintId, archived: bool) {
        if let Ok(mut set) = self.archived.write() {
            if archived {
                set.insert(id.clone());
            } else {
                set.remove(id);
            }
        }
    }

    fn refuse_if_archived(&self, id: &BlueprintId) -> Result<(), BlueprintStoreError> {
        if self.locally_archived(id) {
            return Err(BlueprintStoreError::Archived(id.clone()));
        }
        Ok(())
    }
}

#[async_trait]
impl BlueprintStore for Archivable {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn read_head(&self, id: &BlueprintId) -> Result<Traced<Blueprint>, BlueprintStoreError> {
        self.refuse_if_archived(id)?;
        if let Some(head) = self.heads.read().ok().and_then(|h| h.get(id).cloned()) {
            return Ok(head);
        }
        let before = self.changes.load(Ordering::SeqCst);
        let head = self.inner.read_head(id).await?;
        if let Ok(mut heads) = self.heads.write() {
            if self.changes.load(Ordering::SeqCst) == before {
                heads.insert(id.clone(), head.clone());
            }
        }
        Ok(head)
    }

    async fn write_new(
        &self,
        id: &BlueprintId,
        new_bp: &Blueprint,
        parents: &[BlueprintVersion],
        metadata: CommitMetadata,
    ) -> Result<BlueprintVersion, BlueprintStoreError> {
        self.refuse_if_archived(id)?;
        self.forget_head(id);
        let written = self.inner.write_new(id, new_bp, parents, metadata).await;
        self.forget_head(id);
        written
    }

    async fn read_version(
        &self,
        id: &BlueprintId,
        version: BlueprintVersion,
    ) -> Result<Traced<Blueprint>, BlueprintStoreError> {
        self.inner.read_version(id, version).await
    }

    async fn history(
        &self,
        id: &BlueprintId,
        limit: usize,
    ) -> Result<Vec<BlueprintVersion>, BlueprintStoreError> {
        self.inner.history(id, limit).await
    }

    async fn read_commit_rationale(
        &self,
        id: &BlueprintId,
        version: BlueprintVersion,
    ) -> Result<Option<String>, BlueprintStoreError> {
        self.inner.read_commit_rationale(id, version).await
    }

    async fn list_ids(&self) -> Result<Vec<BlueprintId>, BlueprintStoreError> {
        let ids = self.inner.list_ids().await?;
        Ok(ids
            .into_iter()
            .filter(|id| !self.locally_archived(id))
            .collect())
    }

    async fn archive_id(&self, id: &BlueprintId) -> Result<(), BlueprintStoreError> {
        self.forget_head(id);
        match self.inner.archive_id(id).await {
            Err(BlueprintStoreError::Unsupported(_)) => {
                self.set_local(id, true);
                Ok(())
            }
            other => other,
        }
    }

    async fn unarchive_id(&self, id: &BlueprintId) -> Result<(), BlueprintStoreError> {
        self.forget_head(id);
        if self.locally_archived(id) {
            self.set_local(id, false);
            return Ok(());
        }
        self.inner.unarchive_id(id).await
    }

    async fn is_archived(&self, id: &BlueprintId) -> Result<bool, BlueprintStoreError> {
        Ok(self.locally_archived(id) || self.inner.is_archived(id).await?)
    }
}
