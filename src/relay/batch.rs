//! A claimed batch on its way through the pipeline: which of its events went out, which the gate
//! held back, what the session does meanwhile, and how it is settled.

use super::plan::Outlook;
use super::settle::{Settlement, settle};
use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::outbox::session::Claimed;
use crate::retry::RetryPolicy;
use crate::sink::Outcome;

/// A claimed batch on its way: what was sent, what was held back, and what the session does
/// meanwhile.
pub struct Batch {
    pub claimed: Claimed,
    /// Indices into `claimed.events`: the events sent, and those the gate held back.
    pub sent: Vec<usize>,
    pub held: Vec<usize>,
    pub outlook: Outlook,
    /// When it was sent before the verdicts on the batch before it: that batch's undelivered
    /// keys, set once it is settled.
    pub after: Option<KeyGate>,
}

impl Batch {
    /// The events that go out.
    pub fn sent_events(&self) -> Vec<&Event> {
        self.sent.iter().map(|&i| &self.claimed.events[i]).collect()
    }

    /// What to record, given the sent events' `outcomes`.
    pub fn settle(&self, outcomes: &[Outcome], retry: &RetryPolicy) -> Settlement {
        let events = |indices: &[usize]| -> Vec<&Event> {
            indices.iter().map(|&i| &self.claimed.events[i]).collect()
        };
        settle(
            &events(&self.sent),
            outcomes,
            &events(&self.held),
            &self.claimed.invalid,
            retry,
            self.after.as_ref(),
        )
    }
}
