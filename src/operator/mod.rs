//! The operator session core: one [`OperatorSession`] per sid, shared by every transport.
//! A gRPC `Connect` stream, a browser's `Subscribe` + `Send`, and a WebSocket are doors
//! into the same session; only this module knows about pending requests.

pub mod directive;
mod ended;
pub mod frame;
pub mod hub;
pub mod session;

pub use frame::{ClientFrame, NoticeCode, ReplyOutcome, ServerBody, ServerFrame, Step, Welcome};
pub use hub::{CreatedSession, OperatorHub};
pub use session::{
    Attachment, OperatorSession, SessionInfo, SessionLimits, DEFAULT_MAX_UNACKED, MISSED_PINGS,
};
