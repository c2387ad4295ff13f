//! `BlueprintService`: thin adapter over [`EngineHost`]'s Blueprint store.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{json_to_struct, struct_to_json};
use crate::engine::EngineHost;
use crate::pb::v1 as pb;
use crate::pb::v1::blueprint_service_server::BlueprintService;

/// Serves `mlua_swarm.v1.BlueprintService`.
#[derive(Debug, Clone)]
pub struct BlueprintSvc {
    host: Arc<EngineHost>,
}

impl BlueprintSvc {
    /// A service over `host`.
    pub fn new(host: Arc<EngineHost>) -> Self {
        Self { host }
    }
}

#[tonic::async_trait]
impl BlueprintService for BlueprintSvc {
    async fn put_blueprint(
        &self,
        request: Request<pb::PutBlueprintRequest>,
    ) -> Result<Response<pb::PutBlueprintResponse>, Status> {
        let pb::PutBlueprintRequest { id, blueprint } = request.into_inner();
        let doc = blueprint.map(struct_to_json).ok_or_else(|| {
            crate::error::Error::invalid("blueprint", "required: the Blueprint JSON document")
        })?;
        let out = self.host.put_blueprint(&id, doc).await?;
        Ok(Response::new(pb::PutBlueprintResponse {
            id: out.id,
            version: out.version,
            created: out.created,
        }))
    }

    async fn get_blueprint(
        &self,
        request: Request<pb::GetBlueprintRequest>,
    ) -> Result<Response<pb::GetBlueprintResponse>, Status> {
        let pb::GetBlueprintRequest { id, version } = request.into_inner();
        let version = Some(version.as_str()).filter(|v| !v.trim().is_empty());
        let bp = self.host.get_blueprint(&id, version).await?;
        Ok(Response::new(pb::GetBlueprintResponse {
            id: bp.id,
            version: bp.version,
            blueprint: Some(json_to_struct(bp.blueprint)),
        }))
    }

    async fn list_blueprints(
        &self,
        _request: Request<pb::ListBlueprintsRequest>,
    ) -> Result<Response<pb::ListBlueprintsResponse>, Status> {
        let blueprints = self
            .host
            .list_blueprints()
            .await?
            .into_iter()
            .map(|b| pb::BlueprintSummary {
                id: b.id,
                head_version: b.head_version,
                version_label: b.version_label.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListBlueprintsResponse { blueprints }))
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let pb::ListVersionsRequest { id, limit } = request.into_inner();
        let versions = self
            .host
            .list_versions(&id, limit as usize)
            .await?
            .into_iter()
            .map(|v| pb::BlueprintVersionInfo {
                version: v.version,
                version_label: v.version_label.unwrap_or_default(),
                rationale: v.rationale.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListVersionsResponse { versions }))
    }

    async fn archive_blueprint(
        &self,
        request: Request<pb::ArchiveBlueprintRequest>,
    ) -> Result<Response<pb::ArchiveBlueprintResponse>, Status> {
        self.host
            .archive_blueprint(&request.into_inner().id)
            .await?;
        Ok(Response::new(pb::ArchiveBlueprintResponse {}))
    }

    async fn unarchive_blueprint(
        &self,
        request: Request<pb::UnarchiveBlueprintRequest>,
    ) -> Result<Response<pb::UnarchiveBlueprintResponse>, Status> {
        self.host
            .unarchive_blueprint(&request.into_inner().id)
            .await?;
        Ok(Response::new(pb::UnarchiveBlueprintResponse {}))
    }
}
