//! Operator frames as the session core sees them, independent of any transport. Each door
//! (gRPC, gRPC-Web, WebSocket) converts its wire form to and from these at its edge.

use serde_json::Value;

/// A frame from the server to an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFrame {
    /// Session sequence number; 0 for control frames (welcome, ping, notice, closing),
    /// which are never replayed.
    pub seq: u64,
    /// What it says.
    pub body: ServerBody,
}

/// The payload of a [`ServerFrame`].
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What was wrong with a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
