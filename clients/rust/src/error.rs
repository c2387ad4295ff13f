//! The SDK's error type: what ends [`crate::Operator::run`] or a setup call.

/// A boxed error a handler may return (anything `?` can convert, `String` included).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the operator could not start or stopped for good. Transport errors are retried
/// with backoff and never surface here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not a valid URI (or its TLS settings were refused).
    #[error("invalid endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
    /// A metadata value (token) is not valid ASCII for a header.
    #[error("invalid {what}: not a valid header value")]
    Header {
        /// Which value.
        what: &'static str,
    },
    /// The server refused the session for good (wrong token, unknown sid, a role held
    /// by another session, …).
    #[error("refused by the server: {0}")]
    Refused(#[from] tonic::Status),
    /// Neither `roles` nor `session` was given to the builder.
    #[error("the builder needs .roles(..) or .session(sid, token)")]
    NoSession,
}
