//! Kafka through rdkafka (librdkafka): an idempotent producer with acks=all, so librdkafka's own
//! retries never reorder or duplicate within a partition. A batch is sent whole, then its delivery
//! reports are awaited; an event is delivered only when its report succeeded.
//!
//! - `settings.rs`: brokers, pass-through librdkafka properties (guarded), topic template;
//! - `encode.rs`: an event as a Kafka record (pure);
//! - `classify.rs`: what librdkafka's errors mean for an event;
//! - `service.rs`: the producer, sending a batch and collecting its delivery reports.

mod classify;
mod encode;
#[cfg(test)]
mod properties;
mod service;
mod settings;

pub use encode::BINDING;
pub use service::KafkaSink;
pub use settings::parse_properties;

use super::Kind;

pub const KIND: Kind = Kind {
    name: "kafka",
    settings: &["KAFKA_BROKERS", "KAFKA_PROPERTIES", "KAFKA_TOPIC_TEMPLATE"],
    configure: |settings| Ok(Box::new(settings::KafkaConfig::read(settings)?)),
};
