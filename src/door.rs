//! What every door (gRPC, v0.1.0 HTTP, WebSocket) and the gate share, so that no door
//! imports another: reading `Authorization: Bearer`, and how long a new operator stream has
//! to say who it is.

use std::time::Duration;

/// How long a new operator stream has to identify itself: a gRPC `Connect` its
/// `hello{sid, last_seq}`, a WebSocket without header or query credentials its
/// `{"type":"auth"}` message.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Which spellings of the `Bearer` scheme are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer ` only (case-sensitive), as v0.1.0 parsed it.
    Exact,
    /// `Bearer ` or `bearer `.
    EitherCase,
}

/// The credential of an `Authorization` value in the form `Bearer <credential>`, trimmed
/// (possibly empty); None if the value is in another form.
pub fn bearer_credential(authorization: &str, scheme: Scheme) -> Option<&str> {
    let rest = match authorization.strip_prefix("Bearer ") {
        Some(rest) => rest,
        None if scheme == Scheme::EitherCase => authorization.strip_prefix("bearer ")?,
        None => return None,
    };
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        for scheme in [Scheme::Exact, Scheme::EitherCase] {
            assert_eq!(bearer_credential("Bearer abc ", scheme), Some("abc"));
            assert_eq!(bearer_credential("Bearer  ", scheme), Some(""));
            assert_eq!(bearer_credential("Basic dXNlcjpwYXNz", scheme), None);
            assert_eq!(bearer_credential("Bearerabc", scheme), None);
        }
        assert_eq!(bearer_credential("bearer abc", Scheme::Exact), None);
        assert_eq!(
            bearer_credential("bearer abc", Scheme::EitherCase),
            Some("abc")
        );
        assert_eq!(bearer_credential("BEARER abc", Scheme::EitherCase), None);
    }
}
