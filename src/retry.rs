//! Backoff: exponential, capped, with full jitter (a uniform delay between zero and the
//! exponential ceiling), so that many relays recovering from one outage do not retry in step.
//! Outages (database, broker) use [`Backoff`] and never use up an event's attempts; errors about
//! an event use [`RetryPolicy::event_delay`] and count an attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first delay; doubled on each further failure.
    pub base_delay: Duration,
    /// Largest ceiling (`OUTBOX_RETRY_MAX_DELAY_MS`).
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Delay before retrying an event that has failed `attempts` times (1 after the first failure).
    pub fn event_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        full_jitter(ceiling)
    }

    /// A fresh sequence of delays for reconnecting after an outage.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            ceilings: ExponentialBuilder::new()
                .with_min_delay(self.base_delay)
                .with_max_delay(self.max_delay)
                .with_factor(2.0)
                .without_max_times()
                .build(),
            max_delay: self.max_delay,
        }
    }
}

/// Delays for one outage; start a new one after a success.
#[derive(Debug)]
pub struct Backoff {
    ceilings: ExponentialBackoff,
    max_delay: Duration,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        full_jitter(self.ceilings.next().unwrap_or(self.max_delay))
    }
}

fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_000),
    };

    #[test]
    fn event_delays_stay_under_the_doubling_ceiling_and_the_cap() {
        for attempts in 1..40 {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow((attempts - 1).min(10))).min(POLICY.max_delay);
            for _ in 0..50 {
                assert!(
                    POLICY.event_delay(attempts) <= ceiling,
                    "attempt {attempts}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| POLICY.event_delay(5)).collect();
        assert!(
            delays.len() > 10,
            "full jitter gives distinct delays: {delays:?}"
        );
    }

    #[test]
    fn outage_backoff_grows_to_the_cap_and_keeps_going() {
        let mut backoff = POLICY.backoff();
        for _ in 0..100 {
            assert!(backoff.next_delay() <= POLICY.max_delay);
        }
    }
}
