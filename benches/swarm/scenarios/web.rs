//! B5: the same unary RPC over native gRPC and over gRPC-Web (HTTP/1.1 POSTs from a pool
//! of keep-alive connections, as browsers send them).

use std::time::Duration;

use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::blueprint_service_client::BlueprintServiceClient;
use prost::Message;

use crate::clients::BoxError;
use crate::measure::{measure, Sample};
use crate::report::Row;
use crate::target::Target;

/// `in_flight` GetBlueprint calls kept going for `dur`, over gRPC-Web if `web`.
pub(super) async fn b5(
    t: &Target,
    web: bool,
    in_flight: usize,
    dur: Duration,
) -> Result<Row, BoxError> {
    let req = pb::GetBlueprintRequest {
        id: "main".into(),
        version: String::new(),
    };
    let (mut sample, door) = if web {
        (
            over_grpc_web(t, req, in_flight, dur).await?,
            "gRPC-Web (HTTP/1.1)",
        )
    } else {
        let client = BlueprintServiceClient::new(t.channel().await?);
        let sample = measure(in_flight, dur, move |_| {
            let mut client = client.clone();
            let req = req.clone();
            async move {
                client.get_blueprint(req).await?;
                Ok(())
            }
        })
        .await?;
        (sample, "native gRPC (h2c)")
    };
    let scenario = format!("unary GetBlueprint over {door}");
    Ok(Row::measured("B5", scenario, in_flight, &mut sample))
}

/// GetBlueprint as gRPC-Web POSTs with a hand-framed body.
async fn over_grpc_web(
    t: &Target,
    req: pb::GetBlueprintRequest,
    in_flight: usize,
    dur: Duration,
) -> Result<Sample, BoxError> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = format!(
        "http://{}/mlua_swarm.v1.BlueprintService/GetBlueprint",
        t.addr
    );
    let body = {
        let msg = req.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        bytes::Bytes::from(framed)
    };
    measure(in_flight, dur, move |_| {
        let http = http.clone();
        let url = url.clone();
        let body = body.clone();
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .body(body)
                .send()
                .await?;
            let bytes = resp.bytes().await?;
            if bytes.len() < 5 {
                return Err("empty grpc-web response".into());
            }
            Ok(())
        }
    })
    .await
}
