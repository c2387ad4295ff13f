//! Operator frames as the session core sees them, independent of any transport. Each door
//! (gRPC, gRPC-Web, WebSocket) converts its wire form to and from these at its edge. They
//! are serde types so a frame bus between processes can carry them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame from the server to an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Session sequence number; 0 for control frames (welcome, ping, notice, closing),
    /// which are never replayed.
    pub seq: u64,
    /// What it says.
    pub body: ServerBody,
}

/// The payload of a [`ServerFrame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerBody {
    /// First frame of every attach.
    Welcome(Welcome),
    /// A question (senior escalation).
    Ask {
        /// Correlation id.
        req_id: String,
        /// Our task id.
        task_id: String,
        /// Engine step id.
        step_id: String,
        /// The question.
        question: Value,
        /// Unix ms after which the request fails.
        deadline_unix_ms: u64,
    },
    /// Approve or reject a spawn.
    HookBefore {
        /// Correlation id.
        req_id: String,
        /// Where.
        step: Step,
        /// Unix ms after which the request fails.
        deadline_unix_ms: u64,
    },
    /// A spawn finished (no reply expected).
    HookAfter {
        /// Correlation id.
        req_id: String,
        /// Where.
        step: Step,
        /// The spawn's result.
        result: Value,
    },
    /// Hand a step to a sub-agent.
    Spawn {
        /// Correlation id.
        req_id: String,
        /// Where.
        step: Step,
        /// Signed capability token.
        capability_token: String,
        /// Short worker handle.
        worker_handle: String,
        /// Instructions for the sub-agent.
        directive: String,
        /// Unix ms after which the request fails.
        deadline_unix_ms: u64,
        /// W3C trace context of the task; empty when traces are off.
        traceparent: String,
    },
    /// A request was withdrawn.
    Cancel {
        /// Which.
        req_id: String,
        /// Why.
        reason: String,
    },
    /// Liveness probe.
    Ping {
        /// Echo it in pong.
        nonce: u64,
    },
    /// The stream is closing.
    Closing {
        /// Why.
        reason: String,
        /// When to reconnect (0: do not).
        retry_after_ms: u64,
    },
    /// A client frame could not be used.
    Notice {
        /// What kind of problem.
        code: NoticeCode,
        /// The req_id concerned, if any.
        req_id: String,
        /// Detail.
        message: String,
    },
}

/// Where a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Our task id.
    pub task_id: String,
    /// Engine step id.
    pub step_id: String,
    /// Agent name.
    pub agent: String,
    /// 1-based attempt.
    pub attempt: u32,
}

/// The first frame of an attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Session id.
    pub sid: String,
    /// Bumped on every attach.
    pub epoch: u64,
    /// Highest acknowledged seq.
    pub acked_seq: u64,
    /// Unacked frames about to be re-sent.
    pub replayed: u32,
    /// The session's roles.
    pub roles: Vec<String>,
    /// Ping interval.
    pub ping_interval_secs: u32,
    /// First attach since the server restarted: frames from before are not coming again.
    #[serde(default)]
    pub server_restarted: bool,
}

/// What was wrong with a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeCode {
    /// The req_id was already answered.
    Duplicate,
    /// No such req_id was ever sent to this session.
    UnknownReq,
    /// The request already ended (timed out, cancelled).
    Stale,
    /// The reply does not fit the request.
    WrongKind,
    /// The frame itself is unusable here.
    InvalidFrame,
    /// A reply value over the data limit; the request stays pending.
    TooLarge,
}

impl NoticeCode {
    /// Its lower-case name: the v0.1.0 error code, and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            NoticeCode::Duplicate => "duplicate",
            NoticeCode::UnknownReq => "unknown_req",
            NoticeCode::Stale => "stale",
            NoticeCode::WrongKind => "wrong_kind",
            NoticeCode::InvalidFrame => "invalid_frame",
            NoticeCode::TooLarge => "too_large",
        }
    }
}

/// A frame from an operator to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Opens a stream.
    Hello {
        /// Session id.
        sid: String,
        /// Highest seq handled before.
        last_seq: u64,
    },
    /// Reply to `ask`.
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
        reason: Option<String>,
    },
    /// Reply to `spawn`.
    SpawnAck {
        /// Correlation id.
        req_id: String,
        /// Result if the worker submitted none.
        value: Value,
        /// False marks the result blocked.
        ok: bool,
        /// Set: the spawn failed.
        error: Option<String>,
    },
    /// Cumulative receipt.
    Ack {
        /// Highest handled seq.
        seq: u64,
    },
    /// Reply to ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// What became of a client frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplyOutcome {
    /// Used.
    Accepted,
    /// Not used; the notice says why.
    Refused {
        /// Why.
        code: NoticeCode,
        /// The req_id concerned.
        req_id: String,
        /// Detail.
        message: String,
    },
}

impl ReplyOutcome {
    /// A refusal of a frame about `req_id` ("" when none).
    pub fn refused(code: NoticeCode, req_id: &str, message: &str) -> Self {
        crate::metrics::notice(code.label());
        ReplyOutcome::Refused {
            code,
            req_id: req_id.to_string(),
            message: message.to_string(),
        }
    }
}

