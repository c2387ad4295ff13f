//! Credentials and deadlines read from request metadata (the API token is the gate's:
//! [`crate::gate`]).

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::door::{bearer_credential, Scheme};
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
    let value = bearer_credential(text, Scheme::EitherCase)
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
    fn bearer_forms() {
        assert_eq!(bearer(&meta(&[])).expect("ok"), None);
        assert_eq!(
            bearer(&meta(&[("authorization", "Bearer abc")]))
                .expect("ok")
                .as_deref(),
            Some("abc")
        );
        assert!(bearer(&meta(&[("authorization", "Basic dXNlcjpwYXNz")])).is_err());
        assert!(bearer(&meta(&[("authorization", "Bearer ")])).is_err());
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
