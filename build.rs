//! Compiles `proto/` with protox (no system `protoc`), generates the tonic code and
//! writes the descriptor set that reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/mlua_swarm/v1/blueprint.proto",
    "proto/mlua_swarm/v1/task.proto",
    "proto/mlua_swarm/v1/operator.proto",
    "proto/mlua_swarm/v1/worker.proto",
    "proto/mlua_swarm/v1/data.proto",
    "proto/mlua_swarm/v1/server.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("mlua_swarm_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `OperatorService.Connect` would clash with the generated `connect` constructor;
        // clients are built with `XClient::new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
