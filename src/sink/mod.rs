//! Sinks: where events are published. Each kind of sink is one folder that implements
//! [`Publisher`] and names itself, its settings and how it reads them in a [`Kind`]; [`KINDS`]
//! lists them. Nothing else knows a sink by name (docs/adding-a-sink.md).
//!
//! A sink's folder holds its settings (`settings.rs`: validated, with a `Debug` that leaves
//! secrets out), its encoder (`encode.rs`: event -> broker message, pure, with its
//! [`crate::format::Binding`]) and its service (owns the client, publishes, and reads its
//! broker's errors as a [`Fault`] through [`Classify`]). The in-wave per-key rule is
//! [`Verdicts`].
//!
//! A publisher publishes a whole batch, waits for the broker's acknowledgements, and says per
//! event whether it was delivered. A connection problem fails the whole batch instead (`Err`), so
//! that an outage never counts against an event's attempts. A publisher may split this into
//! sending and awaiting ([`Publisher::send`], Kafka): the relay then sends the next batch while
//! the broker's verdicts on the previous one are outstanding.
//!
//! Every wait for the broker (connect and publish, from sending to the last verdict) ends after
//! `OUTBOX_PUBLISH_TIMEOUT_MS` ([`Sink`] enforces it): a broker that stops answering, or blocks
//! publishers on a resource alarm, is then an outage like a broken connection, and the connection
//! is dropped so that nothing of the abandoned publish can be mistaken for the next one.

pub mod bullmq;
mod fault;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub(crate) mod redis_tls;
pub mod stdout;
mod verdicts;

pub use fault::{Classify, Fault};
pub use verdicts::Verdicts;

use std::borrow::Cow;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::settings::{ConfigError, SinkSettings};

/// Every kind of sink, by the name `OUTBOX_SINK` (or a named sink's kind) gives it.
pub const KINDS: &[Kind] = &[
    stdout::KIND,
    rabbitmq::KIND,
    kafka::KIND,
    redis::KIND,
    nats::KIND,
    http::KIND,
    bullmq::KIND,
];

/// A kind of sink: its name, the settings it reads and how it reads them.
pub struct Kind {
    /// As written in `OUTBOX_SINK`, e.g. `rabbitmq`.
    pub name: &'static str,
    /// The settings it reads, without the `OUTBOX_` prefix (e.g. `AMQP_URL`): the TOML file
    /// accepts them, lower-case, and a named sink reads them as `OUTBOX_SINK_<NAME>_<SETTING>`.
    pub settings: &'static [&'static str],
    /// Validates the settings; the result builds publishers.
    pub configure: fn(&SinkSettings) -> Result<Box<dyn SinkConfig>, ConfigError>,
}

impl Kind {
    pub fn find(name: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|kind| kind.name == name)
    }

    /// Every kind's settings (without `OUTBOX_`).
    pub fn settings() -> impl Iterator<Item = &'static str> {
        KINDS.iter().flat_map(|k| k.settings.iter().copied())
    }

    /// The kinds' names, for error messages: `stdout, rabbitmq, ... or http`.
    pub fn names() -> String {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// A sink's validated settings.
pub trait SinkConfig: Debug + Send + Sync {
    /// A publisher, not yet connected. `health` takes what the broker says about publishing
    /// (e.g. RabbitMQ's `connection.blocked`).
    fn publisher(&self, health: SinkHealth) -> Box<dyn Publisher>;
}

/// How a sink keeps a key's events in order within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// The whole batch goes out at once: the sink keeps each key's events in order across its
    /// own retries and, after an event it refused, does not deliver later events of that key
    /// (Kafka's idempotent producer; stdout).
    Pipelined,
    /// A key's events go out together while they take the same route ([`Publisher::route`]),
    /// and a change of route waits for the verdict on the key's earlier events (`relay::waves`):
    /// the broker keeps one channel's messages to one queue in order and routes messages of one
    /// route alike, so it refuses a key's later event along with the earlier one (RabbitMQ). When
    /// it still refuses one and takes the next (a full queue with `reject-publish` that a
    /// consumer frees in between), the later one is published again after the refused one
    /// (`relay::settle`). A batch whose keys each keep one route is sent whole, and the next
    /// batch may follow it before its verdicts where each of its keys keeps that route too.
    PerRoute,
    /// A later event of a key is sent only once the verdict on the earlier one is known, because
    /// the broker may refuse one message and accept the next: the batch goes out in key-ordered
    /// waves (`relay::waves`; NATS, HTTP). A batch of one event per key is sent whole, and where
    /// the sink answers later (NATS) the next batch may follow it before its verdicts when it has
    /// none of its keys.
    OneVerdictPerKey,
}

