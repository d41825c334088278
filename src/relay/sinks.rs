//! Every configured sink, with its connection state. A batch is split by route; each sink
//! publishes its part (in key-ordered waves where it needs them, see [`waves`]), all sinks at the
//! same time. A sink that is down does not hold up the others: its events get
//! [`Outcome::SinkDown`] (no attempt used) and it is tried again after its own backoff, or after
//! the `Retry-After` its broker asked for.
//!
//! Publishing is three steps, so that a batch can be sent while the verdicts on the previous one
//! are outstanding: [`Sinks::send`] (routes, connects, starts the send spans), [`InFlight::answer`]
//! (awaits the verdicts, borrowing nothing of the sinks) and [`Sinks::conclude`] (metrics, spans
//! ended, a sink marked down after an outage).

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::follow::{Follow, RouteCheck, Tail};
use super::waves;
use crate::config::RelayConfig;
use crate::health::Health;
use crate::otel::{SendTracer, Sends};
use crate::outbox::event::Event;
use crate::retry::{Backoff, RetryPolicy};
use crate::route::Routes;
use crate::sink::{Ordering, Outcome, Sent, Sink, SinkError, Unanswered};
use crate::telemetry;

pub struct Sinks {
    slots: Vec<Slot>,
    routes: Routes,
    retry: RetryPolicy,
    health: Health,
    /// Starts the send spans; `None` while traces are off.
    tracer: Option<SendTracer>,
}

struct Slot {
    sink: Sink,
    /// The sink's kind (`rabbitmq`, `kafka`, ...): the spans' `messaging.system`.
    kind: &'static str,
    /// Set while the sink is down: when to try it again.
    down: Option<Down>,
}

struct Down {
    retry_at: Instant,
    backoff: Backoff,
}

/// A batch sent to its sinks ([`Sinks::send`]), its verdicts outstanding. It owns what it
/// awaits, so the sinks can send the next batch meanwhile.
pub struct InFlight {
    /// How many events were sent.
    len: usize,
    /// Verdicts known when it was sent: events that match no route.
    unrouted: Vec<(usize, Outcome)>,
    /// One per sink that got events.
    parts: Vec<Part>,
}

/// A sink's part of a batch in flight.
struct Part {
    /// The sink's slot.
    slot: usize,
    /// The part's events, as indices into the batch.
    indices: Vec<usize>,
    /// What a batch sent before this part's verdicts must keep to the sink.
    follow: Follow,
    started: Instant,
    /// The send spans, while traces are on.
    sends: Option<Sends>,
    sent: PartSent,
}

enum PartSent {
    /// The sink is down: tried again after this long; nothing was sent.
    Down(Duration),
    /// Sent, or failed while sending (an outage).
    Sent(Result<Sent, SinkError>),
}

/// A batch's verdicts, for [`Sinks::conclude`].
pub struct Answered {
    len: usize,
    unrouted: Vec<(usize, Outcome)>,
    parts: Vec<AnsweredPart>,
}

struct AnsweredPart {
    slot: usize,
    indices: Vec<usize>,
    /// From sending to the last verdict.
    took: Duration,
    sends: Option<Sends>,
    answer: PartAnswer,
}

enum PartAnswer {
    Down(Duration),
    Answered(Result<Vec<Outcome>, Unanswered>),
}

impl InFlight {
    /// When verdicts are outstanding and every sink of the batch keeps its order across
    /// batches (for each key's route, where it keeps routes in order): what the next batch must
    /// keep to be sent before they are in ([`Sinks::may_follow`]). Taken before [`Self::answer`].
    pub fn tail(&mut self) -> Option<Tail> {
        let outstanding = self.parts.iter().any(|p| match &p.sent {
            PartSent::Sent(Ok(sent)) => sent.is_outstanding(),
            _ => false,
        });
        if !outstanding
            || self
                .parts
                .iter()
                .any(|p| matches!(p.follow, Follow::Nothing))
        {
            return None;
        }
        let routes = (self.parts.iter_mut())
            .filter_map(
                |p| match std::mem::replace(&mut p.follow, Follow::Nothing) {
                    Follow::Routes(routes) => Some((p.slot, routes)),
                    _ => None,
                },
            )
            .collect();
        Some(Tail::new(routes))
    }

    /// Awaits every sink's verdicts (each within its publish timeout), all sinks at once.
    pub async fn answer(self) -> Answered {
        let parts = join_all(self.parts.into_iter().map(|part| async move {
            let answer = match part.sent {
                PartSent::Down(wait) => PartAnswer::Down(wait),
                PartSent::Sent(Ok(sent)) => PartAnswer::Answered(sent.answer().await),
                // The send's own timeout dropped the connection already.
                PartSent::Sent(Err(error)) => PartAnswer::Answered(Err(Unanswered {
                    error,
                    timed_out: false,
                })),
            };
            AnsweredPart {
                slot: part.slot,
                indices: part.indices,
                took: part.started.elapsed(),
                sends: part.sends,
                answer,
            }
        }))
        .await;
        Answered {
            len: self.len,
            unrouted: self.unrouted,
            parts,
        }
    }
}

