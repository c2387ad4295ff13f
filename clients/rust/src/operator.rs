//! [`Operator`]: the reconnect loop around streams, and its [`Shutdown`] handle.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::attach::Exit;
use crate::auth::Auth;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::builder::OperatorBuilder;
use crate::core::{Core, Session};
use crate::error::Error;
use crate::handler::Handler;
use crate::ledger::Ledger;
use crate::pb;
use crate::pb::operator_service_client::OperatorServiceClient;

/// An operator session served by a [`Handler`]: resumes after every drop, acks what was
/// handled, handles each request once.
pub struct Operator<H> {
    core: Core<H>,
    /// Set when the SDK created the session: it creates a new one if the server forgot it.
    roles: Option<Vec<String>>,
    backoff: BackoffPolicy,
}

/// Stops a running [`Operator`]: `run` returns `Ok(())` and running handlers are dropped.
#[derive(Clone, Debug)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Asks the operator to stop.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

impl Operator<()> {
    /// Starts configuring an operator for the server at `endpoint` (`http://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> OperatorBuilder {
        OperatorBuilder::new(endpoint)
    }
}

impl<H: Handler> Operator<H> {
    pub(crate) fn new(core: Core<H>, roles: Option<Vec<String>>, backoff: BackoffPolicy) -> Self {
        Operator {
            core,
            roles,
            backoff,
        }
    }

    /// The session id (a task can be pinned to it with `operator_sid`).
    pub fn sid(&self) -> &str {
        &self.core.session.sid
    }

    /// The session's bearer token.
    pub fn token(&self) -> &str {
        &self.core.session.token
    }

    /// The channel to the server, for other calls (starting tasks, …).
    pub fn channel(&self) -> Channel {
        self.core.channel.clone()
    }

    /// A handle that stops [`Operator::run`].
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown(self.core.shutdown.clone())
    }

    /// Serves the session until [`Shutdown::shutdown`], a `closing` that says not to
    /// come back (`retry_after_ms: 0`), or a refusal (`Err`). Dropped streams and server
    /// restarts are resumed with backoff; notices are logged, never returned.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            let (exit, welcomed) = self.core.attach().await;
            if welcomed {
                backoff.reset();
            }
            let sid = self.core.session.sid.clone();
            let wait = match exit {
                Exit::Shutdown => return Ok(()),
                Exit::Closed {
                    reason,
                    retry_after_ms: 0,
                } => {
                    tracing::info!(%sid, %reason, "server closed the stream for good: stopping");
                    return Ok(());
                }
                Exit::Closed {
                    reason,
                    retry_after_ms,
                } => {
                    tracing::info!(%sid, %reason, retry_after_ms, "server closed the stream");
                    Duration::from_millis(retry_after_ms).max(backoff.next_delay())
                }
                Exit::Lost(why) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%sid, %why, ?wait, "operator stream lost: reconnecting");
                    wait
                }
                Exit::NotFound(status) => {
                    let Some(roles) = self.roles.clone() else {
                        return Err(Error::Refused(status));
                    };
                    tracing::warn!(%sid, "the server forgot the session: creating a new one");
                    match create_session(&self.core.channel, &self.core.auth, &roles).await {
                        Ok(session) => {
                            self.core.void_running();
                            self.core.ledger = Ledger::default();
                            self.core.session = session;
                            continue;
                        }
                        Err(Error::Refused(s)) if s.code() == tonic::Code::Unavailable => {
                            backoff.next_delay()
                        }
                        Err(e) => return Err(e),
                    }
                }
                Exit::Refused(status) => return Err(Error::Refused(status)),
            };
            tokio::select! {
                _ = self.core.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `CreateSession{roles}` → the new session's credentials.
pub(crate) async fn create_session(
    channel: &Channel,
    auth: &Auth,
    roles: &[String],
) -> Result<Session, Error> {
    let req = auth.request(pb::CreateSessionRequest {
        roles: roles.to_vec(),
    });
    let created = OperatorServiceClient::new(channel.clone())
        .create_session(req)
        .await?
        .into_inner();
    Ok(Session {
        sid: created.sid,
        token: created.token,
    })
}
