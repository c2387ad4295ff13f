//! `TaskService`: thin adapter over [`EngineHost`]'s task runs.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::deadline;
use super::convert;
use crate::engine::{EngineHost, TaskLaunch};
use crate::pb::v1 as pb;
use crate::pb::v1::task_service_server::TaskService;

/// Serves `mlua_swarm.v1.TaskService`.
#[derive(Debug, Clone)]
pub struct TaskSvc {
    host: Arc<EngineHost>,
}

impl TaskSvc {
    /// A service over `host`.
    pub fn new(host: Arc<EngineHost>) -> Self {
        Self { host }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchTaskResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskSvc {
    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let record = self.host.start_task(launch(request.into_inner())?).await?;
        Ok(Response::new(pb::StartTaskResponse {
            task_id: record.task_id,
        }))
    }

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::RunTaskResponse>, Status> {
        let wait = deadline(request.metadata());
        let launch = launch(request.into_inner().into())?;
        let record = self.host.run_task(launch, wait).await?;
        Ok(Response::new(pb::RunTaskResponse {
            task: Some(convert::task(record)),
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let record = self.host.get_task(&request.into_inner().task_id).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(convert::task(record)),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let pb::ListTasksRequest {
            state,
            limit,
            page_size,
            page_token,
        } = request.into_inner();
        let state = convert::task_state_filter(state)?;
        let size = if page_size == 0 { limit } else { page_size };
        let page = self
            .host
            .list_tasks(state, size as usize, &page_token)
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: page.tasks.into_iter().map(convert::task).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let events = self.host.watch_task(&request.into_inner().task_id).await?;
        let stream = events.map(|event| {
            Ok(pb::WatchTaskResponse {
                event: Some(convert::task_event(event?)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let pb::CancelTaskRequest { task_id, reason } = request.into_inner();
        let record = self.host.cancel_task(&task_id, &reason).await?;
        Ok(Response::new(pb::CancelTaskResponse {
            task: Some(convert::task(record)),
        }))
    }

    async fn resume_task(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::ResumeTaskResponse>, Status> {
        let record = self.host.resume_task(&request.into_inner().task_id).await?;
        Ok(Response::new(pb::ResumeTaskResponse {
            task: Some(convert::task(record)),
        }))
    }

    async fn rerun_task(
        &self,
        request: Request<pb::RerunTaskRequest>,
    ) -> Result<Response<pb::RerunTaskResponse>, Status> {
        let pb::RerunTaskRequest { task_id, from_step } = request.into_inner();
        let record = self.host.rerun_task(&task_id, &from_step).await?;
        Ok(Response::new(pb::RerunTaskResponse {
            task: Some(convert::task(record)),
        }))
    }
}

/// The launch of a StartTask request, and of a RunTask one converted to it.
fn launch(r: pb::StartTaskRequest) -> Result<TaskLaunch, Status> {
    let launch = convert::task_launch(
        r.blueprint,
        r.init_ctx,
        r.ttl_secs,
        r.operator,
        r.operator_sid,
    );
    Ok(launch?)
}

/// RunTask carries StartTask's fields: it launches the same way, then waits.
impl From<pb::RunTaskRequest> for pb::StartTaskRequest {
    fn from(r: pb::RunTaskRequest) -> Self {
        pb::StartTaskRequest {
            blueprint: r.blueprint,
            init_ctx: r.init_ctx,
            ttl_secs: r.ttl_secs,
            operator: r.operator,
            operator_sid: r.operator_sid,
        }
    }
}
