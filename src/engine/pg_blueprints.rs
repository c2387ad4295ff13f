//! Blueprints in PostgreSQL (`--database-url`): each version's canonical YAML (the form
//! its hash is computed from) in `blueprint_versions`, each head move in
//! `blueprint_history`, the head and the archive mark in `blueprint_heads`. A write moves
//! the head by compare-and-set from the head the writer read (its first parent), so two
//! writers (two replicas) never lose one another's version: the second is refused with
//! `HashMismatch { expected: what it read, actual: the head now }`, which the engine
//! host answers as ABORTED.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use mlua_swarm::blueprint::store::{
    blueprint_version, canonical_yaml, BlueprintId, BlueprintStore, BlueprintStoreError,
    BlueprintVersion, CommitMetadata, ContentHash, Trace, TraceOrigin, TraceRef, Traced,
};
use mlua_swarm::Blueprint;
use tokio_postgres::Row;

use crate::pg::int;

fn other(e: impl std::fmt::Display) -> BlueprintStoreError {
    BlueprintStoreError::Other(format!("database: {e}"))
}

fn version_of(hex: &str) -> Result<BlueprintVersion, BlueprintStoreError> {
    ContentHash::from_hex(hex)
        .map(BlueprintVersion)
        .map_err(|e| other(format!("stored version {hex}: {e}")))
}

/// A stored version as the engine reads it.
fn decode(row: &Row) -> Result<Traced<Blueprint>, BlueprintStoreError> {
    let blueprint: Blueprint = serde_yaml::from_str(row.get(0)).map_err(other)?;
    let trace: Trace = serde_json::from_str(row.get(1)).map_err(other)?;
    Ok(Traced::new(blueprint, trace))
}

/// See the module doc.
pub(super) struct PgBlueprintStore {
    pool: Pool,
}

impl PgBlueprintStore {
    pub(super) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, BlueprintStoreError> {
        self.pool.get().await.map_err(other)
    }

    /// The head and archive mark of `id`, if it has a head.
    async fn head(&self, id: &BlueprintId) -> Result<Option<(String, bool)>, BlueprintStoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, archived FROM blueprint_heads WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(other)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn set_archived(
        &self,
        id: &BlueprintId,
        archived: bool,
    ) -> Result<(), BlueprintStoreError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE blueprint_heads SET archived = $2 WHERE id = $1",
                &[&id.as_str(), &archived],
            )
            .await
            .map_err(other)?;
        match changed {
            0 => Err(BlueprintStoreError::IdNotFound(id.clone())),
            _ => Ok(()),
        }
    }
}

const SELECT_VERSION: &str =
    "SELECT yaml, trace::text FROM blueprint_versions WHERE id = $1 AND version = $2";

#[async_trait]
impl BlueprintStore for PgBlueprintStore {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn read_head(&self, id: &BlueprintId) -> Result<Traced<Blueprint>, BlueprintStoreError> {
        let Some((version, archived)) = self.head(id).await? else {
            return Err(BlueprintStoreError::HeadEmpty(id.clone()));
        };
        if archived {
            return Err(BlueprintStoreError::Archived(id.clone()));
        }
        self.read_version(id, version_of(&version)?).await
    }

    async fn write_new(
        &self,
        id: &BlueprintId,
        new_bp: &Blueprint,
        parents: &[BlueprintVersion],
        metadata: CommitMetadata,
    ) -> Result<BlueprintVersion, BlueprintStoreError> {
        let yaml = canonical_yaml(new_bp)?;
        let version = blueprint_version(new_bp)?;
        let parent_refs = parents
            .iter()
            .map(|p| TraceRef {
                origin: TraceOrigin::Inline,
                hash: p.0,
            })
            .collect();
        let trace = Trace::new(
            TraceOrigin::Inline,
            version,
            metadata.epoch_id.started_at_ms,
        )
        .with_parents(parent_refs);
        let trace = serde_json::to_string(&trace).map_err(other)?;
        let (bp_id, hex) = (id.as_str(), version.to_hex());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(other)?;
        // The compare-and-set: from the head the writer read, or from no head at all.
        let moved = match parents.first() {
            Some(parent) => tx
                .execute(
                    "UPDATE blueprint_heads SET version = $2 \
                     WHERE id = $1 AND version = $3 AND NOT archived",
                    &[&bp_id, &hex, &parent.to_hex()],
                )
                .await
                .map_err(other)?,
            None => tx
                .execute(
                    "INSERT INTO blueprint_heads (id, version) VALUES ($1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&bp_id, &hex],
                )
                .await
                .map_err(other)?,
        };
        if moved == 0 {
            drop(tx);
            return Err(match self.head(id).await? {
                Some((_, true)) => BlueprintStoreError::Archived(id.clone()),
                Some((now, false)) => BlueprintStoreError::HashMismatch {
                    expected: parents.first().copied().unwrap_or(version),
                    actual: version_of(&now)?,
                },
                None => BlueprintStoreError::HeadEmpty(id.clone()),
            });
        }
        tx.execute(
            "INSERT INTO blueprint_versions (id, version, yaml, trace, rationale) \
             VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (id, version) \
             DO UPDATE SET trace = excluded.trace, rationale = excluded.rationale",
            &[&bp_id, &hex, &yaml, &trace, &metadata.rationale],
        )
        .await
        .map_err(other)?;
        tx.execute(
            "INSERT INTO blueprint_history (id, version) VALUES ($1, $2)",
            &[&bp_id, &hex],
        )
        .await
        .map_err(other)?;
        tx.commit().await.map_err(other)?;
        Ok(version)
    }

    async fn read_version(
        &self,
        id: &BlueprintId,
        version: BlueprintVersion,
    ) -> Result<Traced<Blueprint>, BlueprintStoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(SELECT_VERSION, &[&id.as_str(), &version.to_hex()])
            .await
            .map_err(other)?
            .ok_or_else(|| BlueprintStoreError::NotFound {
                id: id.clone(),
                version,
            })?;
        decode(&row)
    }

    async fn history(
        &self,
        id: &BlueprintId,
        limit: usize,
    ) -> Result<Vec<BlueprintVersion>, BlueprintStoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT version FROM blueprint_history WHERE id = $1 ORDER BY seq DESC LIMIT $2",
                &[&id.as_str(), &int(limit as u64)],
            )
            .await
            .map_err(other)?;
        rows.iter().map(|r| version_of(r.get(0))).collect()
    }

    async fn read_commit_rationale(
        &self,
        id: &BlueprintId,
        version: BlueprintVersion,
    ) -> Result<Option<String>, BlueprintStoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT rationale FROM blueprint_versions WHERE id = $1 AND version = $2",
                &[&id.as_str(), &version.to_hex()],
            )
            .await
            .map_err(other)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn list_ids(&self) -> Result<Vec<BlueprintId>, BlueprintStoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM blueprint_heads WHERE NOT archived ORDER BY id",
                &[],
            )
            .await
            .map_err(other)?;
        Ok(rows
            .iter()
            .map(|r| BlueprintId::new(r.get::<_, &str>(0)))
            .collect())
    }

    async fn archive_id(&self, id: &BlueprintId) -> Result<(), BlueprintStoreError> {
        self.set_archived(id, true).await
    }

    async fn unarchive_id(&self, id: &BlueprintId) -> Result<(), BlueprintStoreError> {
        self.set_archived(id, false).await
    }

    async fn is_archived(&self, id: &BlueprintId) -> Result<bool, BlueprintStoreError> {
        Ok(self.head(id).await?.is_some_and(|(_, archived)| archived))
    }
}
