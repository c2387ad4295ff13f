//! Blueprint storage: put / get / list / versions / archive, with hex versions everywhere
//! and the v0.1.0 dialect accepted on input.

use mlua_swarm::blueprint::store::{
    blueprint_version, BlueprintId, BlueprintStoreError, BlueprintVersion, CommitMetadata,
    ContentHash, Traced,
};
use mlua_swarm::Blueprint;
use serde_json::Value;

use super::errors::from_store;
use super::{compat, EngineHost};
use crate::error::{Error, Result};

/// Versions ListVersions returns when the caller gives no limit.
const DEFAULT_VERSION_LIMIT: usize = 20;

/// What PutBlueprint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The Blueprint id.
    pub id: String,
    /// Hex version of the head after the call.
    pub version: String,
    /// False when the content equalled the head and nothing was written.
    pub created: bool,
}

/// One version of a stored Blueprint, with its document.
#[derive(Debug, Clone)]
pub struct StoredBlueprint {
    /// The Blueprint id.
    pub id: String,
    /// Hex version.
    pub version: String,
    /// The document as JSON.
    pub blueprint: Value,
}

/// A stored, not archived Blueprint id and its head.
#[derive(Debug, Clone)]
pub struct BlueprintSummary {
    /// The Blueprint id.
    pub id: String,
    /// Hex version of the head.
    pub head_version: String,
    /// `metadata.version_label` of the head.
    pub version_label: Option<String>,
    /// `metadata.description` of the head.
    pub description: Option<String>,
}

/// One committed version.
#[derive(Debug, Clone)]
pub struct BlueprintVersionInfo {
    /// Hex version.
    pub version: String,
    /// `metadata.version_label` of that version.
    pub version_label: Option<String>,
    /// Commit rationale ("seed" for PutBlueprint).
    pub rationale: Option<String>,
}

/// The Blueprint every server starts with (as v0.1.0 did): one `identity` step.
pub const SEED_BLUEPRINT_ID: &str = "main";

