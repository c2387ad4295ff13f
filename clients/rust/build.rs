//! Generates the tonic *client* stubs from the repository's `proto/` with protox (no
//! system `protoc`); no server code, so the SDK never pulls the engine.

const PROTO_ROOT: &str = "../../proto";
const PROTOS: &[&str] = &[
    "../../proto/mlua_swarm/v1/blueprint.proto",
    "../../proto/mlua_swarm/v1/task.proto",
    "../../proto/mlua_swarm/v1/operator.proto",
    "../../proto/mlua_swarm/v1/worker.proto",
    "../../proto/mlua_swarm/v1/data.proto",
    "../../proto/mlua_swarm/v1/server.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // `OperatorService.Connect` would clash with the generated `connect` constructor;
        // clients are built with `XClient::new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
