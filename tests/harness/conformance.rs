//! The conformance suite: the scenarios every sink must pass, written once and run for each sink
//! (River's driver test suite, Vector's component validation). A sink joins with a description,
//! [`SinkUnderTest`] (the relay's settings for it, its consumer from the harness, how to take its
//! broker away and how to make it refuse an event), and one line in its test file:
//!
//! ```ignore
//! conformance_tests!(RedisSink);
//! ```
//!
//! which makes one test per scenario, `<sink>::conformance::<scenario>`: arrival with message
//! id, key, headers and payload in key order; a relay SIGKILLed mid-stream; a broker outage that
//! costs no attempt; an event's fault dead-lettered while the others flow; CloudEvents (binary
//! and structured) read back by the CloudEvents SDK; MassTransit's envelope. A sink without some
//! of them names the ones it runs: `conformance_tests!(StdoutSink: arrival, killed_mid_stream)`.
//! What only one sink has is checked in its own test file, by the `after_*` hooks of its
//! description, on the same run.

use std::time::Duration;

use super::consumer::{
    Consumer, Received, assert_exactly_once_in_order, assert_keys_ordered_and_complete,
    distinct_payloads, first_arrivals_by_key,
};
use super::db::{TestDb, connect, insert_keyed_sequence};
use super::formats::{
    assert_cloudevents_cases, assert_masstransit_envelope, insert_cloudevents_cases,
};
use super::metrics::metric_sum;
use super::relay::{Relay, wait_ready};
use super::sdk::{Delivered, Parsed, read_cloudevents, rows};
use super::{assert_delivered_without_attempts, eventually};

/// An event a sink refuses as the event's fault, and how it says so.
pub struct Refusal {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Whether `last_error` gives the sink's reason.
    pub reason: fn(&str) -> bool,
    /// Whether every attempt is used before it is dead-lettered.
    pub uses_attempts: bool,
}

/// A sink as the suite drives it: the broker side of one scenario.
#[allow(async_fn_in_trait)]
pub trait SinkUnderTest: Sized {
    /// Whether the transport carries the event's key ([`Received::key`]).
    const CARRIES_KEY: bool;
    /// How long a scenario waits for anything.
    const WAIT: Duration = Duration::from_secs(60);

    type Consumer: Consumer;

    /// The broker side of a scenario whose events have `topics`; `outage`: on a broker the
    /// scenario takes away ([`SinkUnderTest::fail`]): a private one, or one behind a proxy.
    async fn open(topics: &[&str], outage: bool) -> Self;

    /// The relay's settings for this sink.
    fn settings(&self) -> Vec<(&'static str, String)>;

    /// What arrived for this scenario, from the first message.
    fn consumer(&self) -> &Self::Consumer;

    /// Where an event of `topic` arrives ([`Received::destination`]).
    fn destination(&self, topic: &str) -> String;

    /// How many messages the broker stores, where it keeps one per message id (Redis, JetStream):
    /// then every event arrives exactly once.
    async fn stored(&self) -> Option<u64> {
        None
    }

    /// Takes the broker away: cut, killed, or answering that it is unavailable (the outage
    /// scenario).
    async fn fail(&mut self) {
        panic!("the outage scenario is not in this sink's suite");
    }

    /// Brings the broker back (and the consumer, where it must reconnect).
    async fn restore(&mut self) {
        panic!("the outage scenario is not in this sink's suite");
    }

    /// An event this sink refuses as the event's fault (the event's-fault scenario).
    async fn refusal(&self) -> Refusal {
        panic!("the event's-fault scenario is not in this sink's suite");
    }

    /// A message as the CloudEvents SDK is to read it (the CloudEvents scenarios).
    fn to_sdk(&self, _message: &Received, _mode: &'static str) -> Delivered {
        panic!("the CloudEvents scenarios are not in this sink's suite");
    }

    /// The SDK function that must have read a message in `mode`, when there is one to name.
    fn sdk_reader(&self, _mode: &'static str) -> Option<String> {
        None
    }

    /// The relay's format settings for CloudEvents in `mode`.
    fn cloudevents_settings(&self, mode: &'static str) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("OUTBOX_FORMAT", "cloudevents".to_string()),
            ("OUTBOX_CLOUDEVENTS_MODE", mode.to_string()),
        ];
        if mode == "binary" {
            settings.push(("OUTBOX_CLOUDEVENTS_SOURCE", CUSTOM_SOURCE.to_string()));
        }
        settings
    }