/// A batch's outcomes, and whether any sink could take its events.
pub struct Published {
    /// One per event, in batch order.
    pub outcomes: Vec<Outcome>,
    /// Every event went to a sink that is down: nothing was published.
    pub all_down: bool,
}

impl Sinks {
    /// The configured sinks, not yet connected; `tracer` starts send spans while traces are on.
    pub fn new(config: &RelayConfig, health: &Health, tracer: Option<SendTracer>) -> Sinks {
        let slots = config
            .sinks
            .iter()
            .map(|spec| Slot {
                sink: Sink::new(
                    &spec.name,
                    spec.config.as_ref(),
                    config.publish_timeout,
                    health.sink(&spec.name),
                ),
                kind: spec.kind,
                down: None,
            })
            .collect();
        Sinks {
            slots,
            routes: config.routes.clone(),
            retry: config.retry,
            health: health.clone(),
            tracer,
        }
    }

    /// The sinks' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.sink.name())
    }

    /// The name of the sink `topic` goes to, if any.
    pub fn sink_for(&self, topic: &str) -> Option<&str> {
        self.routes
            .sink_for(topic)
            .map(|i| self.slots[i].sink.name())
    }

    /// Connects every sink that is not connected and whose backoff has passed. `true` when at
    /// least one sink is connected.
    pub async fn connect_due(&mut self) -> bool {
        let (retry, health) = (self.retry, &self.health);
        join_all(
            self.slots
                .iter_mut()
                .map(|slot| slot.connect_if_due(retry, health)),
        )
        .await;
        self.slots.iter().any(|s| s.down.is_none())
    }

    /// When the earliest down sink is due for another try; `None` when none is down.
    pub fn next_retry(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.down.as_ref().map(|d| d.retry_at))
            .min()
    }

    /// Whether `events` may be sent while the verdicts on the batch in flight (`tail`) are
    /// outstanding: every sink they go to is up and connected (connecting would replace the
    /// connection the other batch is on) and keeps its order across batches: always
    /// ([`Ordering::Pipelined`]); where each key keeps its route, from the batch in flight and
    /// through these events, so that they also go out whole ([`Ordering::PerRoute`]); where no
    /// key is in flight already or twice among them ([`Ordering::OneVerdictPerKey`]).
    pub fn may_follow(&self, events: &[&Event], tail: &Tail) -> bool {
        let mut routes = RouteCheck::after(tail);
        events.iter().all(|event| {
            let Some(i) = self.routes.sink_for(&event.topic) else {
                return true;
            };
            let slot = &self.slots[i];
            if slot.down.is_some() || !slot.sink.is_connected() {
                return false;
            }
            let Some(key) = event.key.as_deref() else {
                return true;
            };
            match slot.sink.ordering() {
                Ordering::Pipelined => true,
                Ordering::PerRoute => routes.keeps(i, key, Some(slot.sink.route(event))),
                Ordering::OneVerdictPerKey => routes.keeps(i, key, None),
            }
        })
    }

    /// Sends `events` (in id order) to their sinks, each sink's part in order; the verdicts are
    /// awaited with [`InFlight::answer`].
    pub async fn send(&mut self, events: &[&Event]) -> InFlight {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); self.slots.len()];
        let mut unrouted = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match self.routes.sink_for(&event.topic) {
                Some(sink) => parts[sink].push(i),
                None => unrouted.push((i, Outcome::Failed(format!(
                    "no sink for topic {:?}: it matches no route in OUTBOX_ROUTES and no default sink (OUTBOX_SINK) is set; add a route, then `outbox-relay dead-letters retry`",
                    event.topic
                )))),
            }
        }
        let (retry, health, tracer) = (self.retry, &self.health, self.tracer.as_ref());
        let parts = join_all(
            self.slots
                .iter_mut()
                .zip(parts)
                .enumerate()
                .filter(|(_, (_, part))| !part.is_empty())
                .map(|(slot_index, (slot, indices))| async move {
                    let batch: Vec<&Event> = indices.iter().map(|&i| events[i]).collect();
                    let (started, sends, sent) = slot.send(&batch, retry, health, tracer).await;
                    let follow = slot.follow(&batch, &sent);
                    Part {
                        slot: slot_index,
                        indices,
                        follow,
                        started,
                        sends,
                        sent,
                    }
                }),
        )
        .await;
        InFlight {
            len: events.len(),
            unrouted,
            parts,
        }
    }

    /// Takes a batch's verdicts: records the metrics, ends the send spans, and marks a sink that
    /// failed down (dropping its connection when it did not answer in time).
    pub async fn conclude(&mut self, answered: Answered) -> Published {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; answered.len];
        for (i, outcome) in answered.unrouted {
            outcomes[i] = Some(outcome);
        }
        let mut all_down = true;
        for part in answered.parts {
            let slot = &mut self.slots[part.slot];
            let part_outcomes = match part.answer {
                PartAnswer::Down(wait) => vec![Outcome::SinkDown(wait); part.indices.len()],
                PartAnswer::Answered(answer) => {
                    if let Some(sends) = part.sends {
                        sends.end(answer.as_deref().map_err(|u| &u.error));
                    }
                    match answer {
                        Ok(part_outcomes) => {
                            all_down = false;
                            slot.published(part.indices.len(), part.took);
                            part_outcomes
                        }
                        Err(unanswered) => {
                            let wait = slot.unanswered(unanswered, self.retry, &self.health).await;
                            vec![Outcome::SinkDown(wait); part.indices.len()]
                        }
                    }
                }
            };
            for (&i, outcome) in part.indices.iter().zip(part_outcomes) {
                outcomes[i] = Some(outcome);
            }
        }
        // Events without a sink were not sent either: with nothing else, it is not an outage.
        let all_down = all_down
            && outcomes
                .iter()
                .any(|o| matches!(o, Some(Outcome::SinkDown(_))));
        Published {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::NotSent))
                .collect(),
            all_down,
        }
    }

    /// Drops every connection without flushing (see [`Sink::abandon`]).
    pub async fn abandon(&mut self) {
        join_all(self.slots.iter_mut().map(|s| s.sink.abandon())).await;
    }

    /// Flushes and closes every connection.
    pub async fn close(&mut self) {
        join_all(self.slots.iter_mut().map(|s| s.sink.close())).await;
    }
}

