//! The fault-injection run shared by the RabbitMQ and Kafka chaos tests: while a producer commits
//! events continuously, relays are SIGKILLed, their broker connections cut through a proxy, and
//! their PostgreSQL sessions terminated, at pseudo-random moments (seeded; `CHAOS_SEED` replays a
//! schedule). Then [`check`] proves that every committed event arrived at least once, first
//! arrivals keep per-key order, every copy carries the event's message id, and no fault used up
//! an attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

const KEYS: usize = 6;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL a relay (the active one when known), then run one or (mostly) two relays.
    Kill,
    /// Cut every broker connection through the proxy for a moment.
    BrokerCut,
    /// `pg_terminate_backend` the relays' PostgreSQL sessions.
    DbTerminate,
}

/// What a chaos run did.
pub struct ChaosRun {
    pub seed: u64,
    pub committed: u64,
    /// The relays still running: keep them until the events were checked.
    relays: Vec<Relay>,
    kills: u32,
    cuts: u32,
    terminations: u32,
    terminated: i64,
    /// Per kill of an active relay while another ran: how long until the relays owned every lane
    /// again.
    failovers: Vec<Duration>,
    took: Duration,
}

/// A failover's bound: the survivor finds the lanes free at its next check
/// (`OUTBOX_LEADER_POLL_MS`, 200 ms here) and the relay started in the victim's place takes its
/// share once it runs (~0.4 s), with reconnects after the other faults and the machine under
/// chaos load on top.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);
const LANES: f64 = 64.0;

/// Waits until the relays own every lane between them.
async fn every_lane_owned(relays: &[Relay]) {
    eventually("the relays own every lane again", WAIT, || async {
        let mut owned = 0.0;
        for relay in relays {
            owned += relay
                .metric("outbox_relay_lanes_owned")
                .await
                .unwrap_or(0.0);
        }
        owned == LANES
    })
    .await;
}

/// The seed of this run: `CHAOS_SEED`, or a random one (printed, to replay a failure).
pub fn seed() -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("chaos: seed={seed} (CHAOS_SEED={seed} replays this fault schedule)");
    seed
}

/// Commits 1 to 5 events of random keys per transaction until `stop`; returns how many. `topic`
/// may hold `{k}`, replaced by the key's number.
async fn produce(url: String, topic: String, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    // Commits stay atomic and visible; only their fsync is deferred (PostgreSQL is never crashed
    // here), so that the producer is not bound by the disk of a busy test machine.
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .expect("producer session");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = [0u64; KEYS];
    let mut committed = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut sql = String::from("BEGIN;");
        let events = rng.u64(1..=5);
        for _ in 0..events {
            let k = rng.usize(..KEYS);
            let topic = topic.replace("{k}", &k.to_string());
            sql.push_str(&format!(
                "INSERT INTO outbox.events (topic, key, payload) VALUES ('{topic}', 'k{k}', 'k{k}:{}'::bytea);",
                next[k]
            ));
            next[k] += 1;
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("producer insert");
        committed += events;
        tokio::time::sleep(Duration::from_millis(rng.u64(1..10))).await;
    }
    committed
}

/// The relay that reports itself active, if any answers.
async fn active(relays: &[Relay]) -> Option<usize> {
    for (i, relay) in relays.iter().enumerate() {
        if relay.metric("outbox_relay_leader").await == Some(1.0) {
            return Some(i);
        }
    }
    None
}

/// SIGKILLs the active relay (a random one when none answers), then runs one or (mostly) two;
/// when it was a failover (another relay was running), how long until every lane was owned again.
async fn kill_one(
    relays: &mut Vec<Relay>,
    rng: &mut fastrand::Rng,
    db: &TestDb,
    settings: &[(&'static str, String)],
) -> Option<Duration> {
    let (victim, failover) = match active(relays).await {
        Some(i) => (i, relays.len() > 1),
        None => (rng.usize(..relays.len()), false),
    };
    let killed = Instant::now();
    relays.swap_remove(victim).kill();
    // Mostly two, so that the next kill of the active relay is a failover.
    let wanted = if rng.u8(..3) == 0 { 1 } else { 2 };
    while relays.len() < wanted {
        relays.push(Relay::start(&db.url, settings));
    }
    match failover {
        true => {
            every_lane_owned(relays).await;
            Some(killed.elapsed())
        }
        false => None,
    }
}

/// Produces events to `topic` and injects faults for `duration`, with two relays configured by
/// `settings` whose broker connections go through `proxy`.
pub async fn run(
    db: &TestDb,
    settings: &[(&'static str, String)],
    proxy: &Proxy,
    topic: &str,
    seed: u64,
    duration: Duration,
) -> ChaosRun {
    let mut rng = fastrand::Rng::with_seed(seed);
    let database = database_name(&db.url).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        db.url.clone(),
        topic.to_string(),
        seed.wrapping_add(1),
        stop.clone(),
    ));
    let mut relays = vec![
        Relay::start(&db.url, settings),
        Relay::start(&db.url, settings),
    ];
    let (mut kills, mut cuts, mut terminations, mut terminated) = (0u32, 0u32, 0u32, 0i64);
    // Kills of the active relay while another was running.
    let mut failovers = Vec::new();
    let mut deck: Vec<Fault> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        // Every kind comes up once per round of three, in a shuffled order.
        if deck.is_empty() {
            deck = vec![Fault::Kill, Fault::BrokerCut, Fault::DbTerminate];
            rng.shuffle(&mut deck);
        }
        let fault = deck.pop().expect("a fault");
        match fault {
            Fault::Kill => {
                failovers.extend(kill_one(&mut relays, &mut rng, db, settings).await);
                kills += 1;
            }
            Fault::BrokerCut => {
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(rng.u64(100..1500))).await;
                proxy.restore();
                cuts += 1;
            }
            Fault::DbTerminate => {
                terminated += terminate_relay_backends(&db.client, &database).await;
                terminations += 1;
            }
        }
        println!(
            "chaos: {:>5} ms {fault:?}, {} relay(s), {} delivered",
            started.elapsed().as_millis(),
            relays.len(),
            db.count("delivered_at IS NOT NULL").await
        );
    }
    stop.store(true, Ordering::Relaxed);
    let committed = producer.await.expect("producer");
    ChaosRun {
        seed,
        committed,
        relays,
        kills,
        cuts,
        terminations,
        terminated,
        failovers,
        took: started.elapsed(),
    }
}

