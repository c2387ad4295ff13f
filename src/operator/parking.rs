//! Parking and idle reaping. While no stream is attached a session's requests park; if no
//! stream attaches within the grace window they fail. A session without a stream past the
//! idle horizon is deleted by the hub's reaper.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::hub::OperatorHub;
use super::session::OperatorSession;

/// Which stream holds a session (by attach epoch), and since when none has.
#[derive(Debug)]
pub(super) struct Presence {
    epoch: u64,
    attached: Option<u64>,
    detached_since: Option<Instant>,
}

impl Presence {
    /// A new session: no stream yet, parked from now.
    pub(super) fn new() -> Self {
        Self {
            epoch: 0,
            attached: None,
            detached_since: Some(Instant::now()),
        }
    }

    /// A session restored after a restart: no stream, parked from now, attach epochs
    /// continuing past `epoch` (the last one the previous process stored).
    pub(super) fn restored(epoch: u64) -> Self {
        Self {
            epoch,
            ..Self::new()
        }
    }

    /// A new stream holds the session: its epoch, one past the last.
    pub(super) fn attach(&mut self) -> u64 {
        self.epoch += 1;
        self.attached = Some(self.epoch);
        self.detached_since = None;
        self.epoch
    }

    /// The stream of `epoch` is gone; a newer stream is left alone. True if it was the
    /// attached one (parking starts).
    pub(super) fn detach(&mut self, epoch: u64) -> bool {
        if self.attached != Some(epoch) {
            return false;
        }
        self.attached = None;
        self.detached_since = Some(Instant::now());
        true
    }

    /// A stream attached on another replica with `epoch`: none here (a stream here
    /// ends), and no parking (that replica parks and reaps). The epoch never goes back.
    pub(super) fn moved_to(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
        self.attached = None;
        self.detached_since = None;
    }

    /// True while the session's stream is held by another replica (as last announced).
    pub(super) fn held_elsewhere(&self) -> bool {
        self.attached.is_none() && self.detached_since.is_none()
    }

    /// The newest attach epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch of the attached stream, if any.
    pub(super) fn attached(&self) -> Option<u64> {
        self.attached
    }

    /// True while the stream of `epoch` is attached (and so the newest).
    pub(super) fn is_current(&self, epoch: u64) -> bool {
        self.epoch == epoch && self.attached == Some(epoch)
    }

    /// How long no stream has been attached (None while one is).
    pub(super) fn detached_for(&self) -> Option<Duration> {
        self.detached_since.map(|t| t.elapsed())
    }

    /// True if requests have parked longer than `grace`: new ones fail at once.
    pub(super) fn parked_past(&self, grace: Duration) -> bool {
        self.detached_since.is_some_and(|t| t.elapsed() > grace)
    }

    /// True if the parking that began when the stream of `epoch` left (or, for 0, when the
    /// session was created) still goes on: no stream attached since.
    pub(super) fn still_parked_since(&self, epoch: u64) -> bool {
        self.attached.is_none() && self.epoch == epoch
    }
}

impl OperatorSession {
    /// Fails the parked requests if no stream attaches within the grace window after the
    /// stream of `epoch` left.
    pub(super) fn watch_parking(self: &Arc<Self>, epoch: u64) {
        let weak = Arc::downgrade(self);
        let grace = self.limits.timeouts.park_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(session) = weak.upgrade() {
                session.expire_parked(epoch, grace);
            }
        });
    }

    fn expire_parked(&self, epoch: u64, grace: Duration) {
        let still_parked = {
            let s = self.lock();
            s.presence.still_parked_since(epoch) && s.closed.is_none()
        };
        if still_parked {
            crate::metrics::parking_expired();
            let reason = format!(
                "operator session {} had no stream for {}s; its requests were failed",
                self.sid,
                grace.as_secs()
            );
            self.withdraw_where(None, &reason);
        }
    }
}

/// True if `session` has had no stream for longer than `horizon`.
pub(super) fn is_idle(session: &OperatorSession, horizon: Duration) -> bool {
    session.detached_for().is_some_and(|d| d > horizon)
}

/// Reaps idle sessions every quarter horizon (1 s to 60 s) while the hub lives.
pub(super) fn spawn_reaper(hub: &Arc<OperatorHub>, horizon: Duration) {
    let weak: Weak<OperatorHub> = Arc::downgrade(hub);
    let period = (horizon / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(hub) = weak.upgrade() else { break };
            hub.reap_idle().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::engine::OperatorBackend;
    use crate::operator::test_support::{test_limits, test_limits_with, test_step};

    #[test]
    fn parking_expires_only_for_the_epoch_it_began_with() {
        let mut p = Presence::new();
        assert!(p.still_parked_since(0), "parked from creation");
        let first = p.attach();
        assert!(
            !p.still_parked_since(0),
            "an attach ends the parking of epoch 0"
        );
        assert!(p.detach(first));
        assert!(p.still_parked_since(first));
        let second = p.attach();
        assert!(p.detach(second));
        assert!(
            !p.still_parked_since(first),
            "a later attach ends the older parking"
        );
        assert!(p.still_parked_since(second));
    }

    #[test]
    fn a_detach_of_an_older_stream_leaves_the_newer_attached() {
        let mut p = Presence::new();
        let old = p.attach();
        let new = p.attach();
        assert!(!p.detach(old));
        assert_eq!(p.attached(), Some(new));
        assert!(p.is_current(new) && !p.is_current(old));
        assert_eq!(p.detached_for(), None);
    }

    #[tokio::test]
    async fn parked_requests_fail_once_the_grace_window_passes_without_a_stream() {
        let grace = Duration::from_millis(50);
        let started = Instant::now();
        let session = OperatorSession::new(
            "op-1".into(),
            vec![],
            test_limits_with(|t| t.park_grace = grace),
        );
        let failed = session
            .hook_before(test_step(1))
            .await
            .expect_err("failed after grace");
        assert!(started.elapsed() >= grace, "not before the grace window");
        assert!(failed.0.contains("had no stream for 0s"), "{failed:?}");
        assert_eq!(session.info().pending, 0);
    }

    #[tokio::test]
    async fn the_expiry_of_an_older_parking_spares_requests_after_a_reattach() {
        let session = OperatorSession::new("op-1".into(), vec![], test_limits());
        let first = session.attach(0).expect("attach");
        let s = session.clone();
        let mut request = tokio::spawn(async move { s.hook_before(test_step(1)).await });
        while session.info().pending == 0 {
            tokio::task::yield_now().await;
        }
        session.detach(first.epoch());
        let second = session.attach(0).expect("re-attach");
        session.expire_parked(first.epoch(), Duration::ZERO);
        assert_eq!(
            session.info().pending,
            1,
            "the old parking's expiry changes nothing"
        );
        assert!((&mut request).now_or_never().is_none());
        session.detach(second.epoch());
        session.expire_parked(second.epoch(), Duration::ZERO);
        let failed = request.await.expect("join").expect_err("expired");
        assert!(failed.0.contains("had no stream"), "{failed:?}");
    }
}
