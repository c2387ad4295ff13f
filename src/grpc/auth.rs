//! Credentials and deadlines read from request metadata.

use std::time::Duration;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};

/// The value of `authorization: Bearer <value>`, if the header is present. A header in
/// another form is an error that says which form is expected.
pub fn bearer(meta: &MetadataMap) -> Result<Option<String>> {
    let Some(raw) = meta.get("authorization") else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| Error::Unauthenticated("authorization header is not ASCII".into()))?;
    let value = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("authorization must be 'Bearer <credential>'".into())
        })?;
    Ok(Some(value.to_string()))
}

/// The bearer value, required.
pub fn require_bearer(meta: &MetadataMap, what: &str) -> Result<String> {
    bearer(meta)?.ok_or_else(|| {
        Error::Unauthenticated(format!("missing 'authorization: Bearer <{what}>' metadata"))
    })
}

/// True if two secrets are equal, compared in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The API token guarding Task and Blueprint RPCs (none = open).
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    token: Option<String>,
}

impl ApiAuth {
    /// Guards with `token` if set.
    pub fn new(token: Option<String>) -> Self {
        Self { token }
    }

    /// Checks the request's bearer against the API token.
    pub fn check(&self, meta: &MetadataMap) -> Result<()> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = require_bearer(meta, "api token")?;
        if secrets_equal(&given, expected) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("api token is wrong".into()))
        }
    }
}

/// The client's deadline from the `grpc-timeout` header.
pub fn deadline(meta: &MetadataMap) -> Option<Duration> {
    let raw = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn bearer_forms_and_api_token() {
        assert_eq!(bearer(&meta(&[])).expect("ok"), None);
        assert_eq!(
            bearer(&meta(&[("authorization", "Bearer abc")]))
                .expect("ok")
                .as_deref(),
            Some("abc")
        );
        assert!(bearer(&meta(&[("authorization", "Basic dXNlcjpwYXNz")])).is_err());
        assert!(bearer(&meta(&[("authorization", "Bearer ")])).is_err());
        let auth = ApiAuth::new(Some("t0k".into()));
        assert!(auth
            .check(&meta(&[("authorization", "Bearer t0k")]))
            .is_ok());
        let wrong = auth.check(&meta(&[("authorization", "Bearer nope")]));
        assert!(wrong.expect_err("wrong").to_string().contains("wrong"));
        assert!(ApiAuth::default().check(&meta(&[])).is_ok());
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            deadline(&meta(&[("grpc-timeout", "1500m")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            deadline(&meta(&[("grpc-timeout", "2S")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(deadline(&meta(&[("grpc-timeout", "x")])), None);
    }
}
