//! [`OperatorBuilder`]: where the server is, which session, which credentials.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::auth::Auth;
use crate::backoff::BackoffPolicy;
use crate::core::{Core, Session};
use crate::error::Error;
use crate::handler::Handler;
use crate::operator::{create_session, Operator};

/// The session an operator serves.
#[derive(Clone, Debug)]
enum Seat {
    /// Create a session holding these roles.
    Roles(Vec<String>),
    /// Attach to an existing session.
    Existing(Session),
}

/// Configures an [`Operator`]; see [`Operator::builder`].
#[derive(Debug)]
pub struct OperatorBuilder {
    endpoint: String,
    seat: Option<Seat>,
    api_token: Option<String>,
    backoff: BackoffPolicy,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl OperatorBuilder {
    pub(crate) fn new(endpoint: impl Into<String>) -> OperatorBuilder {
        OperatorBuilder {
            endpoint: endpoint.into(),
            seat: None,
            api_token: None,
            backoff: BackoffPolicy::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Creates a new session holding `roles` (the seats Blueprints route to).
    pub fn roles<I, S>(mut self, roles: I) -> OperatorBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seat = Some(Seat::Roles(roles.into_iter().map(Into::into).collect()));
        self
    }

    /// Serves the existing session `sid` with its `token`.
    pub fn session(mut self, sid: impl Into<String>, token: impl Into<String>) -> OperatorBuilder {
        self.seat = Some(Seat::Existing(Session {
            sid: sid.into(),
            token: token.into(),
        }));
        self
    }

    /// The server's `--api-token`, sent as `x-mse-access-token` on every call.
    pub fn api_token(mut self, token: impl Into<String>) -> OperatorBuilder {
        self.api_token = Some(token.into());
        self
    }

    /// Reconnect delays (default 100 ms doubling to 10 s, jittered).
    pub fn backoff(mut self, policy: BackoffPolicy) -> OperatorBuilder {
        self.backoff = policy;
        self
    }

    /// TLS settings for an `https://` endpoint (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: tonic::transport::ClientTlsConfig) -> OperatorBuilder {
        self.tls = Some(tls);
        self
    }

    /// Creates the session (for [`OperatorBuilder::roles`]) and returns the operator,
    /// ready to [`Operator::run`] with `handler`.
    pub async fn connect<H: Handler>(self, handler: H) -> Result<Operator<H>, Error> {
        let endpoint =
            Endpoint::from_shared(self.endpoint)?.connect_timeout(Duration::from_secs(5));
        #[cfg(feature = "tls")]
        let endpoint = match self.tls {
            Some(tls) => endpoint.tls_config(tls)?,
            None => endpoint,
        };
        let channel = endpoint.connect_lazy();
        let auth = Auth::api(self.api_token.as_deref())?;
        let (session, roles) = match self.seat.ok_or(Error::NoSession)? {
            Seat::Existing(session) => (session, None),
            Seat::Roles(roles) => (create_session(&channel, &auth, &roles).await?, Some(roles)),
        };
        let core = Core::new(
            Arc::new(handler),
            channel,
            auth,
            session,
            CancellationToken::new(),
        );
        Ok(Operator::new(core, roles, self.backoff))
    }
}
