//! What the active relay has taken on, shared with the background jobs and `/healthz`: the lanes it
//! owns and its claim floor. The relay loop writes it; the metrics sampler and the purge read it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::telemetry;

#[derive(Clone, Debug, Default)]
pub struct Ownership {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The lanes this replica owns (every lane in single mode, none on a standby).
    lanes: Mutex<Vec<i32>>,
    /// The claim floor of the last claim: the sampler counts the backlog from there instead of
    /// walking the delivered history.
    claim_floor: AtomicI64,
}

impl Ownership {
    pub fn set_lanes(&self, lanes: &[i32]) {
        *self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lanes.to_vec();
        metrics::gauge!(telemetry::LANES_OWNED).set(lanes.len() as f64);
    }

    pub fn lanes(&self) -> Vec<i32> {
        self.inner
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_claim_floor(&self, floor: i64) {
        self.inner.claim_floor.store(floor, Ordering::Relaxed);
    }

    pub fn claim_floor(&self) -> i64 {
        self.inner.claim_floor.load(Ordering::Relaxed)
    }
}