    /// Shows a relay of the scenario to the consumer (stdout reads its output).
    fn attach(&self, _relay: &Relay) {}

    /// The headers of the arrival scenario's JSON event.
    fn paid_headers(&self) -> String {
        r#"{"traceparent":"00-abc-def-01","tenant":"t1"}"#.to_string()
    }

    /// Events of the sink's own for the arrival scenario, inserted with the others; their ids.
    async fn arrival_extras(&self, _db: &TestDb) -> Vec<i64> {
        Vec::new()
    }

    /// The sink's own checks of each scenario, on the same run.
    async fn after_arrival(&self, _arrival: &Arrival<'_>) {}
    async fn during_outage(&self, _relay: &Relay) {}
    async fn after_outage(&self, _outage: &Outage<'_>) {}
    async fn after_event_fault(&self, _fault: &EventFault<'_>) {}
    async fn after_cloudevents(&self, _cloudevents: &CloudEvents<'_>) {}
    async fn after_masstransit(&self, _masstransit: &MassTransit<'_>) {}

    /// Removes what the scenario left on a shared broker.
    async fn close(self) {}
}

/// The source the binary CloudEvents scenario sets (structured keeps the default).
pub const CUSTOM_SOURCE: &str = "//shop/orders-db";
/// The arrival scenario's binary payload.
pub const BINARY: &[u8] = &[0, 159, 146, 150, 255, b'\r', b'\n'];

/// Makes one test per scenario for a sink: `conformance_tests!(Sink)` runs them all,
/// `conformance_tests!(Sink: arrival, outage)` the ones named. (The bench, which shares the
/// harness, has no use for it.)
#[allow(unused_macros)]
macro_rules! conformance_tests {
    ($sink:ident) => {
        $crate::harness::conformance::conformance_tests!(
            $sink: arrival,
            killed_mid_stream,
            outage,
            event_fault,
            cloudevents_binary,
            cloudevents_structured,
            masstransit
        );
    };
    ($sink:ident: $($scenario:ident),+ $(,)?) => {
        /// The conformance suite (`tests/harness/conformance.rs`) for this sink.
        mod conformance {
            $(
                #[tokio::test]
                async fn $scenario() {
                    $crate::harness::conformance::$scenario::<super::$sink>().await;
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use conformance_tests;

/// Starts a relay with the sink's settings and `extra`, shown to the consumer.
fn start<S: SinkUnderTest>(sink: &S, db: &TestDb, extra: &[(&'static str, String)]) -> Relay {
    let mut settings = sink.settings();
    settings.extend(extra.iter().cloned());
    let relay = Relay::start(&db.url, &settings);
    sink.attach(&relay);
    relay
}

async fn delivered_all(db: &TestDb, wait: Duration) {
    eventually("every event delivered", wait, || async {
        db.undelivered().await == 0
    })
    .await;
}

/// The message with `message_id`.
pub fn by_id<'a>(received: &'a [Received], message_id: &str) -> &'a Received {
    received
        .iter()
        .find(|m| m.message_id == message_id)
        .unwrap_or_else(|| panic!("message {message_id} arrived: {received:#?}"))
}

/// For a transport that carries the key: every message of `k{key}:{seq}` has key `k{key}`.
fn assert_keys_carried<S: SinkUnderTest>(messages: &[Received]) {
    if !S::CARRIES_KEY {
        return;
    }
    for message in messages {
        let payload = String::from_utf8_lossy(&message.payload);
        let key = payload.split_once(':').map(|(k, _)| k);
        assert_eq!(message.key.as_deref(), key, "the key is the event's key");
    }
}

/// What the arrival scenario saw, for the sink's own checks.
pub struct Arrival<'a> {
    pub db: &'a TestDb,
    /// Stopped (SIGTERM) by now.
    pub relay: &'a Relay,
    pub received: &'a [Received],
    pub paid: i64,
    pub binary: i64,
    pub extras: &'a [i64],
}

/// Events arrive with message id, key, headers and payload (JSON and binary, verbatim), where
/// their topic says, one per event (exactly one where the broker keeps one per message id), each
/// key in order; the relay counts them and stops cleanly.
pub async fn arrival<S: SinkUnderTest>() {
    let sink = S::open(&["orders.paid", "orders.binary", "seq"], false).await;
    let db = TestDb::create().await;
    let paid = db
        .insert(
            "orders.paid",
            Some("42"),
            b"{\"type\":\"OrderPaid\"}",
            &sink.paid_headers(),
        )
        .await;
    let binary = db.insert("orders.binary", None, BINARY, "{}").await;
    insert_keyed_sequence(&db.client, "seq", 3, 0, 40, 7).await;
    let extras = sink.arrival_extras(&db).await;
    let total = 2 + 3 * 40 + extras.len();
    let mut relay = start(&sink, &db, &[]);
    delivered_all(&db, S::WAIT).await;
    let received = sink.consumer().wait_for(total, S::WAIT).await;
    let ids = db.message_ids().await;
    let first = by_id(&received, &ids[&paid]);
    assert_eq!(first.destination, sink.destination("orders.paid"));
    assert_eq!(first.payload, b"{\"type\":\"OrderPaid\"}");
    assert_eq!(first.header("traceparent"), Some("00-abc-def-01"));
    assert_eq!(first.header("tenant"), Some("t1"));
    let second = by_id(&received, &ids[&binary]);
    assert_eq!(second.destination, sink.destination("orders.binary"));
    assert_eq!(second.payload, BINARY, "payload verbatim");
    if S::CARRIES_KEY {
        assert_eq!(first.key.as_deref(), Some("42"));
        assert_eq!(second.key, None, "a null key stays null");
    }
    let keyed: Vec<Received> = (received.iter())
        .filter(|m| m.destination == sink.destination("seq"))
        .cloned()
        .collect();
    assert_keys_carried::<S>(&keyed);
    if let Some(stored) = sink.stored().await {
        assert_eq!(stored, total as u64, "one stored message per event");
        assert_eq!(received.len(), total, "one message per event");
        assert_exactly_once_in_order(&keyed, 3, 40);
    } else {
        assert_keys_ordered_and_complete(&keyed, 3, 40);
    }
    eventually("delivered counter", S::WAIT, || async {
        relay.metric("outbox_relay_delivered_total").await == Some(total as f64)
    })
    .await;
    assert_eq!(relay.get("/healthz").await.map(|r| r.0), Some(200));
    let status = relay.terminate(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}\n{}",
        relay.stderr()
    );
    let arrival = Arrival {
        db: &db,
        relay: &relay,
        received: &received,
        paid,
        binary,
        extras: &extras,
    };
    sink.after_arrival(&arrival).await;
    sink.close().await;
}

/// A relay SIGKILLed three times mid-stream, while a writer keeps committing, then restarted:
/// every event delivered and arrived (at least once; exactly once where the broker keeps one per
/// message id), each with its message id, each key's first arrivals in order.
pub async fn killed_mid_stream<S: SinkUnderTest>() {
    const KEYS: usize = 5;
    const BACKLOG: u64 = 1200;
    const PER_KEY: u64 = BACKLOG + 100;
    let sink = S::open(&["t"], false).await;
    let db = TestDb::create().await;
    let batch = [("OUTBOX_BATCH_SIZE", "50".to_string())];
    insert_keyed_sequence(&db.client, "t", KEYS, 0, BACKLOG, 50).await;
    let total = KEYS as u64 * PER_KEY;
    let producer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let db = connect(&url).await;
            insert_keyed_sequence(&db, "t", KEYS, BACKLOG, PER_KEY, 1).await;
        })
    };
    let consumer = sink.consumer();
    // Progress is read from the outbox, not the consumer: a consumer that fetches in bursts
    // (Kafka's) can lag so far behind a fast relay that it finished before the third kill.
    let delivered = || db.count("delivered_at IS NOT NULL");
    let mut kills = 0;
    for round in 1..=3u64 {
        let mut relay = start(&sink, &db, &batch);
        let before = delivered().await;
        eventually("the relay makes progress", S::WAIT, || async {
            let count = delivered().await;
            count >= before + 20 && count as u64 >= total * round / 10
        })
        .await;
        relay.kill();
        kills += 1;
    }
    assert!(
        db.undelivered().await > 0,
        "the relay was killed before it finished"
    );
    producer.await.expect("producer");
    let _relay = start(&sink, &db, &batch);
    delivered_all(&db, S::WAIT).await;
    // Count distinct events: redeliveries must not end the wait early.
    eventually("every event consumed", S::WAIT, || async {
        distinct_payloads(&consumer.received()) as u64 >= total
    })
    .await;
    let received = consumer.received();
    let ids: std::collections::HashSet<String> = db.message_ids().await.into_values().collect();
    assert!(
        received.iter().all(|m| ids.contains(&m.message_id)),
        "every message carries its event's message id"
    );
    assert_keys_carried::<S>(&received);
    if let Some(stored) = sink.stored().await {
        assert_eq!(stored, total, "no message stored twice");
        assert_exactly_once_in_order(&received, KEYS, PER_KEY);
        let arrived = received.iter().map(|m| m.message_id.clone()).collect();
        assert_eq!(ids, arrived, "every message id exactly once");
    } else {
        assert_keys_ordered_and_complete(&received, KEYS, PER_KEY);
    }
    println!(
        "sigkill {}: {total} events, {kills} kills, {} duplicates",
        std::any::type_name::<S>(),
        received.len() as u64 - total
    );
    sink.close().await;
}

/// What the outage scenario saw, for the sink's own checks.
pub struct Outage<'a> {
    pub db: &'a TestDb,
    pub relay: &'a Relay,
    pub received: &'a [Received],
}

/// The broker taken away while a writer commits, then brought back: not ready meanwhile, lag
/// rising, nothing delivered; afterwards every event delivered without using an attempt or
/// dead-lettering, ready again, lag back to 0, and every event arrived in key order.
pub async fn outage<S: SinkUnderTest>() {
    let mut sink = S::open(&["t"], true).await;
    let db = TestDb::create().await;
    let relay = start(&sink, &db, &[("OUTBOX_MAX_ATTEMPTS", "1".to_string())]);
    wait_ready(&relay, 200, S::WAIT).await;
    insert_keyed_sequence(&db.client, "t", 3, 0, 50, 10).await;
    delivered_all(&db, S::WAIT).await;

    // Taken away while a writer commits one transaction per sequence number.
    let producer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let db = connect(&url).await;
            insert_keyed_sequence(&db, "t", 3, 50, 100, 1).await;
        })
    };
    sink.fail().await;
    producer.await.expect("producer");
    insert_keyed_sequence(&db.client, "t", 3, 100, 110, 5).await;
    wait_ready(&relay, 503, S::WAIT).await;
    eventually("lag rises while the broker is away", S::WAIT, || async {
        relay
            .metric("outbox_relay_lag_seconds")
            .await
            .is_some_and(|lag| lag > 0.0)
    })
    .await;
    eventually("the broker's failures are counted", S::WAIT, || async {
        let body = relay.get("/metrics").await.map(|r| r.1).unwrap_or_default();
        metric_sum(&body, "outbox_relay_reconnects_total", "target=\"broker\"").unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert!(
        db.undelivered().await > 0,
        "nothing delivered while the broker is away"
    );
    sink.during_outage(&relay).await;

    sink.restore().await;
    assert_delivered_without_attempts(&db, S::WAIT).await;
    wait_ready(&relay, 200, S::WAIT).await;
    eventually("lag back to 0", S::WAIT, || async {
        relay.metric("outbox_relay_lag_seconds").await == Some(0.0)
    })
    .await;
    let consumer = sink.consumer();
    eventually("every event consumed", S::WAIT, || async {
        distinct_payloads(&consumer.received()) >= 3 * 110
    })
    .await;
    let received = consumer.received();
    assert_keys_carried::<S>(&received);
    if let Some(stored) = sink.stored().await {
        assert_eq!(stored, 3 * 110, "every event once");
        assert_exactly_once_in_order(&received, 3, 110);
    } else {
        assert_keys_ordered_and_complete(&received, 3, 110);
    }
    let outage = Outage {
        db: &db,
        relay: &relay,
        received: &received,
    };
    sink.after_outage(&outage).await;
    sink.close().await;
}

/// What the event's-fault scenario saw, for the sink's own checks.
pub struct EventFault<'a> {
    pub db: &'a TestDb,
    pub relay: &'a Relay,
    pub received: &'a [Received],
    /// The refused event, and the later event of its key.
    pub refused: i64,
    pub later: i64,
    pub last_error: &'a str,
}

/// An event the sink refuses, in one batch with others: dead-lettered with the sink's reason
/// after its attempts, never published; the later event of its key only after it was settled;
/// the other keys flow and use no attempt.
pub async fn event_fault<S: SinkUnderTest>() {
    let sink = S::open(&["good"], false).await;
    let db = TestDb::create().await;
    let refusal = sink.refusal().await;
    // One transaction, so the relay claims them all in one batch.
    db.client.batch_execute("BEGIN").await.expect("begin");
    db.insert("good", Some("a"), b"a:0", "{}").await;
    let refused = (db.insert(&refusal.topic, Some("a"), &refusal.payload, "{}")).await;
    let later = db.insert("good", Some("a"), b"a:1", "{}").await;
    for (key, payload) in [(Some("b"), "b:0"), (Some("b"), "b:1"), (None, "none")] {
        db.insert("good", key, payload.as_bytes(), "{}").await;
    }
    db.client.batch_execute("COMMIT").await.expect("commit");
    let relay = start(&sink, &db, &fault_settings());
    eventually(
        "the refused event dead-lettered, the others delivered",
        S::WAIT,
        || async {
            db.count("dead_lettered_at IS NOT NULL").await == 1 && db.undelivered().await == 0
        },
    )
    .await;
    let row = (db.client)
        .query_one(
            "SELECT attempts, last_error, dead_lettered_at IS NOT NULL FROM outbox.events WHERE id = $1",
            &[&refused],
        )
        .await
        .expect("the refused event");
    let (attempts, last_error, dead): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
    assert!(dead && (refusal.reason)(&last_error), "{last_error}");
    if refusal.uses_attempts {
        assert_eq!(attempts, 2, "both attempts used: {last_error}");
    }
    assert_settled_in_key_order(&db, refused, later).await;
    assert_eq!(
        db.count(&format!("id <> {refused} AND attempts > 0")).await,
        0,
        "the other events used no attempts"
    );
    let received = sink.consumer().wait_for(5, S::WAIT).await;
    assert_refusal_held_back_its_key(&received, &refusal.payload);
    eventually("the dead letter counted", S::WAIT, || async {
        relay.metric("outbox_relay_dead_lettered_total").await == Some(1.0)
    })
    .await;
    let fault = EventFault {
        db: &db,
        relay: &relay,
        received: &received,
        refused,
        later,
        last_error: &last_error,
    };
    sink.after_event_fault(&fault).await;
    sink.close().await;
}

fn fault_settings() -> Vec<(&'static str, String)> {
    vec![
        ("OUTBOX_MAX_ATTEMPTS", "2".to_string()),
        ("OUTBOX_RETRY_BASE_DELAY_MS", "20".to_string()),
        ("OUTBOX_RETRY_MAX_DELAY_MS", "100".to_string()),
    ]
}

/// The later event of the refused one's key was delivered only after it was dead-lettered.
async fn assert_settled_in_key_order(db: &TestDb, refused: i64, later: i64) {
    let after: bool = (db.client)
        .query_one(
            "SELECT (SELECT delivered_at FROM outbox.events WHERE id = $2)
                 >= (SELECT dead_lettered_at FROM outbox.events WHERE id = $1)",
            &[&refused, &later],
        )
        .await
        .expect("order")
        .get(0);
    assert!(
        after,
        "a:1 was delivered only after its key's refused event was settled"
    );
}

/// The refused payload never arrived; a:1 came last, after a:0; key b in order; the keyless one
/// arrived.
fn assert_refusal_held_back_its_key(received: &[Received], refused: &[u8]) {
    let payloads: Vec<String> = received
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert!(
        received.iter().all(|m| m.payload != refused),
        "the refused event was not published: {payloads:?}"
    );
    let by_key = first_arrivals_by_key(
        &received
            .iter()
            .filter(|m| m.payload != b"none")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        by_key.get("a"),
        Some(&vec![0, 1]),
        "key a in order: {payloads:?}"
    );
    assert_eq!(
        by_key.get("b"),
        Some(&vec![0, 1]),
        "key b in order: {payloads:?}"
    );
    assert!(payloads.iter().any(|p| p == "none"), "{payloads:?}");
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&String> = payloads.iter().filter(|p| seen.insert(*p)).collect();
    assert_eq!(
        firsts.last().map(|p| p.as_str()),
        Some("a:1"),
        "a:1 went only once a:0's successor was settled, after the rest: {payloads:?}"
    );
}

/// What the CloudEvents scenario saw, for the sink's own checks.
pub struct CloudEvents<'a> {
    pub mode: &'static str,
    pub db: &'a TestDb,
    /// Still running.
    pub relay: &'a Relay,
    pub received: &'a [Received],
    pub parsed: &'a [Parsed],
    /// The order, the blob, the note (see `insert_cloudevents_cases`).
    pub ids: [i64; 3],
}

pub async fn cloudevents_binary<S: SinkUnderTest>() {
    cloudevents::<S>("binary").await;
}

pub async fn cloudevents_structured<S: SinkUnderTest>() {
    cloudevents::<S>("structured").await;
}

/// The CloudEvents cases (a `type` header, a `content-type` header, binary data, no key, a key
/// with spaces) in `mode`, read back by the CloudEvents SDK: every attribute by the rules.
async fn cloudevents<S: SinkUnderTest>(mode: &'static str) {
    let sink = S::open(&["orders", "blobs", "notes"], false).await;
    let db = TestDb::create().await;
    let ids = insert_cloudevents_cases(&db).await;
    let relay = start(&sink, &db, &sink.cloudevents_settings(mode));
    delivered_all(&db, S::WAIT).await;
    let received = sink.consumer().wait_for(3, S::WAIT).await;
    if let Some(stored) = sink.stored().await {
        assert_eq!(stored, 3, "one message per event");
    }
    let delivered: Vec<Delivered> = received.iter().map(|m| sink.to_sdk(m, mode)).collect();
    let parsed = read_cloudevents(&delivered);
    if let Some(reader) = sink.sdk_reader(mode) {
        assert!(parsed[0].sdk.contains(&reader), "{}", parsed[0].sdk);
    }
    let source = match mode {
        "binary" => CUSTOM_SOURCE,
        _ => "/outbox-relay",
    };
    assert_cloudevents_cases(&db, ids, &parsed, source).await;
    let cloudevents = CloudEvents {
        mode,
        db: &db,
        relay: &relay,
        received: &received,
        parsed: &parsed,
        ids,
    };
    sink.after_cloudevents(&cloudevents).await;
    sink.close().await;
}

/// What the MassTransit scenario saw, for the sink's own checks.
pub struct MassTransit<'a> {
    pub db: &'a TestDb,
    pub received: &'a [Received],
    pub created: i64,
    pub after: i64,
}