/// One broker connection and the publishing of batches on it.
#[async_trait]
pub trait Publisher: Send {
    /// How it keeps per-key order within a batch.
    fn ordering(&self) -> Ordering;

    /// Where the broker routes `event`, for [`Ordering::PerRoute`]: events with the same route
    /// are routed alike. Not asked with the other orderings.
    fn route<'a>(&'a self, _event: &'a Event) -> Cow<'a, str> {
        Cow::Borrowed("")
    }

    /// Opens the connection and checks what can be checked (e.g. that the exchange exists).
    async fn connect(&mut self) -> Result<(), SinkError>;

    /// Whether the last known state of the connection is good.
    fn is_connected(&self) -> bool;

    /// Publishes `events` in order and returns one outcome per event, in the same order; `Err`
    /// when the broker is unavailable (nothing of the batch counts as delivered).
    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError>;

    /// Sends `events` in order and returns their verdicts, or the wait for them: a wait borrows
    /// nothing of the publisher, so that the next batch can be sent meanwhile (asked of
    /// [`Ordering::Pipelined`] publishers, whose order holds across batches, and of the others
    /// for a batch that is one wave). By default it publishes and answers at once.
    async fn send(&mut self, events: &[&Event]) -> Result<Answer, SinkError> {
        self.publish(events).await.map(Answer::Now)
    }

    /// Drops the connection and what is queued or awaiting acknowledgement, without flushing.
    async fn abandon(&mut self);

    /// Flushes and closes the connection.
    async fn close(&mut self);
}

/// A sent batch's verdicts ([`Publisher::send`]): known at once, or awaited.
pub enum Answer {
    Now(Vec<Outcome>),
    /// The broker's verdicts outstanding; as [`Publisher::publish`]'s result once in.
    Later(BoxFuture<'static, Result<Vec<Outcome>, SinkError>>),
}

/// The broker's verdict on one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged: safe to mark delivered.
    Delivered,
    /// Rejected because of the event itself (unroutable, too large, not allowed): uses an attempt.
    Failed(String),
    /// Not accepted right now for reasons that are not the event's (back-pressure): no attempt used.
    Deferred(String),
    /// Not sent: an earlier event of its key in the batch was not delivered.
    NotSent,
    /// Not sent: its sink is down and is tried again after this long (set by the relay, never
    /// by a publisher, which reports an outage as `Err`).
    SinkDown(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker cannot be reached or the connection broke; retry with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// The broker asked to be left alone for a while (HTTP `Retry-After`).
    #[error("{reason} (retry after {} s)", retry_after.as_secs())]
    RetryAfter {
        reason: String,
        retry_after: Duration,
    },
}

impl SinkError {
    /// How long the broker asked to wait before the next try, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Unavailable(_) => None,
            SinkError::RetryAfter { retry_after, .. } => Some(*retry_after),
        }
    }
}

/// A named sink's publisher with the publish timeout around every wait.
pub struct Sink {
    /// The sink's name in routes, logs and metrics: its kind for the default sink.
    name: String,
    publisher: Box<dyn Publisher>,
    /// `OUTBOX_PUBLISH_TIMEOUT_MS`: the longest wait for the broker in one call.
    timeout: Duration,
}

