//! One relay, several sinks: topics routed by pattern, and an outage of one sink that holds back
//! only the events routed to it.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_outage_of_one_sink_holds_back_only_its_events() {
    let db = TestDb::create().await;
    // `orders.*` goes to the default sink, `audit.*` to the sink named audit, through a proxy.
    let orders = Rabbit::setup("#").await;
    let audit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&orders.exchange, &amqp_url());
    settings.extend([
        ("OUTBOX_SINKS", "audit=rabbitmq".to_string()),
        ("OUTBOX_SINK_AUDIT_AMQP_URL", amqp_url_via(proxy.addr)),
        ("OUTBOX_SINK_AUDIT_AMQP_EXCHANGE", audit.exchange.clone()),
        ("OUTBOX_ROUTES", "audit.*=audit".to_string()),
        // Any attempt used by the outage would dead-letter the event.
        ("OUTBOX_MAX_ATTEMPTS", "1".to_string()),
    ]);
    let relay = Relay::start(&db.url, &settings);

    db.insert("orders.created", Some("o0"), b"order-0", "{}")
        .await;
    db.insert("audit.login", Some("a"), b"audit-0", "{}").await;
    orders.wait_for(1, WAIT).await;
    audit.wait_for(1, WAIT).await;

    proxy.cut();
    for i in 1..=5 {
        db.insert(
            "audit.login",
            Some("a"),
            format!("audit-{i}").as_bytes(),
            "{}",
        )
        .await;
    }
    for i in 1..=20 {
        let key = format!("o{}", i % 4);
        db.insert(
            "orders.created",
            Some(&key),
            format!("order-{i}").as_bytes(),
            "{}",
        )
        .await;
    }
    // The orders flow while the audit sink is down.
    let received = orders.wait_for(21, WAIT).await;
    assert_eq!(distinct_payloads(&received), 21);
    eventually(
        "/readyz names the audit sink as disconnected",
        WAIT,
        || async {
            relay.get("/readyz").await.is_some_and(|(status, body)| {
                status == 503
                    && body.contains("sink audit: disconnected")
                    && body.contains("sink rabbitmq: connected")
            })
        },
    )
    .await;
    assert_eq!(audit.received().len(), 1, "nothing reached the cut sink");
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);
    assert_eq!(
        db.count("attempts > 0").await,
        0,
        "the outage used no attempt"
    );

    proxy.restore();
    let received = audit.wait_for(6, WAIT).await;
    let payloads: Vec<String> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..=5).map(|i| format!("audit-{i}")).collect();
    assert_eq!(payloads, expected, "the audit key's events in order");
    eventually("everything delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(db.count("attempts > 0").await, 0);
    assert!(
        orders
            .received()
            .iter()
            .all(|r| r.destination.starts_with("orders.")),
        "no audit event went to the default sink"
    );
    let metrics = relay.get("/metrics").await.expect("/metrics").1;
    assert_eq!(
        metric_sum(&metrics, "outbox_relay_delivered_total", r#"sink="audit""#),
        Some(6.0)
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "outbox_relay_delivered_total",
            r#"sink="rabbitmq""#
        ),
        Some(21.0)
    );
}

#[tokio::test]
async fn a_topic_without_a_route_is_dead_lettered_with_the_reason() {
    let db = TestDb::create().await;
    let audit = Rabbit::setup("#").await;
    let mut settings = fast_settings();
    settings.extend([
        ("OUTBOX_SINKS", "audit=rabbitmq".to_string()),
        ("OUTBOX_SINK_AUDIT_AMQP_URL", amqp_url()),
        ("OUTBOX_SINK_AUDIT_AMQP_EXCHANGE", audit.exchange.clone()),
        ("OUTBOX_ROUTES", "audit.*=audit".to_string()),
        ("OUTBOX_MAX_ATTEMPTS", "1".to_string()),
    ]);
    let _relay = Relay::start(&db.url, &settings);
    let lost = db
        .insert("billing.charged", Some("b"), b"nowhere", "{}")
        .await;
    db.insert("audit.login", Some("a"), b"audit", "{}").await;
    audit.wait_for(1, WAIT).await;
    eventually("the unrouted event is dead-lettered", WAIT, || async {
        db.count(&format!("id = {lost} AND dead_lettered_at IS NOT NULL"))
            .await
            == 1
    })
    .await;
    let reason: String = db
        .client
        .query_one(
            "SELECT last_error FROM outbox.events WHERE id = $1",
            &[&lost],
        )
        .await
        .expect("last_error")
        .get(0);
    assert!(
        reason.contains("billing.charged") && reason.contains("OUTBOX_ROUTES"),
        "{reason}"
    );
}
