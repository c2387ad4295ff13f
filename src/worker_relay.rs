//! The relay on NATS (`--nats-url`): each replica answers, on `mse.work.<boot id>`, the
//! worker calls for the handles it minted, and on `mse.ctl.<replica id>` the calls for
//! the tasks it runs (CancelTask); a replica given a call for another asks there
//! (`engine::relay`). Workers and clients may so call any replica, or a balancer in
//! front of them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::engine::{EngineHost, WorkerAnswer, WorkerCall, WorkerRelay};

/// How long a relayed call may take (a submit hands the result to the flow and returns).
const WAIT: Duration = Duration::from_secs(10);

fn subject(boot: &str) -> String {
    format!("mse.work.{boot}")
}

fn replica_subject(replica: &str) -> String {
    format!("mse.ctl.{replica}")
}

/// See the module doc.
pub struct NatsWorkerRelay {
    client: async_nats::Client,
}

impl NatsWorkerRelay {
    /// Connects to `url`, answers the calls for `host`'s handles and for the tasks of
    /// `replica`, and lets `host` relay the others.
    pub async fn start(url: &str, replica: &str, host: &Arc<EngineHost>) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "NATS at {url} (worker relay): cannot connect ({e}); is nats-server running there?"
            )
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("mse-grpc worker relay {}", host.boot_id()))
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| fail(&e))?;
        let calls = client
            .subscribe(subject(host.boot_id()))
            .await
            .map_err(|e| fail(&e))?;
        let controls = client
            .subscribe(replica_subject(replica))
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(serve(calls, client.clone(), Arc::downgrade(host)));
        tokio::spawn(serve(controls, client.clone(), Arc::downgrade(host)));
        host.set_worker_relay(Arc::new(Self { client }));
        Ok(())
    }
}

/// Answers each relayed call on its own task.
async fn serve(
    mut calls: async_nats::Subscriber,
    client: async_nats::Client,
    host: Weak<EngineHost>,
) {
    while let Some(msg) = calls.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Some(host) = host.upgrade() else { return };
        let client = client.clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<WorkerCall>(&msg.payload) {
                Ok(call) => host.serve_relayed(call).await,
                Err(e) => WorkerAnswer::Failed {
                    code: tonic::Code::InvalidArgument as i32,
                    message: format!("unreadable relayed worker call: {e}"),
                },
            };
            match serde_json::to_vec(&answer) {
                Ok(bytes) => {
                    if let Err(e) = client.publish(reply, bytes.into()).await {
                        tracing::warn!(error = %e, "relayed worker answer not sent");
                    }
                }
                Err(e) => tracing::error!(error = %e, "relayed worker answer not encoded"),
            }
        });
    }
}

impl NatsWorkerRelay {
    /// Sends `call` to `subject`; its answer, None when nobody subscribes there.
    async fn ask(&self, subject: String, call: &WorkerCall) -> Option<WorkerAnswer> {
        let unavailable = |why: String| WorkerAnswer::Failed {
            code: tonic::Code::Unavailable as i32,
            message: format!("the replica this call is for did not answer ({why}); retry"),
        };
        let payload = match serde_json::to_vec(call) {
            Ok(p) => p,
            Err(e) => return Some(unavailable(e.to_string())),
        };
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(WAIT));
        match self.client.send_request(subject, request).await {
            Ok(msg) => Some(
                serde_json::from_slice(&msg.payload)
                    .unwrap_or_else(|e| unavailable(format!("unreadable answer: {e}"))),
            ),
            // The process is gone: the caller answers as for one it does not know.
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => None,
            Err(e) => Some(unavailable(e.to_string())),
        }
    }
}

#[async_trait]
impl WorkerRelay for NatsWorkerRelay {
    async fn call(&self, boot: &str, call: &WorkerCall) -> Option<WorkerAnswer> {
        self.ask(subject(boot), call).await
    }

    async fn to_replica(&self, replica: &str, call: &WorkerCall) -> Option<WorkerAnswer> {
        self.ask(replica_subject(replica), call).await
    }
}
