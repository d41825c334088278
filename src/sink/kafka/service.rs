//! The Kafka producer: sends a batch whole, then awaits its delivery reports (the next batch may
//! be sent meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{
    DeliveryFuture, FutureProducer, FutureRecord, Producer, ProducerContext, PurgeConfig,
};

use super::encode::Record;
use super::settings::SAFETY;
use crate::format::Format;
use crate::outbox::event::Event;
use crate::sink::{
    Answer, Classify, Fault, Ordering as KeyOrdering, Outcome, Publisher, SinkError, Verdicts,
};

/// How long librdkafka keeps retrying a message before reporting it failed.
const MESSAGE_TIMEOUT_MS: &str = "30000";
/// How long `connect` waits for a broker to answer a metadata request (a host that drops
/// packets); a refused connection ends the wait at once (librdkafka: "all brokers down").
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Each metadata request of that wait: between two, `connect` looks whether every broker refused.
const METADATA_ROUND: Duration = Duration::from_millis(200);

pub struct KafkaSink {
    brokers: String,
    properties: Vec<(String, String)>,
    topic_template: Option<String>,
    /// Message format, with the Kafka protocol binding's naming.
    format: Format,
    producer: Option<FutureProducer<Context>>,
    /// Cleared by librdkafka's "all brokers down", set again by a successful delivery.
    reachable: Arc<AtomicBool>,
    /// Set by librdkafka's "all brokers down": every broker refused or timed out.
    all_down: Arc<AtomicBool>,
}

/// Receives librdkafka's client-level errors to track broker reachability.
#[derive(Clone)]
struct Context {
    reachable: Arc<AtomicBool>,
    all_down: Arc<AtomicBool>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_down.store(true, Ordering::Relaxed);
            // librdkafka repeats it at every reconnect (several times a second): warn once per
            // outage, when the brokers were reachable before.
            if !self.reachable.swap(false, Ordering::Relaxed) {
                tracing::debug!(error = %error, reason, "kafka client error");
                return;
            }
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
            all_down: Arc::new(AtomicBool::new(false)),
        }
    }

    fn client_config(&self) -> ClientConfig {
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
        config
    }

    /// Queues every admitted event; an event librdkafka refuses at once holds back its key's
    /// later events. Returns the pending delivery reports.
    async fn send_all(
        &self,
        producer: &FutureProducer<Context>,
        events: &[&Event],
        verdicts: &mut Verdicts<'_>,
    ) -> Result<Vec<(usize, DeliveryFuture)>, SinkError> {
        let mut reports = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            if !verdicts.admits(index) {
                continue;
            }
            let mut record = match Record::new(event, &self.format, self.topic_template.as_deref())
            {
                Ok(record) => record,
                Err(reason) => {
                    verdicts.refuse(index, Fault::Event(reason))?;
                    continue;
                }
            };
            match send(producer, record.producer_record()).await {
                Ok(report) => reports.push((index, report)),
                Err(error) => verdicts.refuse(index, error.classify())?,
            }
        }
        Ok(reports)
    }
}

/// Awaits every delivery report and completes `outcomes` (the events' verdicts so far: refused
/// before they went out, or not sent). An outage is returned after all reports are in, so that
/// what was delivered is still known; delivered events of the batch are still marked, only the
/// rest wait for the broker. Owns what it awaits: the next batch can be queued meanwhile.
async fn collect(
    reports: Vec<(usize, DeliveryFuture)>,
    mut outcomes: Vec<Outcome>,
    reachable: Arc<AtomicBool>,
) -> Result<Vec<Outcome>, SinkError> {
    let mut outage = None;
    for (index, report) in reports {
        let result: Result<OwnedDeliveryResult, _> = report.await;
        outcomes[index] = match result {
            Ok(Ok(_)) => {
                reachable.store(true, Ordering::Relaxed);
                Outcome::Delivered
            }
            Ok(Err((error, _))) => match error.classify().outcome() {
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
        Some(error) if !outcomes.contains(&Outcome::Delivered) => Err(error),
        _ => Ok(outcomes),
    }
}

/// Queues one record, waiting while librdkafka's local queue is full (back-pressure: it drains).
async fn send(
    producer: &FutureProducer<Context>,
    mut record: FutureRecord<'_, str, [u8]>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(report) => return Ok(report),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Err(error),
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
        self.all_down.store(false, Ordering::Relaxed);
        let context = Context {
            reachable: self.reachable.clone(),
            all_down: self.all_down.clone(),
        };
        let producer: FutureProducer<Context> = self
            .client_config()
            .create_with_context(context)
            .map_err(|e| {
            SinkError::Unavailable(format!("cannot create the Kafka producer: {e}"))
        })?;
        // Ask for metadata once, so that `check` and readiness mean a broker answered.
        let probe = producer.clone();
        let all_down = self.all_down.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
            loop {
                match probe.client().fetch_metadata(None, METADATA_ROUND) {
                    Ok(metadata) => return Ok(metadata),
                    Err(e)
                        if all_down.load(Ordering::Relaxed)
                            || std::time::Instant::now() >= deadline =>
                    {
                        return Err(e);
                    }
                    Err(_) => {}
                }
            }
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
        match self.send(events).await? {
            Answer::Now(outcomes) => Ok(outcomes),
            Answer::Later(verdicts) => verdicts.await,
        }
    }

    /// Queues the batch and returns the wait for its delivery reports, which holds no producer:
    /// the next batch is queued behind it, in order on each partition.
    async fn send(&mut self, events: &[&Event]) -> Result<Answer, SinkError> {
        if self.producer.is_none() {
            self.connect().await?;
        }
        let Some(producer) = self.producer.clone() else {
            return Err(SinkError::Unavailable(
                "Kafka producer is not connected".into(),
            ));
        };
        let mut verdicts = Verdicts::new(events);
        let reports = self.send_all(&producer, events, &mut verdicts).await?;
        let outcomes = verdicts.into_outcomes();
        Ok(Answer::Later(Box::pin(collect(
            reports,
            outcomes,
            self.reachable.clone(),
        ))))
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