impl EngineHost {
    /// Stores the seed Blueprint `main` unless an id `main` exists (even archived).
    pub(super) async fn seed_main_blueprint(&self) -> Result<()> {
        let id = BlueprintId::new(SEED_BLUEPRINT_ID);
        if self.blueprints.is_archived(&id).await.map_err(from_store)?
            || self.blueprints.read_head(&id).await.is_ok()
        {
            return Ok(());
        }
        let doc = serde_json::json!({
            "schema_version": "0.1.0",
            "id": SEED_BLUEPRINT_ID,
            "flow": {"kind": "step", "ref": "identity",
                     "in": {"op": "lit", "value": "hello"}, "out": {"op": "path", "at": "$.out"}},
            "agents": [{"name": "identity", "kind": "rust_fn", "spec": {"fn_id": "identity"}}],
            "metadata": {"description": "seed: one identity step"}
        });
        match self.put_blueprint(SEED_BLUEPRINT_ID, doc).await {
            Ok(_) => Ok(()),
            // Replicas booting together on a fresh database: another one seeded it first.
            Err(Error::Aborted(_)) if self.blueprints.read_head(&id).await.is_ok() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores `doc` as the new head of `id` unless it equals the head.
    pub async fn put_blueprint(&self, id: &str, mut doc: Value) -> Result<PutOutcome> {
        check_id(id)?;
        compat::upgrade_blueprint(&mut doc)?;
        match doc.get("id") {
            None | Some(Value::Null) => {
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.to_string()));
                }
            }
            Some(Value::String(body_id)) if body_id == id => {}
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "blueprint.id {other} differs from id '{id}'; make them equal or drop \
                     blueprint.id"
                )))
            }
        }
        let bp = parse_blueprint(doc)?;
        let version = blueprint_version(&bp).map_err(from_store)?;
        let bp_id = BlueprintId::new(id);
        if self
            .blueprints
            .is_archived(&bp_id)
            .await
            .map_err(from_store)?
        {
            return Err(from_store(BlueprintStoreError::Archived(bp_id)));
        }
        let parents = match self.blueprints.read_head(&bp_id).await {
            Ok(head) if head.trace.version == version => {
                return Ok(PutOutcome {
                    id: id.to_string(),
                    version: version.to_hex(),
                    created: false,
                })
            }
            Ok(head) => vec![head.trace.version],
            Err(BlueprintStoreError::IdNotFound(_) | BlueprintStoreError::HeadEmpty(_)) => {
                vec![]
            }
            Err(e) => return Err(from_store(e)),
        };
        let meta = CommitMetadata::seed(bp_id.clone(), version, now_ms());
        self.blueprints
            .write_new(&bp_id, &bp, &parents, meta)
            .await
            .map_err(from_store)?;
        tracing::info!(blueprint_id = id, version = %version.to_hex(), "blueprint stored");
        Ok(PutOutcome {
            id: id.to_string(),
            version: version.to_hex(),
            created: true,
        })
    }

    /// Reads the head (`version` = None) or one exact hex version.
    pub async fn get_blueprint(&self, id: &str, version: Option<&str>) -> Result<StoredBlueprint> {
        check_id(id)?;
        let bp_id = BlueprintId::new(id);
        let traced = match version {
            None => self.blueprints.read_head(&bp_id).await,
            Some(v) => {
                self.blueprints
                    .read_version(&bp_id, parse_version(v)?)
                    .await
            }
        }
        .map_err(from_store)?;
        stored(id, traced)
    }

    /// Lists the ids that are not archived, with their heads.
    pub async fn list_blueprints(&self) -> Result<Vec<BlueprintSummary>> {
        let mut ids = self.blueprints.list_ids().await.map_err(from_store)?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for bp_id in ids {
            match self.blueprints.read_head(&bp_id).await {
                Ok(head) => out.push(BlueprintSummary {
                    id: bp_id.as_str().to_string(),
                    head_version: head.trace.version.to_hex(),
                    version_label: head.value.metadata.version_label.clone(),
                    description: head.value.metadata.description.clone(),
                }),
                Err(BlueprintStoreError::Archived(_)) => {}
                Err(e) => return Err(from_store(e)),
            }
        }
        Ok(out)
    }

    /// Lists versions of `id`, newest first.
    pub async fn list_versions(&self, id: &str, limit: usize) -> Result<Vec<BlueprintVersionInfo>> {
        check_id(id)?;
        let bp_id = BlueprintId::new(id);
        let limit = if limit == 0 {
            DEFAULT_VERSION_LIMIT
        } else {
            limit
        };
        let versions = self
            .blueprints
            .history(&bp_id, limit)
            .await
            .map_err(from_store)?;
        if versions.is_empty() {
            return Err(from_store(BlueprintStoreError::IdNotFound(bp_id)));
        }
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let label = match self.blueprints.read_version(&bp_id, v).await {
                Ok(t) => t.value.metadata.version_label,
                Err(BlueprintStoreError::Archived(_)) => None,
                Err(e) => return Err(from_store(e)),
            };
            let rationale = self
                .blueprints
                .read_commit_rationale(&bp_id, v)
                .await
                .map_err(from_store)?;
            out.push(BlueprintVersionInfo {
                version: v.to_hex(),
                version_label: label,
                rationale,
            });
        }
        Ok(out)
    }

    /// Archives `id`: history kept, writes and runs refused.
    pub async fn archive_blueprint(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let bp_id = BlueprintId::new(id);
        self.blueprints
            .read_head(&bp_id)
            .await
            .map_err(from_store)?;
        self.blueprints.archive_id(&bp_id).await.map_err(from_store)
    }

    /// Lifts the archive of `id`.
    pub async fn unarchive_blueprint(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let bp_id = BlueprintId::new(id);
        if !self
            .blueprints
            .is_archived(&bp_id)
            .await
            .map_err(from_store)?
        {
            return Err(Error::FailedPrecondition(format!(
                "blueprint '{id}' is not archived"
            )));
        }
        self.blueprints
            .unarchive_id(&bp_id)
            .await
            .map_err(from_store)
    }
}

/// Parses a Blueprint document (already upgraded from the v0.1.0 dialect).
pub(super) fn parse_blueprint(doc: Value) -> Result<Blueprint> {
    serde_json::from_value(doc).map_err(|e| {
        Error::InvalidArgument(format!(
            "blueprint: {e} (expected the mlua-swarm Blueprint JSON: id, flow, agents, operators)"
        ))
    })
}

/// Parses a hex version as returned by PutBlueprint and ListVersions.
pub(super) fn parse_version(text: &str) -> Result<BlueprintVersion> {
    ContentHash::from_hex(text.trim())
        .map(BlueprintVersion)
        .map_err(|_| {
            Error::invalid(
                "version",
                format!("'{text}' is not a version: expected 64 hex characters, as PutBlueprint and ListVersions return"),
            )
        })
}

/// Checks a Blueprint id: it names a directory in the git store.
pub(super) fn check_id(id: &str) -> Result<()> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if id.is_empty() || id.len() > 128 || !ok_chars || id.starts_with('.') {
        return Err(Error::invalid(
            "id",
            format!("'{id}' must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with '.'"),
        ));
    }
    Ok(())
}

fn stored(id: &str, traced: Traced<Blueprint>) -> Result<StoredBlueprint> {
    let blueprint = serde_json::to_value(&traced.value)
        .map_err(|e| Error::Internal(format!("blueprint to json: {e}")))?;
    Ok(StoredBlueprint {
        id: id.to_string(),
        version: traced.trace.version.to_hex(),
        blueprint,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_store_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("demo-bp_1.v2").is_ok());
        let err = parse_version("BlueprintVersion(ContentHash([1]))").expect_err("debug form");
        assert!(err.to_string().contains("64 hex"), "{err}");
    }
}