impl Slot {
    async fn connect_if_due(&mut self, retry: RetryPolicy, health: &Health) {
        if self.sink.is_connected() && self.down.is_none() {
            // Connected by an earlier publish, or never needs to (stdout).
            health.set_sink(self.sink.name(), true);
            return;
        }
        if self
            .down
            .as_ref()
            .is_some_and(|d| d.retry_at > Instant::now())
        {
            return;
        }
        match self.sink.connect().await {
            Ok(()) => self.up(health),
            Err(e) => {
                self.failed(&e, "cannot connect to the broker", retry, health);
            }
        }
    }

    /// Sends `events` (not empty), connecting first when due: when it started, the send spans,
    /// and what was sent (nothing when the sink is down).
    async fn send(
        &mut self,
        events: &[&Event],
        retry: RetryPolicy,
        health: &Health,
        tracer: Option<&SendTracer>,
    ) -> (Instant, Option<Sends>, PartSent) {
        self.connect_if_due(retry, health).await;
        let started = Instant::now();
        if let Some(down) = &self.down {
            let wait = down.retry_at.saturating_duration_since(started);
            return (started, None, PartSent::Down(wait));
        }
        // Each event's send span covers this publish and ends with its outcome; an event
        // without a `traceparent` is published carrying its span's.
        let sends = tracer.map(|tracer| tracer.start(self.kind, events));
        let sent = match &sends {
            Some(sends) => waves::send_in_key_order(&mut self.sink, &sends.events(events)).await,
            None => waves::send_in_key_order(&mut self.sink, events).await,
        };
        (started, sends, PartSent::Sent(sent))
    }

    /// What a batch sent before the verdicts on `events`, `sent` to this sink, must keep.
    fn follow(&self, events: &[&Event], sent: &PartSent) -> Follow {
        let outstanding = matches!(sent, PartSent::Sent(Ok(sent)) if sent.is_outstanding());
        Follow::of(self.sink.ordering(), outstanding, events, |e| {
            self.sink.route(e)
        })
    }

    /// The sink answered a part of `events` events after `took`.
    fn published(&self, events: usize, took: Duration) {
        let name = self.sink.name().to_string();
        metrics::histogram!(telemetry::PUBLISH_DURATION, "sink" => name.clone())
            .record(took.as_secs_f64());
        metrics::histogram!(telemetry::BATCH_SIZE, "sink" => name).record(events as f64);
    }

    /// The sink failed a part: an outage. Marks it down (dropping the connection first when it
    /// did not answer in time); returns how long until it is tried again.
    async fn unanswered(
        &mut self,
        unanswered: Unanswered,
        retry: RetryPolicy,
        health: &Health,
    ) -> Duration {
        if unanswered.timed_out {
            self.sink.abandon().await;
        }
        metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "outage", "sink" => self.sink.name().to_string())
            .increment(1);
        self.failed(
            &unanswered.error,
            "broker unavailable; its events wait, other sinks go on",
            retry,
            health,
        )
    }

    fn up(&mut self, health: &Health) {
        if self.down.take().is_some() {
            tracing::info!(sink = self.sink.name(), "sink connected again");
        }
        health.set_sink(self.sink.name(), true);
    }

    /// Marks the sink down; returns how long until it is tried again.
    fn failed(
        &mut self,
        error: &SinkError,
        what: &str,
        retry: RetryPolicy,
        health: &Health,
    ) -> Duration {
        health.set_sink(self.sink.name(), false);
        metrics::counter!(telemetry::RECONNECTS, "target" => "broker").increment(1);
        let down = self.down.get_or_insert_with(|| Down {
            retry_at: Instant::now(),
            backoff: retry.backoff(),
        });
        let delay = error
            .retry_after()
            .unwrap_or_default()
            .max(down.backoff.next_delay());
        down.retry_at = Instant::now() + delay;
        tracing::warn!(sink = self.sink.name(), error = %error, retry_in_ms = delay.as_millis() as u64, "{what}");
        delay
    }
}