impl ServerBody {
    /// The req_id of a request frame.
    pub fn req_id(&self) -> Option<&str> {
        match self {
            ServerBody::Ask { req_id, .. }
            | ServerBody::HookBefore { req_id, .. }
            | ServerBody::HookAfter { req_id, .. }
            | ServerBody::Spawn { req_id, .. }
            | ServerBody::Cancel { req_id, .. } => Some(req_id),
            ServerBody::Welcome(_)
            | ServerBody::Ping { .. }
            | ServerBody::Closing { .. }
            | ServerBody::Notice { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        let text = serde_json::to_string(value).expect("serializes");
        let back: T = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(&back, value, "{text}");
    }

    fn step() -> Step {
        Step {
            task_id: "task-1".into(),
            step_id: "ST-1".into(),
            agent: "writer".into(),
            attempt: 2,
        }
    }

    /// One of each server body; the match makes a new variant a compile error here.
    fn server_bodies() -> Vec<ServerBody> {
        let all = vec![
            ServerBody::Welcome(Welcome {
                sid: "op-1".into(),
                epoch: 3,
                acked_seq: 7,
                replayed: 2,
                roles: vec!["lead".into()],
                ping_interval_secs: 15,
                server_restarted: true,
            }),
            ServerBody::Ask {
                req_id: "r1".into(),
                task_id: "task-1".into(),
                step_id: "ST-1".into(),
                question: json!({"q": [1, "two", null]}),
                deadline_unix_ms: 1_700_000_000_000,
            },
            ServerBody::HookBefore {
                req_id: "r2".into(),
                step: step(),
                deadline_unix_ms: 9,
            },
            ServerBody::HookAfter {
                req_id: "r3".into(),
                step: step(),
                result: json!("done"),
            },
            ServerBody::Spawn {
                req_id: "r4".into(),
                step: step(),
                capability_token: "cap".into(),
                worker_handle: "wh-1".into(),
                directive: "launch".into(),
                deadline_unix_ms: u64::MAX,
                traceparent: String::new(),
            },
            ServerBody::Cancel {
                req_id: "r5".into(),
                reason: "task ended".into(),
            },
            ServerBody::Ping { nonce: 42 },
            ServerBody::Closing {
                reason: "bye".into(),
                retry_after_ms: 1000,
            },
            ServerBody::Notice {
                code: NoticeCode::TooLarge,
                req_id: "r6".into(),
                message: "too big".into(),
            },
        ];
        let kinds: BTreeSet<&str> = all
            .iter()
            .map(|b| match b {
                ServerBody::Welcome(_) => "welcome",
                ServerBody::Ask { .. } => "ask",
                ServerBody::HookBefore { .. } => "hook_before",
                ServerBody::HookAfter { .. } => "hook_after",
                ServerBody::Spawn { .. } => "spawn",
                ServerBody::Cancel { .. } => "cancel",
                ServerBody::Ping { .. } => "ping",
                ServerBody::Closing { .. } => "closing",
                ServerBody::Notice { .. } => "notice",
            })
            .collect();
        assert_eq!(kinds.len(), 9, "one of each variant");
        all
    }

    fn client_frames() -> Vec<ClientFrame> {
        let all = vec![
            ClientFrame::Hello {
                sid: "op-1".into(),
                last_seq: 4,
            },
            ClientFrame::Answer {
                req_id: "r1".into(),
                value: json!({"a": 1.5}),
            },
            ClientFrame::HookAck {
                req_id: "r2".into(),
                ok: false,
                reason: Some("no".into()),
            },
            ClientFrame::HookAck {
                req_id: "r2".into(),
                ok: true,
                reason: None,
            },
            ClientFrame::SpawnAck {
                req_id: "r4".into(),
                value: Value::Null,
                ok: true,
                error: Some("boom".into()),
            },
            ClientFrame::Ack { seq: 12 },
            ClientFrame::Pong { nonce: 42 },
        ];
        let kinds: BTreeSet<&str> = all
            .iter()
            .map(|f| match f {
                ClientFrame::Hello { .. } => "hello",
                ClientFrame::Answer { .. } => "answer",
                ClientFrame::HookAck { .. } => "hook_ack",
                ClientFrame::SpawnAck { .. } => "spawn_ack",
                ClientFrame::Ack { .. } => "ack",
                ClientFrame::Pong { .. } => "pong",
            })
            .collect();
        assert_eq!(kinds.len(), 6, "one of each variant");
        all
    }

    #[test]
    fn every_server_frame_round_trips_through_json() {
        for (seq, body) in server_bodies().into_iter().enumerate() {
            round_trip(&ServerFrame {
                seq: seq as u64,
                body,
            });
        }
    }

    #[test]
    fn every_client_frame_and_outcome_round_trips_through_json() {
        for frame in client_frames() {
            round_trip(&frame);
        }
        round_trip(&ReplyOutcome::Accepted);
        for code in [
            NoticeCode::Duplicate,
            NoticeCode::UnknownReq,
            NoticeCode::Stale,
            NoticeCode::WrongKind,
            NoticeCode::InvalidFrame,
            NoticeCode::TooLarge,
        ] {
            round_trip(&ReplyOutcome::refused(code, "r1", "why"));
        }
    }

    #[test]
    fn bodies_are_tagged_by_their_wire_names() {
        let text = serde_json::to_value(ServerBody::Ping { nonce: 1 }).expect("json");
        assert_eq!(text, json!({"type": "ping", "nonce": 1}));
        let text = serde_json::to_value(ClientFrame::Ack { seq: 3 }).expect("json");
        assert_eq!(text, json!({"type": "ack", "seq": 3}));
    }
}
