//! Generated protobuf and tonic code for `mlua_swarm.v1`.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// The `mlua_swarm.v1` package.
pub mod v1 {
    tonic::include_proto!("mlua_swarm.v1");
}

/// Encoded `FileDescriptorSet` of every `mlua_swarm.v1` proto, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mlua_swarm_v1_descriptor.bin"));
