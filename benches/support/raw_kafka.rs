//! Kafka without the relay (only with `KAFKA_BROKERS`): a plain producer with the relay's
//! settings, for the limit of the drain and the reference of the latency.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::raw::CloudEventsAttributes;
use super::workload::{TOPIC, keys, payload};
use crate::harness::{Inbox, KafkaConsumer, try_create_topic, unique};

/// `BENCH_KAFKA_PROPERTIES`: librdkafka properties (`name=value`, comma-separated) given to
/// the relay as `OUTBOX_KAFKA_PROPERTIES` and to the bench's raw producers alike, to compare
/// producer settings in one run.
pub fn properties() -> Option<String> {
    std::env::var("BENCH_KAFKA_PROPERTIES")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The consumer's `fetch.wait.max.ms`: `BENCH_KAFKA_FETCH_WAIT_MS`, default 5. Kafka answers
/// a fetch as soon as data arrives, so the wait costs nothing there; tansu 0.6 holds every
/// fetch response for this long (`tansu-storage` `service/fetch.rs`), so that a message
/// reaches the consumer 1 to 2 waits after it was written.
pub fn fetch_wait_ms() -> String {
    std::env::var("BENCH_KAFKA_FETCH_WAIT_MS")
        .ok()
        .filter(|v| v.trim().parse::<u32>().is_ok())
        .unwrap_or_else(|| "5".into())
}

/// A consumer of the one-partition `topic` from its beginning, counting what arrives.
pub fn consume(brokers: &str, topic: &str) -> Result<KafkaConsumer> {
    KafkaConsumer::try_start(
        brokers,
        &[(topic, 1)],
        Inbox::counting(),
        Some(&fetch_wait_ms()),
    )
}

/// The relay's producer settings (idempotent, acks=all, linger 5 ms), then
/// `BENCH_KAFKA_PROPERTIES`.
fn producer(brokers: &str) -> Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "outbox-relay-bench")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for item in properties().iter().flat_map(|p| p.split(',')) {
        let (name, value) = item.split_once('=').with_context(|| {
            format!("BENCH_KAFKA_PROPERTIES: expected name=value, got {item:?}")
        })?;
        config.set(name.trim(), value.trim());
    }
    config.create().context("creating the Kafka producer")
}

/// Sends `record`, waiting up to 30 s while the producer's queue is full.
async fn send(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, str, [u8]>,
) -> Result<DeliveryFuture> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match producer.send_result(record) {
            Ok(report) => return Ok(report),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if Instant::now() < deadline =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => bail!("Kafka produce failed: {e}"),
        }
    }
}

/// Waits for every delivery report; an error for the first failed one.
async fn delivered(reports: Vec<DeliveryFuture>) -> Result<()> {
    for report in reports {
        match report.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("Kafka delivery failed: {e}"),
            Err(_) => bail!("the Kafka producer was closed"),
        }
    }
    Ok(())
}

/// Produces `count` events like the relay: `batch` sends, then their delivery reports. With
/// `cloudevents_headers`, each message also carries the headers binary CloudEvents add
/// ([`CloudEventsAttributes`]): the broker's and the client's own cost of the format.
pub async fn raw_produce(
    brokers: &str,
    topic: &str,
    count: u64,
    batch: u64,
    cloudevents_headers: bool,
) -> Result<Duration> {
    let producer = producer(brokers)?;
    let mut cloudevents = cloudevents_headers.then(CloudEventsAttributes::new);
    let started = Instant::now();
    let mut seq = 0;
    while seq < count {
        let end = (seq + batch).min(count);
        let mut reports = Vec::with_capacity((end - seq) as usize);
        for s in seq..end {
            let data = payload(s);
            let key = (s % keys()).to_string();
            let id = uuid::Uuid::new_v4();
            let message_id = id.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(8);
            if let Some(attributes) = &mut cloudevents {
                for (name, value) in attributes.of(outbox_relay::sink::kafka::BINDING, id, &key)? {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value.as_ref()),
                    });
                }
            }
            let headers = headers.insert(Header {
                key: "message-id",
                value: Some(&message_id),
            });
            let record = FutureRecord::to(topic)
                .payload(data.as_slice())
                .key(key.as_str())
                .headers(headers);
            reports.push(send(&producer, record).await?);
        }
        delivered(reports).await?;
        seq = end;
    }
    Ok(started.elapsed())
}

/// The reference for the relay's latency: a plain producer with the relay's settings sends
/// `count` events to a topic of their own at `rate` per second, each as soon as it is due (no
/// database, no batching beyond librdkafka's), and the same consumer as the relay's scenario
/// receives them. Returns the send-to-receipt times in ms, sorted.
pub async fn raw_latency(brokers: &str, rate: u64, count: u64) -> Result<Vec<f64>> {
    let topic = format!("{}.{TOPIC}", unique("outbox_bench_rawlat"));
    try_create_topic(brokers, &topic, 1).await?;
    let consumer = consume(brokers, &topic)?;
    let received = consumer.inbox();
    let producer = producer(brokers)?;
    let send = |seq: Option<u64>| {
        let data = seq.map_or_else(|| b"warm-up".to_vec(), payload);
        let key = (seq.unwrap_or(0) % keys()).to_string();
        let message_id = uuid::Uuid::new_v4().to_string();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: "message-id",
            value: Some(&message_id),
        });
        let record = FutureRecord::to(&topic)
            .payload(&data)
            .key(&key)
            .headers(headers);
        producer
            .send_result(record)
            .map_err(|(e, _)| anyhow!("Kafka produce failed: {e}"))
    };
    // The consumer fetches once a warm-up event came through.
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.count() == 0 {
        if Instant::now() >= deadline {
            bail!("the Kafka consumer received no warm-up event within 60 s");
        }
        drop(send(None)?);
        let next = Instant::now() + Duration::from_millis(250);
        while received.count() == 0 && Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    received.reset(true);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut sent = Vec::with_capacity(count as usize);
    let mut reports = Vec::with_capacity(count as usize);
    for seq in 0..count {
        tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
        sent.push(Instant::now());
        reports.push(send(Some(seq))?);
    }
    delivered(reports).await?;
    received
        .try_wait_for(count, Duration::from_secs(30))
        .await?;
    send_to_receipt_ms(&sent, received)
}

/// Per sequence number, the time from its send to its first receipt in ms, sorted.
fn send_to_receipt_ms(sent: &[Instant], received: &Inbox) -> Result<Vec<f64>> {
    let count = sent.len();
    let mut first: Vec<Option<Instant>> = vec![None; count];
    for (seq, at) in received.stamps() {
        if let Some(slot) = first.get_mut(seq as usize)
            && slot.is_none()
        {
            *slot = Some(at);
        }
    }
    let mut latencies: Vec<f64> = sent
        .iter()
        .zip(&first)
        .filter_map(|(s, r)| Some(r.as_ref()?.saturating_duration_since(*s)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    if latencies.len() != count {
        bail!("{} of {count} raw events measured", latencies.len());
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}
