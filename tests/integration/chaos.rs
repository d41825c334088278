//! Fault injection: while a producer commits events continuously, the relays are SIGKILLed, their
//! RabbitMQ connections cut, and their PostgreSQL sessions terminated, at pseudo-random moments
//! (seeded; set `CHAOS_SEED` to replay a schedule). Afterwards every committed event arrived at
//! least once, first arrivals keep per-key order, every copy carries the event's message id, and
//! no fault used up an attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// How long faults are injected while events are produced.
const CHAOS: Duration = Duration::from_secs(25);
const KEYS: usize = 6;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL a relay (the active one when known), then run one or (mostly) two relays.
    Kill,
    /// Cut every RabbitMQ connection through the proxy for a moment.
    BrokerCut,
    /// `pg_terminate_backend` the relays' PostgreSQL sessions.
    DbTerminate,
}

/// Commits 1 to 5 events of random keys per transaction until `stop`; returns how many.
async fn produce(url: String, seed: u64, stop: Arc<AtomicBool>) -> u64 {
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
            sql.push_str(&format!(
                "INSERT INTO outbox.events (topic, key, payload) VALUES ('chaos.k{k}', 'k{k}', 'k{k}:{}'::bytea);",
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

// Two worker threads, so the producer keeps committing while a fault is being injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_broker_cuts_and_db_terminations_every_event_arrives_in_key_order() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("chaos: seed={seed} (CHAOS_SEED={seed} replays this fault schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let db = TestDb::create().await;
    let database = database_name(&db.url).to_string();
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
    settings.push(("OUTBOX_BATCH_SIZE", "100".into()));

    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(db.url.clone(), seed.wrapping_add(1), stop.clone()));
    let mut relays = vec![
        Relay::start(&db.url, &settings),
        Relay::start(&db.url, &settings),
    ];

    let (mut kills, mut cuts, mut terminations, mut terminated) = (0u32, 0u32, 0u32, 0i64);
    // Kills of the active relay while a standby was running.
    let mut failovers = 0u32;
    let mut deck: Vec<Fault> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        // Every kind comes up once per round of three, in a shuffled order.
        if deck.is_empty() {
            deck = vec![Fault::Kill, Fault::BrokerCut, Fault::DbTerminate];
            rng.shuffle(&mut deck);
        }
        let fault = deck.pop().expect("a fault");
        match fault {
            Fault::Kill => {
                let victim = match active(&relays).await {
                    Some(i) => {
                        if relays.len() > 1 {
                            failovers += 1;
                        }
                        i
                    }
                    None => rng.usize(..relays.len()),
                };
                relays.swap_remove(victim).kill();
                // Mostly two, so that the next kill of the active relay is a failover.
                let wanted = if rng.u8(..3) == 0 { 1 } else { 2 };
                while relays.len() < wanted {
                    relays.push(Relay::start(&db.url, &settings));
                }
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

    let context = format!("seed={seed}");
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
        committed,
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
        || async { distinct_payloads(&rabbit.received()) >= message_ids.len() },
    )
    .await;

    let received = rabbit.received();
    for message in &received {
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
    assert!(kills > 0 && cuts > 0 && terminations > 0);
    assert!(
        terminated > 0,
        "some PostgreSQL sessions were terminated ({context})"
    );
    println!(
        "chaos: seed={seed}, events={committed}, faults={} (kills={kills}, broker cuts={cuts}, \
         db terminations={terminations}), duplicates={}; failovers={failovers}, \
         backends terminated={terminated}, took {:.1} s",
        kills + cuts + terminations,
        received.len() - message_ids.len(),
        started.elapsed().as_secs_f64()
    );
}
