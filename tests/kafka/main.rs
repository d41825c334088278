//! The relay end to end with a Kafka-protocol broker: `KAFKA_BROKERS` (default 127.0.0.1:19092,
//! the tansu broker `scripts/services.sh` starts). The conformance suite, keys over partitions,
//! and chaos; the outage and chaos tests always start a broker of their own (`TANSU_BIN`) behind the fault
//! proxy, also when `KAFKA_BROKERS` names another Kafka, so
//! the shared one is never disturbed. Part of `make test`; `make test-kafka` runs only these.

mod adopt;
#[path = "../harness/mod.rs"]
mod harness;
mod otel;
mod overlap;
mod two_in_flight;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::conformance::*;
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

/// Kafka in the conformance suite: topics `{prefix}.{topic}` of one partition (two when the
/// scenario takes the broker away, so that keys stay on their partition across the outage),
/// read from the beginning; the broker the test's own, behind a proxy, for an outage.
pub struct KafkaSink {
    brokers: String,
    prefix: String,
    topics: Vec<(String, i32)>,
    consumer: KafkaConsumer,
    own: Option<(Proxy, OwnBroker)>,
}

impl KafkaSink {
    fn consume(brokers: &str, topics: &[(String, i32)]) -> KafkaConsumer {
        let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        KafkaConsumer::try_start(brokers, &topics, Inbox::keeping(), None).expect("consumer")
    }
}

impl SinkUnderTest for KafkaSink {
    const CARRIES_KEY: bool = true;
    const WAIT: Duration = WAIT;
    type Consumer = KafkaConsumer;

    async fn open(topics: &[&str], outage: bool) -> Self {
        let own = match outage {
            true => Some(own_broker_behind_proxy().await),
            false => None,
        };
        let brokers = own
            .as_ref()
            .map_or_else(kafka_brokers, |(proxy, _)| proxy.addr.to_string());
        let prefix = unique("conformance");
        let partitions = if outage { 2 } else { 1 };
        let topics: Vec<(String, i32)> = (topics.iter())
            .map(|t| (format!("{prefix}.{t}"), partitions))
            .collect();
        for (topic, partitions) in &topics {
            create_topic(&brokers, topic, *partitions).await;
        }
        KafkaSink {
            consumer: Self::consume(&brokers, &topics),
            brokers,
            prefix,
            topics,
            own,
        }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = kafka_settings(&self.brokers);
        let template = format!("{}.{{topic}}", self.prefix);
        settings.push(("OUTBOX_KAFKA_TOPIC_TEMPLATE", template));
        settings
    }

    fn consumer(&self) -> &KafkaConsumer {
        &self.consumer
    }

    fn destination(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }

    async fn fail(&mut self) {
        self.own.as_ref().expect("a broker of its own").0.cut();
    }

    /// The broker reachable again, and a consumer that reads the topics from the beginning.
    async fn restore(&mut self) {
        self.own.as_ref().expect("a broker of its own").0.restore();
        self.consumer = Self::consume(&self.brokers, &self.topics);
    }

    /// Larger than the broker takes.
    async fn refusal(&self) -> Refusal {
        Refusal {
            topic: "good".into(),
            payload: vec![b'x'; 3 * 1024 * 1024],
            reason: |e| e.to_lowercase().contains("size") || e.contains("too large"),
            uses_attempts: false,
        }
    }

    fn to_sdk(&self, message: &Received, mode: &'static str) -> Delivered {
        Delivered {
            binding: "kafka",
            mode,
            headers: message.headers.clone(),
            content_type: None,
            key: message.key.clone(),
            body: message.payload.clone(),
        }
    }

    fn sdk_reader(&self, mode: &'static str) -> Option<String> {
        Some(format!("kafka.from_{mode}_event"))
    }

    /// Each key stayed on one partition.
    async fn after_outage(&self, outage: &Outage<'_>) {
        assert_kafka_order(outage.received, 3, 110);
    }

    /// The contract's message id header is there in every format.
    async fn after_cloudevents(&self, cloudevents: &CloudEvents<'_>) {
        for message in cloudevents.received {
            assert!(message.headers.contains_key("message-id"), "{message:?}");
        }
    }
}

conformance_tests!(KafkaSink);

/// Per key, payload sequence numbers in order of first arrival (redeliveries skipped).
fn assert_kafka_order(records: &[Received], keys: usize, per_key: u64) {
    let mut seen = HashSet::new();
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    for record in records {
        let message_id = record
            .headers
            .get("message-id")
            .cloned()
            .expect("message-id header");
        if !seen.insert(message_id) {
            continue;
        }
        let text = String::from_utf8_lossy(&record.payload).into_owned();
        let (key, seq) = text.split_once(':').expect("payload key:seq");
        assert_eq!(
            record.key.as_deref(),
            Some(key),
            "message key is the event key"
        );
        by_key
            .entry(key.to_string())
            .or_default()
            .push(seq.parse().expect("seq"));
        partitions
            .entry(key.to_string())
            .or_default()
            .insert(record.partition.expect("a partition"));
    }
    assert_eq!(by_key.len(), keys, "every key arrived");
    for (key, seqs) in &by_key {
        assert_eq!(
            seqs,
            &(0..per_key).collect::<Vec<_>>(),
            "key {key}: missing or out of order"
        );
        assert_eq!(partitions[key].len(), 1, "key {key} stays on one partition");
    }
}

#[tokio::test]
async fn kafka_ten_thousand_events_over_partitions_arrive_complete_and_in_key_order() {
    let brokers = kafka_brokers();
    let topic = unique("bulk");
    create_topic(&brokers, &topic, 3).await;
    let db = TestDb::create().await;
    for chunk in 0..10 {
        insert_keyed_sequence(&db.client, &topic, 10, chunk * 100, (chunk + 1) * 100, 100).await;
    }
    let reader = KafkaConsumer::start(&brokers, &topic, 3);
    let _relay = Relay::start(&db.url, &kafka_settings(&brokers));
    eventually("10k delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let records = reader.wait_for(10_000, WAIT).await;
    assert_kafka_order(&records, 10, 1000);
    let used: HashSet<Option<i32>> = records.iter().map(|r| r.partition).collect();
    assert!(used.len() > 1, "keys spread over partitions: {used:?}");
}

// Two worker threads, so the producer keeps committing while a fault is being injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_under_kills_broker_cuts_and_db_terminations_every_event_arrives_in_key_order() {
    let seed = faults::seed();
    let (proxy, _broker) = own_broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let topic = unique("chaos");
    create_topic(&brokers, &topic, 3).await;
    let db = TestDb::create().await;
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_BATCH_SIZE", "100".into()));
    let run = faults::run(
        &db,
        &settings,
        &proxy,
        &topic,
        seed,
        Duration::from_secs(20),
    )
    .await;
    let reader = KafkaConsumer::start(&brokers, &topic, 3);
    faults::check(&db, &run, || reader.received()).await;
}
