//! Several replicas on one PostgreSQL and one nats-server: their flags, signals to a
//! replica process, and workers that call the endpoint a spawn's directive names.

use std::collections::HashMap;

use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::child::Proc;

/// The flags of replica `id` on the shared database and bus.
pub fn replica_flags(db: &str, nats: &str, id: &str) -> Vec<String> {
    [
        "--database-url",
        db,
        "--nats-url",
        nats,
        // Every replica signs capability tokens with the same secret.
        "--token-secret",
        "5eed5eed5eed5eed5eed5eed5eed5eed",
        "--replica-id",
        id,
    ]
    .map(String::from)
    .to_vec()
}

/// The worker endpoint a spawn's directive names (the replica running the step), as a
/// sub-agent reads it.
pub fn worker_endpoint(spawn: &pb::Spawn) -> String {
    let marker = "worker endpoint (gRPC, ";
    let at = spawn
        .directive
        .find(marker)
        .unwrap_or_else(|| panic!("no worker endpoint in {}", spawn.directive));
    let rest = &spawn.directive[at + marker.len()..];
    rest[..rest.find(')').expect("endpoint end")].to_string()
}

/// Worker clients by endpoint.
#[derive(Default)]
pub struct Workers(HashMap<String, Channel>);

impl Workers {
    pub fn at(&mut self, spawn: &pb::Spawn) -> WorkerServiceClient<Channel> {
        let url = worker_endpoint(spawn);
        let channel = self
            .0
            .entry(url.clone())
            .or_insert_with(|| Endpoint::from_shared(url).expect("endpoint").connect_lazy());
        WorkerServiceClient::new(channel.clone())
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to `proc`.
pub fn signal(proc: &Proc, signal: &str) {
    let pid = proc.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {signal} {pid}");
}