/// MassTransit's envelope, checked against MassTransit's own types, with the event's headers
/// inside it; a payload that is not JSON dead-lettered, its key's later event published after.
pub async fn masstransit<S: SinkUnderTest>() {
    let sink = S::open(&["orders"], false).await;
    let db = TestDb::create().await;
    let correlation = uuid::Uuid::new_v4().to_string();
    let headers = format!(
        r#"{{"type":"Contracts:OrderCreated","correlation-id":"{correlation}","tenant":"t1"}}"#
    );
    let created = (db.insert("orders", Some("42"), b"{\"orderId\":42}", &headers)).await;
    let not_json = db.insert("orders", Some("44"), b"not json", "{}").await;
    let after = db.insert("orders", Some("44"), b"{\"n\":2}", "{}").await;
    let mut settings = vec![("OUTBOX_FORMAT", "masstransit".to_string())];
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".to_string()));
    let _relay = start(&sink, &db, &settings);
    eventually(
        "two delivered, the one that is not JSON dead-lettered",
        S::WAIT,
        || async {
            db.count("delivered_at IS NOT NULL").await == 2
                && db.count("dead_lettered_at IS NOT NULL").await == 1
        },
    )
    .await;
    let reason = db.dead_letter_reason(not_json).await.unwrap_or_default();
    assert!(reason.contains("not JSON"), "{reason}");
    let received = sink.consumer().wait_for(2, S::WAIT).await;
    let ids = db.message_ids().await;
    let mut seen = std::collections::HashSet::new();
    let sent: Vec<&str> = (received.iter())
        .map(|m| m.message_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect();
    assert_eq!(
        sent,
        [ids[&created].as_str(), ids[&after].as_str()],
        "the event that is not JSON was never sent; its key's later event followed"
    );
    if let Some(stored) = sink.stored().await {
        assert_eq!(stored, 2);
    }
    let message = by_id(&received, &ids[&created]);
    assert_eq!(
        message.content_type.as_deref(),
        Some("application/vnd.masstransit+json")
    );
    assert!(
        message.header("tenant").is_none(),
        "the event's headers travel inside the envelope"
    );
    if S::CARRIES_KEY {
        assert_eq!(message.key.as_deref(), Some("42"));
    }
    let envelope: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
    let rows = rows(&db.client).await;
    assert_masstransit_envelope(
        &envelope,
        &ids[&created],
        "Contracts:OrderCreated",
        serde_json::json!({"orderId": 42}),
        serde_json::json!({"tenant": "t1"}),
        rows[&ids[&created]].created_at,
    );
    assert_eq!(envelope["correlationId"], correlation.as_str());
    let masstransit = MassTransit {
        db: &db,
        received: &received,
        created,
        after,
    };
    sink.after_masstransit(&masstransit).await;
    sink.close().await;
}
