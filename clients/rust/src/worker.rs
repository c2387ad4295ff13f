//! [`Worker`]: a spawn's sub-agent calls (`GetPrompt`, `Submit`, `PostResult`) with the
//! spawn's own credentials.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::auth::{header, Auth};
use crate::json;
use crate::pb;
use crate::pb::worker_service_client::WorkerServiceClient;

/// Tries of a worker call cut by the transport (a dropped connection is re-opened).
const TRIES: u32 = 4;

/// The worker side of one `spawn`: reads the step's prompt and submits its result.
///
/// A call the transport cut (the connection dropped, the server is restarting) is
/// tried again, up to 4 times; if a cut `Submit` had landed, the retry answers that the
/// step is finished. Calls carry the spawn's `worker_handle` as the bearer (or its signed
/// `capability_token`, see [`Worker::by_capability_token`]) and its `traceparent`.
#[derive(Clone, Debug)]
pub struct Worker {
    channel: Channel,
    step_id: String,
    handle: String,
    capability_token: String,
    traceparent: String,
    by_token: bool,
    auth: Auth,
    cancel: CancellationToken,
}

impl Worker {
    /// A worker for `spawn` on `channel` (no API token; see [`Worker::with_api_token`]).
    pub fn new(channel: Channel, spawn: &pb::Spawn) -> Worker {
        Worker {
            channel,
            step_id: spawn.step_id.clone(),
            handle: spawn.worker_handle.clone(),
            capability_token: spawn.capability_token.clone(),
            traceparent: spawn.traceparent.clone(),
            by_token: false,
            auth: Auth::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Sends `api_token` (the server's `--api-token`) with every call.
    pub fn with_api_token(mut self, api_token: &str) -> Result<Worker, crate::Error> {
        self.auth = Auth::api(Some(api_token))?;
        Ok(self)
    }

    /// Uses the signed `capability_token` instead of the shorter `worker_handle`.
    pub fn by_capability_token(mut self) -> Worker {
        self.by_token = true;
        self
    }

    pub(crate) fn with_auth(mut self, auth: Auth, cancel: CancellationToken) -> Worker {
        self.auth = auth;
        self.cancel = cancel;
        self
    }

    /// The engine's step id (`ST-…`).
    pub fn step_id(&self) -> &str {
        &self.step_id
    }

    /// Resolves once the request was withdrawn (`cancel`) or voided by a server restart;
    /// the step's result is no longer wanted.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether [`Worker::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The step's prompt: `{step_id, attempt, agent, system, prompt}`.
    pub async fn get_prompt(&self) -> Result<pb::GetPromptResponse, tonic::Status> {
        let msg = pb::GetPromptRequest {
            step_id: self.step_id.clone(),
        };
        retry(|| async {
            let req = self.request(msg.clone(), self.credential())?;
            Ok(self.client().get_prompt(req).await?.into_inner())
        })
        .await
    }

    /// Submits the step's text result; `Blocked` makes the engine `ask` the operator.
    pub async fn submit(
        &self,
        body: impl Into<String>,
        outcome: pb::SubmitOutcome,
    ) -> Result<pb::SubmitResponse, tonic::Status> {
        let msg = pb::SubmitRequest {
            body: body.into(),
            outcome: outcome as i32,
            step_id: String::new(),
        };
        retry(|| async {
            let req = self.request(msg.clone(), self.credential())?;
            Ok(self.client().submit(req).await?.into_inner())
        })
        .await
    }

    /// Posts a JSON result (`ok: false` fails the step); always with the capability token.
    pub async fn post_result(
        &self,
        value: serde_json::Value,
        ok: bool,
    ) -> Result<pb::PostResultResponse, tonic::Status> {
        let msg = pb::PostResultRequest {
            step_id: self.step_id.clone(),
            value: json::to_proto_opt(value),
            ok: Some(ok),
        };
        retry(|| async {
            let req = self.request(msg.clone(), &self.capability_token)?;
            Ok(self.client().post_result(req).await?.into_inner())
        })
        .await
    }

    fn credential(&self) -> &str {
        if self.by_token {
            &self.capability_token
        } else {
            &self.handle
        }
    }

    fn client(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }

    fn request<T>(&self, msg: T, credential: &str) -> Result<tonic::Request<T>, tonic::Status> {
        let invalid = |e: crate::Error| tonic::Status::invalid_argument(e.to_string());
        let mut req = self
            .auth
            .with_bearer(credential)
            .map_err(invalid)?
            .request(msg);
        if !self.traceparent.is_empty() {
            let tp = header(&self.traceparent, "traceparent").map_err(invalid)?;
            req.metadata_mut().insert("traceparent", tp);
        }
        Ok(req)
    }
}

/// Runs `call`, again after a short pause while it fails in the transport.
async fn retry<T, F, Fut>(call: F) -> Result<T, tonic::Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut pause = Duration::from_millis(50);
    for _ in 1..TRIES {
        match call().await {
            Err(status) if cut_by_transport(&status) => {
                tracing::debug!(%status, ?pause, "worker call cut by the transport: again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    call().await
}

/// Whether `status` comes from the connection rather than the server.
fn cut_by_transport(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.code() == tonic::Code::Unavailable
        || status
            .source()
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}
