//! The relay end to end with RabbitMQ: fields intact, no skipped rows, per-key order across two
//! relays, crash and outage recovery, bad rows.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn events_arrive_with_topic_key_payload_headers_and_message_id() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("orders.#").await;
    let binary = [0u8, 159, 146, 150, 255];
    let a = db
        .insert(
            "orders.paid",
            Some("42"),
            b"{\"type\":\"OrderPaid\"}",
            r#"{"traceparent":"00-abc-def-01","tenant":"t1"}"#,
        )
        .await;
    let b = db.insert("orders.binary", None, &binary, "{}").await;
    let mut relay = Relay::start(&db.url, &rabbitmq_settings(&rabbit.exchange, &amqp_url()));

    let received = rabbit.wait_for(2, WAIT).await;
    let ids = db.message_ids().await;
    let first = received
        .iter()
        .find(|m| m.destination == "orders.paid")
        .expect("orders.paid arrived");
    assert_eq!(first.payload, b"{\"type\":\"OrderPaid\"}");
    assert_eq!(first.message_id, ids[&a]);
    assert_eq!(
        first.headers.get("traceparent").map(String::as_str),
        Some("00-abc-def-01")
    );
    assert_eq!(first.headers.get("tenant").map(String::as_str), Some("t1"));
    assert!(first.persistent, "published as persistent");
    let second = received
        .iter()
        .find(|m| m.destination == "orders.binary")
        .expect("binary arrived");
    assert_eq!(second.payload, binary);
    assert_eq!(second.message_id, ids[&b]);

    eventually("both marked delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await == 2
    })
    .await;
    eventually("delivered counter", WAIT, || async {
        relay.metric("outbox_relay_delivered_total").await == Some(2.0)
    })
    .await;
    let status = relay.terminate(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}\n{}",
        relay.stderr()
    );
}

#[tokio::test]
async fn a_transaction_committing_after_a_higher_id_is_not_skipped() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let _relay = Relay::start(&db.url, &rabbitmq_settings(&rabbit.exchange, &amqp_url()));

    let slow = connect(&db.url).await;
    slow.batch_execute(
        "BEGIN; INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'a', 'first'::bytea);",
    )
    .await
    .expect("open transaction A");
    let later = db.insert("t", Some("b"), b"second", "{}").await;
    let received = rabbit.wait_for(1, WAIT).await;
    assert_eq!(received[0].payload, b"second");
    eventually("B marked delivered", WAIT, || async {
        db.count(&format!("id = {later} AND delivered_at IS NOT NULL"))
            .await
            == 1
    })
    .await;

    slow.batch_execute("COMMIT").await.expect("commit A");
    let received = rabbit.wait_for(2, WAIT).await;
    assert!(
        received.iter().any(|m| m.payload == b"first"),
        "the lower id committed later still arrives"
    );
    eventually("all delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
}

#[tokio::test]
async fn per_key_order_holds_with_two_relays_and_a_failover() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    // An active replica and a standby; lanes shared by several replicas: see lanes.rs.
    settings.push(("OUTBOX_REPLICA_MODE", "single".into()));
    let mut first = Relay::start(&db.url, &settings);
    let mut second = Relay::start(&db.url, &settings);

    insert_keyed_sequence(&db.client, "orders", 8, 0, 150, 10).await;
    // Kill whichever is active mid-stream; the standby must take over and keep the order.
    eventually("some events delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await > 100
    })
    .await;
    let (active, standby) = if first.metric("outbox_relay_leader").await == Some(1.0) {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    active.kill();
    insert_keyed_sequence(&db.client, "orders", 8, 150, 300, 10).await;
    eventually("standby took over and drained", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(
        standby.metric("outbox_relay_leader").await,
        Some(1.0),
        "the standby leads now"
    );

    // Count distinct events: redeliveries must not end the wait early.
    eventually("every event consumed", WAIT, || async {
        distinct_payloads(&rabbit.received()) >= 8 * 300
    })
    .await;
    let received = rabbit.received();
    assert_keys_ordered_and_complete(&received, 8, 300);
}

#[tokio::test]
async fn a_relay_killed_mid_stream_and_restarted_loses_nothing() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_BATCH_SIZE", "50".into()));
    let producer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let db = connect(&url).await;
            for seq in 0..300u64 {
                for k in 0..4 {
                    db.execute(
                        "INSERT INTO outbox.events (topic, key, payload) VALUES ('t', $1, $2)",
                        &[&format!("k{k}"), &format!("k{k}:{seq}").into_bytes()],
                    )
                    .await
                    .expect("insert");
                }
            }
        })
    };
    let mut kills = 0;
    for _ in 0..3 {
        let mut relay = Relay::start(&db.url, &settings);
        let before = rabbit.received().len();
        eventually("relay makes progress", WAIT, || async {
            rabbit.received().len() > before + 20
        })
        .await;
        relay.kill();
        kills += 1;
    }
    producer.await.expect("producer");
    let _relay = Relay::start(&db.url, &settings);
    eventually("everything delivered after restarts", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    // Count distinct events: redeliveries must not end the wait early.
    eventually("every event consumed", WAIT, || async {
        distinct_payloads(&rabbit.received()) >= 1200
    })
    .await;
    let received = rabbit.received();
    let duplicates = received.len() - 1200;
    println!("sigkill test: 1200 events, {kills} kills, {duplicates} duplicates");
    assert_keys_ordered_and_complete(&received, 4, 300);
}

