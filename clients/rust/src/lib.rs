//! Operator SDK for `mlua-swarm-grpc`.
//!
//! Implement [`Handler`] (only [`Handler::on_spawn`] is required), then
//! `Operator::builder(url).roles([..]).connect(handler).await?.run().await`. The SDK
//! does the protocol's subtle parts (docs/OPERATOR-PROTOCOL.md): `hello{sid, last_seq}`
//! resume with exponential backoff and jitter, cumulative acks of fully handled frames
//! only, one handler call per `req_id` across reconnects (replies re-sent when the server
//! lost them), pongs, `closing.retry_after_ms`, and server restarts (requests from before
//! are void; their step comes again as a new spawn). Notices are logged with `tracing`.
//!
//! ```no_run
//! use mlua_swarm_operator::{pb, BoxError, Handler, Operator, SubmitOutcome, Worker};
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     async fn on_spawn(&self, _: pb::Spawn, worker: Worker) -> Result<serde_json::Value, BoxError> {
//!         let prompt = worker.get_prompt().await?;
//!         worker.submit(prompt.prompt.to_uppercase(), SubmitOutcome::Pass).await?;
//!         Ok(serde_json::Value::Null)
//!     }
//! }
//!
//! # async fn serve() -> Result<(), BoxError> {
//! let op = Operator::builder("http://127.0.0.1:7777").roles(["remote"]).connect(Upper).await?;
//! op.run().await?;
//! # Ok(())
//! # }
//! ```

mod attach;
mod auth;
mod backoff;
mod builder;
mod core;
mod dispatch;
mod error;
mod handler;
pub mod json;
mod ledger;
mod operator;
pub mod pb;
mod worker;

pub use backoff::BackoffPolicy;
pub use builder::OperatorBuilder;
pub use error::{BoxError, Error};
pub use handler::Handler;
pub use operator::{Operator, Shutdown};
pub use pb::SubmitOutcome;
pub use worker::Worker;
