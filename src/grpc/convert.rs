//! Conversions between protobuf messages and domain types.

use std::time::{SystemTime, UNIX_EPOCH};

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::engine::{
    BlueprintSource, LaunchOperator, OperatorKind, RunEnd, RunStart, TaskEvent, TaskEventKind,
    TaskLaunch, TaskRecord, TaskRun, TaskState, TtlSource, VersionPick,
};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

/// `google.protobuf.Value` → JSON. Non-finite numbers become null.
pub fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

fn number_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(s: prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// JSON → `google.protobuf.Value`.
pub fn json_to_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_object_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_object_to_struct(o: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
    }
}

/// JSON → `google.protobuf.Struct`; a non-object becomes `{"value": v}`.
pub fn json_to_struct(v: Value) -> prost_types::Struct {
    match v {
        Value::Object(o) => json_object_to_struct(o),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            json_object_to_struct(m)
        }
    }
}

/// `SystemTime` → `Timestamp`.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn operator_kind(raw: i32, field: &str) -> Result<Option<OperatorKind>> {
    match pb::OperatorKind::try_from(raw) {
        Ok(pb::OperatorKind::Unspecified) => Ok(None),
        Ok(pb::OperatorKind::MainAi) => Ok(Some(OperatorKind::MainAi)),
        Ok(pb::OperatorKind::Automate) => Ok(Some(OperatorKind::Automate)),
        Ok(pb::OperatorKind::Composite) => Ok(Some(OperatorKind::Composite)),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown operator kind {raw} (expected MAIN_AI, AUTOMATE or COMPOSITE)"),
        )),
    }
}

/// Builds a domain launch from the fields StartTask and RunTask share.
pub fn task_launch(
    blueprint: Option<pb::BlueprintRef>,
    init_ctx: Option<prost_types::Struct>,
    ttl_secs: Option<u64>,
    operator: Option<pb::OperatorOptions>,
    operator_sid: String,
) -> Result<TaskLaunch> {
    let source = match blueprint.and_then(|b| b.source) {
        Some(pb::blueprint_ref::Source::Inline(s)) => BlueprintSource::Inline(struct_to_json(s)),
        Some(pb::blueprint_ref::Source::Stored(pb::StoredBlueprintRef { id, version })) => {
            let version = match version.and_then(|v| v.selector) {
                None | Some(pb::version_selector::Selector::Latest(_)) => VersionPick::Latest,
                Some(pb::version_selector::Selector::Fixed(v)) => VersionPick::Fixed(v),
                Some(pb::version_selector::Selector::SemverReq(r)) => VersionPick::SemverReq(r),
            };
            BlueprintSource::Stored { id, version }
        }
        None => {
            return Err(Error::invalid(
                "blueprint",
                "required: set blueprint.inline (a Blueprint document) or blueprint.stored {id}",
            ))
        }
    };
    let operator = match operator {
        None => LaunchOperator::default(),
        Some(pb::OperatorOptions {
            kind,
            spawn_hook_id,
            senior_bridge_id,
            per_agent_kinds,
            id,
        }) => {
            let mut per_agent = std::collections::HashMap::new();
            for (agent, raw) in per_agent_kinds {
                if let Some(k) = operator_kind(raw, "operator.per_agent_kinds")? {
                    per_agent.insert(agent, k);
                }
            }
            LaunchOperator {
                kind: operator_kind(kind, "operator.kind")?,
                spawn_hook_id: Some(spawn_hook_id),
                senior_bridge_id: Some(senior_bridge_id),
                per_agent_kinds: per_agent,
                label: Some(id).filter(|s| !s.is_empty()),
            }
        }
    };
    Ok(TaskLaunch {
        blueprint: source,
        init_ctx: init_ctx.map(struct_to_json).unwrap_or(Value::Null),
        ttl_secs,
        operator,
        operator_sid: Some(operator_sid),
    })
}

/// Domain task state → proto enum.
pub fn task_state(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Running => pb::TaskState::Running,
        TaskState::Completed => pb::TaskState::Completed,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
        TaskState::Interrupted => pb::TaskState::Interrupted,
    }
}

/// Proto task-state filter → domain (UNSPECIFIED = no filter).
pub fn task_state_filter(raw: i32) -> Result<Option<TaskState>> {
    match pb::TaskState::try_from(raw) {
        Ok(pb::TaskState::Unspecified) => Ok(None),
        Ok(pb::TaskState::Running) => Ok(Some(TaskState::Running)),
        Ok(pb::TaskState::Completed) => Ok(Some(TaskState::Completed)),
        Ok(pb::TaskState::Failed) => Ok(Some(TaskState::Failed)),
        Ok(pb::TaskState::Cancelled) => Ok(Some(TaskState::Cancelled)),
        Ok(pb::TaskState::Interrupted) => Ok(Some(TaskState::Interrupted)),
        Err(_) => Err(Error::invalid("state", format!("unknown task state {raw}"))),
    }
}

