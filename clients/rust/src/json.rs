//! `google.protobuf.Value` ↔ `serde_json::Value`, for asks, answers and results.

use prost_types::value::Kind;
use serde_json::Value;

/// A protobuf `Value` as JSON (`None` is `null`; non-finite numbers become `null`).
pub fn from_proto(v: Option<prost_types::Value>) -> Value {
    match v.and_then(|v| v.kind) {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => {
            Value::Array(l.values.into_iter().map(|v| from_proto(Some(v))).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, from_proto(Some(v))))
                .collect(),
        ),
    }
}

/// JSON as a protobuf `Value` (numbers become `f64`).
pub fn to_proto(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_proto).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// JSON as a protobuf `Value`, or `None` for `null` (an absent value on the wire).
pub(crate) fn to_proto_opt(v: Value) -> Option<prost_types::Value> {
    (!v.is_null()).then(|| to_proto(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips() {
        let v = json!({"a": [1.5, "x", null, true], "b": {"c": -2.0}});
        assert_eq!(from_proto(Some(to_proto(v.clone()))), v);
        assert_eq!(to_proto_opt(Value::Null), None);
    }
}
