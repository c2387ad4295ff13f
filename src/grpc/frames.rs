//! Operator frames: protobuf ↔ the session core's domain frames.

use serde_json::Value;

use super::convert::{json_to_value, value_to_json};
use crate::error::Error;
use crate::operator::{ClientFrame, NoticeCode, ReplyOutcome, ServerBody, ServerFrame, Step};
use crate::pb::v1 as pb;

/// A protobuf client frame → domain. Err says what is missing.
pub fn client_frame(frame: pb::ClientFrame) -> Result<ClientFrame, String> {
    use pb::client_frame::Body;
    let need = |req_id: String| -> Result<String, String> {
        if req_id.trim().is_empty() {
            Err("req_id is required: copy it from the frame you are answering".into())
        } else {
            Ok(req_id)
        }
    };
    match frame.body {
        None => Err("empty frame: set one of hello, answer, hook_ack, spawn_ack, ack, pong".into()),
        Some(Body::Hello(h)) => Ok(ClientFrame::Hello {
            sid: h.sid,
            last_seq: h.last_seq,
        }),
        Some(Body::Answer(a)) => Ok(ClientFrame::Answer {
            req_id: need(a.req_id)?,
            value: a.value.map(value_to_json).unwrap_or(Value::Null),
        }),
        Some(Body::HookAck(h)) => Ok(ClientFrame::HookAck {
            req_id: need(h.req_id)?,
            ok: h.ok,
            reason: Some(h.reason).filter(|r| !r.is_empty()),
        }),
        Some(Body::SpawnAck(s)) => Ok(ClientFrame::SpawnAck {
            req_id: need(s.req_id)?,
            value: s.value.map(value_to_json).unwrap_or(Value::Null),
            ok: s.ok.unwrap_or(true),
            error: Some(s.error).filter(|e| !e.is_empty()),
        }),
        Some(Body::Ack(a)) => Ok(ClientFrame::Ack { seq: a.seq }),
        Some(Body::Pong(p)) => Ok(ClientFrame::Pong { nonce: p.nonce }),
    }
}

fn notice_code(code: NoticeCode) -> pb::NoticeCode {
    match code {
        NoticeCode::Duplicate => pb::NoticeCode::Duplicate,
        NoticeCode::UnknownReq => pb::NoticeCode::UnknownReq,
        NoticeCode::Stale => pb::NoticeCode::Stale,
        NoticeCode::WrongKind => pb::NoticeCode::WrongKind,
        NoticeCode::InvalidFrame => pb::NoticeCode::InvalidFrame,
        NoticeCode::TooLarge => pb::NoticeCode::TooLarge,
    }
}

/// A reply's fate → the Send outcome. A frame refused as a whole is an error instead:
/// INVALID_ARGUMENT (unusable frame) or RESOURCE_EXHAUSTED (value over the data limit).
pub fn send_outcome(outcome: &ReplyOutcome) -> Result<(pb::SendOutcome, String), Error> {
    match outcome {
        ReplyOutcome::Accepted => Ok((pb::SendOutcome::Accepted, String::new())),
        ReplyOutcome::Refused { code, message, .. } => {
            let o = match code {
                NoticeCode::Duplicate => pb::SendOutcome::Duplicate,
                NoticeCode::UnknownReq => pb::SendOutcome::Unknown,
                NoticeCode::Stale => pb::SendOutcome::Stale,
                NoticeCode::WrongKind => pb::SendOutcome::WrongKind,
                NoticeCode::InvalidFrame => return Err(Error::invalid("frame", message)),
                NoticeCode::TooLarge => return Err(Error::ResourceExhausted(message.clone())),
            };
            Ok((o, message.clone()))
        }
    }
}

fn step_fields(step: Step) -> (String, String, String, u32) {
    (step.task_id, step.step_id, step.agent, step.attempt)
}

/// A domain server frame → protobuf.
pub fn server_frame(frame: ServerFrame) -> pb::ServerFrame {
    use pb::server_frame::Body;
    let body = match frame.body {
        ServerBody::Welcome(w) => Body::Welcome(pb::Welcome {
            sid: w.sid,
            epoch: w.epoch,
            acked_seq: w.acked_seq,
            replayed: w.replayed,
            roles: w.roles,
            ping_interval_secs: w.ping_interval_secs,
            server_restarted: w.server_restarted,
        }),
        ServerBody::Ask {
            req_id,
            task_id,
            step_id,
            question,
            deadline_unix_ms,
        } => Body::Ask(pb::Ask {
            req_id,
            task_id,
            step_id,
            question: Some(json_to_value(question)),
            deadline_unix_ms,
        }),
        ServerBody::HookBefore {
            req_id,
            step,
            deadline_unix_ms,
        } => {
            let (task_id, step_id, agent, attempt) = step_fields(step);
            Body::HookBefore(pb::HookBefore {
                req_id,
                task_id,
                step_id,
                agent,
                attempt,
                deadline_unix_ms,
            })
        }
        ServerBody::HookAfter {
            req_id,
            step,
            result,
        } => {
            let (task_id, step_id, agent, attempt) = step_fields(step);
            Body::HookAfter(pb::HookAfter {
                req_id,
                task_id,
                step_id,
                agent,
                attempt,
                result: Some(json_to_value(result)),
            })
        }
        ServerBody::Spawn {
            req_id,
            step,
            capability_token,
            worker_handle,
            directive,
            deadline_unix_ms,
            traceparent,
        } => {
            let (task_id, step_id, agent, attempt) = step_fields(step);
            Body::Spawn(pb::Spawn {
                req_id,
                task_id,
                step_id,
                agent,
                attempt,
                capability_token,
                worker_handle,
                directive,
                deadline_unix_ms,
                traceparent,
            })
        }
        ServerBody::Cancel { req_id, reason } => Body::Cancel(pb::Cancel { req_id, reason }),
        ServerBody::Ping { nonce } => Body::Ping(pb::Ping { nonce }),
        ServerBody::Closing {
            reason,
            retry_after_ms,
        } => Body::Closing(pb::Closing {
            reason,
            retry_after_ms,
        }),
        ServerBody::Notice {
            code,
            req_id,
            message,
        } => Body::Notice(pb::Notice {
            code: notice_code(code) as i32,
            req_id,
            message,
        }),
    };
    pb::ServerFrame {
        seq: frame.seq,
        body: Some(body),
    }
}
