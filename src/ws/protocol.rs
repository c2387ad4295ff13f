//! The v0.1.0 WebSocket JSON: `type`-tagged snake_case messages, converted to and from the
//! session core's frames. `task_id` on this wire is the engine step id, as in v0.1.0.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::operator::{ClientFrame, NoticeCode, ServerBody};

/// Server → operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Senior escalation.
    Ask {
        /// Correlation id.
        req_id: String,
        /// The engine step id.
        task_id: String,
        /// The question.
        question: Value,
    },
    /// Approve or reject a spawn.
    HookBefore {
        /// Correlation id.
        req_id: String,
        /// The engine step id.
        task_id: String,
        /// Agent.
        agent: String,
        /// Attempt.
        attempt: u32,
    },
    /// A spawn finished.
    HookAfter {
        /// Correlation id.
        req_id: String,
        /// The engine step id.
        task_id: String,
        /// Agent.
        agent: String,
        /// Attempt.
        attempt: u32,
        /// Result.
        result: Value,
    },
    /// Hand a step to a sub-agent.
    Spawn {
        /// Correlation id.
        req_id: String,
        /// The engine step id.
        task_id: String,
        /// Agent.
        agent: String,
        /// Attempt.
        attempt: u32,
        /// Signed capability token.
        capability_token: String,
        /// Short handle.
        #[serde(skip_serializing_if = "Option::is_none")]
        worker_handle: Option<String>,
        /// Instructions.
        directive: String,
    },
    /// Extension: a request was withdrawn (do not reply).
    Cancel {
        /// Which.
        req_id: String,
        /// Why.
        reason: String,
    },
    /// Extension: a client message was not used; the connection stays open.
    Error {
        /// `invalid_frame`, `duplicate`, `unknown_req`, `stale`, `wrong_kind`, `unauthenticated`.
        code: String,
        /// The req_id concerned.
        #[serde(skip_serializing_if = "Option::is_none")]
        req_id: Option<String>,
        /// Detail.
        message: String,
    },
}

fn yes() -> bool {
    true
}

/// Operator → server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Extension for browsers (no headers): the first message carries the session token.
    Auth {
        /// The token POST /v1/operators returned.
        token: String,
    },
    /// Reply to `ask` (`value` required, may be null).
    Answer {
        /// Correlation id.
        req_id: String,
        /// The answer.
        value: Value,
    },
    /// Reply to `hook_before`.
    HookAck {
        /// Correlation id.
        req_id: String,
        /// Approve.
        ok: bool,
        /// Why not.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Reply to `spawn`.
    SpawnAck {
        /// Correlation id.
        req_id: String,
        /// Result if the worker submitted none (default null).
        #[serde(default)]
        value: Value,
        /// Default true.
        #[serde(default = "yes")]
        ok: bool,
        /// Set: the spawn failed.
        #[serde(default)]
        error: Option<String>,
    },
    /// Reply to `spawn`: stop, with a reason (later upstream releases).
    SpawnHalt {
        /// Correlation id.
        req_id: String,
        /// Optional value.
        #[serde(default)]
        value: Value,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
}

/// Parses one text message.
pub fn decode(text: &str) -> Result<ClientMsg, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "unusable message ({e}); expected JSON with \"type\": answer | hook_ack | spawn_ack | \
             spawn_halt"
        )
    })
}

/// A client message → a session frame (`Auth` has none).
pub fn client_frame(msg: ClientMsg) -> Option<ClientFrame> {
    Some(match msg {
        ClientMsg::Auth { .. } => return None,
        ClientMsg::Answer { req_id, value } => ClientFrame::Answer { req_id, value },
        ClientMsg::HookAck { req_id, ok, reason } => ClientFrame::HookAck { req_id, ok, reason },
        ClientMsg::SpawnAck {
            req_id,
            value,
            ok,
            error,
        } => ClientFrame::SpawnAck {
            req_id,
            value,
            ok,
            error,
        },
        ClientMsg::SpawnHalt {
            req_id,
            value,
            reason,
        } => ClientFrame::SpawnAck {
            req_id,
            value: serde_json::json!({"halted": true, "reason": reason, "value": value}),
            ok: true,
            error: None,
        },
    })
}

