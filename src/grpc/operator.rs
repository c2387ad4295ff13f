//! `OperatorService`: thin adapter over the operator session core.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::v1 as pb;
use crate::pb::v1::operator_service_server::OperatorService;

/// Serves `mlua_swarm.v1.OperatorService`.
#[derive(Debug, Clone, Default)]
pub struct OperatorSvc {}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorSvc {
    async fn create_session(
        &self,
        _request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    async fn get_session(
        &self,
        _request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    async fn delete_session(
        &self,
        _request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    type ConnectStream = FrameStream;

    async fn connect(
        &self,
        _request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }

    async fn send(
        &self,
        _request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        Err(Status::unimplemented(
            "operator sessions are not available yet",
        ))
    }
}
