//! The active relay's loop: claim -> gate -> publish -> settle -> record. While a batch is in
//! flight, the session records the previous one and then claims the next (skipping the ids in
//! flight), so the broker and the database work at the same time. Where every sink keeps its
//! order across batches (Kafka; RabbitMQ while each key keeps its route; NATS for keys not in
//! flight), that next batch is sent as soon as it is claimed, before the verdicts on the one in
//! flight: two batches in flight at most ([`plan::send_early`]).
//! [`Pipeline`] owns the state that carries from one batch to the next; each transition is a
//! method, and its decisions are in [`plan`](super::plan).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::batch::Batch;
use super::follow::Tail;
use super::lanes::Lanes;
use super::plan::{self, AfterHold, AfterSettle, Hold, Outlook, Overlap, Reader, Signals};
use super::record::{Unrecorded, record, record_and_claim, record_then_claim};
use super::settle::Settlement;
use super::sinks::{Answered, InFlight, Published, Sinks};
use super::{Stop, connect_sinks, pause};
use crate::config::RelayConfig;
use crate::health::Health;
use crate::order::KeyGate;
use crate::outbox::StoreError;
use crate::outbox::event::Event;
use crate::outbox::session::{BatchLimits, Claimed, Cursor, Session, Wake};
use crate::ownership::Ownership;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;

