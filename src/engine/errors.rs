//! Maps the engine's error types to [`Error`] (hazard H14): the one place that knows
//! what each engine failure means to a caller.

use mlua_swarm::blueprint::store::BlueprintStoreError;
use mlua_swarm::service::task_launch::TaskLaunchError;
use mlua_swarm::{CompileError, EngineError, TaskApplicationError};

use crate::error::Error;

/// Maps a Blueprint store failure.
pub(super) fn from_store(e: BlueprintStoreError) -> Error {
    match e {
        BlueprintStoreError::NotFound { id, version } => Error::NotFound(format!(
            "blueprint '{id}' has no version {}; ListVersions shows the versions it has",
            version.to_hex()
        )),
        BlueprintStoreError::IdNotFound(id) | BlueprintStoreError::HeadEmpty(id) => {
            Error::NotFound(format!(
                "blueprint '{id}' not found; store it with PutBlueprint"
            ))
        }
        BlueprintStoreError::Archived(id) => Error::FailedPrecondition(format!(
            "blueprint '{id}' is archived; call UnarchiveBlueprint first"
        )),
        // Only the PostgreSQL store raises it: the head moved under a compare-and-set.
        BlueprintStoreError::HashMismatch { expected, actual } => Error::Aborted(format!(
            "the blueprint changed while this write was prepared: its head is {}, not {}; \
             read it again and retry",
            actual.to_hex(),
            expected.to_hex()
        )),
        BlueprintStoreError::LockBusy => {
            Error::Unavailable("blueprint store is busy writing this id; retry".into())
        }
        other => Error::Internal(format!("blueprint store: {other}")),
    }
}

/// Maps an engine call failure. Credential failures are UNAUTHENTICATED or
/// PERMISSION_DENIED, lock contention is UNAVAILABLE (retryable).
pub(super) fn from_engine(e: EngineError) -> Error {
    match e {
        EngineError::LockBusy(op) | EngineError::LockBusyAfterRetry(op) => {
            Error::Unavailable(format!("engine busy ({op}); retry"))
        }
        EngineError::BadSignature => Error::Unauthenticated("credential signature invalid".into()),
        EngineError::TokenExpired => Error::Unauthenticated("credential expired".into()),
        EngineError::TokenUsesExhausted => Error::Unauthenticated("credential used up".into()),
        EngineError::TokenNotFound(_) => {
            Error::Unauthenticated("credential unknown, or its step has finished".into())
        }
        EngineError::RoleViolation { .. } => {
            Error::PermissionDenied("credential is not allowed to do this".into())
        }
        EngineError::TokenTaskMismatch { bound, arg } => {
            Error::PermissionDenied(format!("credential belongs to step {bound}, not {arg}"))
        }
        EngineError::TaskNotFound(id) => {
            Error::NotFound(format!("step {id} not found or already finished"))
        }
        EngineError::ResourceNotFound(what) => Error::NotFound(format!("not found: {what}")),
        EngineError::InvalidTransition(why) => Error::FailedPrecondition(why),
        other => Error::Internal(format!("engine: {other}")),
    }
}

/// Maps a launch failure that happens before the flow runs (resolve, compile).
pub(super) fn from_application(e: TaskApplicationError) -> Error {
    match e {
        TaskApplicationError::Store(e) => from_store(e),
        TaskApplicationError::Launch(TaskLaunchError::Compile(c)) => from_compile(c),
        TaskApplicationError::Launch(TaskLaunchError::Engine(e)) => from_engine(e),
        TaskApplicationError::NoMatchingVersion { req } => Error::NotFound(format!(
            "no stored version has a version_label matching '{req}'"
        )),
        TaskApplicationError::InvalidSemver { label, source } => Error::FailedPrecondition(
            format!("stored version_label '{label}' is not semver: {source}"),
        ),
        other => Error::Internal(other.to_string()),
    }
}

/// Maps a compile failure. The engine's message for an unknown `operator_ref` lists every
/// registered sid and role and names another program's tool; ours names only the seat.
fn from_compile(c: CompileError) -> Error {
    match &c {
        CompileError::InvalidSpec { name, msg } if msg.contains("not registered in factory") => {
            let seat = msg
                .split('\'')
                .nth(1)
                .filter(|s| !s.is_empty())
                .unwrap_or("?");
            Error::InvalidArgument(format!(
                "blueprint does not compile: agent '{name}': operator_ref '{seat}' is held by \
                 no live operator session; create one with OperatorService.CreateSession \
                 (roles: [\"{seat}\"]) or fix the operator_ref"
            ))
        }
        _ => Error::InvalidArgument(format!(
            "blueprint does not compile: {}",
            crate::limits::clip_text(&c.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_operator_ref_names_only_the_seat() {
        let err = from_compile(CompileError::InvalidSpec {
            name: "worker".into(),
            msg: "operator_ref 'ghost' not registered in factory. Registered sids: [op-1, \
                  secret]. Hint: call mse_operator_join(roles=[...]) to mint the sid first."
                .into(),
        });
        let m = err.to_string();
        assert!(m.contains("'ghost'") && m.contains("CreateSession"), "{m}");
        assert!(
            !m.contains("op-1") && !m.contains("secret") && !m.contains("mse_"),
            "{m}"
        );
    }
}
