//! SIGTERM with a batch in flight, against a webhook receiver that holds every POST: a slow
//! receiver's answers are waited for and recorded before the relay exits 0 (a restart sends
//! nothing twice); a receiver that never answers is given up after
//! `OUTBOX_SHUTDOWN_TIMEOUT_SECS`, with nothing recorded that it did not acknowledge (a restart
//! sends again at most the events that were in flight).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
/// One batch, all of it in flight at once.
const BATCH: usize = 8;
const EVENTS: usize = 20;
/// What process exit adds to the shutdown timeout: the runtime's 100 ms bound for blocking work,
/// and a loaded test machine.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

fn settings(receiver: &Receiver, shutdown_timeout_secs: u64) -> Vec<(&'static str, String)> {
    let mut settings = http_settings(&receiver.url("/hook"));
    settings.retain(|(name, _)| *name != "OUTBOX_SHUTDOWN_TIMEOUT_SECS");
    settings.push((
        "OUTBOX_SHUTDOWN_TIMEOUT_SECS",
        shutdown_timeout_secs.to_string(),
    ));
    settings.push(("OUTBOX_BATCH_SIZE", BATCH.to_string()));
    settings.push(("OUTBOX_WEBHOOK_CONCURRENCY", BATCH.to_string()));
    // The relay's own request timeout must not end a held POST first.
    settings.push(("OUTBOX_WEBHOOK_TIMEOUT_MS", "120000".into()));
    settings
}

/// `EVENTS` events, two of each of ten keys, in one transaction: the first batch is one wave of
/// eight keys (a key's events go one request at a time), all of it in flight at once.
async fn insert_events(db: &TestDb) {
    insert_keyed_sequence(&db.client, "orders", EVENTS / 2, 0, 2, 2).await;
}

/// The message ids of the events marked delivered.
async fn recorded(db: &TestDb) -> HashSet<String> {
    db.client
        .query(
            "SELECT message_id::text FROM outbox.events WHERE delivered_at IS NOT NULL",
            &[],
        )
        .await
        .expect("delivered events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many times each id arrived.
fn arrivals_by_id(arrivals: &[String]) -> HashMap<&str, usize> {
    let mut by_id = HashMap::new();
    for id in arrivals {
        *by_id.entry(id.as_str()).or_default() += 1;
    }
    by_id
}

/// SIGTERM once the first batch's POSTs all arrived; how long the exit took.
async fn terminate_in_flight(relay: &mut Relay, receiver: &Receiver) -> (Duration, bool) {
    eventually("the first batch's POSTs are in flight", WAIT, || async {
        receiver.arrivals().len() >= BATCH
    })
    .await;
    assert!(
        receiver.accepted().is_empty(),
        "nothing was answered before SIGTERM"
    );
    let signalled = Instant::now();
    let status = relay.terminate(WAIT).await;
    (signalled.elapsed(), status.success())
}

/// Restarts the relay against a receiver that answers at once; every event arrives.
async fn restart(db: &TestDb, receiver: &Receiver, settings: &[(&'static str, String)]) {
    receiver.delay(Duration::ZERO);
    let mut relay = Relay::start(&db.url, settings);
    eventually("every event delivered after the restart", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    relay.stop().await.expect("the second relay stops");
    let ids: HashSet<String> = db.message_ids().await.into_values().collect();
    let arrived: HashSet<String> = receiver.arrivals().into_iter().collect();
    assert_eq!(arrived, ids, "every event arrived");
}

#[tokio::test]
async fn sigterm_waits_for_a_slow_receiver_records_its_answers_and_a_restart_sends_nothing_twice() {
    let timeout_secs = 6;
    let db = TestDb::create().await;
    let receiver = Receiver::start(always(200)).await;
    // Well inside the shutdown timeout, and long enough to send SIGTERM mid-batch on a busy
    // machine.
    receiver.delay(Duration::from_millis(2500));
    let settings = settings(&receiver, timeout_secs);
    let mut relay = Relay::start(&db.url, &settings);
    insert_events(&db).await;

    let (took, success) = terminate_in_flight(&mut relay, &receiver).await;
    let bound = Duration::from_secs(timeout_secs) + EXIT_MARGIN;
    assert!(
        success,
        "exit 0 after finishing the batch:\n{}",
        relay.stderr_tail()
    );
    assert!(
        took < bound,
        "exited {took:?} after SIGTERM, bound {bound:?}"
    );
    // The batch in flight was finished: every POST that arrived was answered, and recorded.
    let arrived: HashSet<String> = receiver.arrivals().into_iter().collect();
    let answered: HashSet<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        answered, arrived,
        "every POST in flight at SIGTERM was waited for"
    );
    assert_eq!(
        recorded(&db).await,
        answered,
        "what was answered, and only that, is recorded delivered"
    );
    println!(
        "shutdown: exited {:.2} s after SIGTERM with {} POSTs answered",
        took.as_secs_f64(),
        answered.len()
    );

    restart(&db, &receiver, &settings).await;
    let arrivals = receiver.arrivals();
    let twice: Vec<_> = arrivals_by_id(&arrivals)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "nothing answered is sent again: {twice:?}"
    );
}

#[tokio::test]
async fn sigterm_gives_up_a_receiver_that_never_answers_within_the_timeout_recording_nothing() {
    let timeout_secs = 2;
    let db = TestDb::create().await;
    let receiver = Receiver::start(always(200)).await;
    // Never, within the test.
    receiver.delay(Duration::from_secs(3600));
    let settings = settings(&receiver, timeout_secs);
    let mut relay = Relay::start(&db.url, &settings);
    insert_events(&db).await;

    let (took, success) = terminate_in_flight(&mut relay, &receiver).await;
    let bound = Duration::from_secs(timeout_secs) + EXIT_MARGIN;
    assert!(
        took < bound,
        "exited {took:?} after SIGTERM, bound {bound:?}:\n{}",
        relay.stderr_tail()
    );
    assert!(success, "exit 0:\n{}", relay.stderr_tail());
    assert!(
        relay
            .stderr()
            .contains("did not finish within OUTBOX_SHUTDOWN_TIMEOUT_SECS"),
        "says why it gave up:\n{}",
        relay.stderr_tail()
    );
    assert!(
        recorded(&db).await.is_empty(),
        "nothing was acknowledged, so nothing is recorded delivered"
    );
    let in_flight: HashSet<String> = receiver.arrivals().into_iter().collect();
    println!(
        "shutdown: gave up {} POSTs in flight, exited {:.2} s after SIGTERM",
        in_flight.len(),
        took.as_secs_f64()
    );

    restart(&db, &receiver, &settings).await;
    let arrivals = receiver.arrivals();
    let twice: HashSet<String> = arrivals_by_id(&arrivals)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(
        twice.is_subset(&in_flight),
        "only the events in flight are sent again: {twice:?}"
    );
    assert!(
        twice
            .iter()
            .all(|id| arrivals_by_id(&arrivals)[id.as_str()] == 2),
        "and only once more"
    );
}
