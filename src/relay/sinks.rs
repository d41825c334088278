//! Every configured sink, with its connection state. A batch is split by route; each sink
//! publishes its part (in key-ordered waves where it needs them, see [`waves`]), all sinks at the
//! same time. A sink that is down does not hold up the others: its events get
//! [`Outcome::SinkDown`] (no attempt used) and it is tried again after its own backoff, or after
//! the `Retry-After` its broker asked for.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::waves;
use crate::config::RelayConfig;
use crate::health::Health;
use crate::otel::SendTracer;
use crate::outbox::event::Event;
use crate::retry::{Backoff, RetryPolicy};
use crate::route::Routes;
use crate::sink::{Outcome, Sink, SinkError};
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

    /// Publishes `events` (in id order) to their sinks, each sink's part in order.
    pub async fn publish(&mut self, events: &[&Event]) -> Published {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); self.slots.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        for (i, event) in events.iter().enumerate() {
            match self.routes.sink_for(&event.topic) {
                Some(sink) => parts[sink].push(i),
                None => {
                    outcomes[i] = Some(Outcome::Failed(format!(
                        "no sink for topic {:?}: it matches no route in OUTBOX_ROUTES and no default sink (OUTBOX_SINK) is set; add a route, then `outbox-relay dead-letters retry`",
                        event.topic
                    )))
                }
            }
        }
        let (retry, health, tracer) = (self.retry, &self.health, self.tracer.as_ref());
        let results = join_all(self.slots.iter_mut().zip(&parts).map(|(slot, part)| {
            let batch: Vec<&Event> = part.iter().map(|&i| events[i]).collect();
            slot.publish(batch, retry, health, tracer)
        }))
        .await;
        let mut all_down = true;
        for (part, result) in parts.iter().zip(results) {
            if part.is_empty() {
                continue;
            }
            match result {
                Ok(part_outcomes) => {
                    all_down = false;
                    for (&i, outcome) in part.iter().zip(part_outcomes) {
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(wait) => {
                    for &i in part {
                        outcomes[i] = Some(Outcome::SinkDown(wait));
                    }
                }
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

    /// The outcomes of `events`, or how long until the sink is tried again when it is down.
    async fn publish(
        &mut self,
        events: Vec<&Event>,
        retry: RetryPolicy,
        health: &Health,
        tracer: Option<&SendTracer>,
    ) -> Result<Vec<Outcome>, Duration> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.connect_if_due(retry, health).await;
        if let Some(down) = &self.down {
            return Err(down.retry_at.saturating_duration_since(Instant::now()));
        }
        let started = Instant::now();
        // Each event's send span covers this publish and ends with its outcome; an event
        // without a `traceparent` is published carrying its span's.
        let sends = tracer.map(|tracer| tracer.start(self.kind, &events));
        let published = match &sends {
            Some(sends) => {
                waves::publish_in_key_order(&mut self.sink, &sends.events(&events)).await
            }
            None => waves::publish_in_key_order(&mut self.sink, &events).await,
        };
        if let Some(sends) = sends {
            sends.end(published.as_deref());
        }
        match published {
            Ok(outcomes) => {
                let name = self.sink.name().to_string();
                metrics::histogram!(telemetry::PUBLISH_DURATION, "sink" => name.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!(telemetry::BATCH_SIZE, "sink" => name)
                    .record(events.len() as f64);
                Ok(outcomes)
            }
            Err(e) => {
                metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "outage", "sink" => self.sink.name().to_string())
                    .increment(1);
                let wait = self.failed(
                    &e,
                    "broker unavailable; its events wait, other sinks go on",
                    retry,
                    health,
                );
                Err(wait)
            }
        }
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
