//! A launch: what a caller asks to run, and its preparation (resolve the Blueprint, the TTL
//! cascade, operator pins, a compile check) into the engine's input and our record.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use mlua_swarm::blueprint::store::{BlueprintId, BlueprintVersion};
use mlua_swarm::types::Role;
use mlua_swarm::{Blueprint, BlueprintRef, TaskApplicationInput, VersionSelector};
use serde_json::Value;

use crate::engine::blueprints::{check_id, parse_blueprint, parse_version};
use crate::engine::errors::from_application;
use crate::engine::tasks::unix_ms;
use crate::engine::{compat, EngineHost, RunStart, TaskRecord, TaskRun, TaskState, TtlSource};
use crate::error::{Error, Result};

/// TTL of a task's engine session when neither the request nor the Blueprint sets one.
pub const SERVER_DEFAULT_TTL_SECS: u64 = 1800;

/// Operator kind (the tier that makes spawn hooks fire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorKind {
    /// Hooks fire.
    MainAi,
    /// No hooks.
    Automate,
    /// Hooks fire.
    Composite,
}

/// Which stored version to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VersionPick {
    /// The head.
    Latest,
    /// One exact hex version.
    Fixed(String),
    /// Highest `version_label` matching a semver requirement.
    SemverReq(String),
}

/// Where a task's Blueprint comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum BlueprintSource {
    /// A document passed with the request.
    Inline(Value),
    /// A stored Blueprint.
    Stored {
        /// Its id.
        id: String,
        /// Which version.
        version: VersionPick,
    },
}

/// Runtime operator options of a launch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LaunchOperator {
    /// Runtime-global kind.
    pub kind: Option<OperatorKind>,
    /// Session (sid or role) receiving hook_before / hook_after.
    pub spawn_hook_id: Option<String>,
    /// Session (sid or role) receiving `ask`.
    pub senior_bridge_id: Option<String>,
    /// Per-agent kinds.
    pub per_agent_kinds: HashMap<String, OperatorKind>,
    /// Free-form label of the launcher (v0.1.0 `operator.id`).
    pub label: Option<String>,
}

/// A request to run a Blueprint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskLaunch {
    /// Which Blueprint.
    pub blueprint: BlueprintSource,
    /// Initial flow context.
    pub init_ctx: Value,
    /// Requested TTL.
    pub ttl_secs: Option<u64>,
    /// Operator options.
    pub operator: LaunchOperator,
    /// Operator session (sid or role) the task is pinned to.
    pub operator_sid: Option<String>,
}

/// A launch made ready: the engine's input and the record of the new task (its `launch`
/// holds the launch with the Blueprint pinned, to resume or rerun it the same way).
pub(in crate::engine) struct Prepared {
    pub(super) input: TaskApplicationInput,
    pub(super) record: TaskRecord,
}

impl EngineHost {
    /// Checks a launch and turns it into the engine's input and the new task's record;
    /// nothing is started or stored yet.
    pub(super) async fn prepare(&self, task_id: &str, launch: TaskLaunch) -> Result<Prepared> {
        let TaskLaunch {
            blueprint,
            init_ctx,
            ttl_secs,
            operator,
            operator_sid,
        } = launch;
        self.size.check_value("init_ctx", &init_ctx)?;
        let pinned_source = blueprint.clone();
        let (bp, bound_version) = self.resolve(blueprint).await?;
        let version_hex = bound_version.as_ref().map(|v| v.to_hex());
        let pinned_source = match (pinned_source, &version_hex) {
            (BlueprintSource::Stored { id, .. }, Some(v)) => BlueprintSource::Stored {
                id,
                version: VersionPick::Fixed(v.clone()),
            },
            (source, _) => source,
        };
        let (ttl, ttl_source) = effective_ttl(ttl_secs, bp.metadata.default_run_ttl_secs)?;
        let registered = self.engine.list_operator_ids().await;
        let known = |field: &str, id: &Option<String>| -> Result<()> {
            match id {
                Some(id) if !registered.iter().any(|r| r == id) => Err(Error::NotFound(format!(
                    "{field}: no operator session or role '{id}' is registered; create one with \
                     OperatorService.CreateSession"
                ))),
                _ => Ok(()),
            }
        };
        let operator_sid = non_empty(operator_sid);
        let spawn_hook_id = non_empty(operator.spawn_hook_id.clone());
        let senior_bridge_id = non_empty(operator.senior_bridge_id.clone());
        let pinned = TaskLaunch {
            blueprint: pinned_source,
            init_ctx: init_ctx.clone(),
            ttl_secs: Some(ttl),
            operator: operator.clone(),
            operator_sid: operator_sid.clone(),
        };
        known("operator_sid", &operator_sid)?;
        known("operator.spawn_hook_id", &spawn_hook_id)?;
        known("operator.senior_bridge_id", &senior_bridge_id)?;
        let only_seat = match bp.operators.as_slice() {
            [only] => Some(only.name.clone()),
            _ => None,
        };
        let blueprint_id = bp.id.to_string();
        let compile_ref = BlueprintRef::Inline {
            value: Box::new(bp),
        };
        let checked_before = version_hex
            .as_deref()
            .is_some_and(|v| self.checked.contains(&blueprint_id, v));
        if !checked_before {
            self.app
                .precompile(&compile_ref)
                .await
                .map_err(from_application)?;
            if let Some(v) = &version_hex {
                self.checked.insert(&blueprint_id, v);
            }
        }
        // With no explicit pin, a Blueprint with a single operator seat sends its hooks and
        // asks to whoever holds that seat. Read after the compile: a seat registered
        // meanwhile (another replica's session, learned from the bus) passed the compile,
        // so it must be pinned too.
        let sole_seat = match (&operator_sid, only_seat) {
            (None, Some(name)) if self.engine.list_operator_ids().await.contains(&name) => {
                Some(name)
            }
            _ => None,
        };
        let pin = operator_sid.clone().or(sole_seat);
        let input = TaskApplicationInput {
            blueprint: compile_ref,
            operator_id: task_id.to_string(),
            role: Role::Operator,
            ttl: Duration::from_secs(ttl),
            init_ctx: if init_ctx.is_null() {
                Value::Object(Default::default())
            } else {
                init_ctx
            },
            operator_kind: operator.kind.map(engine_kind),
            bridge_id: senior_bridge_id.or_else(|| pin.clone()),
            hook_id: spawn_hook_id.or_else(|| pin.clone()),
            operator_sid: operator_sid.clone(),
            operator_kind_overrides: operator
                .per_agent_kinds
                .into_iter()
                .map(|(agent, kind)| (agent, engine_kind(kind)))
                .collect(),
            task_input: None,
            check_policy: None,
        };
        let now = SystemTime::now();
        let record = TaskRecord {
            task_id: task_id.to_string(),
            state: TaskState::Running,
            final_ctx: None,
            error: None,
            bound_version: version_hex,
            effective_ttl_secs: ttl,
            ttl_source,
            created_at: now,
            finished_at: None,
            blueprint_id,
            operator_sid,
            step_ids: VecDeque::new(),
            step_count: 0,
            runs: vec![TaskRun {
                run_id: TaskRecord::run_id_of(task_id),
                start: RunStart::Launch,
                end: None,
                started_at_ms: unix_ms(now),
                ended_at_ms: None,
                replayed_steps: 0,
            }],
            launch: Some(std::sync::Arc::new(
                serde_json::to_value(&pinned).map_err(|e| Error::Internal(e.to_string()))?,
            )),
        };
        Ok(Prepared { input, record })
    }

