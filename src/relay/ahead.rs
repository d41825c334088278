//! The batches claimed after the one the pipeline awaits: those already sent before its verdicts
//! were in, oldest first, and the one claimed early that has not gone out. What they skip, what
//! gates them, and what the next one sent early must keep all follow from this queue.

use std::collections::VecDeque;

use super::batch::Batch;
use super::follow::Tail;
use super::plan::{BATCHES_IN_FLIGHT, Outlook};
use super::sinks::InFlight;
use crate::order::KeyGate;
use crate::outbox::session::{Claimed, Cursor};

/// A batch claimed while others were in flight, not sent yet.
pub struct Prefetched {
    pub claimed: Claimed,
    /// The keys it is gated by: those unsettled in the batch recorded before it was claimed, and
    /// in each batch settled since.
    pub gate: KeyGate,
}

/// A batch sent before the verdicts on the batches before it were in.
pub struct SentEarly {
    pub batch: Batch,
    pub in_flight: InFlight,
    /// What a batch sent after it asks ([`InFlight::tail`], taken when it was sent).
    pub tail: Option<Tail>,
}

/// The batches ahead of the one awaited.
#[derive(Default)]
pub struct Ahead {
    /// Claimed early, not sent: it is dropped (and its cursor read again) whenever a batch
    /// before it is not recorded as planned (all sinks down, back-pressure).
    pub prefetched: Option<Prefetched>,
    /// Sent early, oldest first. Whatever becomes of the batches before each, it is awaited,
    /// settled with their undelivered keys and recorded after them.
    sent: VecDeque<SentEarly>,
}

impl Ahead {
    /// Nothing is ahead: no batch claimed early, none sent.
    pub fn is_empty(&self) -> bool {
        self.prefetched.is_none() && self.sent.is_empty()
    }

    /// `claimed` early (if claimed at all), gated by `gate`.
    pub fn claimed_early(&mut self, claimed: Option<Claimed>, gate: &KeyGate) {
        self.prefetched = claimed.map(|claimed| Prefetched {
            claimed,
            gate: gate.clone(),
        });
    }

    /// The oldest batch sent early, now the one to await.
    pub fn next_sent(&mut self) -> Option<SentEarly> {
        self.sent.pop_front()
    }

    /// Where the oldest batch sent early was read from.
    pub fn first_sent_from(&self) -> Option<Cursor> {
        (self.sent.front()).map(|early| early.batch.claimed.from.clone())
    }

    pub fn push_sent(&mut self, early: SentEarly) {
        self.sent.push_back(early);
    }

    /// The session is lost: what was sent is abandoned, unmarked.
    pub fn abandon_sent(&mut self) {
        self.sent.clear();
    }

    /// A batch before these settled with `unsettled` keys not delivered: those sent settle with
    /// them held back, and the one claimed is gated by them.
    pub fn settled_before(&mut self, unsettled: &KeyGate) {
        for early in &mut self.sent {
            (early.batch.after.get_or_insert_default()).close_all(unsettled);
        }
        if let Some(prefetched) = &mut self.prefetched {
            prefetched.gate.close_all(unsettled);
        }
    }

    /// The outlook of the last batch claimed: `awaited`, or the last one sent after it.
    pub fn last_outlook<'b>(&'b self, awaited: &'b Batch) -> &'b Outlook {
        (self.sent.back()).map_or(&awaited.outlook, |early| &early.batch.outlook)
    }

    /// Whether to claim early while `awaited` is in flight: the last batch claimed expects
    /// more, no early claim is waiting to go out, and the batches in flight carry at most half
    /// of `budget` (payload bytes per batch): with the claim, at most one and a half budgets
    /// are in memory.
    pub fn claims_early(&self, awaited: &Batch, budget: usize) -> bool {
        let in_flight = awaited.claimed.payload_bytes() + self.sent_load().1;
        self.last_outlook(awaited).prefetch && self.prefetched.is_none() && in_flight <= budget / 2
    }

    /// Whether one more batch sent early may follow those sent.
    pub fn has_room(&self) -> bool {
        self.sent.len() + 1 < BATCHES_IN_FLIGHT
    }

    /// The ids of `awaited` and of the batches sent after it, which the next claim skips.
    pub fn ids_in_flight(&self, awaited: &Batch) -> Vec<i64> {
        let mut ids = awaited.claimed.ids();
        for early in &self.sent {
            ids.extend(early.batch.claimed.ids());
        }
        ids
    }

    /// What the batches in flight ask of the next one sent early, given what the awaited one
    /// asks (`current`); `None` when one of them lets nothing follow before its verdicts.
    pub fn tail(&self, current: Option<&Tail>) -> Option<Tail> {
        let current = current?.clone();
        (self.sent.iter()).try_fold(current, |tail, early| {
            early.tail.as_ref().map(|later| tail.then(later))
        })
    }

    /// How many batches were sent early, and their payload bytes.
    pub fn sent_load(&self) -> (usize, usize) {
        let bytes = self.sent.iter().map(|e| e.batch.claimed.payload_bytes());
        (self.sent.len(), bytes.sum())
    }
}
