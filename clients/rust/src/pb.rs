//! Generated protobuf messages and tonic clients of `mlua_swarm.v1` (client stubs only).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("mlua_swarm.v1");
