//! What `/readyz` and `/healthz` report.
//!
//! Ready: connected to PostgreSQL and every sink, and no sink's broker blocks publishing.
//! Alive: unless this replica is the active relay and its loop made no progress for the stall
//! timeout although nothing it knows of stops it (connected, not blocked): a wedge that only a
//! restart clears. A known outage or a blocking broker is not a wedge: a restart would not help,
//! and `/readyz` already says what is wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Each sink by name: connected, and why its broker blocks publishing while it does.
    sinks: Mutex<BTreeMap<String, SinkState>>,
    /// This replica holds the leader lock and is relaying.
    leader: AtomicBool,
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
                sinks: Mutex::new(BTreeMap::new()),
                leader: AtomicBool::new(false),
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

    /// Whether sink `name` holds a working connection.
    pub fn set_sink(&self, name: &str, up: bool) {
        let became_up = {
            let mut sinks = lock(&self.inner.sinks);
            if !sinks.contains_key(name) {
                sinks.insert(name.to_string(), SinkState::default());
            }
            let state = sinks.get_mut(name);
            let became_up = up && state.as_ref().is_some_and(|s| !s.connected);
            if let Some(state) = state {
                state.connected = up;
            }
            became_up
        };
        if became_up {
            self.progressed();
        }
        self.publish();
    }

    /// The handle a sink reports its broker's state with.
    pub fn sink(&self, name: &str) -> SinkHealth {
        lock(&self.inner.sinks).entry(name.to_string()).or_default();
        SinkHealth {
            health: self.clone(),
            name: name.to_string(),
        }
    }

    pub fn set_leader(&self, leader: bool) {
        if leader && !self.inner.leader.swap(leader, Ordering::Relaxed) {
            self.progressed();
        }
        self.inner.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!(crate::telemetry::LEADER).set(if leader { 1.0 } else { 0.0 });
    }

    /// Sink `name`'s broker blocks publishing for `reason`, or (`None`) no longer does. Logs each
    /// change once, however many connections report it.
    fn set_sink_blocked(&self, name: &str, reason: Option<String>) {
        {
            let mut sinks = lock(&self.inner.sinks);
            let state = sinks.entry(name.to_string()).or_default();
            if state.blocked == reason {
                return;
            }
            match &reason {
                Some(why) => tracing::warn!(
                    sink = name,
                    reason = %why,
                    "the broker blocks publishing; its events wait and use no attempts until it unblocks"
                ),
                None => tracing::info!(sink = name, "the broker no longer blocks publishing"),
            }
            state.blocked = reason;
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

    pub fn leader(&self) -> bool {
        self.inner.leader.load(Ordering::Relaxed)
    }

    /// Every sink's state, by name.
    pub fn sinks(&self) -> BTreeMap<String, SinkState> {
        lock(&self.inner.sinks).clone()
    }

    /// Connected to PostgreSQL and every sink, and no broker blocks publishing.
    pub fn ready(&self) -> bool {
        self.database()
            && lock(&self.inner.sinks)
                .values()
                .all(|s| s.connected && s.blocked.is_none())
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

/// What is known of one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkState {
    pub connected: bool,
    /// Why its broker blocks publishing (RabbitMQ's `connection.blocked` reason), while it does.
    pub blocked: Option<String>,
}

/// What a sink reports about its broker (see [`Health::sink`]).
#[derive(Debug, Clone)]
pub struct SinkHealth {
    health: Health,
    name: String,
}

impl SinkHealth {
    /// The broker blocks publishing for `reason`, or (`None`) no longer does.
    pub fn set_blocked(&self, reason: Option<String>) {
        self.health.set_sink_blocked(&self.name, reason);
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
        health.set_sink("rabbitmq", true);
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
        disabled.set_sink("rabbitmq", true);
        disabled.set_leader(true);
        assert_eq!(disabled.stalled_at(late), None);

        let outage = active();
        outage.set_sink("rabbitmq", false);
        assert_eq!(outage.stalled_at(late), None);

        let blocked = active();
        blocked
            .sink("rabbitmq")
            .set_blocked(Some("low on memory".into()));
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
        health.set_sink("rabbitmq", false);
        health.set_sink("rabbitmq", true);
        assert_eq!(health.stalled(), None);

        health.progressed_at(long_ago());
        health
            .sink("rabbitmq")
            .set_blocked(Some("low on disk".into()));
        assert_eq!(
            health.sinks()["rabbitmq"].blocked.as_deref(),
            Some("low on disk")
        );
        assert!(!health.ready());
        health.sink("rabbitmq").set_blocked(None);
        assert!(health.ready());
        assert_eq!(health.stalled(), None);

        health.progressed_at(long_ago());
        health.set_leader(false);
        health.set_leader(true);
        assert_eq!(health.stalled(), None);
    }
}
