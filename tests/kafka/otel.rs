//! OpenTelemetry send spans for the kafka sink (docs/tracing.md): the checks every sink's spans
//! pass (`assert_send_spans`), with Kafka's message key.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn kafka_send_spans_link_the_stored_context_and_inject_their_own() {
    let brokers = kafka_brokers();
    let topic = unique("traced");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let collector = Collector::start().await;
    let headers = format!(r#"{{"traceparent":"{STORED_TRACEPARENT}"}}"#);
    let linked = db.insert(&topic, Some("42"), b"{}", &headers).await;
    let injected = db.insert(&topic, Some("43"), b"{}", "{}").await;
    let ids = db.message_ids().await;
    let mut settings = kafka_settings(&brokers);
    settings.extend(otel_settings(&collector.endpoint()));
    let _relay = Relay::start(&db.url, &settings);

    let received = reader.wait_for(2, WAIT).await;
    let spans = collector.wait_spans(2, WAIT).await;
    assert_send_spans("kafka", &received, &spans, (&ids[&linked], &ids[&injected]));
    let by_id = spans_by_message_id(&spans);
    assert_eq!(
        by_id[&ids[&linked]][0]
            .attribute("messaging.kafka.message.key")
            .as_deref(),
        Some("42")
    );
}
