//! The one size policy: how much of a client's data the server keeps, so that every frame
//! and response it later builds from that data fits the message limit.
//!
//! * Values a client hands in to be stored (reply values, worker results, `init_ctx`) are
//!   refused up front over the data limit ([`SizePolicy::check_value`], RESOURCE_EXHAUSTED).
//! * Values the server builds from them (a step result wrapped with a senior answer, a
//!   final context that grew step by step) are replaced by a marker when they would not
//!   fit one message ([`SizePolicy::fit`]).
//! * Free text (reasons, errors) is clipped with a marker ([`clip_text`]).

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Room left in a message for everything but its one large value (ids, step lists, text).
pub const MESSAGE_MARGIN: usize = 64 * 1024;
/// Longest reason or error text kept, in bytes.
pub const TEXT_MAX: usize = 4096;

/// The data and message limits, and what follows from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePolicy {
    max_message_bytes: usize,
    max_data_bytes: usize,
}

impl SizePolicy {
    /// The policy for `--max-message-bytes` and `--max-data-bytes`. The data limit is
    /// capped at what one message can carry.
    pub fn new(max_message_bytes: usize, max_data_bytes: usize) -> Self {
        let budget = max_message_bytes.saturating_sub(MESSAGE_MARGIN).max(1024);
        Self {
            max_message_bytes,
            max_data_bytes: max_data_bytes.min(budget),
        }
    }

    /// Largest value a client may hand in to be stored.
    pub fn max_data_bytes(&self) -> usize {
        self.max_data_bytes
    }

    /// Largest value one server-built message may carry.
    pub fn value_budget(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(MESSAGE_MARGIN)
            .max(1024)
    }

    /// Largest response the server builds (a page of tasks stops before it).
    pub fn response_budget(&self) -> usize {
        self.value_budget()
    }

    /// Refuses a client value over the data limit, naming `what`.
    pub fn check_value(&self, what: &str, value: &Value) -> Result<()> {
        let len = wire_len(value);
        if len > self.max_data_bytes {
            return Err(Error::ResourceExhausted(format!(
                "{what} is {len} bytes, over the {} byte data limit (--max-data-bytes); \
                 send large content through DataService and pass its out_id",
                self.max_data_bytes
            )));
        }
        Ok(())
    }

    /// `value` if it fits one message, else a marker saying what was dropped.
    pub fn fit(&self, value: Value, what: &str) -> Value {
        let len = wire_len(&value);
        if len <= self.value_budget() {
            return value;
        }
        json!({
            "truncated": true,
            "bytes": len,
            "message": format!(
                "{what} was {len} bytes, over the {} byte message budget; read the step \
                 results with DataService instead",
                self.value_budget()
            ),
        })
    }
}

/// `text` cut to [`TEXT_MAX`] bytes (at a character boundary) with a marker.
pub fn clip_text(text: &str) -> String {
    if text.len() <= TEXT_MAX {
        return text.to_string();
    }
    let mut end = TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes truncated]", &text[..end], text.len() - end)
}

/// Bytes `value` takes on the wire: the larger of its JSON text and its
/// `google.protobuf.Value` encoding (a list of numbers is 5× larger in protobuf).
pub fn wire_len(value: &Value) -> usize {
    json_len(value).max(proto_len(value))
}

/// Bytes of `value`'s JSON text, counted without building it.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn varint_len(n: usize) -> usize {
    let mut n = n as u64;
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// A length-delimited field of `len` bytes: tag, length, payload.
fn delimited(len: usize) -> usize {
    1 + varint_len(len) + len
}

/// Encoded size of `value` as a `google.protobuf.Value` message body.
fn proto_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 2,
        Value::Number(_) => 9,
        Value::String(s) => delimited(s.len()),
        Value::Array(items) => {
            let list: usize = items.iter().map(|v| delimited(proto_len(v))).sum();
            delimited(list)
        }
        Value::Object(map) => {
            let fields: usize = map
                .iter()
                .map(|(k, v)| delimited(delimited(k.len()) + delimited(proto_len(v))))
                .sum();
            delimited(fields)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_data_limit_are_refused_and_oversized_ones_marked() {
        let p = SizePolicy::new(200 * 1024, 100 * 1024);
        assert!(p.check_value("v", &json!("x".repeat(1000))).is_ok());
        let err = p
            .check_value("spawn_ack.value", &json!("x".repeat(200 * 1024)))
            .expect_err("too big");
        assert!(matches!(err, Error::ResourceExhausted(_)));
        assert!(err.to_string().starts_with("spawn_ack.value is "), "{err}");
        let big = json!("y".repeat(150 * 1024));
        assert_eq!(p.fit(big, "final_ctx")["truncated"], json!(true));
        assert_eq!(p.fit(json!({"a": 1}), "final_ctx"), json!({"a": 1}));
    }

    #[test]
    fn numbers_count_at_their_protobuf_size_and_text_is_clipped() {
        let nums = Value::Array(vec![json!(1); 1000]);
        assert!(wire_len(&nums) >= 11 * 1000);
        let long = "é".repeat(TEXT_MAX);
        let clipped = clip_text(&long);
        assert!(clipped.len() < TEXT_MAX + 40 && clipped.contains("truncated"));
        assert_eq!(clip_text("short"), "short");
    }
}
