//! The relay end to end with a Kafka-protocol broker: `KAFKA_BROKERS` (default 127.0.0.1:19092,
//! the tansu broker `scripts/services.sh` starts). Outage and chaos tests start a broker of their
//! own behind the fault proxy, so the shared one is never disturbed. Part of `make test`;
//! `make test-kafka` runs only these.

#[path = "../harness/mod.rs"]
mod harness;
mod otel;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

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
async fn kafka_events_arrive_with_key_headers_payload_and_message_id() {
    let brokers = kafka_brokers();
    let topic = unique("orders");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let keyed = db
        .insert(
            &topic,
            Some("42"),
            b"{\"type\":\"OrderPaid\"}",
            r#"{"traceparent":"00-abc-def-01"}"#,
        )
        .await;
    let unkeyed = db.insert(&topic, None, &[0, 255, 1], "{}").await;
    let _relay = Relay::start(&db.url, &kafka_settings(&brokers));

    let records = reader.wait_for(2, WAIT).await;
    let ids = db.message_ids().await;
    assert_eq!(records[0].key.as_deref(), Some("42"));
    assert_eq!(records[0].payload, b"{\"type\":\"OrderPaid\"}");
    assert_eq!(
        records[0].headers.get("traceparent").map(String::as_str),
        Some("00-abc-def-01")
    );
    assert_eq!(records[0].headers.get("message-id"), Some(&ids[&keyed]));
    assert_eq!(records[1].key, None, "a null key stays null");
    assert_eq!(records[1].payload, vec![0, 255, 1]);
    assert_eq!(records[1].headers.get("message-id"), Some(&ids[&unkeyed]));
    eventually("marked delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
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

#[tokio::test]
async fn kafka_oversized_event_is_dead_lettered_and_other_keys_flow() {
    let brokers = kafka_brokers();
    let topic = unique("sizes");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let big = vec![b'x'; 3 * 1024 * 1024];
    let oversized = db.insert(&topic, Some("big"), &big, "{}").await;
    db.insert(&topic, Some("small"), b"small:0", "{}").await;
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    let _relay = Relay::start(&db.url, &settings);

    let records = reader.wait_for(1, WAIT).await;
    assert_eq!(records[0].payload, b"small:0");
    eventually("oversized dead-lettered", WAIT, || async {
        db.count(&format!(
            "id = {oversized} AND dead_lettered_at IS NOT NULL"
        ))
        .await
            == 1
    })
    .await;
    let error: String = db
        .client
        .query_one(
            "SELECT last_error FROM outbox.dead_letters WHERE id = $1",
            &[&oversized],
        )
        .await
        .expect("dead letter")
        .get(0);
    assert!(
        error.to_lowercase().contains("size") || error.contains("too large"),
        "{error}"
    );
    db.insert(&topic, Some("big"), b"big:after", "{}").await;
    let records = reader.wait_for(2, WAIT).await;
    assert!(
        records.iter().any(|r| r.payload == b"big:after"),
        "the key continues after its dead letter"
    );
}

#[tokio::test]
async fn kafka_broker_outage_mid_stream_loses_nothing_and_keeps_key_order() {
    if external_kafka() {
        return;
    }
    let (proxy, _broker) = own_broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let topic = unique("outage");
    create_topic(&brokers, &topic, 2).await;
    let db = TestDb::create().await;
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);

    insert_keyed_sequence(&db.client, &topic, 4, 0, 50, 50).await;
    eventually("first half delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    proxy.cut();
    insert_keyed_sequence(&db.client, &topic, 4, 50, 100, 50).await;
    eventually("lag rises during the outage", WAIT, || async {
        relay
            .metric("outbox_relay_lag_seconds")
            .await
            .is_some_and(|lag| lag > 0.0)
    })
    .await;
    assert!(db.undelivered().await > 0);
    proxy.restore();
    eventually("all delivered after recovery", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(
        db.count("dead_lettered_at IS NOT NULL").await,
        0,
        "an outage uses no attempts"
    );
    let reader = KafkaConsumer::start(&brokers, &topic, 2);
    let records = reader.wait_for(400, WAIT).await;
    assert_kafka_order(&records, 4, 100);
}

// Two worker threads, so the producer keeps committing while a fault is being injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_under_kills_broker_cuts_and_db_terminations_every_event_arrives_in_key_order() {
    if external_kafka() {
        return;
    }
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

/// Publishes events covering the CloudEvents rules (a `type` header, a `content-type` header,
/// binary data, no key) in `mode` and reads the records back with the CloudEvents SDK's Kafka
/// binding.
async fn kafka_cloudevents_read_back_with_the_sdk(mode: &'static str) {
    let brokers = kafka_brokers();
    let topic = unique("cloudevents");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let order = db
        .insert(
            &topic,
            Some("42"),
            b"{\"orderId\":42}",
            r#"{"type":"com.example.order.created","trace":"abc"}"#,
        )
        .await;
    let blob = db
        .insert(
            &topic,
            None,
            &[0xff, 0x00, 0x01],
            r#"{"content-type":"application/octet-stream"}"#,
        )
        .await;
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_FORMAT", "cloudevents".into()));
    settings.push(("OUTBOX_CLOUDEVENTS_MODE", mode.into()));
    settings.push(("OUTBOX_CLOUDEVENTS_SOURCE", "//shop/orders-db".into()));
    let _relay = Relay::start(&db.url, &settings);
    let records = reader.wait_for(2, WAIT).await;
    let ids = db.message_ids().await;
    let delivered: Vec<sdk::Delivered> = records
        .iter()
        .map(|r| {
            // The contract's message id header is there in every format.
            assert!(r.headers.contains_key("message-id"), "{r:?}");
            sdk::Delivered {
                binding: "kafka",
                mode,
                headers: r.headers.clone(),
                content_type: None,
                key: r.key.clone(),
                body: r.payload.clone(),
            }
        })
        .collect();
    let parsed = sdk::read_cloudevents(&delivered);
    let rows = sdk::rows(&db.client).await;
    for event in &parsed {
        sdk::assert_common_attributes(event, &rows, "//shop/orders-db");
        assert!(
            event.sdk.contains(&format!("kafka.from_{mode}_event")),
            "{}",
            event.sdk
        );
    }
    let order = parsed.iter().find(|p| p.id == ids[&order]).expect("order");
    assert_eq!(order.kind, "com.example.order.created");
    assert_eq!(order.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(order.data, serde_json::json!({"orderId": 42}));
    let blob = parsed.iter().find(|p| p.id == ids[&blob]).expect("blob");
    assert_eq!(blob.kind, topic, "type = topic without a type header");
    assert_eq!(blob.data, serde_json::json!({"base64": "/wAB"}));
    eprintln!("verified with: {}", order.sdk);
}

#[tokio::test]
async fn kafka_cloudevents_binary_reads_back_with_the_sdk() {
    kafka_cloudevents_read_back_with_the_sdk("binary").await;
}

#[tokio::test]
async fn kafka_cloudevents_structured_reads_back_with_the_sdk() {
    kafka_cloudevents_read_back_with_the_sdk("structured").await;
}

#[tokio::test]
async fn kafka_masstransit_envelope_and_a_payload_that_is_not_json() {
    let brokers = kafka_brokers();
    let topic = unique("masstransit");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let good = db
        .insert(
            &topic,
            Some("42"),
            b"{\"orderId\":42}",
            r#"{"type":"Contracts:OrderCreated","tenant":"t1"}"#,
        )
        .await;
    let bad = db.insert(&topic, Some("43"), b"<xml/>", "{}").await;
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_FORMAT", "masstransit".into()));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let _relay = Relay::start(&db.url, &settings);
    let records = reader.wait_for(1, WAIT).await;
    let ids = db.message_ids().await;
    assert_eq!(
        records[0].headers.get("content-type").map(String::as_str),
        Some("application/vnd.masstransit+json")
    );
    assert_eq!(records[0].headers.get("message-id"), Some(&ids[&good]));
    assert_eq!(records[0].key.as_deref(), Some("42"));
    let envelope: serde_json::Value = serde_json::from_slice(&records[0].payload).expect("JSON");
    assert_eq!(envelope["messageId"], ids[&good].as_str());
    assert_eq!(
        envelope["messageType"],
        serde_json::json!(["urn:message:Contracts:OrderCreated"])
    );
    assert_eq!(envelope["message"], serde_json::json!({"orderId": 42}));
    assert_eq!(envelope["headers"], serde_json::json!({"tenant": "t1"}));
    eventually("the XML payload dead-lettered", WAIT, || async {
        db.count(&format!(
            "id = {bad} AND dead_lettered_at IS NOT NULL AND last_error LIKE '%not JSON%'"
        ))
        .await
            == 1
    })
    .await;
}