#[tokio::test]
async fn rabbitmq_outage_is_survived_without_losing_or_dead_lettering() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);
    eventually("relay ready", WAIT, || async {
        relay.get("/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;

    insert_keyed_sequence(&db.client, "t", 3, 0, 50, 10).await;
    eventually("first events delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await >= 150
    })
    .await;

    proxy.cut();
    insert_keyed_sequence(&db.client, "t", 3, 50, 100, 10).await;
    eventually("readyz reports the outage", WAIT, || async {
        relay.get("/readyz").await.map(|r| r.0) == Some(503)
    })
    .await;
    eventually("lag rises while the broker is away", WAIT, || async {
        relay
            .metric("outbox_relay_lag_seconds")
            .await
            .is_some_and(|lag| lag > 0.0)
    })
    .await;
    assert!(
        db.undelivered().await > 0,
        "nothing can be delivered during the outage"
    );

    proxy.restore();
    eventually("delivered after recovery", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    eventually("readyz back", WAIT, || async {
        relay.get("/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    eventually("lag back to 0", WAIT, || async {
        relay.metric("outbox_relay_lag_seconds").await == Some(0.0)
    })
    .await;
    assert_eq!(
        db.count("dead_lettered_at IS NOT NULL").await,
        0,
        "an outage uses no attempts"
    );
    // Count distinct events: redeliveries must not end the wait early.
    eventually("every event consumed", WAIT, || async {
        distinct_payloads(&rabbit.received()) >= 300
    })
    .await;
    let received = rabbit.received();
    assert_keys_ordered_and_complete(&received, 3, 100);
    assert!(
        relay
            .metric("outbox_relay_reconnects_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test]
async fn bad_rows_are_dead_lettered_with_a_reason_and_block_nothing_else() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("good.#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "3".into()));
    settings.push(("OUTBOX_RETRY_BASE_DELAY_MS", "20".into()));
    settings.push(("OUTBOX_RETRY_MAX_DELAY_MS", "100".into()));

    let before = db.insert("good.a", Some("a"), b"a:0", "{}").await;
    let bad_headers = db.insert("good.a", Some("a"), b"bad", "[1, 2]").await;
    let after = db.insert("good.a", Some("a"), b"a:1", "{}").await;
    let number_header = db
        .insert("good.b", Some("b"), b"bad", r#"{"retries": 3}"#)
        .await;
    let empty_topic = db.insert("", Some("c"), b"bad", "{}").await;
    let unroutable = db.insert("nowhere.x", Some("d"), b"bad", "{}").await;
    let after_unroutable = db.insert("good.d", Some("d"), b"d:0", "{}").await;
    let other = db.insert("good.e", None, b"e:0", "{}").await;
    let relay = Relay::start(&db.url, &settings);

    eventually(
        "good events delivered and bad ones dead-lettered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    let reasons: BTreeMap<i64, (String, i32)> = db
        .client
        .query(
            "SELECT id, last_error, attempts FROM outbox.dead_letters",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(
        reasons.keys().copied().collect::<Vec<_>>(),
        vec![bad_headers, number_header, empty_topic, unroutable]
    );
    assert!(
        reasons[&bad_headers]
            .0
            .contains("headers must be a JSON object"),
        "{reasons:?}"
    );
    assert!(
        reasons[&number_header]
            .0
            .contains("\"retries\" is a number"),
        "{reasons:?}"
    );
    assert!(
        reasons[&empty_topic].0.contains("topic is empty"),
        "{reasons:?}"
    );
    assert!(reasons[&unroutable].0.contains("unroutable"), "{reasons:?}");
    assert_eq!(
        reasons[&unroutable].1, 3,
        "an unroutable event uses its attempts before it is dead-lettered"
    );

    let received = rabbit.wait_for(4, WAIT).await;
    let payloads: Vec<&[u8]> = received.iter().map(|m| m.payload.as_slice()).collect();
    let position = |p: &[u8]| {
        payloads
            .iter()
            .position(|x| *x == p)
            .unwrap_or_else(|| panic!("{:?} missing", String::from_utf8_lossy(p)))
    };
    assert!(
        position(b"a:0") < position(b"a:1"),
        "key a keeps its order around the bad row"
    );
    position(b"d:0");
    position(b"e:0");
    let delivered = db.delivered_ids().await;
    assert_eq!(delivered, vec![before, after, after_unroutable, other]);
    eventually("dead letters counted", WAIT, || async {
        relay.metric("outbox_relay_dead_lettered_total").await == Some(4.0)
    })
    .await;
    // 3 invalid rows (one failure each, dead-lettered at once) + 3 attempts of the unroutable one.
    assert_eq!(
        relay.metric("outbox_relay_publish_errors_total").await,
        Some(6.0)
    );
    assert_eq!(
        relay.metric("outbox_relay_delivered_total").await,
        Some(4.0)
    );
    assert!(
        relay.stderr().contains("dead-lettered"),
        "dead letters are logged"
    );
}
