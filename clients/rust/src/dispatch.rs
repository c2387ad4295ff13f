//! One request frame → one handler task, and the reply it produces.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::handler::Handler;
use crate::json;
use crate::pb;
use crate::pb::client_frame::Body as C;
use crate::pb::server_frame::Body as S;
use crate::worker::Worker;

/// A finished handler: the request's dedupe key (none for a cancel the SDK made up after
/// a restart) and the reply to send.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) key: Option<String>,
    pub(crate) reply: Option<pb::ClientFrame>,
}

/// A request frame's dedupe key (`kind:req_id`) and req_id; `None` for control frames.
pub(crate) fn key_of(body: &S) -> Option<(String, &str)> {
    let (kind, req_id) = match body {
        S::HookBefore(h) => ("hook_before", &h.req_id),
        S::Spawn(s) => ("spawn", &s.req_id),
        S::HookAfter(h) => ("hook_after", &h.req_id),
        S::Ask(a) => ("ask", &a.req_id),
        S::Cancel(c) => ("cancel", &c.req_id),
        S::Welcome(_) | S::Ping(_) | S::Closing(_) | S::Notice(_) => return None,
    };
    Some((format!("{kind}:{req_id}"), req_id.as_str()))
}

/// Runs `body`'s handler on its own task in `tasks`; a spawn gets `worker`.
pub(crate) fn start<H: Handler>(
    tasks: &mut JoinSet<Done>,
    handler: Arc<H>,
    body: S,
    key: Option<String>,
    worker: impl FnOnce(&pb::Spawn) -> Worker,
    span: tracing::Span,
) {
    let reply = match body {
        S::HookBefore(h) => {
            let req_id = h.req_id.clone();
            async move {
                let (ok, reason) = match guard(handler.on_hook_before(h)).await {
                    Ok(Ok(())) => (true, String::new()),
                    Ok(Err(reason)) => (false, reason),
                    Err(panicked) => (false, panicked),
                };
                Some(C::HookAck(pb::HookAck { req_id, ok, reason }))
            }
            .boxed()
        }
        S::Spawn(s) => {
            let worker = worker(&s);
            let req_id = s.req_id.clone();
            async move {
                let outcome = guard(handler.on_spawn(s, worker)).await;
                let ack = match outcome {
                    Ok(Ok(value)) => pb::SpawnAck {
                        req_id,
                        value: json::to_proto_opt(value),
                        ..Default::default()
                    },
                    Ok(Err(e)) => failed_spawn(req_id, e.to_string()),
                    Err(panicked) => failed_spawn(req_id, panicked),
                };
                Some(C::SpawnAck(ack))
            }
            .boxed()
        }
        S::Ask(a) => {
            let req_id = a.req_id.clone();
            async move {
                let value = guard(handler.on_ask(a)).await.ok()?;
                Some(C::Answer(pb::Answer {
                    req_id,
                    value: json::to_proto_opt(value),
                }))
            }
            .boxed()
        }
        S::HookAfter(h) => async move {
            let _ = guard(handler.on_hook_after(h)).await;
            None
        }
        .boxed(),
        S::Cancel(c) => async move {
            let _ = guard(handler.on_cancel(c)).await;
            None
        }
        .boxed(),
        S::Welcome(_) | S::Ping(_) | S::Closing(_) | S::Notice(_) => return,
    };
    tasks.spawn(
        async move {
            let reply = reply.await.map(|body| pb::ClientFrame { body: Some(body) });
            Done { key, reply }
        }
        .instrument(span),
    );
}

fn failed_spawn(req_id: String, error: String) -> pb::SpawnAck {
    pb::SpawnAck {
        req_id,
        ok: Some(false),
        error,
        ..Default::default()
    }
}

/// The handler's output, or the text of its panic (logged).
async fn guard<T>(fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic".into());
        tracing::error!(panic = %text, "operator handler panicked");
        format!("operator handler panicked: {text}")
    })
}
