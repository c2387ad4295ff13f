//! Request metadata: the bearer credential, the server's API token, a traceparent.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::error::Error;

/// Header carrying the server's `--api-token` (`authorization` carries the session or
/// worker credential).
const ACCESS_TOKEN_HEADER: &str = "x-mse-access-token";

/// Credentials added to every call: `authorization: Bearer …` and the optional API token.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auth {
    bearer: Option<AsciiMetadataValue>,
    api_token: Option<AsciiMetadataValue>,
}

impl Auth {
    /// Only the API token (session-less calls such as `CreateSession`).
    pub(crate) fn api(api_token: Option<&str>) -> Result<Auth, Error> {
        let api_token = api_token.map(|t| header(t, "api token")).transpose()?;
        Ok(Auth {
            bearer: None,
            api_token,
        })
    }

    /// The same API token with `credential` as the bearer.
    pub(crate) fn with_bearer(&self, credential: &str) -> Result<Auth, Error> {
        Ok(Auth {
            bearer: Some(header(&format!("Bearer {credential}"), "credential")?),
            api_token: self.api_token.clone(),
        })
    }

    /// `msg` as a request carrying these credentials.
    pub(crate) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        self.apply(req.metadata_mut());
        req
    }

    fn apply(&self, md: &mut MetadataMap) {
        if let Some(b) = &self.bearer {
            md.insert("authorization", b.clone());
        }
        if let Some(t) = &self.api_token {
            md.insert(ACCESS_TOKEN_HEADER, t.clone());
        }
    }
}

/// `value` as an ASCII header value; `what` names it in the error.
pub(crate) fn header(value: &str, what: &'static str) -> Result<AsciiMetadataValue, Error> {
    value.parse().map_err(|_| Error::Header { what })
}
