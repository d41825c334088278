//! Kafka through rdkafka (librdkafka): an idempotent producer with acks=all, so librdkafka's own
//! retries never reorder or duplicate within a partition. A batch is sent whole, then its delivery
//! reports are awaited; an event is delivered only when its report succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext, PurgeConfig};

use async_trait::async_trait;

use super::{Kind, Ordering as KeyOrdering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{Binding, Format};
use crate::health::SinkHealth;
use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::settings::{ConfigError, SinkSettings};

/// Settings the relay's guarantees depend on; a pass-through property may not change them.
const SAFETY: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// How long librdkafka keeps retrying a message before reporting it failed.
const MESSAGE_TIMEOUT_MS: &str = "30000";

pub const KIND: Kind = Kind {
    name: "kafka",
    settings: &["KAFKA_BROKERS", "KAFKA_PROPERTIES", "KAFKA_TOPIC_TEMPLATE"],
    configure: |settings| Ok(Box::new(KafkaConfig::read(settings)?)),
};

#[derive(Clone)]
struct KafkaConfig {
    brokers: String,
    /// Extra librdkafka properties, validated against the safety settings.
    properties: Vec<(String, String)>,
    topic_template: Option<String>,
    format: Format,
}

/// Property names only: values may hold credentials (`sasl.password`).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &names)
            .field("topic_template", &self.topic_template)
            .field("format", &self.format)
            .finish()
    }
}

impl KafkaConfig {
    fn read(settings: &SinkSettings) -> Result<KafkaConfig, ConfigError> {
        let brokers = settings.required(
            "KAFKA_BROKERS",
            "bootstrap servers such as kafka-0:9092,kafka-1:9092",
        )?;
        let properties = match settings.get("KAFKA_PROPERTIES") {
            None => Vec::new(),
            Some(text) => {
                parse_properties(text).map_err(|p| settings.error("KAFKA_PROPERTIES", p))?
            }
        };
        let topic_template = settings.get("KAFKA_TOPIC_TEMPLATE").map(str::to_string);
        if let Some(template) = &topic_template
            && !template.contains("{topic}")
        {
            return Err(settings.error(
                "KAFKA_TOPIC_TEMPLATE",
                "must contain {topic}, e.g. \"prod.{topic}\"",
            ));
        }
        Ok(KafkaConfig {
            brokers: brokers.to_string(),
            properties,
            topic_template,
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for KafkaConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(KafkaSink::new(
            self.brokers.clone(),
            self.properties.clone(),
            self.topic_template.clone(),
            self.format.clone(),
        ))
    }
}

pub struct KafkaSink {
    brokers: String,
    properties: Vec<(String, String)>,
    topic_template: Option<String>,
    /// Message format, with the Kafka protocol binding's naming.
    format: Format,
    producer: Option<FutureProducer<Context>>,
    /// Cleared by librdkafka's "all brokers down", set again by a successful delivery.
    reachable: Arc<AtomicBool>,
}

/// Receives librdkafka's client-level errors to track broker reachability.
#[derive(Clone)]
struct Context {
    reachable: Arc<AtomicBool>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.reachable.store(false, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl KafkaSink {
    pub fn new(
        brokers: String,
        properties: Vec<(String, String)>,
        topic_template: Option<String>,
        format: Format,
    ) -> Self {
        Self {
            brokers,
            properties,
            topic_template,
            format,
            producer: None,
            reachable: Arc::new(AtomicBool::new(false)),
        }
    }

    fn topic_for(&self, topic: &str) -> String {
        match &self.topic_template {
            Some(template) => template.replace("{topic}", topic),
            None => topic.to_string(),
        }
    }
}

#[async_trait]
impl Publisher for KafkaSink {
    /// The idempotent producer keeps each partition in order across its retries, the sink holds
    /// back a key after a local refusal, and waves would cost a produce round trip plus linger
    /// (about 6 ms against tansu) per event of a busy key.
    fn ordering(&self) -> KeyOrdering {
        KeyOrdering::Pipelined
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "outbox-relay")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .set("linger.ms", "5");
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        for (name, value) in SAFETY {
            config.set(*name, *value);
        }
        let context = Context {
            reachable: self.reachable.clone(),
        };
        let producer: FutureProducer<Context> =
            config.create_with_context(context).map_err(|e| {
                SinkError::Unavailable(format!("cannot create the Kafka producer: {e}"))
            })?;
        // Ask for metadata once, so that `check` and readiness mean a broker answered.
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || {
            probe.client().fetch_metadata(None, Duration::from_secs(10))
        })
        .await
        .map_err(|e| SinkError::Unavailable(format!("Kafka metadata request failed: {e}")))?
        .map_err(|e| {
            SinkError::Unavailable(format!("cannot reach Kafka at {}: {e}", self.brokers))
        })?;
        self.reachable.store(true, Ordering::Relaxed);
        self.producer = Some(producer);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.producer.is_some() && self.reachable.load(Ordering::Relaxed)
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        if self.producer.is_none() {
            self.connect().await?;
        }
        let Some(producer) = self.producer.clone() else {
            return Err(SinkError::Unavailable(
                "Kafka producer is not connected".into(),
            ));
        };
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        let mut reports = Vec::with_capacity(events.len());
        // Keys with an event librdkafka refused at once: their later events are not sent.
        let mut stopped = KeyGate::default();
        for (index, event) in events.iter().enumerate() {
            if !stopped.admits(event.id, event.key.as_deref()) {
                outcomes[index] = Outcome::NotSent;
                continue;
            }
            let message = match self.format.message(event, Binding::Kafka) {
                Ok(message) => message,
                Err(reason) => {
                    outcomes[index] = Outcome::Failed(reason);
                    stopped.close(event.id, event.key.as_deref());
                    continue;
                }
            };
            let topic = self.topic_for(&event.topic);
            let message_id = event.message_id.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
            for (name, value) in &message.headers {
                if *name != "message-id" {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value.as_ref()),
                    });
                }
            }
            headers = headers.insert(Header {
                key: "message-id",
                value: Some(&message_id),
            });
            let mut record = FutureRecord::to(&topic)
                .payload(message.body.as_ref())
                .headers(headers);
            if let Some(key) = &event.key {
                record = record.key(key);
            }
            loop {
                match producer.send_result(record) {
                    Ok(report) => {
                        reports.push((index, report));
                        break;
                    }
                    // Back-pressure: the local queue is full; let librdkafka drain it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        outcomes[index] = classify(&error)?;
                        stopped.close(event.id, event.key.as_deref());
                        break;
                    }
                }
            }
        }
        let mut outage = None;
        for (index, report) in reports {
            let result: Result<OwnedDeliveryResult, _> = report.await;
            outcomes[index] = match result {
                Ok(Ok(_)) => {
                    self.reachable.store(true, Ordering::Relaxed);
                    Outcome::Delivered
                }
                Ok(Err((error, _))) => match classify(&error) {
                    Ok(outcome) => outcome,
                    // Keep collecting reports; the batch is reported as an outage below.
                    Err(e) => {
                        outage.get_or_insert(e);
                        Outcome::Deferred(error.to_string())
                    }
                },
                Err(_) => {
                    outage.get_or_insert(SinkError::Unavailable(
                        "the Kafka producer was closed".into(),
                    ));
                    Outcome::Deferred("the Kafka producer was closed".into())
                }
            };
        }
        match outage {
            // Delivered events of the batch are still marked: only the rest wait for the broker.
            Some(error) if outcomes.iter().all(|o| !matches!(o, Outcome::Delivered)) => Err(error),
            _ => Ok(outcomes),
        }
    }

    /// Drops the producer after a timeout; the next publish connects afresh and asks for metadata,
    /// so a broker that does not answer is found at once. The reports of the abandoned messages go
    /// to their own (dropped) futures, never to a new batch. The producer's drop purges and
    /// flushes, which blocks, so it happens off the async threads.
    async fn abandon(&mut self) {
        self.reachable.store(false, Ordering::Relaxed);
        if let Some(producer) = self.producer.take() {
            producer.purge(PurgeConfig::default().queue().inflight());
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        }
    }

    async fn close(&mut self) {
        if let Some(producer) = self.producer.take() {
            let _ =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        }
    }
}

