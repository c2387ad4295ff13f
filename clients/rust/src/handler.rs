//! [`Handler`]: what an operator does with each request the engine sends.

use std::future::Future;

use serde_json::Value;

use crate::error::BoxError;
use crate::pb;
use crate::worker::Worker;

/// An operator's answers. Only [`Handler::on_spawn`] is required; the defaults approve
/// every hook, answer every ask with `null` and ignore `hook_after` and `cancel`.
///
/// Each request runs on its own tokio task, so handlers run concurrently; the SDK sends
/// the reply, acknowledges the frame once the reply is queued, and calls each method
/// once per `req_id` (a request re-sent after a reconnect is not handled again). Write
/// the methods as `async fn`.
pub trait Handler: Send + Sync + 'static {
    /// Approves (`Ok`) or rejects (`Err(reason)`, failing the step) a spawn to come.
    fn on_hook_before(
        &self,
        hook: pb::HookBefore,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = hook;
        async { Ok(()) }
    }

    /// Does the step: usually `worker.get_prompt()`, then `worker.submit(..)`, then
    /// `Ok(Value::Null)`. A non-null `Ok` value is the step's result when nothing was
    /// submitted; `Err` fails the step with its text.
    fn on_spawn(
        &self,
        spawn: pb::Spawn,
        worker: Worker,
    ) -> impl Future<Output = Result<Value, BoxError>> + Send;

    /// Answers a blocked worker's question (`ask.question`, see [`crate::json`]).
    fn on_ask(&self, ask: pb::Ask) -> impl Future<Output = Value> + Send {
        let _ = ask;
        async {
            tracing::warn!("ask answered with null: the handler has no on_ask");
            Value::Null
        }
    }

    /// A spawn finished; `hook.result` is the step's result.
    fn on_hook_after(&self, hook: pb::HookAfter) -> impl Future<Output = ()> + Send {
        let _ = hook;
        async {}
    }

    /// A request was withdrawn (its task was cancelled, failed or timed out), or voided by
    /// a server restart (`reason` says so). A reply still sent is answered by a notice,
    /// logged as a warning.
    fn on_cancel(&self, cancel: pb::Cancel) -> impl Future<Output = ()> + Send {
        let _ = cancel;
        async {}
    }
}
