//! Recording settled batches in the outbox: delivered events marked, failures counted against
//! their attempts, the rest parked; and reporting them in logs and metrics. A batch delivered
//! whole is marked by the next claim, in the same statement (see [`WithClaim`]).

use std::collections::{BTreeMap, HashMap};

use super::plan::Outlook;
use super::settle::Settlement;
use super::sinks::Sinks;
use crate::outbox::StoreError;
use crate::outbox::event::Event;
use crate::outbox::session::{BatchLimits, Claimed, Cursor, Recorded, Session};
use crate::telemetry;

/// A batch that was published and settled but not yet recorded. It is written while the next
/// batch is in flight, so that marking does not wait for the broker nor the broker for marking.
/// It keeps ids and the settlement, not the events' payloads.
#[derive(Debug, PartialEq)]
pub struct Unrecorded {
    /// The topic and sink of each failed event, for its log line and metrics.
    failed: HashMap<i64, (String, String)>,
    /// Delivered events per sink, for the metrics.
    delivered_per_sink: BTreeMap<String, u64>,
    /// What to write.
    pub settlement: Settlement,
}

impl Unrecorded {
    pub fn new(claimed: &Claimed, settlement: Settlement, sinks: &Sinks) -> Unrecorded {
        let by_id: HashMap<i64, &Event> = claimed.events.iter().map(|e| (e.id, e)).collect();
        let sink_of = |id: &i64| {
            by_id
                .get(id)
                .and_then(|e| sinks.sink_for(&e.topic))
                .unwrap_or("none")
        };
        // Counted by borrowed name: one allocation per sink, not per event.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for id in &settlement.delivered {
            *counts.entry(sink_of(id)).or_default() += 1;
        }
        let delivered_per_sink = counts
            .into_iter()
            .map(|(sink, n)| (sink.to_string(), n))
            .collect();
        let failed = settlement
            .failures
            .iter()
            .map(|f| {
                let topic = by_id.get(&f.id).map_or("", |e| e.topic.as_str());
                (f.id, (topic.to_string(), sink_of(&f.id).to_string()))
            })
            .collect();
        Unrecorded {
            failed,
            delivered_per_sink,
            settlement,
        }
    }
}

/// How the previous batch is written when the next one is claimed.
#[derive(Debug, PartialEq)]
enum WithClaim {
    /// There is none.
    Nothing,
    /// Delivered whole: marked by the claim itself, one round trip, not two.
    MarkedByClaim(Unrecorded),
    /// Failures or parked events: recorded first, so that the claim sees them.
    RecordedFirst(Unrecorded),
}

impl WithClaim {
    fn of(previous: Option<Unrecorded>) -> WithClaim {
        match previous {
            None => WithClaim::Nothing,
            Some(batch) if batch.settlement.is_all_delivered() => WithClaim::MarkedByClaim(batch),
            Some(batch) => WithClaim::RecordedFirst(batch),
        }
    }
}

/// Records `batch`, if any.
pub async fn record(
    session: &Session,
    batch: Option<Unrecorded>,
    max_attempts: u32,
) -> Result<(), StoreError> {
    match batch {
        Some(b) => apply(session, &b, max_attempts).await,
        None => Ok(()),
    }
}

/// Records `previous`, if any, and claims the next batch from `from`, skipping `in_flight`.
pub async fn record_and_claim(
    session: &Session,
    previous: Option<Unrecorded>,
    limits: BatchLimits,
    from: &Cursor,
    in_flight: &[i64],
    max_attempts: u32,
) -> Result<Claimed, StoreError> {
    match WithClaim::of(previous) {
        WithClaim::MarkedByClaim(batch) => {
            let delivered = &batch.settlement.delivered;
            let claimed = session.claim(limits, from, in_flight, delivered).await?;
            report_delivered(&batch);
            Ok(claimed)
        }
        WithClaim::RecordedFirst(batch) => {
            apply(session, &batch, max_attempts).await?;
            session.claim(limits, from, in_flight, &[]).await
        }
        WithClaim::Nothing => session.claim(limits, from, in_flight, &[]).await,
    }
}