/// Every message is a committed event's, and every copy carries that event's message id.
fn assert_message_ids(
    received: &[Received],
    message_ids: &HashMap<Vec<u8>, String>,
    context: &str,
) {
    for message in received {
        let expected = message_ids.get(&message.payload).unwrap_or_else(|| {
            panic!(
                "{:?} arrived but was never committed ({context})",
                String::from_utf8_lossy(&message.payload)
            )
        });
        assert_eq!(
            &message.message_id,
            expected,
            "every copy of {:?} carries the event's message id ({context})",
            String::from_utf8_lossy(&message.payload)
        );
    }
}

/// Waits until every committed event was delivered and arrived (`received` reads what a consumer
/// got so far, in arrival order), then checks the guarantees and prints what the run saw.
pub async fn check(db: &TestDb, run: &ChaosRun, received: impl Fn() -> Vec<Received>) {
    let context = format!("seed={}", run.seed);
    eventually(
        &format!("every committed event delivered ({context})"),
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    let rows = db
        .client
        .query(
            "SELECT payload, message_id::text, dead_lettered_at IS NOT NULL, attempts
             FROM outbox.events",
            &[],
        )
        .await
        .expect("events");
    assert_eq!(
        rows.len() as u64,
        run.committed,
        "every committed event is in the table ({context})"
    );
    let mut message_ids: HashMap<Vec<u8>, String> = HashMap::new();
    for row in &rows {
        let payload: Vec<u8> = row.get(0);
        assert!(
            !row.get::<_, bool>(2) && row.get::<_, i32>(3) == 0,
            "{:?}: faults are outages, they use no attempt and dead-letter nothing ({context})",
            String::from_utf8_lossy(&payload)
        );
        message_ids.insert(payload, row.get(1));
    }
    eventually(
        &format!("every committed event arrived ({context})"),
        WAIT,
        || async { distinct_payloads(&received()) >= message_ids.len() },
    )
    .await;

    let received = received();
    assert_message_ids(&received, &message_ids, &context);
    assert_eq!(distinct_payloads(&received), message_ids.len());
    let mut per_key: HashMap<String, u64> = HashMap::new();
    for payload in message_ids.keys() {
        let text = String::from_utf8_lossy(payload);
        let key = text.split_once(':').expect("key:seq").0;
        *per_key.entry(key.to_string()).or_default() += 1;
    }
    for (key, seqs) in first_arrivals_by_key(&received) {
        let expected: Vec<u64> = (0..per_key[&key]).collect();
        assert!(
            seqs == expected,
            "key {key}: first arrivals out of order ({context}): {seqs:?}"
        );
    }
    assert!(run.kills > 0 && run.cuts > 0 && run.terminations > 0);
    assert!(
        !run.failovers.is_empty(),
        "an active relay was killed while another ran ({context})"
    );
    let slowest = run.failovers.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < FAILOVER_BOUND,
        "every lane owned again within {FAILOVER_BOUND:?} of each failover, slowest {slowest:?} ({context})"
    );
    assert!(
        run.terminated > 0,
        "some PostgreSQL sessions were terminated ({context})"
    );
    println!(
        "chaos: {context}, events={}, faults={} (kills={}, broker cuts={}, db terminations={}), \
         duplicates={}; failovers={} (lanes owned again after at most {:.2} s), backends \
         terminated={}, relays at the end={}, took {:.1} s",
        run.committed,
        run.kills + run.cuts + run.terminations,
        run.kills,
        run.cuts,
        run.terminations,
        received.len() - message_ids.len(),
        run.failovers.len(),
        slowest.as_secs_f64(),
        run.terminated,
        run.relays.len(),
        run.took.as_secs_f64()
    );
}
