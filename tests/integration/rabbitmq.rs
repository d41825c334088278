//! The relay end to end with RabbitMQ: the conformance suite (fields intact, a crash, an outage
//! through a proxy, an unroutable event, the formats), no skipped rows, per-key order across two
//! relays, bad rows.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::conformance::*;
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// RabbitMQ in the conformance suite: a topic exchange and a queue bound to each topic of the
/// scenario (another topic is unroutable), reached through a proxy when the scenario takes it
/// away.
pub struct RabbitMqSink {
    rabbit: Rabbit,
    proxy: Option<Proxy>,
}

impl SinkUnderTest for RabbitMqSink {
    const CARRIES_KEY: bool = true;
    type Consumer = Rabbit;

    async fn open(topics: &[&str], outage: bool) -> Self {
        let rabbit = Rabbit::setup(topics[0]).await;
        for topic in &topics[1..] {
            rabbit.bind(topic).await;
        }
        let proxy = match outage {
            true => Some(Proxy::start(rabbitmq_addr()).await),
            false => None,
        };
        RabbitMqSink { rabbit, proxy }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let url = match &self.proxy {
            Some(proxy) => amqp_url_via(proxy.addr),
            None => amqp_url(),
        };
        rabbitmq_settings(&self.rabbit.exchange, &url)
    }

    fn consumer(&self) -> &Rabbit {
        &self.rabbit
    }

    fn destination(&self, topic: &str) -> String {
        topic.to_string()
    }

    async fn fail(&mut self) {
        self.proxy.as_ref().expect("a proxy").cut();
    }

    async fn restore(&mut self) {
        self.proxy.as_ref().expect("a proxy").restore();
    }

    async fn refusal(&self) -> Refusal {
        Refusal {
            topic: "refused".into(),
            payload: b"refused".to_vec(),
            reason: |e| e.contains("unroutable"),
            uses_attempts: true,
        }
    }

    fn to_sdk(&self, message: &Received, mode: &'static str) -> Delivered {
        Delivered {
            binding: "rabbitmq",
            mode,
            headers: message.headers.clone(),
            content_type: message.content_type.clone(),
            key: None,
            body: message.payload.clone(),
        }
    }

    fn sdk_reader(&self, mode: &'static str) -> Option<String> {
        Some(format!("rabbitmq.from_{mode}_event"))
    }

    async fn after_arrival(&self, arrival: &Arrival<'_>) {
        let ids = arrival.db.message_ids().await;
        let first = by_id(arrival.received, &ids[&arrival.paid]);
        assert!(first.persistent, "published as persistent");
    }

    async fn after_cloudevents(&self, cloudevents: &CloudEvents<'_>) {
        for message in cloudevents.received {
            if cloudevents.mode == "binary" {
                assert!(message.headers.contains_key("ce-id"), "{message:?}");
                assert!(!message.headers.contains_key("type"), "{message:?}");
                assert!(
                    !message.headers.contains_key("outbox-key"),
                    "ce-subject is the key: {message:?}"
                );
                assert_eq!(Some(message.message_id.as_str()), message.header("ce-id"));
            } else {
                assert_eq!(
                    message.content_type.as_deref(),
                    Some("application/cloudevents+json")
                );
            }
        }
    }
}

conformance_tests!(RabbitMqSink);

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

/// Two batches in flight (issue 33), each test's own: five keys, one topic, batches of ten, the
/// broker reached through a proxy that holds its answers.
struct TwoInFlight {
    db: TestDb,
    rabbit: Rabbit,
    proxy: Proxy,
    relay: Relay,
}

impl TwoInFlight {
    const BATCH: usize = 10;
    const KEYS: usize = 5;
    /// Sequence numbers per key in all.
    const PER_KEY: u64 = 14;

    /// A relay that delivered two events per key, then, with RabbitMQ's answers held, sent the
    /// next batch before the confirms of the one in flight, and no third.
    async fn held() -> TwoInFlight {
        let (batch, keys) = (Self::BATCH, Self::KEYS);
        let db = TestDb::create().await;
        let rabbit = Rabbit::setup("#").await;
        let proxy = Proxy::start(rabbitmq_addr()).await;
        let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
        settings.extend(batches_in_flight(batch));
        settings.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "60000".into()));
        let relay = Relay::start(&db.url, &settings);
        insert_keyed_sequence(&db.client, "orders", keys, 0, 2, 2).await;
        eventually("the first events delivered", WAIT, || async {
            db.undelivered().await == 0
        })
        .await;

        proxy.hold_answers();
        // Six batches of the same keys and topic, in one transaction.
        insert_keyed_sequence(&db.client, "orders", keys, 2, Self::PER_KEY, 12).await;
        let arrived = || distinct_payloads(&rabbit.received());
        eventually("two batches arrive before any confirm", WAIT, || async {
            arrived() >= keys * 2 + 2 * batch
        })
        .await;
        // A third batch waits for the first one's verdicts, which the proxy holds.
        assert_eq!(
            arrived(),
            keys * 2 + 2 * batch,
            "two batches in flight, not more"
        );
        let in_flight = TwoInFlight {
            db,
            rabbit,
            proxy,
            relay,
        };
        in_flight.assert_none_recorded().await;
        in_flight
    }

    async fn assert_none_recorded(&self) {
        assert_eq!(
            self.db.count("delivered_at IS NOT NULL").await,
            (Self::KEYS * 2) as i64,
            "nothing recorded delivered without its confirm\n{}",
            self.relay.stderr_tail()
        );
    }

    /// Every event recorded delivered and arrived, the first copies in order per key.
    async fn assert_all_arrive_in_order(&self) {
        eventually("every event delivered", WAIT, || async {
            self.db.undelivered().await == 0
        })
        .await;
        eventually("every event consumed", WAIT, || async {
            distinct_payloads(&self.rabbit.received()) >= Self::KEYS * Self::PER_KEY as usize
        })
        .await;
        assert_keys_ordered_and_complete(&self.rabbit.received(), Self::KEYS, Self::PER_KEY);
    }
}

/// While RabbitMQ's confirms of one batch are outstanding, the next batch, whose keys keep their
/// route, goes out on the same channel; never a third. Then every event arrives once confirmed,
/// in order per key, recorded delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_goes_out_before_the_confirms_of_the_one_in_flight() {
    let in_flight = TwoInFlight::held().await;
    in_flight.proxy.restore();
    in_flight.assert_all_arrive_in_order().await;
}

/// The connection lost with two batches in flight: neither is recorded; both go out again on a
/// new connection, in order, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_with_two_batches_in_flight_loses_nothing_and_keeps_key_order() {
    let in_flight = TwoInFlight::held().await;
    cut_until_seen(&in_flight.proxy, &in_flight.relay, WAIT).await;
    in_flight.assert_none_recorded().await;
    in_flight.proxy.restore();
    in_flight.assert_all_arrive_in_order().await;
}
