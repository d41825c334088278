//! Sending batches early: while the verdicts on the batch awaited are out, the batch claimed
//! early goes out when [`plan::send_early`] says so, and more are claimed and sent behind it, up
//! to [`plan::BATCHES_IN_FLIGHT`].

use futures_util::future::BoxFuture;

use super::super::ahead::{Prefetched, SentEarly};
use super::super::batch::Batch;
use super::super::follow::Tail;
use super::super::plan::{self, Overlap};
use super::super::record::record_then_claim;
use super::super::sinks::Answered;
use super::{Pipeline, Stop, send_with_tail, verdicts_of};
use crate::order::KeyGate;
use crate::outbox::event::Event;

impl Pipeline<'_> {
    /// Sends the early claim, then claims and sends more, while the verdicts on `batch` are
    /// out (`answer`, until `answered`) and [`Self::claims_more`] says so. `tail`: what `batch`
    /// asks of those sent after it; `gate`: the keys left unsettled by the batch recorded before
    /// these claims.
    pub(super) async fn send_ahead(
        &mut self,
        batch: &Batch,
        tail: Option<&Tail>,
        gate: &KeyGate,
        answer: &mut Option<BoxFuture<'static, Answered>>,
        answered: &mut Option<Answered>,
    ) -> Result<(), Stop> {
        let (limits, max_attempts) = (self.limits, self.config.max_attempts);
        while answered.is_none() && self.send_early(tail).await && self.claims_more(batch) {
            let from = self.reader.next();
            let skip = self.ahead.ids_in_flight(batch);
            let claim = record_then_claim(
                &*self.session,
                None,
                self.ahead.last_outlook(batch),
                Some((&from, limits, skip.as_slice())),
                max_attempts,
            );
            let claimed = async {
                tokio::pin!(claim);
                loop {
                    tokio::select! {
                        claimed = &mut claim => break Some(claimed),
                        verdicts = verdicts_of(answer), if answered.is_none() => {
                            *answered = Some(verdicts);
                        }
                        () = self.session.ended() => break None,
                    }
                }
            }
            .await;
            let Some(claimed) = claimed else {
                return Err(self.fence(batch.sent.len()).await);
            };
            (self.ahead).claimed_early(claimed.map_err(Stop::SessionLost)?, gate);
        }
        Ok(())
    }

    /// Whether to claim once more while the verdicts on `batch` are out: the last batch
    /// claimed expects more and went out, there is room for one more batch in flight, and
    /// nothing in the way.
    fn claims_more(&self, batch: &Batch) -> bool {
        self.ahead.claims_early(batch, self.limits.bytes)
            && self.ahead.has_room()
            && !self.lanes.due()
            && !self.shutdown.is_triggered()
    }

    /// Sends the early claim at once, if [`plan::send_early`] says so; whether it did.
    /// `current`: what the batch awaited asks of those sent after it, while its verdicts are
    /// outstanding; the batches sent early since ask theirs too ([`Sinks::may_follow`]).
    async fn send_early(&mut self, current: Option<&Tail>) -> bool {
        let Some(next) = &self.ahead.prefetched else {
            return false;
        };
        let tail = self.ahead.tail(current);
        let (sent_early, sent_early_bytes) = self.ahead.sent_load();
        let events: Vec<&Event> = next.claimed.events.iter().collect();
        let overlap = Overlap {
            in_flight: tail.is_some(),
            next_sinks: tail
                .as_ref()
                .is_some_and(|tail| self.sinks.may_follow(&events, tail)),
            lanes_due: self.lanes.due(),
            stopping: self.shutdown.is_triggered(),
            sent_early,
            sent_early_bytes,
        };
        if !plan::send_early(&next.claimed, self.limits, overlap) {
            return false;
        }
        let Some(Prefetched { claimed, gate }) = self.ahead.prefetched.take() else {
            return false;
        };
        // The next claim reads on after it.
        self.reader.cursor = claimed.next.clone();
        let batch = self.prepare(claimed, Some(&gate));
        let (in_flight, tail) = send_with_tail(self.sinks, &batch.sent_events()).await;
        self.ahead.push_sent(SentEarly {
            batch,
            in_flight,
            tail,
        });
        true
    }
}
