//! `TaskService`: thin adapter over [`EngineHost`]'s task runs.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::deadline;
use super::convert;
use crate::engine::EngineHost;
use crate::error::Error;
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
        let pb::StartTaskRequest {
            blueprint,
            init_ctx,
            ttl_secs,
            operator,
            operator_sid,
        } = request.into_inner();
        let launch = convert::task_launch(blueprint, init_ctx, ttl_secs, operator, operator_sid)?;
        let record = self.host.start_task(launch).await?;
        Ok(Response::new(pb::StartTaskResponse {
            task_id: record.task_id,
        }))
    }

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::RunTaskResponse>, Status> {
        let wait = deadline(request.metadata());
        let pb::RunTaskRequest {
            blueprint,
            init_ctx,
            ttl_secs,
            operator,
            operator_sid,
        } = request.into_inner();
        let launch = convert::task_launch(blueprint, init_ctx, ttl_secs, operator, operator_sid)?;
        let record = self.host.run_task(launch, wait).await?;
        Ok(Response::new(pb::RunTaskResponse {
            task: Some(convert::task(record)),
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let id = request.into_inner().task_id;
        let record = self.host.tasks().get(&id).ok_or_else(|| unknown(&id))?;
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
        let page = self.host.list_tasks(state, size as usize, &page_token)?;
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
        let id = request.into_inner().task_id;
        if self.host.tasks().get(&id).is_none() {
            return Err(unknown(&id).into());
        }
        let host = Arc::clone(&self.host);
        let stream = async_stream(host, id);
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
}

fn unknown(id: &str) -> Error {
    Error::NotFound(format!(
        "task '{id}' not found; ListTasks shows known tasks"
    ))
}

/// Streams a task's events from the first to the terminal one.
fn async_stream(
    host: Arc<EngineHost>,
    task_id: String,
) -> impl Stream<Item = Result<pb::WatchTaskResponse, Status>> + Send {
    futures::stream::unfold(
        (
            host,
            task_id,
            0u64,
            Vec::<pb::WatchTaskResponse>::new(),
            false,
        ),
        |(host, task_id, mut seen, mut buffered, mut done)| async move {
            loop {
                if let Some(item) = (!buffered.is_empty()).then(|| buffered.remove(0)) {
                    return Some((Ok(item), (host, task_id, seen, buffered, done)));
                }
                if done {
                    return None;
                }
                let (events, mut changed) = host.tasks().events_after(&task_id, seen)?;
                if events.is_empty() {
                    if changed.changed().await.is_err() {
                        return None;
                    }
                    continue;
                }
                for e in events {
                    seen = e.seq;
                    done |= matches!(
                        e.kind,
                        crate::engine::TaskEventKind::Completed { .. }
                            | crate::engine::TaskEventKind::Failed { .. }
                            | crate::engine::TaskEventKind::Cancelled { .. }
                    );
                    buffered.push(pb::WatchTaskResponse {
                        event: Some(convert::task_event(e)),
                    });
                }
            }
        },
    )
}
