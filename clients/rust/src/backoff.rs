//! Reconnect delays: exponential with full jitter, reset once a stream is welcomed.

use std::time::Duration;

use rand::Rng;

/// Delay bounds for reconnects.
#[derive(Clone, Copy, Debug)]
pub struct BackoffPolicy {
    /// The first delay's upper bound.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// The delay sequence of one outage.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, attempt: 0 }
    }

    /// The next delay: uniform in `[cap/2, cap]`, `cap` = initial × 2^attempt, at most max.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self
            .policy
            .initial
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.policy.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// The server answered: the next outage starts from the first delay again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