    pub(super) async fn resolve(
        &self,
        source: BlueprintSource,
    ) -> Result<(Blueprint, Option<BlueprintVersion>)> {
        match source {
            BlueprintSource::Inline(mut doc) => {
                compat::upgrade_blueprint(&mut doc)?;
                Ok((parse_blueprint(doc)?, None))
            }
            BlueprintSource::Stored { id, version } => {
                check_id(&id)?;
                let version = match version {
                    VersionPick::Latest => VersionSelector::Latest,
                    VersionPick::Fixed(v) => VersionSelector::Fixed {
                        value: parse_version(&v)?,
                    },
                    VersionPick::SemverReq(req) => VersionSelector::SemverReq {
                        req: req.parse().map_err(|e| {
                            Error::invalid(
                                "semver_req",
                                format!("'{req}' is not a semver requirement ({e})"),
                            )
                        })?,
                    },
                };
                let bp_ref = BlueprintRef::Id {
                    id: BlueprintId::new(id),
                    version,
                };
                self.app.resolve(&bp_ref).await.map_err(from_application)
            }
        }
    }
}

/// The TTL cascade: the request's, else the Blueprint's default, else the server's.
fn effective_ttl(requested: Option<u64>, blueprint: Option<u64>) -> Result<(u64, TtlSource)> {
    match (requested, blueprint) {
        (Some(0), _) => Err(Error::invalid("ttl_secs", "must be at least 1")),
        (Some(t), _) => Ok((t, TtlSource::RequestBody)),
        (None, Some(t)) if t > 0 => Ok((t, TtlSource::BpMetadata)),
        _ => Ok((SERVER_DEFAULT_TTL_SECS, TtlSource::ServerDefault)),
    }
}

fn engine_kind(kind: OperatorKind) -> mlua_swarm::OperatorKind {
    match kind {
        OperatorKind::MainAi => mlua_swarm::OperatorKind::MainAi,
        OperatorKind::Automate => mlua_swarm::OperatorKind::Automate,
        OperatorKind::Composite => mlua_swarm::OperatorKind::Composite,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_comes_from_the_request_then_the_blueprint_then_the_server() {
        assert_eq!(
            effective_ttl(Some(5), Some(9)).expect("request"),
            (5, TtlSource::RequestBody)
        );
        assert_eq!(
            effective_ttl(None, Some(9)).expect("blueprint"),
            (9, TtlSource::BpMetadata)
        );
        let server = (SERVER_DEFAULT_TTL_SECS, TtlSource::ServerDefault);
        assert_eq!(effective_ttl(None, Some(0)).expect("zero default"), server);
        assert_eq!(effective_ttl(None, None).expect("none"), server);
        let err = effective_ttl(Some(0), Some(9)).expect_err("zero request");
        assert!(err.to_string().contains("ttl_secs"), "{err}");
    }

    #[test]
    fn blank_operator_ids_count_as_unset() {
        assert_eq!(non_empty(Some("  ".into())), None);
        assert_eq!(non_empty(Some(" op ".into())), Some("op".into()));
        assert_eq!(non_empty(None), None);
    }
}
