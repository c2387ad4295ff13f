//! `POST /v1/tasks`: run a flow synchronously, v0.1.0 request and response shapes.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{
    BlueprintSource, LaunchOperator, OperatorKind, TaskLaunch, TaskState, TtlSource, VersionPick,
};
use crate::error::Error;
use crate::legacy::{ApiResult, LegacyState};

/// v0.1.0 `FlowTasksReq` (unknown fields ignored).
#[derive(Debug, Deserialize)]
pub(super) struct FlowTasksReq {
    blueprint: LegacyBlueprintRef,
    init_ctx: Value,
    ttl_secs: Option<u64>,
    #[serde(default)]
    operator: Option<LegacyOperator>,
    operator_sid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LegacyBlueprintRef {
    Inline {
        value: Value,
    },
    Id {
        id: String,
        #[serde(default)]
        version: LegacyVersion,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LegacyVersion {
    #[default]
    Latest,
    Fixed {
        value: String,
    },
    SemverReq {
        req: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct LegacyOperator {
    kind: Option<String>,
    id: Option<String>,
    spawn_hook_id: Option<String>,
    senior_bridge_id: Option<String>,
    #[serde(default)]
    per_agent_kinds: HashMap<String, String>,
}

fn kind(text: &str) -> Result<OperatorKind, Error> {
    match text {
        "main_ai" => Ok(OperatorKind::MainAi),
        "automate" => Ok(OperatorKind::Automate),
        "composite" => Ok(OperatorKind::Composite),
        other => Err(Error::InvalidArgument(format!(
            "operator kind: unknown value '{other}' (expected main_ai|automate|composite)"
        ))),
    }
}

fn launch(req: FlowTasksReq) -> Result<TaskLaunch, Error> {
    let blueprint = match req.blueprint {
        LegacyBlueprintRef::Inline { value } => BlueprintSource::Inline(value),
        LegacyBlueprintRef::Id { id, version } => BlueprintSource::Stored {
            id,
            version: match version {
                LegacyVersion::Latest => VersionPick::Latest,
                LegacyVersion::Fixed { value } => VersionPick::Fixed(value),
                LegacyVersion::SemverReq { req } => VersionPick::SemverReq(req),
            },
        },
    };
    let op = req.operator.unwrap_or_default();
    let mut per_agent_kinds = HashMap::new();
    for (agent, k) in op.per_agent_kinds {
        per_agent_kinds.insert(agent, kind(&k)?);
    }
    Ok(TaskLaunch {
        blueprint,
        init_ctx: req.init_ctx,
        ttl_secs: req.ttl_secs,
        operator: LaunchOperator {
            kind: op.kind.as_deref().map(kind).transpose()?,
            spawn_hook_id: op.spawn_hook_id,
            senior_bridge_id: op.senior_bridge_id,
            per_agent_kinds,
            label: op.id,
        },
        operator_sid: req.operator_sid,
    })
}

pub(super) async fn start(
    State(st): State<LegacyState>,
    Json(req): Json<FlowTasksReq>,
) -> ApiResult<Json<Value>> {
    let record = st.host.run_task(launch(req)?, None).await?;
    match record.state {
        TaskState::Completed => Ok(Json(json!({
            "final_ctx": record.final_ctx.unwrap_or(Value::Null),
            "bound_version": record.bound_version,
            "effective_ttl_secs": record.effective_ttl_secs,
            "ttl_source": match record.ttl_source {
                TtlSource::RequestBody => "request_body",
                TtlSource::BpMetadata => "bp_metadata",
                TtlSource::ServerDefault => "server_default",
            },
        }))),
        _ => Err(Error::InvalidArgument(format!(
            "run: {}",
            record
                .error
                .unwrap_or_else(|| "task did not complete".into())
        ))
        .into()),
    }
}
