//! Brokers. Every sink publishes a whole batch, waits for the broker's acknowledgements, and says
//! per event whether it was delivered. A connection problem fails the whole batch instead, so that
//! an outage never counts against an event's attempts.
//!
//! - [`rabbitmq`]: lapin, publisher confirms, mandatory routing, persistent messages.
//! - [`kafka`]: rdkafka, idempotent producer with acks=all.
//! - [`stdout`]: one JSON line per event.

pub mod kafka;
pub mod rabbitmq;
pub mod stdout;

use crate::config::SinkConfig;
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

/// One per process, so the variants' different sizes cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Sink {
    Stdout(stdout::StdoutSink),
    RabbitMq(rabbitmq::RabbitMqSink),
    Kafka(kafka::KafkaSink),
}

impl Sink {
    pub fn new(config: &SinkConfig) -> Sink {
        match config {
            SinkConfig::Stdout => Sink::Stdout(stdout::StdoutSink::new()),
            SinkConfig::RabbitMq { url, exchange } => {
                Sink::RabbitMq(rabbitmq::RabbitMqSink::new(url.clone(), exchange.clone()))
            }
            SinkConfig::Kafka {
                brokers,
                properties,
                topic_template,
            } => Sink::Kafka(kafka::KafkaSink::new(
                brokers.clone(),
                properties.clone(),
                topic_template.clone(),
            )),
        }
    }

    /// Opens the broker connection (and checks what can be checked, e.g. that the exchange exists).
    pub async fn connect(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::RabbitMq(sink) => sink.connect().await,
            Sink::Kafka(sink) => sink.connect().await,
        }
    }

    /// Whether the last known state of the connection is good.
    pub fn is_connected(&self) -> bool {
        match self {
            Sink::Stdout(_) => true,
            Sink::RabbitMq(sink) => sink.is_connected(),
            Sink::Kafka(sink) => sink.is_connected(),
        }
    }

    /// Whether a batch must go out in key-ordered waves (see `relay::waves`): a later event of a
    /// key is sent only once the broker's verdict on the earlier one is known. RabbitMQ: yes, a
    /// refused message does not stop later ones on the channel. Kafka: no, the idempotent
    /// producer keeps each partition in order across its retries, the sink holds back a key
    /// after a local refusal, and a wave would cost a produce round trip plus linger (about 6 ms
    /// against tansu) per event of a busy key. stdout refuses nothing.
    pub fn publishes_in_waves(&self) -> bool {
        matches!(self, Sink::RabbitMq(_))
    }

    /// Publishes `events` in order and returns one outcome per event, in the same order.
    pub async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        match self {
            Sink::Stdout(sink) => sink.publish(events).await,
            Sink::RabbitMq(sink) => sink.publish(events).await,
            Sink::Kafka(sink) => sink.publish(events).await,
        }
    }

    /// Drops what is queued or awaiting acknowledgement and the connection, without flushing,
    /// after this replica lost leadership mid-batch (what already left cannot be called back).
    pub async fn abandon_in_flight(&mut self) {
        match self {
            Sink::Stdout(_) => {}
            // The connection is dropped either way; a broker that stops answering gets 2 s.
            Sink::RabbitMq(sink) => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.close()).await;
            }
            Sink::Kafka(sink) => sink.abandon_in_flight(),
        }
    }

    /// Flushes and closes the connection.
    pub async fn close(&mut self) {
        match self {
            Sink::Stdout(_) => {}
            Sink::RabbitMq(sink) => sink.close().await,
            Sink::Kafka(sink) => sink.close().await,
        }
    }
}
