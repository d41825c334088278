//! The in-wave per-key rule, written once for the sinks that send a key's events of one batch
//! together: an event whose key was refused earlier in the batch is not sent, and a refused
//! event closes its key for the rest of the batch (the rule itself is [`KeyGate`]'s).

use super::{Fault, Outcome, SinkError};
use crate::order::KeyGate;
use crate::outbox::event::Event;

/// The outcomes of one publish, one per event in batch order, kept under the per-key rule.
pub struct Verdicts<'a> {
    events: &'a [&'a Event],
    /// Starts as [`Outcome::NotSent`]: an event nobody gave a verdict is published again, never
    /// taken for delivered.
    outcomes: Vec<Outcome>,
    /// Keys with a refused event: their later events are not sent.
    refused: KeyGate,
}

impl<'a> Verdicts<'a> {
    pub fn new(events: &'a [&'a Event]) -> Self {
        Verdicts {
            events,
            outcomes: vec![Outcome::NotSent; events.len()],
            refused: KeyGate::default(),
        }
    }

    /// Whether event `index` may go out; if not (an earlier event of its key was refused), it is
    /// recorded as not sent.
    pub fn admits(&mut self, index: usize) -> bool {
        let event = self.events[index];
        let admitted = self.refused.admits(event.id, event.key.as_deref());
        if !admitted {
            self.outcomes[index] = Outcome::NotSent;
        }
        admitted
    }

    /// Event `index` was refused before it went out (the encoder or the client's local queue
    /// refused it): records the fault and closes its key. An outage is the batch's error.
    pub fn refuse(&mut self, index: usize, fault: Fault) -> Result<(), SinkError> {
        let event = self.events[index];
        self.outcomes[index] = fault.outcome()?;
        self.refused.close(event.id, event.key.as_deref());
        Ok(())
    }

    /// Event `index` was not sent for its key's sake (e.g. the broker skipped it after refusing
    /// an earlier one of the key): records it as not sent and closes its key.
    pub fn hold_back(&mut self, index: usize) {
        let event = self.events[index];
        self.outcomes[index] = Outcome::NotSent;
        self.refused.close(event.id, event.key.as_deref());
    }

    /// The broker's verdict on event `index`, once it went out: its key's later events went with
    /// it, so nothing is closed.
    pub fn settle(&mut self, index: usize, outcome: Outcome) {
        self.outcomes[index] = outcome;
    }

    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    pub fn into_outcomes(self) -> Vec<Outcome> {
        self.outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, key: Option<&str>) -> Event {
        Event {
            id,
            topic: "orders".into(),
            key: key.map(str::to_string),
            payload: Vec::new(),
            headers: Vec::new(),
            message_id: uuid::Uuid::nil(),
            created_at: chrono::Utc::now(),
            attempts: 0,
        }
    }

    #[test]
    fn a_refused_event_holds_back_its_keys_later_events_only() {
        let events = [
            event(1, Some("a")),
            event(2, Some("b")),
            event(3, Some("a")),
            event(4, None),
            event(5, Some("b")),
        ];
        let events: Vec<&Event> = events.iter().collect();
        let mut verdicts = Verdicts::new(&events);
        for index in 0..events.len() {
            if !verdicts.admits(index) {
                continue;
            }
            if index == 0 {
                verdicts
                    .refuse(index, Fault::Event("too large".into()))
                    .expect("not an outage");
            } else {
                verdicts.settle(index, Outcome::Delivered);
            }
        }
        assert_eq!(
            verdicts.into_outcomes(),
            [
                Outcome::Failed("too large".into()),
                Outcome::Delivered,
                Outcome::NotSent,
                Outcome::Delivered,
                Outcome::Delivered,
            ]
        );
    }

    #[test]
    fn an_outage_is_the_batchs_error() {
        let events = [event(1, Some("a"))];
        let events: Vec<&Event> = events.iter().collect();
        let mut verdicts = Verdicts::new(&events);
        assert!(verdicts.refuse(0, Fault::Outage("down".into())).is_err());
    }

    #[test]
    fn a_held_back_event_closes_its_key_too() {
        let events = [event(1, Some("a")), event(2, Some("a"))];
        let events: Vec<&Event> = events.iter().collect();
        let mut verdicts = Verdicts::new(&events);
        verdicts.hold_back(0);
        assert!(!verdicts.admits(1));
        assert_eq!(verdicts.outcomes(), [Outcome::NotSent, Outcome::NotSent]);
    }
}
