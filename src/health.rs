//! What `/readyz` and `/healthz` report.
//!
//! Ready: connected to PostgreSQL and the broker, and the broker does not block publishing.
//! Alive: unless this replica is the active relay and its loop made no progress for the stall
//! timeout although nothing it knows of stops it (connected, not blocked): a wedge that only a
//! restart clears. A known outage or a blocking broker is not a wedge: a restart would not help,
//! and `/readyz` already says what is wrong.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The relay's own PostgreSQL session is open.
    database: AtomicBool,
    /// The sink holds a working broker connection.
    broker: AtomicBool,
    /// This replica holds the leader lock and is relaying.
    leader: AtomicBool,
    /// The active relay's claim floor: the metrics sampler counts the backlog from there instead
    /// of walking the delivered history.
    claim_floor: AtomicI64,
    /// Why the broker blocks publishing (RabbitMQ's `connection.blocked` reason), while it does.
    blocked: Mutex<Option<String>>,
    /// When the relay loop last progressed, or became able to (active, reconnected, unblocked).
    progress: Mutex<Instant>,
    /// `None`: `/healthz` never fails.
    stall_timeout: Option<Duration>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(None)
    }
}

impl Health {
    pub fn new(stall_timeout: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                database: AtomicBool::new(false),
                broker: AtomicBool::new(false),
                leader: AtomicBool::new(false),
                claim_floor: AtomicI64::new(0),
                blocked: Mutex::new(None),
                progress: Mutex::new(Instant::now()),
                stall_timeout,
            }),
        }
    }

    pub fn set_database(&self, up: bool) {
        if up && !self.inner.database.swap(up, Ordering::Relaxed) {
            self.progressed();
        }
        self.inner.database.store(up, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_broker(&self, up: bool) {
        if up && !self.inner.broker.swap(up, Ordering::Relaxed) {
            self.progressed();
        }
        self.inner.broker.store(up, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_leader(&self, leader: bool) {
        if leader && !self.inner.leader.swap(leader, Ordering::Relaxed) {
            self.progressed();
        }
        self.inner.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!(crate::telemetry::LEADER).set(if leader { 1.0 } else { 0.0 });
    }

    pub fn set_claim_floor(&self, floor: i64) {
        self.inner.claim_floor.store(floor, Ordering::Relaxed);
    }

    pub fn claim_floor(&self) -> i64 {
        self.inner.claim_floor.load(Ordering::Relaxed)
    }

    /// The broker blocks publishing for `reason`, or (`None`) no longer does. Logs each change
    /// once, however many connections report it.
    pub fn set_broker_blocked(&self, reason: Option<String>) {
        {
            let mut blocked = lock(&self.inner.blocked);
            if *blocked == reason {
                return;
            }
            match &reason {
                Some(why) => tracing::warn!(
                    reason = %why,
                    "the broker blocks publishing (RabbitMQ connection.blocked); events wait and use no attempts until it unblocks"
                ),
                None => tracing::info!("the broker no longer blocks publishing"),
            }
            *blocked = reason;
        }
        self.progressed();
        self.publish();
    }

    /// The relay loop completed a step (a batch recorded, no work found, an outage handled).
    pub fn progressed(&self) {
        self.progressed_at(Instant::now());
    }

    fn progressed_at(&self, at: Instant) {
        *lock(&self.inner.progress) = at;
    }

    pub fn database(&self) -> bool {
        self.inner.database.load(Ordering::Relaxed)
    }

    pub fn broker(&self) -> bool {
        self.inner.broker.load(Ordering::Relaxed)
    }

    pub fn leader(&self) -> bool {
        self.inner.leader.load(Ordering::Relaxed)
    }

    /// Why the broker blocks publishing, while it does.
    pub fn broker_blocked(&self) -> Option<String> {
        lock(&self.inner.blocked).clone()
    }

    pub fn ready(&self) -> bool {
        self.database() && self.broker() && self.broker_blocked().is_none()
    }

    pub fn stall_timeout(&self) -> Option<Duration> {
        self.inner.stall_timeout
    }

    /// How long the active relay has made no progress, when that is longer than the stall
    /// timeout although it is connected and not blocked.
    pub fn stalled(&self) -> Option<Duration> {
        self.stalled_at(Instant::now())
    }

    fn stalled_at(&self, now: Instant) -> Option<Duration> {
        let timeout = self.inner.stall_timeout?;
        let could_progress = self.leader() && self.ready();
        let idle = now.saturating_duration_since(*lock(&self.inner.progress));
        (could_progress && idle > timeout).then_some(idle)
    }

    fn publish(&self) {
        metrics::gauge!(crate::telemetry::READY).set(if self.ready() { 1.0 } else { 0.0 });
    }
}

/// The data behind these locks is always valid, so a panic elsewhere does not poison it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(120);

    fn active() -> Health {
        let health = Health::new(Some(STALL));
        health.set_database(true);
        health.set_broker(true);
        health.set_leader(true);
        health
    }

    #[test]
    fn the_active_relay_stalls_after_the_timeout_without_progress() {
        let health = active();
        let start = Instant::now();
        assert_eq!(health.stalled_at(start + STALL / 2), None);
        let later = start + STALL + Duration::from_secs(5);
        assert!(health.stalled_at(later).is_some_and(|idle| idle > STALL));
        health.progressed();
        assert_eq!(health.stalled_at(Instant::now() + STALL / 2), None);
    }

    #[test]
    fn a_standby_a_disabled_check_or_a_known_outage_never_stalls() {
        let late = Instant::now() + STALL * 10;
        let standby = active();
        standby.set_leader(false);
        assert_eq!(standby.stalled_at(late), None);

        let disabled = Health::new(None);
        disabled.set_database(true);
        disabled.set_broker(true);
        disabled.set_leader(true);
        assert_eq!(disabled.stalled_at(late), None);

        let outage = active();
        outage.set_broker(false);
        assert_eq!(outage.stalled_at(late), None);

        let blocked = active();
        blocked.set_broker_blocked(Some("low on memory".into()));
        assert_eq!(blocked.stalled_at(late), None);
        assert!(!blocked.ready());
    }

    #[test]
    fn becoming_able_to_progress_restarts_the_clock() {
        let long_ago = || {
            Instant::now()
                .checked_sub(STALL * 2)
                .expect("the monotonic clock started long enough ago")
        };
        let health = active();
        health.progressed_at(long_ago());
        assert!(health.stalled().is_some());
        // After an outage, the clock runs from the reconnection, not from the last batch.
        health.set_broker(false);
        health.set_broker(true);
        assert_eq!(health.stalled(), None);

        health.progressed_at(long_ago());
        health.set_broker_blocked(Some("low on disk".into()));
        assert_eq!(health.broker_blocked().as_deref(), Some("low on disk"));
        assert!(!health.ready());
        health.set_broker_blocked(None);
        assert!(health.ready());
        assert_eq!(health.stalled(), None);

        health.progressed_at(long_ago());
        health.set_leader(false);
        health.set_leader(true);
        assert_eq!(health.stalled(), None);
    }
}
