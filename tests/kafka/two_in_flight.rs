//! Two Kafka batches in flight (issue 33) when something goes wrong: the broker cut while the
//! next batch is out before the verdicts on the one before it, and SIGTERM then. The relay awaits
//! that next batch and records it after the current one (or leaves it to be read again with it);
//! nothing is lost, each key's last copies are in id order, and nothing recorded is sent again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::*;
use crate::overlap::assert_last_copies_in_id_order;

const WAIT: Duration = Duration::from_secs(90);
/// Small batches, so that many follow one another while a linger holds each one's reports.
const BATCH: i64 = 10;
const KEYS: usize = 5;
/// `fast_settings`' OUTBOX_SHUTDOWN_TIMEOUT_SECS.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's settings for batches that overlap: each one's delivery reports take at least
/// librdkafka's `linger_ms`, and the next is claimed and sent meanwhile; `properties` more.
fn overlapping(brokers: &str, linger_ms: u64, properties: &str) -> Vec<(&'static str, String)> {
    let mut settings = kafka_settings(brokers);
    settings.extend(batches_in_flight(BATCH as usize));
    settings.push((
        "OUTBOX_KAFKA_PROPERTIES",
        format!("linger.ms={linger_ms}{properties}"),
    ));
    settings
}

/// [`eventually`] within [`WAIT`], failing with the end of `relay`'s log.
async fn relay_eventually<F, Fut>(relay: &Relay, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {WAIT:?} waiting for: {what}\n{}",
        relay.stderr_tail()
    );
}

/// Every event's id, by its payload (unique: `k{key}:{seq}`).
async fn ids_by_payload(db: &TestDb) -> HashMap<Vec<u8>, i64> {
    (db.client)
        .query("SELECT payload, id FROM outbox.events", &[])
        .await
        .expect("payloads")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// How many copies of each event arrived.
fn copies(received: &[Received], ids: &HashMap<Vec<u8>, i64>) -> HashMap<i64, usize> {
    let mut copies = HashMap::new();
    for message in received {
        *copies.entry(ids[&message.payload]).or_default() += 1;
    }
    copies
}

/// Evidence that a batch went out before the verdicts on the one before it: an event first
/// produced less than half a linger after the first copy of an event a batch of ids before it
/// (read from one partition, in log order). One batch at a time, a batch's first events are
/// produced only after the reports on the batch before it, which librdkafka's linger holds at
/// least `linger_ms` after that batch's first event was produced.
fn assert_batches_overlapped(received: &[Received], ids: &HashMap<Vec<u8>, i64>, linger_ms: i64) {
    let mut first: HashMap<i64, i64> = HashMap::new();
    for message in received {
        let produced = message.produced_ms.expect("a Kafka record's timestamp");
        first.entry(ids[&message.payload]).or_insert(produced);
    }
    let overlapped = (first.iter()).any(|(id, produced)| {
        first
            .get(&(id + BATCH))
            .is_some_and(|next| (0..linger_ms / 2).contains(&(next - produced)))
    });
    assert!(
        overlapped,
        "no batch was produced within {} ms after the one before it: two batches were never in flight",
        linger_ms / 2
    );
}

// Two worker threads, so the proxy keeps forwarding while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_cut_with_a_second_batch_in_flight_loses_nothing_and_keeps_key_order() {
    const PER_KEY: u64 = 120;
    const LINGER_MS: u64 = 50;
    let total = KEYS * PER_KEY as usize;
    let (proxy, _broker) = own_broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let topic = unique("cut_in_flight");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    insert_keyed_sequence(&db.client, &topic, KEYS, 0, PER_KEY, PER_KEY).await;
    let ids = ids_by_payload(&db).await;
    // Reports of messages the cut holds fail after 3 s (30 s by default): the outage is seen soon.
    let settings = overlapping(&brokers, LINGER_MS, ",message.timeout.ms=3000");
    let relay = Relay::start(&db.url, &settings);
    relay_eventually(&relay, "a part relayed", || async {
        db.count("delivered_at IS NOT NULL").await >= 100
    })
    .await;
    proxy.cut();
    relay_eventually(&relay, "the relay sees the outage", || async {
        relay.sees_an_outage().await
    })
    .await;
    assert!(
        db.undelivered().await > 0,
        "the broker was cut after the last event: nothing was in flight"
    );
    proxy.restore();
    relay_eventually(&relay, "every event delivered after the outage", || async {
        db.undelivered().await == 0
    })
    .await;
    assert_delivered_without_attempts(&db, WAIT).await;
    assert_eq!(
        db.count("delivered_at IS NOT NULL").await,
        total as i64,
        "every event recorded delivered"
    );
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    relay_eventually(&relay, "every event consumed", || async {
        distinct_payloads(&reader.received()) >= total
    })
    .await;
    let received = reader.received();
    assert_last_copies_in_id_order(&received, &ids);
    assert_batches_overlapped(&received, &ids, LINGER_MS as i64);
}

#[tokio::test]
async fn kafka_sigterm_with_a_second_batch_in_flight_records_both_and_a_restart_sends_only_the_rest()
 {
    const PER_KEY: u64 = 80;
    // Each batch's reports wait this long: SIGTERM finds the next batch sent.
    const LINGER_MS: u64 = 200;
    let total = KEYS * PER_KEY as usize;
    let brokers = kafka_brokers();
    let topic = unique("stop_in_flight");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    insert_keyed_sequence(&db.client, &topic, KEYS, 0, PER_KEY, PER_KEY).await;
    let ids = ids_by_payload(&db).await;
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let settings = overlapping(&brokers, LINGER_MS, "");
    let mut relay = Relay::start(&db.url, &settings);
    eventually("a part relayed", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await >= 4 * BATCH
    })
    .await;
    let status = relay.terminate(SHUTDOWN_TIMEOUT).await;
    assert!(
        status.success(),
        "SIGTERM: exit {status}\n{}",
        relay.stderr_tail()
    );
    let recorded: HashSet<i64> = db.delivered_ids().await.into_iter().collect();
    assert!(
        recorded.len() < total,
        "SIGTERM came after the last event: nothing was in flight"
    );
    eventually("every event recorded delivered arrived", WAIT, || async {
        let arrived = copies(&reader.received(), &ids);
        recorded.iter().all(|id| arrived.contains_key(id))
    })
    .await;

    let _relay = Relay::start(&db.url, &settings);
    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    eventually("every event consumed", WAIT, || async {
        distinct_payloads(&reader.received()) >= total
    })
    .await;
    let received = reader.received();
    assert_last_copies_in_id_order(&received, &ids);
    // The restart publishes again from the first event not recorded, in id order: a copy of an
    // event published before the SIGTERM arrives before the first copies of the events after it.
    let copies = copies(&received, &ids);
    let mut recorded_sent_again: Vec<i64> = (recorded.iter())
        .filter(|id| copies[id] > 1)
        .copied()
        .collect();
    recorded_sent_again.sort_unstable();
    assert!(
        recorded_sent_again.is_empty(),
        "events recorded delivered before the restart were sent again: {recorded_sent_again:?}"
    );
    // Nothing failed: whatever the first relay published, it recorded before it exited.
    let mut unrecorded_sent_again: Vec<i64> = (copies.iter())
        .filter(|&(_, &n)| n > 1)
        .map(|(&id, _)| id)
        .collect();
    unrecorded_sent_again.sort_unstable();
    assert!(
        unrecorded_sent_again.is_empty(),
        "events published before the SIGTERM but not recorded, sent again after the restart: {unrecorded_sent_again:?}"
    );
    assert_batches_overlapped(&received, &ids, LINGER_MS as i64);
}
