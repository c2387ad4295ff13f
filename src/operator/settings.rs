//! Settings every operator session shares. `crate::config` builds them from flags, the
//! environment and TOML; this module never reads configuration itself.

use std::time::Duration;

use crate::limits::SizePolicy;

/// Default for [`OperatorTimeouts::max_unacked`] and [`SessionLimits::max_unacked`].
pub const DEFAULT_MAX_UNACKED: usize = 10_000;

/// Time limits of operator sessions.
#[derive(Debug, Clone)]
pub struct OperatorTimeouts {
    /// How long requests park while no stream is attached.
    pub park_grace: Duration,
    /// Reply deadline of `ask`.
    pub ask: Duration,
    /// Reply deadline of `hook_before`.
    pub hook: Duration,
    /// Reply deadline of `spawn`.
    pub spawn: Duration,
    /// Interval of app-level pings.
    pub ping_interval: Duration,
    /// How long a session without a stream lives.
    pub idle_horizon: Duration,
    /// Unacknowledged frames a session may hold.
    pub max_unacked: usize,
}

impl Default for OperatorTimeouts {
    fn default() -> Self {
        Self {
            park_grace: Duration::from_secs(60),
            ask: Duration::from_secs(3600),
            hook: Duration::from_secs(300),
            spawn: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(15),
            idle_horizon: Duration::from_secs(86_400),
            max_unacked: DEFAULT_MAX_UNACKED,
        }
    }
}

/// Settings every session shares.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Timeouts and intervals.
    pub timeouts: OperatorTimeouts,
    /// The server's HTTP root, named in spawn directives.
    pub base_url: String,
    /// Most unacknowledged frames a session holds; past it new requests fail at once.
    pub max_unacked: usize,
    /// What the session stores from replies and puts in frames.
    pub size: SizePolicy,
}