/// The session's work while a batch is in flight: records `previous`, if any, and, given where
/// from (with the limits and the ids in flight to skip), claims the next batch early as
/// `outlook` says: it stops listening first, and lingers until its time.
pub async fn record_then_claim(
    session: &Session,
    previous: Option<Unrecorded>,
    outlook: &Outlook,
    next: Option<(&Cursor, BatchLimits, &[i64])>,
    max_attempts: u32,
) -> Result<Option<Claimed>, StoreError> {
    let Some((from, limits, in_flight)) = next else {
        return record(session, previous, max_attempts).await.map(|()| None);
    };
    if outlook.stop_listening {
        session.stop_listening().await?;
    }
    if let Some(until) = outlook.linger_until {
        tokio::time::sleep_until(until.into()).await;
    }
    record_and_claim(session, previous, limits, from, in_flight, max_attempts)
        .await
        .map(Some)
}

/// Records a settled batch in the outbox and reports it in logs and metrics.
async fn apply(session: &Session, batch: &Unrecorded, max_attempts: u32) -> Result<(), StoreError> {
    let settlement = &batch.settlement;
    session.record_delivered(&settlement.delivered).await?;
    report_delivered(batch);
    if !settlement.failures.is_empty() {
        let recorded = session
            .record_failures(&settlement.failures, max_attempts)
            .await?;
        report_failures(batch, &recorded);
    }
    // After the failures: a parked event waits for its key's earlier event's new time.
    session.park(&settlement.parked, &settlement.waiting).await
}

/// Counts a recorded batch's failures and logs each with what became of it.
fn report_failures(batch: &Unrecorded, recorded: &[Recorded]) {
    let recorded: HashMap<i64, &Recorded> = recorded.iter().map(|r| (r.id, r)).collect();
    for failure in &batch.settlement.failures {
        let (topic, sink) = batch
            .failed
            .get(&failure.id)
            .map_or(("", "none"), |(t, s)| (t.as_str(), s.as_str()));
        metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "event", "sink" => sink.to_string())
            .increment(1);
        // Not returned: delivered or dead-lettered meanwhile (e.g. by hand); nothing to say.
        let Some(outcome) = recorded.get(&failure.id) else {
            continue;
        };
        if outcome.dead_lettered {
            metrics::counter!(telemetry::DEAD_LETTERED, "sink" => sink.to_string()).increment(1);
            tracing::error!(event_id = failure.id, topic, sink, attempts = outcome.attempts, error = %failure.error, "event dead-lettered; later events of its key continue");
        } else {
            tracing::warn!(event_id = failure.id, topic, sink, attempts = outcome.attempts, retry_in_ms = failure.retry_in.as_millis() as u64, error = %failure.error, "event failed; it and later events of its key will be retried");
        }
    }
}

/// Counts a recorded batch's delivered events.
fn report_delivered(batch: &Unrecorded) {
    for (sink, delivered) in &batch.delivered_per_sink {
        metrics::counter!(telemetry::DELIVERED, "sink" => sink.clone()).increment(*delivered);
    }
    if !batch.settlement.delivered.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!(telemetry::LAST_DELIVERY).set(now.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::session::Failure;

    fn unrecorded(settlement: Settlement) -> Unrecorded {
        Unrecorded {
            failed: HashMap::new(),
            delivered_per_sink: BTreeMap::new(),
            settlement,
        }
    }

    fn delivered(ids: &[i64]) -> Settlement {
        Settlement {
            delivered: ids.to_vec(),
            ..Settlement::default()
        }
    }

    #[test]
    fn a_batch_delivered_whole_is_marked_by_the_next_claim() {
        let batch = unrecorded(delivered(&[1, 2]));
        let expected = unrecorded(delivered(&[1, 2]));
        assert_eq!(
            WithClaim::of(Some(batch)),
            WithClaim::MarkedByClaim(expected)
        );
        assert_eq!(WithClaim::of(None), WithClaim::Nothing);
    }

    #[test]
    fn a_batch_with_failures_parked_or_waiting_events_is_recorded_before_the_claim() {
        let failure = Failure {
            id: 2,
            error: "unroutable".into(),
            retry_in: Duration::ZERO,
            permanent: false,
        };
        let with_failure = Settlement {
            failures: vec![failure],
            ..delivered(&[1])
        };
        let with_parked = Settlement {
            parked: vec![2],
            ..delivered(&[1])
        };
        let with_waiting = Settlement {
            waiting: vec![(2, Duration::from_secs(1))],
            ..delivered(&[1])
        };
        for settlement in [with_failure, with_parked, with_waiting] {
            let decided = WithClaim::of(Some(unrecorded(settlement)));
            assert!(
                matches!(decided, WithClaim::RecordedFirst(_)),
                "{decided:?}"
            );
        }
    }
}
