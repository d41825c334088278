//! Scale-out: four relays share the lanes while a producer commits events; two are SIGKILLed, one
//! joins, one stops with SIGTERM. Nothing is lost, first arrivals keep per-key order, every lane is
//! owned at the end, and no lane ever has two owners (sampled from pg_locks during the run). A
//! relay frozen with a batch in flight while its session is terminated and its lanes taken, then
//! resumed: no key's first arrivals out of order, duplicates only of what it had not recorded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const KEYS: usize = 200;
const LANES: usize = 64;
const WAIT: Duration = Duration::from_secs(60);

/// The lane owners: lane -> backend pids holding its lock (more than one would be a bug).
const OWNERS_SQL: &str = "SELECT (l.classid::bigint * 4294967296 + l.objid::bigint - 7340020000)::int AS lane, \
     count(*)::int AS owners \
     FROM pg_locks l \
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND l.classid::bigint * 4294967296 + l.objid::bigint BETWEEN 7340020000 AND 7340020063 \
     GROUP BY 1";

async fn lane_owners(client: &tokio_postgres::Client) -> HashMap<i32, i32> {
    client
        .query(OWNERS_SQL, &[])
        .await
        .expect("lane owners")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until `n` more events than now are delivered: the relays make progress.
async fn delivers(db: &TestDb, n: i64, phase: &str) {
    let start = db.count("delivered_at IS NOT NULL").await;
    eventually(
        &format!("{n} more events delivered {phase}"),
        WAIT,
        || async { db.count("delivered_at IS NOT NULL").await >= start + n },
    )
    .await;
}

async fn lanes_owned(relay: &Relay) -> Option<f64> {
    relay.metric("outbox_relay_lanes_owned").await
}

#[tokio::test]
async fn relays_share_the_lanes_and_survive_kills_joins_and_stops() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    let mut relays: Vec<Relay> = (0..4).map(|_| Relay::start(&db.url, &settings)).collect();

    // Watches the lane locks during the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let double_owned = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, double_owned, url) = (stop.clone(), double_owned.clone(), db.url.clone());
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let owners = lane_owners(&client).await;
                if owners.values().any(|&n| n > 1) {
                    double_owned.fetch_add(1, Ordering::Relaxed);
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    // Commits events of many keys (so every lane has some) until stopped.
    let committed = Arc::new(AtomicU64::new(0));
    let producer = produce_keyed(&db.url, &stop, &committed, 7);

    eventually("four relays own 16 lanes each", WAIT, || async {
        for relay in &relays {
            if lanes_owned(relay).await != Some(16.0) {
                return false;
            }
        }
        true
    })
    .await;
    delivers(&db, 500, "by four relays").await;

    // SIGKILL two: their lanes go to the other two.
    relays[0].kill();
    relays[1].kill();
    let killed_at = Instant::now();
    relays.drain(..2);
    eventually("the two survivors own every lane", WAIT, || async {
        lanes_owned(&relays[0]).await == Some(32.0) && lanes_owned(&relays[1]).await == Some(32.0)
    })
    .await;
    println!(
        "lanes: a SIGKILLed replica's lanes were owned again after {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    delivers(&db, 500, "after two kills").await;

    // A new replica receives its share.
    let joined_at = Instant::now();
    relays.push(Relay::start(&db.url, &settings));
    eventually("the new replica owns its share", WAIT, || async {
        let mut owned = Vec::new();
        for relay in &relays {
            owned.push(lanes_owned(relay).await.unwrap_or(0.0));
        }
        owned.iter().sum::<f64>() == LANES as f64 && owned.iter().all(|&n| n == 21.0 || n == 22.0)
    })
    .await;
    println!(
        "lanes: a new replica owned its share {:.1} s after it started",
        joined_at.elapsed().as_secs_f64()
    );
    delivers(&db, 500, "with the new replica").await;

    // SIGTERM one: it stops gracefully, its lanes go to the last two.
    let mut stopped = relays.remove(0);
    assert!(stopped.terminate(WAIT).await.success());
    eventually("the last two own every lane", WAIT, || async {
        lanes_owned(&relays[0]).await == Some(32.0) && lanes_owned(&relays[1]).await == Some(32.0)
    })
    .await;
    delivers(&db, 500, "after the SIGTERM").await;

    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    let samples = watcher.await.expect("watcher");
    let committed = committed.load(Ordering::Relaxed);
    eventually("every committed event is delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(
        db.count("attempts > 0 OR dead_lettered_at IS NOT NULL")
            .await,
        0
    );
    let received = eventually_received(&rabbit, committed as usize).await;
    let by_key = first_arrivals_by_key(&received);
    let mut arrived = 0;
    for (key, seqs) in &by_key {
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(
            seqs, &expected,
            "key {key}: first arrivals out of order or missing"
        );
        arrived += seqs.len();
    }
    assert_eq!(arrived as u64, committed, "every committed event arrived");
    let client = connect(&db.url).await;
    let owners = lane_owners(&client).await;
    assert_eq!(owners.len(), LANES, "every lane is owned at the end");
    // Each relay's share is one unbroken run of lanes (what keeps its claims cheap): walking the
    // lanes in order, the owner changes exactly once per relay after the first.
    let changes = (1..LANES as i32)
        .filter(|lane| owners.get(lane) != owners.get(&(lane - 1)))
        .count();
    let relays = owners.values().collect::<HashSet<_>>().len();
    assert_eq!(
        changes + 1,
        relays,
        "each of the {relays} relays owns one run of lanes: {owners:?}"
    );
    assert_eq!(
        double_owned.load(Ordering::Relaxed),
        0,
        "no lane had two owners in {samples} samples"
    );
    println!(
        "lanes: {committed} events, {} messages (duplicates {}), {samples} lane-map samples",
        received.len(),
        received.len() - distinct_payloads(&received)
    );
}

/// Waits until `n` distinct payloads arrived.
async fn eventually_received(rabbit: &Rabbit, n: usize) -> Vec<Received> {
    eventually(&format!("{n} distinct messages"), WAIT, || async {
        distinct_payloads(&rabbit.received()) >= n
    })
    .await;
    rabbit.received()
}

/// A stdout relay that checks its share only when notified (every ten minutes otherwise), once
/// it owns every lane; and its settings.
async fn relay_owning_every_lane(db: &TestDb) -> (Relay, Vec<(&'static str, String)>) {
    let mut settings = fast_settings();
    settings.retain(|(name, _)| *name != "OUTBOX_LEADER_POLL_MS");
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings.push(("OUTBOX_LEADER_POLL_MS", "600000".into()));
    let relay = Relay::start(&db.url, &settings);
    eventually("the first relay owns every lane", WAIT, || async {
        lanes_owned(&relay).await == Some(LANES as f64)
    })
    .await;
    (relay, settings)
}

async fn halves_owned(first: &Relay, second: &Relay) {
    eventually("the two relays own 32 lanes each", WAIT, || async {
        lanes_owned(first).await == Some(32.0) && lanes_owned(second).await == Some(32.0)
    })
    .await;
}

/// Lanes change hands when a relay joins or stops gracefully, not at the next periodic check:
/// with checks ten minutes apart, only the relays' notifications can move the lanes in time.
#[tokio::test]
async fn a_joining_or_stopping_relay_moves_the_lanes_without_waiting_for_the_poll() {
    let db = TestDb::create().await;
    let (first, settings) = relay_owning_every_lane(&db).await;

    let mut second = Relay::start(&db.url, &settings);
    halves_owned(&first, &second).await;

    assert!(second.terminate(WAIT).await.success());
    eventually("the first relay owns every lane again", WAIT, || async {
        lanes_owned(&first).await == Some(LANES as f64)
    })
    .await;
    let client = connect(&db.url).await;
    assert_eq!(lane_owners(&client).await.len(), LANES);
}

/// A relay alone claims steadily with a statement prepared without the lane fence; once a second
/// relay takes half the lanes, its next steady claim must be fenced (prepared afresh). Else it
/// takes and marks nothing, while its cursor moves past its own lanes' events, which would wait
/// for the minute's rescan (`OUTBOX_LEADER_POLL_MS` is ten minutes here, and the deadline 20 s).
#[tokio::test]
async fn a_relay_that_gave_up_lanes_claims_its_own_lanes_at_once() {
    let db = TestDb::create().await;
    let (first, settings) = relay_owning_every_lane(&db).await;
    insert_keyed_sequence(&db.client, "lanes", KEYS, 0, 2, 1).await;
    eventually("the first relay claims steadily", WAIT, || async {
        let body = first.get("/metrics").await.map(|(_, body)| body);
        let steady = body.and_then(|b| {
            metric_sum(
                &b,
                "outbox_relay_db_query_duration_seconds_count",
                "claim_steady",
            )
        });
        steady.unwrap_or(0.0) > 0.0 && db.count("delivered_at IS NULL").await == 0
    })
    .await;

    let second = Relay::start(&db.url, &settings);
    halves_owned(&first, &second).await;
    insert_keyed_sequence(&db.client, "lanes", KEYS, 2, 4, 1).await;
    eventually(
        "every event of both relays' lanes delivered",
        Duration::from_secs(20),
        || async { db.count("delivered_at IS NULL").await == 0 },
    )
    .await;
}

/// The lanes whose locks the sessions of relay process `pid` hold.
/// Commits events of many keys (payload `k{key}:{n}`, ten per transaction) until `stop`, counting
/// them in `committed`.
fn produce_keyed(
    url: &str,
    stop: &Arc<AtomicBool>,
    committed: &Arc<AtomicU64>,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    let (stop, committed, url) = (stop.clone(), committed.clone(), url.to_string());
    tokio::spawn(async move {
        let client = connect(&url).await;
        let mut next = vec![0u64; KEYS];
        let mut rng = fastrand::Rng::with_seed(seed);
        while !stop.load(Ordering::Relaxed) {
            let mut sql = String::from("BEGIN;");
            for _ in 0..10 {
                let k = rng.usize(..KEYS);
                sql.push_str(&format!(
                    "INSERT INTO outbox.events (topic, key, payload) VALUES ('lanes', 'k{k}', 'k{k}:{}'::bytea);",
                    next[k]
                ));
                next[k] += 1;
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.expect("produce");
            committed.fetch_add(10, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// The lanes whose locks the sessions of relay process `pid` hold.
pub(crate) async fn lanes_of(client: &tokio_postgres::Client, pid: u32) -> Vec<i32> {
    client
        .query(
            "SELECT (l.classid::bigint * 4294967296 + l.objid::bigint - 7340020000)::int \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
               AND a.application_name LIKE $1 \
               AND l.classid::bigint * 4294967296 + l.objid::bigint BETWEEN 7340020000 AND 7340020063",
            &[&format!("outbox-relay % pid {pid}")],
        )
        .await
        .expect("lanes of a relay")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A relay frozen (SIGSTOP) with a batch in flight, its broker connection frozen too so that the
/// batch is certainly unacknowledged, its PostgreSQL sessions terminated: the others take its
/// lanes and deliver, including what it had in flight. Then its held publishes reach the broker
/// and it resumes (SIGCONT). First arrivals keep per-key order, and the only messages that
/// arrive twice are events of its lanes that were not recorded delivered when it froze (its
/// batch in flight and the one before it, whose record may be pending), at most two batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_relay_whose_session_ended_keeps_no_lane_and_breaks_no_key_order() {
    const BATCH: i64 = 50;
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_BATCH_SIZE", BATCH.to_string()));
    let mut frozen_settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
    frozen_settings.push(("OUTBOX_BATCH_SIZE", BATCH.to_string()));
    let frozen = Relay::start(&db.url, &frozen_settings);
    let others = [
        Relay::start(&db.url, &settings),
        Relay::start(&db.url, &settings),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let producer = produce_keyed(&db.url, &stop, &committed, 11);
    eventually("three relays own their shares", WAIT, || async {
        let mut owned = vec![lanes_owned(&frozen).await.unwrap_or(0.0)];
        for relay in &others {
            owned.push(lanes_owned(relay).await.unwrap_or(0.0));
        }
        owned.iter().sum::<f64>() == LANES as f64 && owned.iter().all(|&n| n == 21.0 || n == 22.0)
    })
    .await;
    delivers(&db, 300, "by three relays").await;

    // Its publishes stop reaching RabbitMQ: once it sent more than a heartbeat frame (8 bytes),
    // a batch is in flight, unacknowledged.
    proxy.freeze();
    eventually("a batch held in flight", WAIT, || async {
        proxy.held_bytes() > 8
    })
    .await;
    signal(frozen.pid, "STOP");
    let held = proxy.held_bytes();
    let client = connect(&db.url).await;
    let its_lanes = lanes_of(&client, frozen.pid).await;
    assert!(!its_lanes.is_empty(), "the frozen relay held lanes");
    // What it may have in flight: its lanes' events not recorded delivered at this moment.
    let unrecorded: HashSet<String> = client
        .query(
            "SELECT convert_from(payload, 'UTF8') FROM outbox.events \
             WHERE delivered_at IS NULL AND outbox.lane_of(key, id) = ANY($1)",
            &[&its_lanes],
        )
        .await
        .expect("unrecorded events of its lanes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let last_before: i64 = client
        .query_one("SELECT coalesce(max(id), 0) FROM outbox.events", &[])
        .await
        .expect("last id")
        .get(0);
    let terminated: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE $1",
            &[&format!("outbox-relay % pid {}", frozen.pid)],
        )
        .await
        .expect("terminate the frozen relay's sessions")
        .get(0);
    assert!(terminated >= 1, "its session was terminated");

    eventually("the other two own every lane", WAIT, || async {
        lanes_owned(&others[0]).await == Some(32.0) && lanes_owned(&others[1]).await == Some(32.0)
    })
    .await;
    eventually(
        "everything written before the freeze is delivered by the others",
        WAIT,
        || async {
            db.count(&format!("id <= {last_before} AND delivered_at IS NULL"))
                .await
                == 0
        },
    )
    .await;
    delivers(&db, 300, "by the other two").await;

    // Its held publishes reach RabbitMQ, and it wakes up.
    proxy.restore();
    signal(frozen.pid, "CONT");
    eventually("the resumed relay owns a share again", WAIT, || async {
        lanes_owned(&frozen)
            .await
            .is_some_and(|n| n == 21.0 || n == 22.0)
    })
    .await;
    delivers(&db, 300, "by three relays again").await;

    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    let committed = committed.load(Ordering::Relaxed);
    eventually("every committed event is delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let received = eventually_received(&rabbit, committed as usize).await;
    for (key, seqs) in first_arrivals_by_key(&received) {
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "key {key}: first arrivals out of order or missing"
        );
    }
    let mut seen = HashSet::new();
    let twice: HashSet<String> = received
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .filter(|p| !seen.insert(p.clone()))
        .collect();
    assert!(
        !twice.is_empty(),
        "the frozen relay's held batch reached RabbitMQ after the others had delivered it"
    );
    let beyond: Vec<&String> = twice.difference(&unrecorded).collect();
    assert!(
        beyond.is_empty(),
        "only what the frozen relay had not recorded arrives twice; also: {beyond:?}"
    );
    assert!(
        twice.len() as i64 <= 2 * BATCH,
        "at most its batch in flight and the one before: {} arrived twice",
        twice.len()
    );
    println!(
        "lanes: frozen relay with {} lanes and {held}+ bytes held; {committed} events, {} arrived twice",
        its_lanes.len(),
        twice.len()
    );
}
