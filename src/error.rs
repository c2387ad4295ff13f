//! The domain error shared by every layer under the transports, and its one mapping to
//! `tonic::Status` (and to an HTTP status for the JSON routes).

use tonic::{Code, Status};

/// A failure the server reports to a caller. Messages are lowercase, without a trailing
/// period, and say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad Blueprint, bad field value).
    #[error("{0}")]
    InvalidArgument(String),
    /// An id, version, session or key that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something that must be unique already is (a role held by a live session).
    #[error("{0}")]
    AlreadyExists(String),
    /// The target is in the wrong state (archived Blueprint, finished task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A missing, malformed, unknown or expired credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential for something else.
    #[error("{0}")]
    PermissionDenied(String),
    /// A size or count limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A concurrent change won (a Blueprint's head moved while this write was prepared);
    /// read again and retry.
    #[error("{0}")]
    Aborted(String),
    /// A transient condition (engine lock busy, server draining); retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected backend failure. The detail never reaches a caller: it is
    /// logged under a reference id, and the caller sees `internal error (ref <id>)`.
    #[error("internal error")]
    Internal(String),
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code this error travels as.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status this error travels as on the JSON routes.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidArgument(_) => 400,
            Error::Unauthenticated(_) => 401,
            Error::PermissionDenied(_) => 403,
            Error::NotFound(_) => 404,
            Error::AlreadyExists(_) | Error::FailedPrecondition(_) | Error::Aborted(_) => 409,
            Error::ResourceExhausted(_) => 413,
            Error::Unavailable(_) => 503,
            Error::DeadlineExceeded(_) => 504,
            Error::Internal(_) => 500,
        }
    }

    /// The text a caller is shown. For [`Error::Internal`] this logs the detail under a
    /// fresh reference id and returns only the id.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(detail) => {
                let reference = crate::secret::reference_id();
                tracing::error!(%reference, %detail, "internal error");
                format!("internal error (ref {reference})")
            }
            other => other.to_string(),
        }
    }

    /// Builds an [`Error::InvalidArgument`] naming the offending field.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(format!("{field}: {why}"))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.grpc_code(), err.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_keeps_its_message_and_code() {
        let status: Status = Error::NotFound("blueprint 'x' not found".into()).into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "blueprint 'x' not found");
        let status: Status = Error::invalid("ttl_secs", "must be positive").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "ttl_secs: must be positive");
        assert_eq!(Error::Unavailable("busy".into()).http_status(), 503);
    }

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let status: Status = Error::Internal("engine: sqlite at /var/x locked".into()).into();
        assert_eq!(status.code(), Code::Internal);
        let msg = status.message();
        assert!(msg.starts_with("internal error (ref "), "{msg}");
        assert!(!msg.contains("sqlite"), "{msg}");
        assert_eq!(Error::Internal("x".into()).to_string(), "internal error");
    }
}
