//! Thin tonic service implementations, plus health and reflection, assembled into one
//! set of routes.

pub mod auth;
pub mod blueprint;
pub mod convert;
pub mod data;
pub mod frames;
pub mod operator;
pub mod stats;
pub mod task;
pub mod worker;

use std::sync::Arc;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_web::GrpcWebLayer;
use tower::Layer;

use crate::config::Config;
use crate::engine::EngineHost;
use crate::operator::OperatorHub;
use crate::pb;
use crate::pb::v1::blueprint_service_server::BlueprintServiceServer;
use crate::pb::v1::data_service_server::DataServiceServer;
use crate::pb::v1::operator_service_server::OperatorServiceServer;
use crate::pb::v1::server_service_server::ServerServiceServer;
use crate::pb::v1::task_service_server::TaskServiceServer;
use crate::pb::v1::worker_service_server::WorkerServiceServer;

/// Fully qualified names of our services, as health reports them.
pub const SERVICE_NAMES: [&str; 6] = [
    "mlua_swarm.v1.BlueprintService",
    "mlua_swarm.v1.TaskService",
    "mlua_swarm.v1.OperatorService",
    "mlua_swarm.v1.WorkerService",
    "mlua_swarm.v1.DataService",
    "mlua_swarm.v1.ServerService",
];

/// The gRPC services with their size limits, health and reflection (v1 and v1alpha), each
/// also over gRPC-Web. The API token is checked in front of them, by [`crate::gate`].
pub async fn routes(
    config: &Config,
    host: Arc<EngineHost>,
    hub: Arc<OperatorHub>,
) -> Result<(Routes, HealthReporter), Box<dyn std::error::Error + Send + Sync>> {
    let limit = config.max_message_bytes;
    let (health, health_svc) = tonic_health::server::health_reporter();
    set_serving(&health, true).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // Each of our services: explicit size limits, and gRPC-Web beside native gRPC.
    macro_rules! limited {
        ($server:ident, $svc:expr) => {
            GrpcWebLayer::new().layer(
                $server::new($svc)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
        };
    }
    let routes = Routes::new(limited!(
        BlueprintServiceServer,
        blueprint::BlueprintSvc::new(host.clone())
    ))
    .add_service(limited!(
        TaskServiceServer,
        task::TaskSvc::new(host.clone())
    ))
    .add_service(limited!(
        OperatorServiceServer,
        operator::OperatorSvc::new(hub.clone(), config.operator.ping_interval)
    ))
    .add_service(limited!(
        ServerServiceServer,
        stats::ServerSvc::new(host.clone(), hub)
    ))
    .add_service(limited!(
        WorkerServiceServer,
        worker::WorkerSvc::new(host.clone())
    ))
    .add_service(limited!(DataServiceServer, data::DataSvc::new(host)))
    // Health and reflection speak gRPC-Web too (browser probes, gRPC-Web tooling).
    .add_service(GrpcWebLayer::new().layer(health_svc))
    .add_service(GrpcWebLayer::new().layer(reflection_v1))
    .add_service(GrpcWebLayer::new().layer(reflection_v1alpha));
    Ok((routes, health))
}

/// Marks the whole server and each of our services SERVING or NOT_SERVING.
pub async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}