/// The event's own fault (uses an attempt) versus an outage (`Err`: no attempt used).
fn classify(error: &KafkaError) -> Result<Outcome, SinkError> {
    use RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(
            Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidMessage
            | Code::TopicAuthorizationFailed
            | Code::InvalidTopic
            | Code::UnknownTopicOrPartition
            | Code::UnknownTopic
            | Code::MessageBatchTooLarge
            | Code::InvalidRecord
            | Code::PolicyViolation,
        ) => Ok(Outcome::Failed(format!(
            "Kafka rejected the event: {error}"
        ))),
        Some(Code::QueueFull) => Ok(Outcome::Deferred(format!("Kafka back-pressure: {error}"))),
        _ => Err(SinkError::Unavailable(format!(
            "Kafka is unavailable: {error}"
        ))),
    }
}

/// Parses `name=value` pairs separated by commas or new lines, and rejects any that would weaken
/// the delivery guarantees.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut properties = Vec::new();
    for item in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("expected name=value, got {item:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name == "bootstrap.servers" {
            return Err("set the brokers with OUTBOX_KAFKA_BROKERS, not bootstrap.servers".into());
        }
        for (safe_name, safe_value) in SAFETY {
            let weakens = name == *safe_name
                && !(value.eq_ignore_ascii_case(safe_value) || (name == "acks" && value == "-1"));
            if weakens {
                return Err(format!(
                    "{name}={value} would break the relay's delivery guarantees; it requires {safe_name}={safe_value}"
                ));
            }
        }
        if name == "max.in.flight.requests.per.connection"
            && value.parse::<u32>().map_or(true, |n| n > 5)
        {
            return Err(format!(
                "{name}={value}: the idempotent producer keeps order only with at most 5"
            ));
        }
        properties.push((name.to_string(), value.to_string()));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_pass_through_and_safety_settings_are_guarded() {
        let props = parse_properties(
            "security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512\ncompression.type=zstd",
        )
        .expect("valid");
        assert_eq!(props.len(), 3);
        assert_eq!(props[1], ("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
        assert!(
            parse_properties("enable.idempotence=false")
                .unwrap_err()
                .contains("enable.idempotence=true")
        );
        assert!(parse_properties("acks=1").is_err());
        assert!(parse_properties("acks=-1").is_ok());
        assert!(parse_properties("max.in.flight.requests.per.connection=10").is_err());
        assert!(
            parse_properties("linger.ms")
                .unwrap_err()
                .contains("name=value")
        );
    }

    #[test]
    fn size_and_authorization_errors_are_the_events_fault() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&too_large), Ok(Outcome::Failed(_))));
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert!(classify(&down).is_err());
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(classify(&timeout).is_err());
    }
}
