//! OpenTelemetry traces (docs/tracing.md) end to end: a relay exports to an OTLP/HTTP receiver
//! inside the test, which decodes the protobuf. Send spans per sink (names, kinds, attributes,
//! the link to the stored `traceparent`, the injected one read back from the consumer), a failed
//! publish, a collector that is down or never answers, and no traces without an endpoint.

use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// One event written inside a traced request, one without a trace context: their message ids.
async fn insert_traced_and_untraced(db: &TestDb, topic: &str) -> (String, String) {
    let headers = format!(r#"{{"traceparent":"{STORED_TRACEPARENT}","tenant":"t1"}}"#);
    let linked = db.insert(topic, Some("42"), b"{}", &headers).await;
    let injected = db.insert(topic, Some("43"), b"{}", "{}").await;
    let ids = db.message_ids().await;
    (ids[&linked].clone(), ids[&injected].clone())
}

fn with_traces(
    mut settings: Vec<(&'static str, String)>,
    collector: &Collector,
) -> Vec<(&'static str, String)> {
    settings.extend(otel_settings(&collector.endpoint()));
    settings
}

#[tokio::test]
async fn rabbitmq_send_spans_link_the_stored_context_and_inject_their_own() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("orders.#").await;
    let collector = Collector::start().await;
    let ids = insert_traced_and_untraced(&db, "orders.paid").await;
    let settings = with_traces(rabbitmq_settings(&rabbit.exchange, &amqp_url()), &collector);
    let mut relay = Relay::start(&db.url, &settings);

    let received = rabbit.wait_for(2, WAIT).await;
    let spans = collector.wait_spans(2, WAIT).await;
    assert_send_spans("rabbitmq", &received, &spans, (&ids.0, &ids.1));
    let span = &spans[0];
    assert_eq!(
        span.attribute("messaging.rabbitmq.destination.routing_key")
            .as_deref(),
        Some("orders.paid")
    );
    assert_eq!(
        relay.metric("outbox_relay_trace_spans_dropped_total").await,
        Some(0.0)
    );
    assert!(relay.terminate(Duration::from_secs(15)).await.success());
}

#[tokio::test]
async fn http_send_spans_link_the_stored_context_and_inject_their_own() {
    let db = TestDb::create().await;
    let receiver = Receiver::start(always(200)).await;
    let collector = Collector::start().await;
    let ids = insert_traced_and_untraced(&db, "orders").await;
    let settings = with_traces(http_settings(&receiver.url("/hooks/{topic}")), &collector);
    let _relay = Relay::start(&db.url, &settings);

    let received = receiver.wait_for(2, WAIT).await;
    let spans = collector.wait_spans(2, WAIT).await;
    assert_send_spans("http", &received, &spans, (&ids.0, &ids.1));
}

#[tokio::test]
async fn a_refused_publish_ends_its_span_with_an_error() {
    let db = TestDb::create().await;
    // 400: an error about the event itself, which uses an attempt.
    let receiver = Receiver::start(always(400)).await;
    let collector = Collector::start().await;
    db.insert("orders", Some("1"), b"{}", "{}").await;
    let mut settings = with_traces(http_settings(&receiver.url("/hooks")), &collector);
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let _relay = Relay::start(&db.url, &settings);

    let spans = collector.wait_spans(1, WAIT).await;
    let span = &spans[0];
    assert_eq!(span.status_code(), STATUS_ERROR, "{span:#?}");
    assert_eq!(span.attribute("error.type").as_deref(), Some("rejected"));
    assert_eq!(span.attribute("outbox.outcome").as_deref(), Some("failed"));
    let message = span.span.status.as_ref().map(|s| s.message.clone());
    assert!(message.is_some_and(|m| m.contains("400")), "{span:#?}");
}

/// How long a relay on a fresh database takes to deliver `events` events to stdout, from its
/// start; and its relay, to read the metrics.
async fn drain(events: u64, extra: &[(&'static str, String)]) -> (Duration, Relay) {
    let db = TestDb::create().await;
    // 50 keys, `events / 50` each.
    insert_keyed_sequence(&db.client, "t", 50, 0, events / 50, 20).await;
    let mut settings = stdout_sink_settings();
    settings.extend(extra.iter().cloned());
    let (mut relay, _) = Relay::spawn(&db.url, &settings, RelayStdout::Null).expect("relay");
    let started = Instant::now();
    relay
        .wait_delivered(events, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", relay.stderr_tail()));
    (started.elapsed(), relay)
}

#[tokio::test]
async fn a_collector_that_is_down_or_never_answers_does_not_slow_the_drain() {
    const EVENTS: u64 = 10_000;
    let (untraced, _) = drain(EVENTS, &[]).await;
    // Every event sampled and exported: one span per event, however large the batch.
    let healthy = Collector::start().await;
    // A queue for the whole drain: with the default (2,048) the exporter fell behind once while
    // the suite's other tests loaded the two cores (9,644 of 10,000 spans). Dropping is what the
    // cases below are about.
    let mut settings = otel_settings(&healthy.endpoint());
    settings.push(("OTEL_BSP_MAX_QUEUE_SIZE", EVENTS.to_string()));
    let (traced, _relay) = drain(EVENTS, &settings).await;
    let spans = healthy.wait_spans(EVENTS as usize, WAIT).await;
    assert_eq!(spans_by_message_id(&spans).len(), EVENTS as usize);
    eprintln!("collector answers: {traced:?} (without traces {untraced:?})");
    let hanging = Collector::hanging().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    // A small queue, so that spans are dropped while the collector hangs.
    let small_queue = ("OTEL_BSP_MAX_QUEUE_SIZE", "256".to_string());
    let bound = untraced * 2 + Duration::from_secs(3);
    for (what, endpoint) in [("never answers", hanging.endpoint()), ("is down", down)] {
        let mut settings = otel_settings(&endpoint);
        settings.push(small_queue.clone());
        let (traced, relay) = drain(EVENTS, &settings).await;
        assert!(
            traced <= bound,
            "a collector that {what}: {EVENTS} events took {traced:?}, without traces {untraced:?}"
        );
        let dropped = relay
            .metric("outbox_relay_trace_spans_dropped_total")
            .await
            .unwrap_or_default();
        assert!(
            dropped > 0.0,
            "a collector that {what}: dropped spans are counted"
        );
        eprintln!(
            "collector {what}: {traced:?} (without traces {untraced:?}), {dropped} spans dropped"
        );
    }
    assert!(hanging.requests() > 0, "the hanging collector was asked");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced() {
    // Where a relay would send by default (OTLP/HTTP's default endpoint), if it sent at all.
    let default_port = Collector::start_on(4318).await;
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("orders.#").await;
    db.insert("orders.paid", Some("1"), b"{}", "{}").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    // Other OTEL_* variables do not turn traces on.
    settings.push(("OTEL_SERVICE_NAME", "relay".into()));
    settings.push(("OTEL_TRACES_SAMPLER", "always_on".into()));
    let mut relay = Relay::start(&db.url, &settings);

    let received = rabbit.wait_for(1, WAIT).await;
    assert_eq!(
        received[0].header("traceparent"),
        None,
        "no span, no injected context"
    );
    let metrics = relay.metrics().await.expect("/metrics");
    assert!(
        !metrics.contains("outbox_relay_trace_spans_dropped_total"),
        "{metrics}"
    );
    assert!(relay.terminate(Duration::from_secs(15)).await.success());
    if let Some(collector) = default_port {
        assert_eq!(
            collector.requests(),
            0,
            "nothing sent to the default endpoint"
        );
    }
}
