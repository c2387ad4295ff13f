//! What replicas send each other over NATS (JSON), and the subjects they use.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::frame::{ClientFrame, ServerBody};
use super::super::pending::{Reply, ReplyResult, RequestKind};
use crate::engine::{OperatorRequestError, SpawnReply};

/// Requests, `hook_after`, withdrawals and forwarded replies for the holder of a sid.
pub(super) fn sess_subject(sid: &str) -> String {
    format!("mse.sess.{sid}")
}

/// Outcomes of the requests a replica owns.
pub(super) fn run_subject(replica: &str) -> String {
    format!("mse.run.{replica}")
}

/// Attach announcements: `mse.attach.<sid>`.
pub(super) const ATTACH_ALL: &str = "mse.attach.*";

pub(super) fn attach_subject(sid: &str) -> String {
    format!("mse.attach.{sid}")
}

/// Deletion announcements: `mse.gone.<sid>`.
pub(super) const GONE_ALL: &str = "mse.gone.*";

pub(super) fn gone_subject(sid: &str) -> String {
    format!("mse.gone.{sid}")
}

/// The sid an announcement's subject (`mse.attach.<sid>`, `mse.gone.<sid>`) names.
pub(super) fn sid_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("mse.attach.")
        .or_else(|| subject.strip_prefix("mse.gone."))
        .filter(|s| !s.is_empty())
}

/// A message for the replica holding a session's stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum ToHolder {
    /// Queue and register this request (NATS request/reply: answered by [`HolderAnswer`]).
    Request {
        req_id: String,
        kind: String,
        task_id: String,
        body: ServerBody,
        /// The replica waiting for the outcome.
        owner: String,
    },
    /// A frame without reply (`hook_after`).
    Info { body: ServerBody },
    /// The owner ended this request: the operator gets `cancel`.
    Withdraw { req_id: String, reason: String },
    /// A client frame (reply, ack) a door of another replica received.
    Client { frame: ClientFrame },
}

/// The holder's answer to [`ToHolder::Request`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum HolderAnswer {
    /// Queued (or already taken); the outcome will come to the owner.
    Accepted { replica: String },
    /// Refused, for good (session closed, window full, parked past grace).
    Refused { reason: String },
    /// This replica holds the stream no more: park until the next attach.
    Moved,
}

/// A request's outcome, from its holder to its owner.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Outcome {
    pub(super) req_id: String,
    pub(super) result: Result<WireReply, String>,
}

/// [`Reply`] as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum WireReply {
    Answer { value: Value },
    Hook,
    Spawn { value: Value, ok: bool },
}

/// An attach announcement.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Attach {
    pub(super) epoch: u64,
    pub(super) replica: String,
}

/// A deletion announcement.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Gone {
    pub(super) reason: String,
    pub(super) replica: String,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Bytes {
    // These types hold only strings, numbers and JSON values: serializing cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

pub(super) fn kind_named(name: &str) -> Option<RequestKind> {
    [RequestKind::Ask, RequestKind::Hook, RequestKind::Spawn]
        .into_iter()
        .find(|k| k.name() == name)
}

impl Outcome {
    pub(super) fn of(req_id: String, result: ReplyResult) -> Self {
        let result = match result {
            Ok(Reply::Answer(value)) => Ok(WireReply::Answer { value }),
            Ok(Reply::Hook) => Ok(WireReply::Hook),
            Ok(Reply::Spawn(SpawnReply { value, ok })) => Ok(WireReply::Spawn { value, ok }),
            Err(OperatorRequestError(why)) => Err(why),
        };
        Self { req_id, result }
    }

    pub(super) fn into_result(self) -> ReplyResult {
        match self.result {
            Ok(WireReply::Answer { value }) => Ok(Reply::Answer(value)),
            Ok(WireReply::Hook) => Ok(Reply::Hook),
            Ok(WireReply::Spawn { value, ok }) => Ok(Reply::Spawn(SpawnReply { value, ok })),
            Err(why) => Err(OperatorRequestError(why)),
        }
    }
}

/// How long the holder keeps trying to hand a request's outcome to its owner: the
/// request's own deadline and a minute more, or a minute for frames without one.
pub(super) fn give_up_at(body: &ServerBody) -> Instant {
    let slack = Duration::from_secs(60);
    let deadline_ms = match body {
        ServerBody::Ask {
            deadline_unix_ms, ..
        }
        | ServerBody::HookBefore {
            deadline_unix_ms, ..
        }
        | ServerBody::Spawn {
            deadline_unix_ms, ..
        } => *deadline_unix_ms,
        _ => 0,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let left =
        Duration::from_millis(deadline_ms.saturating_sub(now_ms)).min(Duration::from_secs(86_400));
    Instant::now() + left + slack
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outcomes_and_kinds_survive_the_trip() {
        for kind in [RequestKind::Ask, RequestKind::Hook, RequestKind::Spawn] {
            assert_eq!(kind_named(kind.name()), Some(kind));
        }
        let spawn = Ok(Reply::Spawn(SpawnReply {
            value: json!({"a": 1}),
            ok: false,
        }));
        let bytes = encode(&Outcome::of("r1".into(), spawn));
        let back: Outcome = serde_json::from_slice(&bytes).expect("decodes");
        assert!(
            matches!(back.into_result(), Ok(Reply::Spawn(r)) if r.value == json!({"a": 1}) && !r.ok)
        );
        let failed = encode(&Outcome::of(
            "r2".into(),
            Err(OperatorRequestError("no".into())),
        ));
        let back: Outcome = serde_json::from_slice(&failed).expect("decodes");
        assert!(matches!(back.into_result(), Err(OperatorRequestError(w)) if w == "no"));
        assert_eq!(sid_of("mse.attach.op-1"), Some("op-1"));
        assert_eq!(sid_of("mse.gone.op-2"), Some("op-2"));
        assert_eq!(sid_of("mse.attach."), None);
    }
}