/// Domain task → proto.
pub fn task(r: TaskRecord) -> pb::Task {
    let TaskRecord {
        task_id,
        state,
        final_ctx,
        error,
        bound_version,
        effective_ttl_secs,
        ttl_source,
        created_at,
        finished_at,
        blueprint_id,
        operator_sid,
        step_ids,
        step_count,
        runs,
        launch: _,
    } = r;
    pb::Task {
        task_id,
        state: task_state(state) as i32,
        final_ctx: Some(json_to_value(final_ctx.unwrap_or(Value::Null))),
        error: error.unwrap_or_default(),
        bound_version: bound_version.unwrap_or_default(),
        effective_ttl_secs,
        ttl_source: match ttl_source {
            TtlSource::RequestBody => pb::TtlSource::RequestBody,
            TtlSource::BpMetadata => pb::TtlSource::BpMetadata,
            TtlSource::ServerDefault => pb::TtlSource::ServerDefault,
        } as i32,
        created_at: Some(timestamp(created_at)),
        finished_at: finished_at.map(timestamp),
        blueprint_id,
        operator_sid: operator_sid.unwrap_or_default(),
        step_ids: step_ids.into(),
        step_count,
        runs: runs.into_iter().map(task_run).collect(),
    }
}

fn ms_timestamp(ms: u64) -> prost_types::Timestamp {
    timestamp(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// How a run started → the proto enum and its `from_step`.
fn run_start(start: RunStart) -> (pb::RunStart, String) {
    match start {
        RunStart::Launch => (pb::RunStart::Launch, String::new()),
        RunStart::Resume => (pb::RunStart::Resume, String::new()),
        RunStart::Rerun { from_step } => (pb::RunStart::Rerun, from_step),
    }
}

fn task_run(r: TaskRun) -> pb::TaskRun {
    let (start, from_step) = run_start(r.start);
    pb::TaskRun {
        run_id: r.run_id,
        start: start as i32,
        from_step,
        end: match r.end {
            None => pb::RunEnd::Unspecified,
            Some(RunEnd::Completed) => pb::RunEnd::Completed,
            Some(RunEnd::Failed) => pb::RunEnd::Failed,
            Some(RunEnd::Cancelled) => pb::RunEnd::Cancelled,
            Some(RunEnd::Interrupted) => pb::RunEnd::Interrupted,
        } as i32,
        started_at: Some(ms_timestamp(r.started_at_ms)),
        ended_at: r.ended_at_ms.map(ms_timestamp),
        replayed_steps: r.replayed_steps,
    }
}

/// Domain task event → proto.
pub fn task_event(e: TaskEvent) -> pb::TaskEvent {
    use pb::task_event::Kind as K;
    let TaskEvent {
        seq,
        at,
        task_id,
        kind,
    } = e;
    let kind = match kind {
        TaskEventKind::Started {
            blueprint_id,
            bound_version,
        } => K::Started(pb::TaskStarted {
            blueprint_id,
            bound_version: bound_version.unwrap_or_default(),
        }),
        TaskEventKind::StepDispatched { step_id, agent } => {
            K::StepDispatched(pb::StepDispatched { step_id, agent })
        }
        TaskEventKind::StepFinished {
            step_id,
            ok,
            result,
        } => K::StepFinished(pb::StepFinished {
            step_id,
            ok,
            result: Some(json_to_value(result)),
        }),
        TaskEventKind::Completed { final_ctx } => K::Completed(pb::TaskCompleted {
            final_ctx: Some(json_to_value(final_ctx)),
        }),
        TaskEventKind::Failed { error } => K::Failed(pb::TaskFailed { error }),
        TaskEventKind::Cancelled { reason } => K::Cancelled(pb::TaskCancelled { reason }),
        TaskEventKind::Interrupted { reason } => K::Interrupted(pb::TaskInterrupted { reason }),
        TaskEventKind::RunStarted {
            start,
            replayed_steps,
        } => {
            let (start, from_step) = run_start(start);
            K::RunStarted(pb::TaskRunStarted {
                start: start as i32,
                from_step,
                replayed_steps,
            })
        }
    };
    pb::TaskEvent {
        seq,
        at: Some(timestamp(at)),
        task_id,
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_survives_a_round_trip_through_struct() {
        let doc = json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": -3}});
        assert_eq!(struct_to_json(json_to_struct(doc.clone())), doc);
    }

    #[test]
    fn a_launch_without_blueprint_says_what_to_set() {
        let err = task_launch(None, None, None, None, String::new()).expect_err("no bp");
        assert!(err.to_string().contains("blueprint.inline"), "{err}");
    }
}
