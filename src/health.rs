//! Readiness as seen by `/readyz`: connected to both PostgreSQL and the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    /// The relay's own PostgreSQL session is open.
    database: AtomicBool,
    /// The sink holds a working broker connection.
    broker: AtomicBool,
    /// This replica holds the leader lock and is relaying.
    leader: AtomicBool,
    /// The active relay's claim floor: the metrics sampler counts the backlog from there instead
    /// of walking the delivered history.
    claim_floor: AtomicI64,
}

impl Health {
    pub fn set_database(&self, up: bool) {
        self.inner.database.store(up, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_broker(&self, up: bool) {
        self.inner.broker.store(up, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!(crate::telemetry::LEADER).set(if leader { 1.0 } else { 0.0 });
    }

    pub fn set_claim_floor(&self, floor: i64) {
        self.inner.claim_floor.store(floor, Ordering::Relaxed);
    }

    pub fn claim_floor(&self) -> i64 {
        self.inner.claim_floor.load(Ordering::Relaxed)
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

    pub fn ready(&self) -> bool {
        self.database() && self.broker()
    }

    fn publish(&self) {
        metrics::gauge!(crate::telemetry::READY).set(if self.ready() { 1.0 } else { 0.0 });
    }
}
