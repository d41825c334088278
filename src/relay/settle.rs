//! Settling a published batch: what is delivered, what used an attempt, and what is parked to be
//! published later, keeping per-key order (the rule is [`KeyGate`]'s).

use std::time::Duration;

use crate::order::KeyGate;
use crate::outbox::event::{Event, InvalidEvent};
use crate::outbox::session::Failure;
use crate::retry::RetryPolicy;
use crate::sink::Outcome;

/// What to write back after a batch. Every claimed event is in exactly one of `delivered`,
/// `failures`, `parked` and `waiting`, so the claim's floor may pass all of them.
#[derive(Debug, Default, PartialEq)]
pub struct Settlement {
    /// Acknowledged by the broker.
    pub delivered: Vec<i64>,
    /// The event's own fault: one attempt used.
    pub failures: Vec<Failure>,
    /// Neither: held back behind an earlier event of its key, refused for now by the broker, or
    /// not sent. Deferred in the outbox without using an attempt; claimed again when due.
    pub parked: Vec<i64>,
    /// Routed to a sink that is down: deferred without using an attempt until the sink is tried
    /// again (the delay).
    pub waiting: Vec<(i64, Duration)>,
    /// The broker's reason when it refused events for now (back-pressure), and how many.
    pub back_pressure: Option<(usize, String)>,
    /// Keys with an event that is not delivered: the next batch holds back their later events
    /// until this one is recorded.
    pub unsettled: KeyGate,
}

impl Settlement {
    /// Whether recording it is only marking its events delivered.
    pub fn is_all_delivered(&self) -> bool {
        self.failures.is_empty() && self.parked.is_empty() && self.waiting.is_empty()
    }
}

/// Decides per event what to record. `held` were claimed but not sent (their key was closed);
/// `sent` got `outcomes`, one each, in order. `after`: when the batch was sent before the
/// verdicts on the one before it were in, that batch's keys not delivered ([`Settlement::unsettled`]).
pub fn settle(
    sent: &[&Event],
    outcomes: &[Outcome],
    held: &[&Event],
    invalid: &[InvalidEvent],
    retry: &RetryPolicy,
    after: Option<&KeyGate>,
) -> Settlement {
    let mut s = Settlement::default();
    for bad in invalid {
        s.unsettled.close(bad.id, bad.key.as_deref());
        s.failures.push(Failure {
            id: bad.id,
            error: bad.reason.clone(),
            retry_in: Duration::ZERO,
            permanent: true,
        });
    }
    for event in held {
        s.unsettled.close(event.id, event.key.as_deref());
        s.parked.push(event.id);
    }
    // Sinks that pipeline a whole batch (Kafka) may deliver an event after an earlier one of its
    // key failed, in this batch or in the one before when it was sent before that one's verdicts
    // were in: it is not marked delivered, but published again after the earlier one.
    let mut closed = after.cloned().unwrap_or_default();
    for (event, outcome) in sent.iter().zip(outcomes) {
        let key = event.key.as_deref();
        let admitted = closed.admits(event.id, key);
        if !admitted || *outcome != Outcome::Delivered {
            closed.close(event.id, key);
            s.unsettled.close(event.id, key);
        }
        match outcome {
            Outcome::Delivered if admitted => s.delivered.push(event.id),
            Outcome::Failed(reason) if admitted => s.failures.push(Failure {
                id: event.id,
                error: reason.clone(),
                retry_in: retry.event_delay(u32::try_from(event.attempts).unwrap_or(0) + 1),
                permanent: false,
            }),
            Outcome::SinkDown(wait) => s.waiting.push((event.id, *wait)),
            Outcome::Deferred(reason) => {
                let count = s.back_pressure.as_ref().map_or(0, |(n, _)| *n);
                s.back_pressure = Some((count + 1, reason.clone()));
                s.parked.push(event.id);
            }
            _ => s.parked.push(event.id),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::event::test_event as event;

    fn refs(events: &[Event]) -> Vec<&Event> {
        events.iter().collect()
    }

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
        let s = settle(&refs(&events), &outcomes, &[], &[], &RETRY, None);
        assert_eq!(s.delivered, vec![2, 5]);
        assert_eq!(s.parked, vec![3]);
        assert_eq!(
            s.failures.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(
            s.failures
                .iter()
                .all(|f| !f.permanent && f.retry_in <= RETRY.base_delay)
        );
        assert!(!s.unsettled.admits(3, Some("a")));
        assert!(s.unsettled.admits(6, Some("b")));
        assert_eq!(s.back_pressure, None);
    }

    #[test]
    fn refused_for_now_uses_no_attempt_and_holds_back_its_key() {
        let events = [event(1, Some("a")), event(2, Some("a"))];
        let outcomes = [Outcome::Deferred("nack".into()), Outcome::Delivered];
        let s = settle(&refs(&events), &outcomes, &[], &[], &RETRY, None);
        assert!(s.failures.is_empty());
        assert_eq!(s.parked, vec![1, 2]);
        assert_eq!(s.back_pressure, Some((1, "nack".to_string())));
        assert!(s.delivered.is_empty());
    }

    #[test]
    fn every_claimed_event_is_delivered_failed_or_parked_once() {
        let held = [event(7, Some("h"))];
        let invalid = [InvalidEvent {
            id: 2,
            key: Some("a".into()),
            reason: "headers must be a JSON object".into(),
        }];
        let sent = [
            event(1, Some("a")),
            event(4, Some("b")),
            event(5, None),
            event(6, Some("c")),
        ];
        let down = Duration::from_secs(3);
        let outcomes = [
            Outcome::Delivered,
            Outcome::NotSent,
            Outcome::Delivered,
            Outcome::SinkDown(down),
        ];
        let s = settle(
            &refs(&sent),
            &outcomes,
            &refs(&held),
            &invalid,
            &RETRY,
            None,
        );
        assert_eq!(s.delivered, vec![1, 5]);
        assert_eq!(s.parked, vec![7, 4]);
        assert_eq!(s.waiting, vec![(6, down)]);
        assert!(!s.unsettled.admits(9, Some("c")));
        assert_eq!(s.failures.len(), 1);
        assert!(s.failures[0].permanent);
        assert!(!s.unsettled.admits(3, Some("a")));
        assert!(!s.unsettled.admits(8, Some("h")));
    }

    #[test]
    fn a_batch_sent_before_the_verdicts_on_the_one_before_parks_the_keys_it_did_not_deliver() {
        let mut before = KeyGate::default();
        before.close(3, Some("a"));
        let events = [event(5, Some("a")), event(6, Some("b")), event(7, None)];
        let outcomes = vec![Outcome::Delivered; 3];
        let s = settle(&refs(&events), &outcomes, &[], &[], &RETRY, Some(&before));
        assert_eq!(s.delivered, vec![6, 7]);
        assert_eq!(s.parked, vec![5]);
        assert!(!s.unsettled.admits(8, Some("a")), "still held back");
        assert!(s.unsettled.admits(8, Some("b")));
        assert!(s.failures.is_empty() && s.back_pressure.is_none());
    }
}