/// The wire name of a notice code.
pub fn notice_code(code: NoticeCode) -> &'static str {
    code.label()
}

/// A session frame → a message (None for frames this wire has no message for: welcome,
/// ping and closing travel as WebSocket control frames or not at all).
pub fn server_msg(body: ServerBody) -> Option<ServerMsg> {
    Some(match body {
        ServerBody::Ask {
            req_id,
            step_id,
            question,
            ..
        } => ServerMsg::Ask {
            req_id,
            task_id: step_id,
            question,
        },
        ServerBody::HookBefore { req_id, step, .. } => ServerMsg::HookBefore {
            req_id,
            task_id: step.step_id,
            agent: step.agent,
            attempt: step.attempt,
        },
        ServerBody::HookAfter {
            req_id,
            step,
            result,
        } => ServerMsg::HookAfter {
            req_id,
            task_id: step.step_id,
            agent: step.agent,
            attempt: step.attempt,
            result,
        },
        ServerBody::Spawn {
            req_id,
            step,
            capability_token,
            worker_handle,
            directive,
            ..
        } => ServerMsg::Spawn {
            req_id,
            task_id: step.step_id,
            agent: step.agent,
            attempt: step.attempt,
            capability_token,
            worker_handle: Some(worker_handle).filter(|h| !h.is_empty()),
            directive,
        },
        ServerBody::Cancel { req_id, reason } => ServerMsg::Cancel { req_id, reason },
        ServerBody::Notice {
            code,
            req_id,
            message,
        } => ServerMsg::Error {
            code: notice_code(code).into(),
            req_id: Some(req_id).filter(|r| !r.is_empty()),
            message,
        },
        ServerBody::Welcome(_) | ServerBody::Ping { .. } | ServerBody::Closing { .. } => {
            return None
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn v010_client_messages_parse_with_their_defaults() {
        let ack = decode(r#"{"type":"spawn_ack","req_id":"r1"}"#).expect("spawn_ack");
        assert_eq!(
            ack,
            ClientMsg::SpawnAck {
                req_id: "r1".into(),
                value: Value::Null,
                ok: true,
                error: None
            }
        );
        let hook =
            decode(r#"{"type":"hook_ack","req_id":"r2","ok":false,"extra":1}"#).expect("hook_ack");
        assert_eq!(
            hook,
            ClientMsg::HookAck {
                req_id: "r2".into(),
                ok: false,
                reason: None
            }
        );
        assert!(
            decode(r#"{"type":"answer","req_id":"r3"}"#).is_err(),
            "value is required"
        );
        assert!(decode(r#"{"type":"nope"}"#).is_err());
        assert!(decode("not json")
            .expect_err("garbage")
            .contains("expected JSON"));
        let halt = client_frame(ClientMsg::SpawnHalt {
            req_id: "r4".into(),
            value: json!(1),
            reason: Some("why".into()),
        });
        assert!(
            matches!(halt, Some(ClientFrame::SpawnAck { ok: true, ref value, .. }) if value["halted"] == true)
        );
    }

    #[test]
    fn server_messages_use_the_step_id_as_task_id() {
        let step = crate::operator::Step {
            task_id: "task-1".into(),
            step_id: "ST-1".into(),
            agent: "a".into(),
            attempt: 1,
        };
        let msg = server_msg(ServerBody::HookBefore {
            req_id: "r".into(),
            step,
            deadline_unix_ms: 0,
        })
        .expect("msg");
        assert_eq!(
            serde_json::to_value(msg).expect("json"),
            json!({"type": "hook_before", "req_id": "r", "task_id": "ST-1", "agent": "a", "attempt": 1})
        );
    }
}