impl Sink {
    pub fn new(name: &str, config: &dyn SinkConfig, timeout: Duration, health: SinkHealth) -> Sink {
        Sink {
            name: name.to_string(),
            publisher: config.publisher(health),
            timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens the broker connection (and checks what can be checked).
    pub async fn connect(&mut self) -> Result<(), SinkError> {
        match tokio::time::timeout(self.timeout, self.publisher.connect()).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon().await;
                Err(self.timed_out("connecting to"))
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }

    /// How the publisher keeps per-key order within a batch (see `relay::waves`).
    pub fn ordering(&self) -> Ordering {
        self.publisher.ordering()
    }

    /// Where the broker routes `event` (see [`Ordering::PerRoute`]).
    pub fn route<'a>(&'a self, event: &'a Event) -> Cow<'a, str> {
        self.publisher.route(event)
    }

    /// Publishes `events` in order and returns one outcome per event, in the same order. Waiting
    /// longer than the publish timeout is an outage.
    pub async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        let sent = self.send(events).await?;
        match sent.answer().await {
            Ok(outcomes) => Ok(outcomes),
            Err(unanswered) => {
                if unanswered.timed_out {
                    self.abandon().await;
                }
                Err(unanswered.error)
            }
        }
    }

    /// Sends `events` in order; their verdicts are awaited with [`Sent::answer`], which may
    /// outlive this borrow of the sink. The publish timeout runs from here to the last verdict.
    pub async fn send(&mut self, events: &[&Event]) -> Result<Sent, SinkError> {
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.publisher.send(events)).await {
            Ok(Ok(answer)) => Ok(Sent {
                answer,
                expected: events.len(),
                deadline,
                name: self.name.clone(),
                timeout: self.timeout,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                self.abandon().await;
                Err(self.timed_out("publishing to"))
            }
        }
    }

    /// Verdicts already known (published wave by wave), as a [`Sent`].
    pub fn answered(&self, outcomes: Vec<Outcome>) -> Sent {
        Sent {
            expected: outcomes.len(),
            answer: Answer::Now(outcomes),
            deadline: Instant::now() + self.timeout,
            name: self.name.clone(),
            timeout: self.timeout,
        }
    }

    /// Drops the connection and what is queued or awaiting acknowledgement, without flushing:
    /// after a timeout, or when this replica lost leadership mid-batch (what already left cannot
    /// be called back). The next call connects afresh.
    pub async fn abandon(&mut self) {
        self.publisher.abandon().await;
    }

    /// Flushes and closes the connection.
    pub async fn close(&mut self) {
        self.publisher.close().await;
    }

    fn timed_out(&self, what: &str) -> SinkError {
        timed_out(&self.name, self.timeout, what)
    }
}

/// A batch sent to a sink ([`Sink::send`]), its verdicts known or outstanding. It owns what it
/// awaits: the sink may send the next batch meanwhile.
pub struct Sent {
    answer: Answer,
    /// How many events were sent: one outcome each.
    expected: usize,
    /// When the publish timeout, counted from the send, ends.
    deadline: Instant,
    name: String,
    timeout: Duration,
}

/// A sent batch without verdicts: an outage, or the publish timeout ran out (then the sink's
/// connection must be abandoned, see [`Sink::abandon`]).
#[derive(Debug)]
pub struct Unanswered {
    pub error: SinkError,
    pub timed_out: bool,
}

impl Sent {
    /// Whether the verdicts are still to come (the sink answers later, see [`Publisher::send`]).
    pub fn is_outstanding(&self) -> bool {
        matches!(self.answer, Answer::Later(_))
    }

    /// The verdicts, one per event in order, waiting at most until the publish timeout ends.
    pub async fn answer(self) -> Result<Vec<Outcome>, Unanswered> {
        let answered = match self.answer {
            Answer::Now(outcomes) => Ok(outcomes),
            Answer::Later(verdicts) => match tokio::time::timeout_at(self.deadline, verdicts).await
            {
                Ok(result) => result,
                Err(_) => {
                    return Err(Unanswered {
                        error: timed_out(&self.name, self.timeout, "publishing to"),
                        timed_out: true,
                    });
                }
            },
        };
        match answered {
            Ok(outcomes) if outcomes.len() != self.expected => Err(Unanswered {
                error: SinkError::Unavailable(format!(
                    "sink {} returned {} outcomes for {} events; the batch will be published again",
                    self.name,
                    outcomes.len(),
                    self.expected
                )),
                timed_out: false,
            }),
            Ok(outcomes) => Ok(outcomes),
            Err(error) => Err(Unanswered {
                error,
                timed_out: false,
            }),
        }
    }
}

fn timed_out(name: &str, timeout: Duration, what: &str) -> SinkError {
    SinkError::Unavailable(format!(
        "{what} sink {name} took longer than OUTBOX_PUBLISH_TIMEOUT_MS ({} ms): the broker does not answer or blocks publishers (e.g. a RabbitMQ memory or disk alarm); dropped the connection, the batch will be published again",
        timeout.as_millis()
    ))
}

#[cfg(test)]
impl Sink {
    /// A stdout sink, for tests of the relay's batch logic.
    pub fn stdout() -> Sink {
        Sink {
            name: "stdout".into(),
            publisher: Box::new(stdout::StdoutSink::new()),
            timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod chart;
#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_and_settings_without_prefix() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for kind in KINDS {
            for setting in kind.settings {
                assert!(
                    !setting.starts_with("OUTBOX_") && *setting == setting.to_uppercase(),
                    "{}: {setting}",
                    kind.name
                );
            }
        }
        for kind in KINDS {
            assert!(Kind::names().contains(kind.name), "{}", Kind::names());
        }
    }
}
