//! Two Kafka batches in flight (issue 33): the relay sends the next batch before the delivery
//! reports of the one in flight are in. A key's earlier event that the producer refuses (too
//! large) while its later events went out in the next batch: those are not recorded delivered
//! before it is settled, but published again after it; the consumer's last copy of each key's
//! events is in id order, and nothing is lost.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);
/// Rounds of two batches: the first ends with a key's refused event, the second holds that
/// key's later events.
const ROUNDS: usize = 5;
/// Larger than the producer takes (`message.max.bytes`, 1 MB), within half the claim's byte
/// budget (16 MiB), so that the next batch is claimed while it is in flight.
const REFUSED: usize = 3 * 1024 * 1024;

/// The ids of one round: the refused event and its key's later events.
struct Round {
    refused: i64,
    later: [i64; 2],
}

#[tokio::test]
async fn kafka_events_sent_behind_a_refused_one_of_their_key_are_recorded_after_it_and_arrive_last_in_order()
 {
    let brokers = kafka_brokers();
    let topic = unique("overlap");
    create_topic(&brokers, &topic, 1).await;
    let db = TestDb::create().await;
    // One transaction: the ids are consecutive, so that each claim of 4 is one half of a round.
    db.client.batch_execute("BEGIN").await.expect("begin");
    let mut ids: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut rounds = Vec::new();
    for r in 0..ROUNDS {
        let key = format!("k{r}");
        let mut insert = async |key: Option<&str>, payload: Vec<u8>| {
            let id = db.insert(&topic, key, &payload, "{}").await;
            ids.insert(payload, id);
            id
        };
        insert(Some(&format!("x{r}")), format!("x{r}:0").into_bytes()).await;
        insert(Some(&format!("y{r}")), format!("y{r}:0").into_bytes()).await;
        insert(None, format!("none{r}").into_bytes()).await;
        let refused = insert(Some(&key), vec![b'r'; REFUSED]).await;
        let first = insert(Some(&key), format!("{key}:1").into_bytes()).await;
        insert(Some(&format!("x{r}")), format!("x{r}:1").into_bytes()).await;
        insert(None, format!("none{r}b").into_bytes()).await;
        let second = insert(Some(&key), format!("{key}:2").into_bytes()).await;
        rounds.push(Round {
            refused,
            later: [first, second],
        });
    }
    db.client.batch_execute("COMMIT").await.expect("commit");
    let reader = KafkaConsumer::start(&brokers, &topic, 1);
    let mut settings = kafka_settings(&brokers);
    settings.extend([
        ("OUTBOX_BATCH_SIZE", "4".to_string()),
        ("OUTBOX_MAX_ATTEMPTS", "2".to_string()),
        ("OUTBOX_RETRY_BASE_DELAY_MS", "20".to_string()),
        ("OUTBOX_RETRY_MAX_DELAY_MS", "100".to_string()),
        // Each batch's delivery reports take at least this long: the next claim comes back
        // while they are outstanding.
        ("OUTBOX_KAFKA_PROPERTIES", "linger.ms=50".to_string()),
    ]);
    let _relay = Relay::start(&db.url, &settings);
    eventually(
        "the refused events dead-lettered, the others delivered",
        WAIT,
        || async {
            db.count("dead_lettered_at IS NOT NULL").await == ROUNDS as i64
                && db.undelivered().await == 0
        },
    )
    .await;
    for round in &rounds {
        for later in round.later {
            let after: bool = (db.client)
                .query_one(
                    "SELECT (SELECT delivered_at FROM outbox.events WHERE id = $2)
                         >= (SELECT dead_lettered_at FROM outbox.events WHERE id = $1)",
                    &[&round.refused, &later],
                )
                .await
                .expect("order")
                .get(0);
            assert!(
                after,
                "event {later} recorded delivered before its key's refused event {} was settled",
                round.refused
            );
        }
    }
    let delivered = ids.len() - ROUNDS;
    eventually("every delivered event consumed", WAIT, || async {
        distinct_payloads(&reader.received()) >= delivered
    })
    .await;
    let received = reader.received();
    assert!(
        received.iter().all(|m| m.payload.len() < REFUSED),
        "a refused event was published"
    );
    assert_last_copies_in_id_order(&received, &ids);
    // The old loop never sends a key's later event before its earlier one is settled: a copy
    // before the last shows that a batch went out behind one whose verdicts were outstanding.
    let sent_early = (rounds.iter())
        .filter(|round| {
            let id_of = |m: &Received| ids.get(&m.payload).copied();
            received
                .iter()
                .filter(|m| id_of(m) == Some(round.later[0]))
                .count()
                > 1
        })
        .count();
    assert!(
        sent_early > 0,
        "no batch was sent before the verdicts on the one before it: two batches never overlapped"
    );
}

/// Per key, the last copy of each event arrived in id order.
pub fn assert_last_copies_in_id_order(received: &[Received], ids: &HashMap<Vec<u8>, i64>) {
    // Event id -> (key, position of its last copy).
    let mut last: HashMap<i64, (String, usize)> = HashMap::new();
    for (position, message) in received.iter().enumerate() {
        let id = ids[&message.payload];
        last.insert(id, (message.key.clone().unwrap_or_default(), position));
    }
    let mut by_key: HashMap<String, Vec<(usize, i64)>> = HashMap::new();
    for (id, (key, position)) in last {
        if !key.is_empty() {
            by_key.entry(key).or_default().push((position, id));
        }
    }
    for (key, mut copies) in by_key {
        copies.sort_unstable();
        let order: Vec<i64> = copies.iter().map(|&(_, id)| id).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "key {key}: last copies out of id order");
    }
}
