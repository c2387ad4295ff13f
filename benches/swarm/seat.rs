//! An operator seat serving every spawn: its session, a stored one-step Blueprint routed
//! to it, and the operator loop (native gRPC or the WebSocket shim). Closing it deletes the
//! session, so repeated runs against one server leave no idle sessions behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mlua_swarm_grpc::grpc::convert::json_to_struct;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::blueprint_service_client::BlueprintServiceClient;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::clients::{self, BoxError};

/// A seat with its operator attached.
pub(crate) struct Seat {
    bp_id: String,
    ch: Channel,
    sid: String,
    token: String,
    stop: Arc<AtomicBool>,
    op: JoinHandle<Result<(), BoxError>>,
}

impl Seat {
    /// Opens a seat on the server at `addr` (host:port) reached by `ch`; returns once its
    /// operator is attached.
    pub(crate) async fn open(addr: &str, ch: &Channel, ws: bool) -> Result<Self, BoxError> {
        let role = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let (sid, token) = clients::create_session(ch, &role).await?;
        let bp_id = format!("b1-{}", uuid::Uuid::new_v4().simple());
        BlueprintServiceClient::new(ch.clone())
            .put_blueprint(pb::PutBlueprintRequest {
                id: bp_id.clone(),
                blueprint: Some(json_to_struct(clients::operator_blueprint(&bp_id, &role))),
            })
            .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, t, halt) = (ch.clone(), sid.clone(), token.clone(), stop.clone());
        let op = if ws {
            let work = move |spawn: serde_json::Value| {
                let ch = c.clone();
                async move {
                    let handle = spawn["worker_handle"].as_str().unwrap_or_default();
                    clients::work(ch, handle).await
                }
            };
            tokio::spawn(clients::ws_operator(addr.to_string(), s, t, work, halt))
        } else {
            tokio::spawn(clients::grpc_operator(c, s, t, halt))
        };
        let seat = Seat {
            bp_id,
            ch: ch.clone(),
            sid,
            token,
            stop,
            op,
        };
        seat.wait_attached().await?;
        Ok(seat)
    }

    /// Polls the session until a stream is attached, for 10 s at most.
    async fn wait_attached(&self) -> Result<(), BoxError> {
        clients::poll_until(
            Duration::from_secs(10),
            "operator did not attach",
            || async {
                let get = pb::GetSessionRequest {
                    sid: self.sid.clone(),
                };
                let s = OperatorServiceClient::new(self.ch.clone())
                    .get_session(clients::authed(get, &self.token)?)
                    .await?
                    .into_inner()
                    .session;
                Ok(s.is_some_and(|s| s.connected))
            },
        )
        .await
    }

    /// A RunTask of the seat's Blueprint.
    pub(crate) fn run_request(&self) -> pb::RunTaskRequest {
        pb::RunTaskRequest {
            blueprint: Some(pb::BlueprintRef {
                source: Some(pb::blueprint_ref::Source::Stored(pb::StoredBlueprintRef {
                    id: self.bp_id.clone(),
                    version: None,
                })),
            }),
            init_ctx: Some(json_to_struct(json!({"input": "x"}))),
            ..Default::default()
        }
    }

    /// Stops the operator and deletes the session.
    pub(crate) async fn close(self) -> Result<(), BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.op.await;
        clients::delete_session(&self.ch, &self.sid, &self.token).await
    }
}
