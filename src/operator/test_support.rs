//! Fixtures shared by the operator core's unit tests.

use std::sync::Arc;

use super::bus::FrameBus;
use super::session::{OperatorSession, SessionLinks};
use super::settings::{OperatorTimeouts, SessionLimits, DEFAULT_MAX_UNACKED};
use crate::engine::StepContext;
use crate::limits::SizePolicy;

/// Session limits: the defaults, then `adjust`.
pub(super) fn test_limits_with(adjust: impl FnOnce(&mut OperatorTimeouts)) -> Arc<SessionLimits> {
    let mut timeouts = OperatorTimeouts::default();
    adjust(&mut timeouts);
    Arc::new(SessionLimits {
        timeouts,
        base_url: "http://127.0.0.1:1".into(),
        max_unacked: DEFAULT_MAX_UNACKED,
        size: SizePolicy::new(4 << 20, 1 << 20),
    })
}

/// Session limits: the defaults.
pub(super) fn test_limits() -> Arc<SessionLimits> {
    test_limits_with(|_| {})
}

/// The engine's view of step `n` of task `task-1`.
pub(super) fn test_step(n: u32) -> StepContext {
    StepContext {
        task_id: "task-1".into(),
        step_id: format!("ST-{n}"),
        agent: "a".into(),
        attempt: 1,
    }
}

/// A session `op-1` on `links`, and the bus that reaches it.
pub(super) fn linked_session(links: SessionLinks) -> (Arc<dyn FrameBus>, Arc<OperatorSession>) {
    let bus = links.bus.clone();
    let session = OperatorSession::open("op-1".into(), vec![], test_limits(), links);
    (bus, session)
}
