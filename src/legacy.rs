//! What the two v0.1.0 doors share (the HTTP routes in `http`, the JSON WebSocket in `ws`):
//! their state, their error answer and v0.1.0's reading of `Authorization`. Both depend on
//! this module, neither on the other; `server` puts their routes together.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::door::{bearer_credential, Scheme};
use crate::engine::EngineHost;
use crate::error::Error;
use crate::operator::OperatorHub;

/// What every legacy handler can reach.
#[derive(Debug, Clone)]
pub struct LegacyState {
    /// The engine host.
    pub host: Arc<EngineHost>,
    /// The operator sessions.
    pub hub: Arc<OperatorHub>,
    /// The bound address (reported by `/v1/doctor`).
    pub bind: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// An error answered as `{"error": "..."}` with the status [`Error::http_status`] gives.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.0.public_message() }))).into_response()
    }
}

/// Result of a legacy handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `Authorization: Bearer <value>` exactly as v0.1.0 parsed it (case-sensitive prefix,
/// trimmed, non-empty). None if the header is absent.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(raw) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| Error::Unauthenticated("invalid Authorization header encoding".into()))?;
    let value = bearer_credential(text, Scheme::Exact)
        .ok_or_else(|| Error::Unauthenticated("Authorization must be 'Bearer <token>'".into()))?;
    if value.is_empty() {
        return Err(Error::Unauthenticated(
            "missing or empty Bearer token".into(),
        ));
    }
    Ok(Some(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = auth {
            h.insert(axum::http::header::AUTHORIZATION, v.parse().expect("ascii"));
        }
        h
    }

    #[test]
    fn bearer_is_read_as_v010_read_it() {
        assert_eq!(bearer(&headers(None)).expect("ok"), None);
        assert_eq!(
            bearer(&headers(Some("Bearer t1 "))).expect("ok").as_deref(),
            Some("t1")
        );
        for bad in ["bearer t1", "Bearer ", "Basic dXNlcjpwYXNz"] {
            let err = bearer(&headers(Some(bad))).expect_err(bad);
            assert!(matches!(err, Error::Unauthenticated(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_answer_json_with_their_status() {
        let r = ApiError(Error::NotFound("no such sid".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