/// Relays batches while this replica leads.
pub struct Pipeline<'a> {
    /// The leader's session: every claim and record runs on it, and its end is the fence.
    session: &'a mut Session,
    /// Where batches are published.
    sinks: &'a mut Sinks,
    config: &'a RelayConfig,
    /// Told of progress (for the stall check) and of leadership.
    health: &'a Health,
    /// Told of the lanes owned and the claim floor, for the backlog sampler.
    ownership: &'a Ownership,
    shutdown: &'a Shutdown,
    /// How much one claim may take, from the configuration.
    limits: BatchLimits,
    /// Where the next claim reads from.
    reader: Reader,
    /// The last batch, settled but not yet recorded: written while the next batch is in flight,
    /// or by the next claim. Its unsettled keys hold back their events in the next batch.
    unrecorded: Option<Unrecorded>,
    /// The next batch, claimed while `unrecorded` was in flight: it skipped that batch's ids and
    /// is gated by its unsettled keys, so it is dropped (and its cursor read again) whenever
    /// that batch is not recorded as planned (all sinks down, back-pressure).
    prefetched: Option<Claimed>,
    /// Instead, the next batch already sent, before the verdicts on `unrecorded` were in (see
    /// [`plan::send_early`]). Whatever becomes of that batch, this one is awaited, settled with
    /// its undelivered keys and recorded after it.
    flying: Option<(Batch, InFlight)>,
    /// The lanes this replica relays, and when to check its share.
    lanes: Lanes,
    /// Whether the last wait ended with a notification (or with listening again): NOTIFY works,
    /// so a batch that is not full may be followed by a wait rather than an early claim.
    notified: bool,
    /// The delay after the broker refused events for now; afresh after a batch it took.
    pressure: Backoff,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        session: &'a mut Session,
        sinks: &'a mut Sinks,
        config: &'a RelayConfig,
        health: &'a Health,
        ownership: &'a Ownership,
        shutdown: &'a Shutdown,
    ) -> Pipeline<'a> {
        Pipeline {
            session,
            sinks,
            config,
            health,
            ownership,
            shutdown,
            limits: BatchLimits {
                events: config.batch_size,
                bytes: config.batch_max_bytes,
                max_payload_bytes: config.max_payload_bytes,
            },
            reader: Reader::start(),
            unrecorded: None,
            prefetched: None,
            flying: None,
            lanes: Lanes::new(config.replica_mode, config.leader_poll),
            notified: false,
            pressure: config.retry.backoff(),
        }
    }

    /// Relays until shutdown (the last batch recorded) or until the session is lost.
    pub async fn run(mut self) -> Stop {
        loop {
            if let Err(stop) = self.relay_one().await {
                return stop;
            }
        }
    }

    /// One turn of the loop: usually one batch.
    async fn relay_one(&mut self) -> Result<(), Stop> {
        self.health.progressed();
        if self.shutdown.is_triggered() {
            return Err(self.stop().await);
        }
        self.check_lanes().await?;
        if self.lanes.owned().is_empty() {
            return self.stand_by().await;
        }
        let (batch, sent) = match self.flying.take() {
            Some((batch, in_flight)) => {
                self.took(&batch.claimed);
                (batch, Some(in_flight))
            }
            None => {
                let was_prefetched = self.prefetched.is_some();
                let claimed = self.claim().await?;
                if claimed.is_empty() {
                    if plan::claim_again(was_prefetched, || self.session.take_wakeup()) {
                        return Ok(());
                    }
                    return self.idle().await;
                }
                let unsettled = self
                    .unrecorded
                    .as_ref()
                    .map(|u| u.settlement.unsettled.clone());
                (self.prepare(claimed, unsettled.as_ref()), None)
            }
        };
        let published = self.publish_and_prefetch(&batch, sent).await?;
        let settlement = batch.settle(&published.outcomes, &self.config.retry);
        // A batch sent meanwhile settles with this one's undelivered keys held back.
        if let Some((next, _)) = &mut self.flying {
            next.after = Some(settlement.unsettled.clone());
        }
        if published.all_down {
            return self
                .publish_again_later(&batch.claimed, batch.sent.len())
                .await;
        }
        self.settled(&batch, settlement).await
    }

    /// The settled batch is the one to record next; then back off, wait, or claim on.
    async fn settled(&mut self, batch: &Batch, settlement: Settlement) -> Result<(), Stop> {
        let next = AfterSettle::of(&settlement, &batch.outlook);
        self.unrecorded = Some(Unrecorded::new(&batch.claimed, settlement, self.sinks));
        match next {
            AfterSettle::BackOff { events, reason } => return self.back_off(events, &reason).await,
            AfterSettle::ClaimOn => self.pressure = self.config.retry.backoff(),
            AfterSettle::Idle => {
                self.pressure = self.config.retry.backoff();
                self.idle().await?;
                // The linger holds here too: a notification soon after the claim brings one
                // event, and more may follow it.
                if let Some(until) = batch.outlook.linger_until {
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
        Ok(())
    }

    /// Shutdown: records the last batch (and the one sent after it) before stopping.
    async fn stop(&mut self) -> Stop {
        match self.record_both().await {
            Ok(_) => Stop::Shutdown,
            Err(stop) => stop,
        }
    }

    /// Records the last batch, then the batch sent after it before its verdicts, if any: awaited,
    /// settled with the last batch's undelivered keys, and recorded unless all its sinks were
    /// down. Returns where that batch was read from.
    async fn record_both(&mut self) -> Result<Option<Cursor>, Stop> {
        let Some((batch, in_flight)) = self.flying.take() else {
            self.record().await?;
            return Ok(None);
        };
        let answered = tokio::select! {
            answered = in_flight.answer() => answered,
            () = self.session.ended() => return Err(self.fence(batch.sent.len()).await),
        };
        let published = self.sinks.conclude(answered).await;
        self.record().await?;
        if !published.all_down {
            let settlement = batch.settle(&published.outcomes, &self.config.retry);
            self.unrecorded = Some(Unrecorded::new(&batch.claimed, settlement, self.sinks));
            self.record().await?;
        }
        Ok(Some(batch.claimed.from))
    }

    /// The session (and with it the leader lock) is gone: another replica may lead. What is in
    /// flight is abandoned, unmarked; the other replica publishes it again.
    async fn fence(&mut self, batch: usize) -> Stop {
        tracing::warn!(
            batch,
            "PostgreSQL session lost while publishing: leadership is gone, the batches in flight are abandoned (another replica publishes them again)"
        );
        self.flying = None;
        self.sinks.abandon().await;
        Stop::SessionLost(StoreError::SessionEnded)
    }

    /// Records the last batch, if any.
    async fn record(&mut self) -> Result<(), Stop> {
        record(
            self.session,
            self.unrecorded.take(),
            self.config.max_attempts,
        )
        .await
        .map_err(Stop::SessionLost)
    }

    /// Takes or gives up lanes when the share is due for a check. Lanes change hands only with
    /// nothing in flight: no early claim is made while a check is due, and the last batch is
    /// recorded first.
    async fn check_lanes(&mut self) -> Result<(), Stop> {
        if self.session.lanes_changed() {
            self.lanes.check_now();
        }
        if !self.lanes.due() || self.prefetched.is_some() || self.flying.is_some() {
            return Ok(());
        }
        self.record().await?;
        let taken = self.lanes.rebalance(self.session).await;
        if taken.map_err(Stop::SessionLost)? {
            // New lanes' undelivered events may lie below the floor: read from the first id.
            self.reader.cursor = self.reader.cursor.rescan();
        }
        self.ownership.set_lanes(self.lanes.owned());
        self.health.set_leader(!self.lanes.owned().is_empty());
        Ok(())
    }

    /// Standing by: every lane has an owner (or, in single mode, another replica leads).
    async fn stand_by(&mut self) -> Result<(), Stop> {
        let wake = tokio::select! {
            () = self.shutdown.wait() => return Err(Stop::Shutdown),
            wake = self.session.wait_for_work(self.lanes.until_due()) => wake,
        };
        self.notified = wake.map_err(Stop::SessionLost)? != Wake::Timeout;
        Ok(())
    }

    /// The next batch: the one claimed early, or one claimed now (recording the last batch in
    /// the same round trip where it can).
    async fn claim(&mut self) -> Result<Claimed, Stop> {
        let claimed = match self.prefetched.take() {
            Some(claimed) => claimed,
            None => {
                // Notifications that arrived before this claim are covered by it.
                self.session.take_wakeup();
                let from = self.reader.next();
                let previous = self.unrecorded.take();
                let (limits, max_attempts) = (self.limits, self.config.max_attempts);
                record_and_claim(self.session, previous, limits, &from, &[], max_attempts)
                    .await
                    .map_err(Stop::SessionLost)?
            }
        };
        self.took(&claimed);
        Ok(claimed)
    }

    /// `claimed` is the batch now: the next claim reads on after it.
    fn took(&mut self, claimed: &Claimed) {
        self.reader.cursor = claimed.next.clone();
        // The sampler counts the backlog from here: this batch stays pending until it is marked.
        self.ownership.set_claim_floor(claimed.from.floor());
    }

    /// Gates `claimed` by `unsettled` (see [`plan::gate`]) and decides what the session does
    /// while it is in flight.
    fn prepare(&mut self, claimed: Claimed, unsettled: Option<&KeyGate>) -> Batch {
        let (sent, held) = plan::gate(unsettled, &claimed);
        let outlook = self.outlook(&claimed);
        Batch {
            claimed,
            sent,
            held,
            outlook,
            after: None,
        }
    }

    /// What the session does while `claimed` is in flight (see [`Outlook`]).
    fn outlook(&mut self, claimed: &Claimed) -> Outlook {
        let signals = Signals {
            notified: self.notified,
            listening: self.session.is_listening(),
            lanes_due: self.lanes.due(),
        };
        let session = &mut *self.session;
        let linger = self.config.batch_linger;
        Outlook::new(claimed, self.limits, linger, signals, || {
            session.take_wakeup()
        })
    }

    /// Publishes `batch` (or, when `sent` early, awaits its verdicts) while the session records
    /// the last batch and, per its outlook, claims the next one early, which goes out at once
    /// when [`plan::send_early`] says so. The fence: once the session (and the leader lock) is
    /// gone, another replica may lead; what is in flight is abandoned, unmarked, and the early
    /// claim dropped.
    async fn publish_and_prefetch(
        &mut self,
        batch: &Batch,
        sent: Option<InFlight>,
    ) -> Result<Published, Stop> {
        let ids = batch.claimed.ids();
        let previous = self.unrecorded.take();
        // An early claim is gated by the keys the batch recorded now left unsettled, whether it
        // goes out now or after this batch.
        let next_gate = previous.as_ref().map(|u| u.settlement.unsettled.clone());
        let outlook = &batch.outlook;
        let next_from = outlook.prefetch.then(|| self.reader.next());
        // Notifications so far are covered by the early claim.
        self.session.take_wakeup();
        let session = &*self.session;
        let (limits, max_attempts) = (self.limits, self.config.max_attempts);
        let session_work = record_then_claim(
            session,
            previous,
            outlook,
            next_from
                .as_ref()
                .map(|from| (from, limits, ids.as_slice())),
            max_attempts,
        );
        let events = batch.sent_events();
        let sinks = &mut *self.sinks;
        let sending = async move {
            match sent {
                Some(in_flight) => in_flight,
                None => sinks.send(&events).await,
            }
        };
        // Sending, the session's work, and the verdicts as they come in; until the first two
        // are done.
        let (mut answer, mut answered, mut tail) = (None, None, None);
        let both = async {
            tokio::pin!(sending, session_work);
            let mut next = None;
            loop {
                tokio::select! {
                    mut in_flight = &mut sending, if answer.is_none() => {
                        tail = in_flight.tail();
                        answer = Some(in_flight.answer().boxed());
                    }
                    work = &mut session_work, if next.is_none() => next = Some(work),
                    verdicts = verdicts_of(&mut answer), if answered.is_none() => {
                        answered = Some(verdicts);
                    }
                }
                if answer.is_some()
                    && let Some(next) = next.take()
                {
                    break next;
                }
            }
        };
        let next = tokio::select! {
            next = both => Some(next),
            () = session.ended() => None,
        };
        let Some(next) = next else {
            return Err(self.fence(batch.sent.len()).await);
        };
        self.prefetched = next.map_err(Stop::SessionLost)?;
        if answered.is_none() {
            self.send_early(tail, next_gate.as_ref()).await;
        }
        let answered = match answered {
            Some(answered) => answered,
            None => tokio::select! {
                answered = verdicts_of(&mut answer) => answered,
                () = self.session.ended() => return Err(self.fence(batch.sent.len()).await),
            },
        };
        Ok(self.sinks.conclude(answered).await)
    }

    /// Sends the early claim at once, if [`plan::send_early`] says so. `tail`: the verdicts on
    /// the batch in flight are outstanding and its sinks keep order across batches, as long as
    /// the next batch keeps what it asks ([`Sinks::may_follow`]).
    async fn send_early(&mut self, tail: Option<Tail>, gate: Option<&KeyGate>) {
        let Some(next) = &self.prefetched else {
            return;
        };
        let events: Vec<&Event> = next.events.iter().collect();
        let overlap = Overlap {
            in_flight: tail.is_some(),
            next_sinks: tail
                .as_ref()
                .is_some_and(|tail| self.sinks.may_follow(&events, tail)),
            lanes_due: self.lanes.due(),
            stopping: self.shutdown.is_triggered(),
        };
        if !plan::send_early(next, self.limits, overlap) {
            return;
        }
        if let Some(claimed) = self.prefetched.take() {
            let batch = self.prepare(claimed, gate);
            let in_flight = self.sinks.send(&batch.sent_events()).await;
            self.flying = Some((batch, in_flight));
        }
    }

    /// No sink of this batch is up: nothing of it is recorded; it is read again, before the
    /// early claim, once a sink is due for another try. A batch sent after it is recorded first.
    async fn publish_again_later(&mut self, claimed: &Claimed, sent: usize) -> Result<(), Stop> {
        self.prefetched = None;
        self.record_both().await?;
        self.reader.cursor = claimed.from.clone();
        tracing::warn!(
            batch = sent,
            "the batch's sinks are unavailable; it will be published again"
        );
        if !connect_sinks(self.sinks, self.shutdown).await {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// The broker refused events for now: records at once (the refused events are parked, due
    /// at once) and drops the early claim, which held back their keys (or, sent already, records
    /// it after this batch, its events of those keys parked too); then gives the broker a moment.
    async fn back_off(&mut self, events: usize, reason: &str) -> Result<(), Stop> {
        if let Some(early) = self.prefetched.take() {
            self.reader.cursor = early.from;
        }
        if let Some(sent_early) = self.record_both().await? {
            self.reader.cursor = sent_early;
        }
        let delay = self.pressure.next_delay();
        tracing::warn!(events, reason = %reason, retry_in_ms = delay.as_millis() as u64, "broker refused events for now");
        if !pause(delay, self.shutdown).await {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// Records the last batch and waits for a notification, at most the poll interval (less
    /// when the lanes are due for a check sooner).
    async fn idle(&mut self) -> Result<(), Stop> {
        let wait = plan::idle_wait(self.config.poll_interval, self.lanes.until_due());
        let wake = self.record_and_wait(wait).await?;
        self.notified = wake != Wake::Timeout;
        Ok(())
    }

    /// Records the last batch (held a moment first when it was delivered whole, see [`Hold`])
    /// and waits for a notification, at most `wait`.
    async fn record_and_wait(&mut self, wait: Duration) -> Result<Wake, Stop> {
        let mut left = wait;
        let settled = self.unrecorded.as_ref().map(|u| &u.settlement);
        if let Some(hold) = Hold::before(settled, wait) {
            let wake = tokio::select! {
                // Recorded below, before stopping.
                () = self.shutdown.wait() => None,
                wake = self.session.wait_for_work(hold.first) => Some(wake.map_err(Stop::SessionLost)?),
            };
            match hold.then(wake) {
                AfterHold::LeaveToClaim(wake) => return Ok(wake),
                AfterHold::Record { then_wait } => left = then_wait,
            }
        }
        self.record().await?;
        tokio::select! {
            () = self.shutdown.wait() => Err(Stop::Shutdown),
            wake = self.session.wait_for_work(left) => wake.map_err(Stop::SessionLost),
        }
    }
}

/// The verdicts `answer` awaits, once the batch was sent (never before).
async fn verdicts_of(answer: &mut Option<BoxFuture<'static, Answered>>) -> Answered {
    match answer {
        Some(answer) => answer.await,
        None => std::future::pending().await,
    }
}
