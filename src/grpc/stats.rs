//! `ServerService`: the live figures of the console's strip, read from what `/metrics`
//! samples (the task runs, the operator sessions, the completions window).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::EngineHost;
use crate::operator::OperatorHub;
use crate::pb::v1 as pb;
use crate::pb::v1::server_service_server::ServerService;

/// Serves `mlua_swarm.v1.ServerService`.
#[derive(Debug, Clone)]
pub struct ServerSvc {
    host: Arc<EngineHost>,
    hub: Arc<OperatorHub>,
}

impl ServerSvc {
    /// A service over `host` and `hub`.
    pub fn new(host: Arc<EngineHost>, hub: Arc<OperatorHub>) -> Self {
        Self { host, hub }
    }
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl ServerService for ServerSvc {
    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let ops = self.hub.metric_gauges();
        Ok(Response::new(pb::GetStatsResponse {
            tasks_in_flight: wide(self.host.runs_in_flight()),
            tasks_completed_last_minute: crate::metrics::tasks_completed_last_minute(),
            operator_pending_requests: wide(ops.pending.iter().map(|(_, n)| n).sum()),
            operator_unacked_frames: ops.unacked,
            operator_sessions_live: wide(ops.live),
            operator_sessions_attached: wide(ops.attached),
        }))
    }
}
