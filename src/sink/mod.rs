//! Brokers. Every sink publishes a whole batch, waits for the broker's acknowledgements, and says
//! per event whether it was delivered. A connection problem fails the whole batch instead, so that
//! an outage never counts against an event's attempts.
//!
//! Every wait for the broker (connect and publish) ends after `OUTBOX_PUBLISH_TIMEOUT_MS`: a broker
//! that stops answering, or blocks publishers on a resource alarm, is then an outage like a broken
//! connection, and the connection is dropped so that nothing of the abandoned publish can be
//! mistaken for the next one.
//!
//! - [`rabbitmq`]: lapin, publisher confirms, mandatory routing, persistent messages.
//! - [`kafka`]: rdkafka, idempotent producer with acks=all.
//! - [`stdout`]: one JSON line per event.

pub mod kafka;
pub mod rabbitmq;
pub mod stdout;

use std::time::Duration;

use crate::config::SinkConfig;
use crate::health::Health;
use crate::outbox::event::Event;

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
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker cannot be reached or the connection broke; retry with backoff.
    #[error("{0}")]
    Unavailable(String),
}

pub struct Sink {
    broker: Broker,
    /// `OUTBOX_PUBLISH_TIMEOUT_MS`: the longest wait for the broker in one call.
    timeout: Duration,
}

/// One per process, so the variants' different sizes cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Broker {
    Stdout(stdout::StdoutSink),
    RabbitMq(rabbitmq::RabbitMqSink),
    Kafka(kafka::KafkaSink),
}

impl Sink {
    /// `health` learns when the broker blocks publishing (RabbitMQ's `connection.blocked`).
    pub fn new(config: &SinkConfig, timeout: Duration, health: &Health) -> Sink {
        let broker = match config {
            SinkConfig::Stdout => Broker::Stdout(stdout::StdoutSink::new()),
            SinkConfig::RabbitMq { url, exchange } => Broker::RabbitMq(
                rabbitmq::RabbitMqSink::new(url.clone(), exchange.clone(), health.clone()),
            ),
            SinkConfig::Kafka {
                brokers,
                properties,
                topic_template,
            } => Broker::Kafka(kafka::KafkaSink::new(
                brokers.clone(),
                properties.clone(),
                topic_template.clone(),
            )),
        };
        Sink { broker, timeout }
    }

    fn name(&self) -> &'static str {
        match self.broker {
            Broker::Stdout(_) => "stdout",
            Broker::RabbitMq(_) => "RabbitMQ",
            Broker::Kafka(_) => "Kafka",
        }
    }

    /// Opens the broker connection (and checks what can be checked, e.g. that the exchange exists).
    pub async fn connect(&mut self) -> Result<(), SinkError> {
        let (timeout, name) = (self.timeout, self.name());
        let connecting = async {
            match &mut self.broker {
                Broker::Stdout(_) => Ok(()),
                Broker::RabbitMq(sink) => sink.connect().await,
                Broker::Kafka(sink) => sink.connect().await,
            }
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon().await;
                Err(timed_out("connecting to", name, timeout))
            }
        }
    }

    /// Whether the last known state of the connection is good.
    pub fn is_connected(&self) -> bool {
        match &self.broker {
            Broker::Stdout(_) => true,
            Broker::RabbitMq(sink) => sink.is_connected(),
            Broker::Kafka(sink) => sink.is_connected(),
        }
    }

    /// Whether a batch must go out in key-ordered waves (see `relay::waves`): a later event of a
    /// key is sent only once the broker's verdict on the earlier one is known. RabbitMQ: yes, a
    /// refused message does not stop later ones on the channel. Kafka: no, the idempotent
    /// producer keeps each partition in order across its retries, the sink holds back a key
    /// after a local refusal, and a wave would cost a produce round trip plus linger (about 6 ms
    /// against tansu) per event of a busy key. stdout refuses nothing.
    pub fn publishes_in_waves(&self) -> bool {
        matches!(self.broker, Broker::RabbitMq(_))
    }

    /// Publishes `events` in order and returns one outcome per event, in the same order. Waiting
    /// longer than the publish timeout is an outage.
    pub async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        let (timeout, name) = (self.timeout, self.name());
        let publishing = async {
            match &mut self.broker {
                Broker::Stdout(sink) => sink.publish(events).await,
                Broker::RabbitMq(sink) => sink.publish(events).await,
                Broker::Kafka(sink) => sink.publish(events).await,
            }
        };
        match tokio::time::timeout(timeout, publishing).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon().await;
                Err(timed_out("publishing to", name, timeout))
            }
        }
    }

    /// Drops the connection and what is queued or awaiting acknowledgement, without flushing:
    /// after a timeout, or when this replica lost leadership mid-batch (what already left cannot
    /// be called back). The next call connects afresh.
    pub async fn abandon(&mut self) {
        match &mut self.broker {
            Broker::Stdout(_) => {}
            Broker::RabbitMq(sink) => sink.abandon(),
            Broker::Kafka(sink) => sink.abandon().await,
        }
    }

    /// Flushes and closes the connection.
    pub async fn close(&mut self) {
        match &mut self.broker {
            Broker::Stdout(_) => {}
            Broker::RabbitMq(sink) => sink.close().await,
            Broker::Kafka(sink) => sink.close().await,
        }
    }
}

fn timed_out(what: &str, broker: &str, timeout: Duration) -> SinkError {
    SinkError::Unavailable(format!(
        "{what} {broker} took longer than OUTBOX_PUBLISH_TIMEOUT_MS ({} ms): the broker does not answer or blocks publishers (e.g. a RabbitMQ memory or disk alarm); dropped the connection, the batch will be published again",
        timeout.as_millis()
    ))
}

#[cfg(test)]
impl Sink {
    /// A stdout sink, for tests of the relay's batch logic.
    pub fn stdout() -> Sink {
        Sink {
            broker: Broker::Stdout(stdout::StdoutSink::new()),
            timeout: Duration::from_secs(30),
        }
    }
}
