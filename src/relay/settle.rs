//! Settling a published batch: what is delivered, what used an attempt, what waits, keeping
//! per-key order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::outbox::event::{Event, InvalidEvent};
use crate::outbox::session::Failure;
use crate::retry::RetryPolicy;
use crate::sink::Outcome;

/// What to write back after a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Settlement {
    /// Acknowledged by the broker.
    pub delivered: Vec<i64>,
    /// The event's own fault: one attempt used.
    pub failures: Vec<Failure>,
    /// Left pending because an earlier event of the same key did not go through; published again
    /// after it, so the key's order holds (the broker may see them twice).
    pub released: Vec<i64>,
    /// Refused by the broker for now (back-pressure); no attempt used.
    pub deferred: Vec<(i64, String)>,
}

/// Decides per event what to record, keeping per-key order: once an event of a key is not
/// delivered, no later event of that key in the batch is marked delivered.
pub fn settle(
    events: &[Event],
    outcomes: &[Outcome],
    invalid: &[InvalidEvent],
    retry: &RetryPolicy,
) -> Settlement {
    let mut settlement = Settlement::default();
    for bad in invalid {
        settlement.failures.push(Failure {
            id: bad.id,
            error: bad.reason.clone(),
            retry_in: Duration::ZERO,
            permanent: true,
        });
    }
    let mut stopped: HashSet<&str> = HashSet::new();
    for (event, outcome) in events.iter().zip(outcomes) {
        if let Some(key) = event.key.as_deref() {
            if stopped.contains(key) {
                settlement.released.push(event.id);
                continue;
            }
            if *outcome != Outcome::Delivered {
                stopped.insert(key);
            }
        }
        match outcome {
            Outcome::Delivered => settlement.delivered.push(event.id),
            Outcome::Failed(reason) => settlement.failures.push(Failure {
                id: event.id,
                error: reason.clone(),
                retry_in: retry.event_delay(u32::try_from(event.attempts).unwrap_or(0) + 1),
                permanent: false,
            }),
            Outcome::Deferred(reason) => settlement.deferred.push((event.id, reason.clone())),
        }
    }
    settlement
}

/// Removes events that come after an invalid row of the same key: they wait for the next batch,
/// when the invalid row is dead-lettered, instead of being published ahead of it.
pub(super) fn hold_back_after_invalid(
    mut events: Vec<Event>,
    invalid: &[InvalidEvent],
) -> Vec<Event> {
    let mut first_invalid: HashMap<&str, i64> = HashMap::new();
    for bad in invalid {
        if let Some(key) = bad.key.as_deref() {
            let id = first_invalid.entry(key).or_insert(bad.id);
            *id = (*id).min(bad.id);
        }
    }
    if !first_invalid.is_empty() {
        events.retain(
            |e| match e.key.as_deref().and_then(|k| first_invalid.get(k)) {
                Some(&bad_id) => e.id < bad_id,
                None => true,
            },
        );
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::event::test_event as event;

    const RETRY: RetryPolicy = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };

    #[test]
    fn a_failed_event_holds_back_later_events_of_its_key_only() {
        let events = [
            event(1, Some("a")),
            event(2, Some("b")),
            event(3, Some("a")),
            event(4, None),
            event(5, Some("b")),
        ];
        let outcomes = [
            Outcome::Failed("unroutable".into()),
            Outcome::Delivered,
            Outcome::Delivered,
            Outcome::Failed("too large".into()),
            Outcome::Delivered,
        ];
        let s = settle(&events, &outcomes, &[], &RETRY);
        assert_eq!(s.delivered, vec![2, 5]);
        assert_eq!(s.released, vec![3]);
        assert_eq!(
            s.failures.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(
            s.failures
                .iter()
                .all(|f| !f.permanent && f.retry_in <= RETRY.base_delay)
        );
    }

    #[test]
    fn deferred_events_use_no_attempt_and_hold_back_their_key() {
        let events = [event(1, Some("a")), event(2, Some("a"))];
        let outcomes = [Outcome::Deferred("nack".into()), Outcome::Delivered];
        let s = settle(&events, &outcomes, &[], &RETRY);
        assert!(s.failures.is_empty());
        assert_eq!(s.deferred, vec![(1, "nack".to_string())]);
        assert_eq!(s.released, vec![2]);
        assert!(s.delivered.is_empty());
    }

    #[test]
    fn invalid_rows_are_dead_lettered_and_hold_back_later_events_of_their_key() {
        let invalid = [InvalidEvent {
            id: 2,
            key: Some("a".into()),
            reason: "headers must be a JSON object".into(),
        }];
        let kept = hold_back_after_invalid(
            vec![
                event(1, Some("a")),
                event(3, Some("a")),
                event(4, Some("b")),
            ],
            &invalid,
        );
        assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 4]);
        let s = settle(
            &kept,
            &[Outcome::Delivered, Outcome::Delivered],
            &invalid,
            &RETRY,
        );
        assert_eq!(s.delivered, vec![1, 4]);
        assert_eq!(s.failures.len(), 1);
        assert!(s.failures[0].permanent);
    }
}
