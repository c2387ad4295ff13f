//! Accepts Blueprints written for mlua-swarm-server v0.1.0 (flow IR 0.0.5) on the 0.32.1
//! engine (flow IR 0.4): expressions are rewritten to their 0.4 field names, `assign` is
//! upgraded by the engine's own deserializer, and the removed `operator_delegate` layer is
//! refused with the reason.

use serde_json::Value;

use crate::error::{Error, Result};

/// Upgrades a v0.1.0-dialect Blueprint document in place and refuses what 0.32.1 cannot
/// run. Returns how many `operands` were renamed.
pub(super) fn upgrade_blueprint(doc: &mut Value) -> Result<usize> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(Error::invalid("blueprint", "must be a JSON object"));
    };
    refuse_operator_delegate(obj.get("spawner_hints"))?;
    Ok(obj.get_mut("flow").map(rename_operands).unwrap_or(0))
}

fn refuse_operator_delegate(hints: Option<&Value>) -> Result<()> {
    let layers = hints
        .and_then(|h| h.get("layers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for layer in layers.filter_map(Value::as_str) {
        if let Some(reason) = mlua_swarm::removed_spawner_hint_reason(layer) {
            return Err(Error::InvalidArgument(format!(
                "spawner_hints.layers: '{layer}' is not supported by engine 0.32.1 ({reason}); \
                 remove it and give each agent kind \"operator\" with spec.operator_ref naming \
                 an operator seat (a session role), listed in operators[]"
            )));
        }
    }
    Ok(())
}

/// Rewrites every flow-IR 0.0.5 expression under `node` into its 0.4 form:
/// `and`/`or` `operands` → `args`, `not` `operand` → `arg`, `exists` `at` → `arg` (a path
/// expression), `len` `of` → `arg`, `le` / `ge` → `lte` / `gte`.
fn rename_operands(node: &mut Value) -> usize {
    match node {
        Value::Object(map) => {
            let mut changed = 0;
            let op = map.get("op").and_then(Value::as_str).map(str::to_string);
            let mut rename = |from: &str, to: &str| {
                if !map.contains_key(to) {
                    if let Some(v) = map.remove(from) {
                        map.insert(to.to_string(), v);
                        changed += 1;
                    }
                }
            };
            match op.as_deref() {
                Some("and" | "or") => rename("operands", "args"),
                Some("not") => rename("operand", "arg"),
                Some("len") => rename("of", "arg"),
                Some("exists") if map.get("at").is_some_and(Value::is_string) => {
                    if let Some(at) = map.remove("at") {
                        map.insert("arg".into(), serde_json::json!({"op": "path", "at": at}));
                        changed += 1;
                    }
                }
                Some(old @ ("le" | "ge")) => {
                    let new = if old == "le" { "lte" } else { "gte" };
                    map.insert("op".into(), Value::String(new.into()));
                    changed += 1;
                }
                _ => {}
            }
            changed + map.values_mut().map(rename_operands).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(rename_operands).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_operands_become_args_and_other_nodes_stay() {
        let mut bp = json!({"id": "x", "flow": {"kind": "branch",
            "cond": {"op": "and", "operands": [
                {"op": "or", "operands": [{"op": "lit", "value": true}]},
                {"op": "exists", "at": "$.a"}]},
            "then": {"kind": "seq", "children": []}, "else": {"kind": "seq", "children": []}}});
        assert_eq!(upgrade_blueprint(&mut bp).expect("upgrade"), 3);
        assert_eq!(bp["flow"]["cond"]["args"][1]["arg"]["at"], "$.a");
        assert!(bp["flow"]["cond"]["args"][0]["args"].is_array());
        assert!(bp["flow"]["cond"].get("operands").is_none());
    }

    #[test]
    fn operator_delegate_is_refused_with_a_way_out() {
        let mut bp =
            json!({"id": "x", "flow": {}, "spawner_hints": {"layers": ["operator_delegate"]}});
        let err = upgrade_blueprint(&mut bp).expect_err("refused").to_string();
        assert!(
            err.contains("operator_delegate") && err.contains("operator_ref"),
            "{err}"
        );
        assert!(upgrade_blueprint(&mut json!([1])).is_err());
    }
}
