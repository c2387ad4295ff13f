//! mlua-swarm-grpc: a gRPC, gRPC-Web and legacy HTTP/WebSocket server that hosts the
//! [`mlua_swarm`] engine in-process.
//!
//! Layers, outermost first: transports ([`grpc`], and the v0.1.0 [`http`] routes and
//! [`ws`] shim, which share [`legacy`]) are thin adapters over the domain
//! ([`engine`] hosts the engine, [`operator`] holds operator sessions); [`error`] is the one
//! error vocabulary they share, [`door`] and [`secret`] the helpers they share; [`server`]
//! puts every door on one port, in plaintext or [`tls`].

#![warn(missing_docs)]

pub mod brake;
pub mod config;
pub mod door;
pub mod engine;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod operator;
pub mod pb;
pub mod pg;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod worker_relay;
pub mod ws;
