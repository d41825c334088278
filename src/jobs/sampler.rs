//! The sampler: keeps the lag and backlog gauges fresh from its own connection, so they move even
//! while the relay itself is stuck.

use std::time::{Duration, Instant};

use crate::health::Health;
use crate::outbox::admin;
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;
use crate::telemetry::{DEAD_LETTER_EVENTS, LAG, PENDING};

/// How often the sampler reads lag, backlog and dead letters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Refreshes the lag gauge every [`SAMPLE_INTERVAL`] until shutdown, and the pending and
/// dead-letter gauges as often as [`count_pause`] allows, for the lanes this replica owns. A
/// replica without lanes reports 0, so that summing over the replicas of one outbox counts its
/// backlog once, and the lag's maximum is the worst lane's.
pub async fn sample(
    pool: deadpool_postgres::Pool,
    health: Health,
    ownership: Ownership,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_count = Instant::now();
    let mut counted_lanes = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let lanes = ownership.lanes();
        if !health.leader() || lanes.is_empty() {
            metrics::gauge!(LAG).set(0.0);
            metrics::gauge!(PENDING).set(0.0);
            metrics::gauge!(DEAD_LETTER_EVENTS).set(0.0);
            counted_lanes.clear();
            continue;
        }
        let client = match pool.get().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "metrics sampler cannot reach PostgreSQL");
                continue;
            }
        };
        let floor = ownership.claim_floor();
        match admin::lag(&client, floor, &lanes).await {
            Ok(lag) => metrics::gauge!(LAG).set(lag),
            Err(e) => tracing::debug!(error = %e, "metrics sampler query failed"),
        }
        // Lanes that changed hands are counted at once: the last count was of other lanes.
        if Instant::now() < next_count && lanes == counted_lanes {
            continue;
        }
        let started = Instant::now();
        match admin::backlog(&client, floor, &lanes).await {
            Ok(backlog) => {
                metrics::gauge!(PENDING).set(backlog.pending as f64);
                metrics::gauge!(DEAD_LETTER_EVENTS).set(backlog.dead_letters as f64);
            }
            Err(e) => tracing::debug!(error = %e, "metrics sampler query failed"),
        }
        next_count = Instant::now() + count_pause(started.elapsed());
        counted_lanes = lanes;
    }
}

/// How long the sampler waits before counting the backlog again, after a count that took `took`.
/// A count reads every pending row (~1-3 us each on a 2-core VM: ~0.7 s for a replica's share of a
/// 1M backlog), so counting every 2 s would cost PostgreSQL up to a third of a core per replica
/// during a large drain. Waiting 25 times as long as the count took keeps it under ~4% of a core;
/// a small backlog is still counted at every sample, a large one at least once a minute.
fn count_pause(took: Duration) -> Duration {
    (took * 25).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_backlog_is_counted_at_every_sample_and_a_large_one_at_least_once_a_minute() {
        assert!(count_pause(Duration::from_millis(20)) < SAMPLE_INTERVAL);
        assert_eq!(
            count_pause(Duration::from_millis(700)),
            Duration::from_millis(17_500)
        );
        assert_eq!(
            count_pause(Duration::from_secs(10)),
            Duration::from_secs(60)
        );
    }
}
