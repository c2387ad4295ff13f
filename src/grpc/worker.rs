//! `WorkerService`: thin adapter over the engine host's worker path.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::require_bearer;
use super::convert::value_to_json;
use crate::engine::{Credential, EngineHost, SubmitOutcome};
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::worker_service_server::WorkerService;

/// Serves `mlua_swarm.v1.WorkerService`.
#[derive(Debug, Clone)]
pub struct WorkerSvc {
    host: Arc<EngineHost>,
}

impl WorkerSvc {
    /// A service over `host`.
    pub fn new(host: Arc<EngineHost>) -> Self {
        Self { host }
    }
}

/// The worker credential of a request.
pub(crate) fn credential<T>(request: &Request<T>) -> Result<Credential, Error> {
    Credential::parse(&require_bearer(
        request.metadata(),
        "worker_handle or capability_token",
    )?)
}

fn step(id: &str) -> Option<&str> {
    Some(id).filter(|s| !s.trim().is_empty())
}

#[tonic::async_trait]
impl WorkerService for WorkerSvc {
    async fn get_prompt(
        &self,
        request: Request<pb::GetPromptRequest>,
    ) -> Result<Response<pb::GetPromptResponse>, Status> {
        let cred = credential(&request)?;
        let req = request.into_inner();
        let p = self.host.worker_prompt(&cred, step(&req.step_id)).await?;
        Ok(Response::new(pb::GetPromptResponse {
            step_id: p.step_id,
            attempt: p.attempt,
            agent: p.agent,
            system: p.system.unwrap_or_default(),
            prompt: p.prompt,
        }))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let cred = credential(&request)?;
        let pb::SubmitRequest {
            body,
            outcome,
            step_id,
        } = request.into_inner();
        let outcome = match pb::SubmitOutcome::try_from(outcome) {
            Ok(pb::SubmitOutcome::Unspecified | pb::SubmitOutcome::Pass) => SubmitOutcome::Pass,
            Ok(pb::SubmitOutcome::Blocked) => SubmitOutcome::Blocked,
            Ok(pb::SubmitOutcome::Skip) => SubmitOutcome::Skip,
            Err(_) => {
                return Err(Error::invalid("outcome", "expected PASS, BLOCKED or SKIP").into())
            }
        };
        let (step_id, attempt) = self
            .host
            .worker_submit(&cred, step(&step_id), &body, outcome)
            .await?;
        Ok(Response::new(pb::SubmitResponse { step_id, attempt }))
    }

    async fn post_result(
        &self,
        request: Request<pb::PostResultRequest>,
    ) -> Result<Response<pb::PostResultResponse>, Status> {
        let cred = credential(&request)?;
        let pb::PostResultRequest { step_id, value, ok } = request.into_inner();
        let value = value.map(value_to_json).unwrap_or(serde_json::Value::Null);
        let (step_id, attempt) = self
            .host
            .worker_post_result(&cred, step(&step_id), value, ok.unwrap_or(true))
            .await?;
        Ok(Response::new(pb::PostResultResponse { step_id, attempt }))
    }
}
