//! The operator session core: one [`OperatorSession`] per sid, shared by every transport.
//! A gRPC `Connect` stream, a browser's `Subscribe` + `Send`, and a WebSocket are doors
//! into the same session; only this module knows about pending requests.
//!
//! Two seams sit here for durable and multi-replica deployments: [`SessionStore`] (the
//! session records and role claims) and [`FrameBus`] (frames between the engine side and
//! the session holding a stream). Each has the in-process default the server uses.

mod adapter;
mod attachment;
mod bus;
pub mod directive;
mod ended;
pub mod frame;
mod handover;
pub mod hub;
mod inbound;
mod nats;
mod notes;
mod outbox;
mod parking;
mod pending;
mod pg_store;
mod reservation;
pub mod session;
mod settings;
mod sqlite_sql;
mod sqlite_store;
mod store;
#[cfg(test)]
mod test_support;

pub use attachment::{Attachment, MISSED_PINGS};
pub use bus::{FrameBus, LocalBus, Outbound};
pub use frame::{ClientFrame, NoticeCode, ReplyOutcome, ServerBody, ServerFrame, Step, Welcome};
pub use hub::{CreatedSession, OperatorHub};
pub use nats::{NatsBus, NatsStartError};
pub use outbox::Marks;
pub use pending::{Reply, ReplyResult, RequestKind, Waiter};
pub use pg_store::PgSessionStore;
pub use session::{AttachListener, OperatorSession, SessionInfo, SessionLinks};
pub use settings::{OperatorTimeouts, SessionLimits, DEFAULT_MAX_UNACKED};
pub use sqlite_store::{SqliteSessionStore, StoreOpenError, SESSIONS_FILE};
pub use store::{token_hash, Claim, MemorySessionStore, SessionRecord, SessionStore};
