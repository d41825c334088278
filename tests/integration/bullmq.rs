//! The bullmq sink end to end, read by a real BullMQ worker (the pinned `bullmq` npm package):
//! job id, name and data, per-key order, the prefix and queue template, job options, a relay
//! SIGKILLed mid-stream, a replay after a lost reply (also with `removeOnComplete`), a Redis
//! outage and a payload that is not JSON. Against the Redis on 127.0.0.1:6379 (`TEST_REDIS_URL`)
//! and a private `redis-server`; each test has its own prefix.

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Inserts JSON string payloads `"k{key}:{seq}"` (key `k{key}`) for seq in `from..to`, `per_tx`
/// sequence numbers per transaction.
async fn insert_json_sequence(
    client: &Client,
    topic: &str,
    keys: usize,
    from: u64,
    to: u64,
    per_tx: u64,
) {
    insert_sequence(client, topic, keys, from..to, per_tx, |k, s| {
        format!("\"k{k}:{s}\"")
    })
    .await;
}

/// Adds a last job (topic `t`, no key) and waits until the worker processed it: the worker takes
/// jobs in order, one at a time, so every job added before it has been processed too.
async fn processed_up_to_a_last_job(db: &TestDb, worker: &BullmqWorker) -> Vec<Received> {
    db.insert("t", None, b"\"last\"", "{}").await;
    eventually("the last job processed", WAIT, || async {
        worker.received().iter().any(|m| m.payload == b"last")
    })
    .await;
    worker
        .received()
        .into_iter()
        .filter(|m| m.payload != b"last")
        .collect()
}

/// Every job's id is its event's message id, once.
async fn assert_ids_are_the_message_ids(db: &TestDb, jobs: &[Received]) {
    let ids: HashSet<String> = jobs.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), jobs.len(), "a job processed twice");
    let message_ids: HashSet<String> = db.message_ids().await.into_values().collect();
    assert!(ids.is_subset(&message_ids), "job ids are message ids");
}

#[tokio::test]
async fn jobs_carry_the_message_id_the_name_the_data_and_options_in_key_order() {
    let prefix = unique("bq");
    let worker = BullmqWorker::start(&redis_url(), &prefix, &["jobs-t", "jobs-u"])
        .await
        .expect("BullMQ worker");
    let db = TestDb::create().await;
    let mut settings = bullmq_settings(&redis_url(), &prefix, "jobs-{topic}");
    settings.push((
        "OUTBOX_BULLMQ_JOB_OPTIONS",
        r#"{"attempts":3,"backoff":{"type":"fixed","delay":10}}"#.into(),
    ));
    let relay = Relay::start(&db.url, &settings);
    let named = db
        .insert(
            "u",
            Some("x"),
            br#"{"order":7,"paid":true}"#,
            r#"{"type":"order.paid"}"#,
        )
        .await;
    let unnamed = db.insert("u", None, b"[1,2]", r#"{"tenant":"a"}"#).await;
    insert_json_sequence(&db.client, "t", 3, 0, 20, 5).await;
    worker.wait_for(62, WAIT).await;
    let jobs = worker.received();
    let ids = db.message_ids().await;
    let job = |id: i64| {
        jobs.iter()
            .find(|m| m.message_id == ids[&id])
            .unwrap_or_else(|| panic!("no job with the message id of event {id}"))
            .clone()
    };
    let paid = job(named);
    assert_eq!(
        (paid.destination.as_str(), paid.header("name")),
        ("jobs-u", Some("order.paid"))
    );
    let data: serde_json::Value = serde_json::from_slice(&paid.payload).expect("JSON data");
    assert_eq!(data, serde_json::json!({"order": 7, "paid": true}));
    let opts: serde_json::Value =
        serde_json::from_str(paid.header("opts").expect("opts")).expect("opts");
    assert_eq!(opts["attempts"], 3, "{opts}");
    assert_eq!(opts["backoff"]["type"], "fixed", "{opts}");
    let other = job(unnamed);
    assert_eq!(
        other.header("name"),
        Some("u"),
        "without a type header the topic names the job"
    );
    assert_eq!(other.payload, b"[1,2]");
    let sequence: Vec<Received> = jobs
        .into_iter()
        .filter(|m| m.destination == "jobs-t")
        .collect();
    assert_exactly_once_in_order(&sequence, 3, 20);
    assert_ids_are_the_message_ids(&db, &sequence).await;
    // The keys are the prefix's: BullMQ's meta of the queue, written as its clients do.
    let mut con = redis_client(&redis_url()).await;
    let exists: i64 = redis_query(
        &mut con,
        redis::cmd("EXISTS").arg(format!("{prefix}:jobs-t:meta")),
    )
    .await;
    assert_eq!(exists, 1);
    assert!(!relay.stderr().contains("panicked"), "{}", relay.stderr());
}

#[tokio::test]
async fn a_relay_killed_mid_stream_adds_every_job_exactly_once() {
    const KEYS: usize = 4;
    const PER_KEY: u64 = 500;
    let prefix = unique("bqkill");
    let worker = BullmqWorker::start(&redis_url(), &prefix, &["t"])
        .await
        .expect("BullMQ worker");
    let db = TestDb::create().await;
    let mut settings = bullmq_settings(&redis_url(), &prefix, "{topic}");
    settings.push(("OUTBOX_BATCH_SIZE", "500".into()));
    insert_json_sequence(&db.client, "t", KEYS, 0, PER_KEY, 100).await;
    let total = KEYS * PER_KEY as usize;

    let mut first = Relay::start(&db.url, &settings);
    eventually("the first relay added some jobs", WAIT, || async {
        worker.count() >= 300
    })
    .await;
    first.kill();
    let marked = db.count("delivered_at IS NOT NULL").await as usize;
    assert!(
        marked < total,
        "killed mid-stream: {marked} of {total} marked"
    );
    println!(
        "bullmq sigkill: {} jobs processed, {marked} marked delivered when killed",
        worker.count()
    );

    let _second = Relay::start(&db.url, &settings);
    eventually("everything delivered after the restart", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let jobs = processed_up_to_a_last_job(&db, &worker).await;
    assert_exactly_once_in_order(&jobs, KEYS, PER_KEY);
    assert_ids_are_the_message_ids(&db, &jobs).await;
}

/// Events delivered, their delivery forgotten (as after a reply lost before the mark), relayed
/// again by a new relay: no second job, while BullMQ keeps the job or its deduplication holds.
async fn a_replay_adds_no_second_job(job_options: &str) {
    let prefix = unique("bqreplay");
    let worker = BullmqWorker::start(&redis_url(), &prefix, &["t"])
        .await
        .expect("BullMQ worker");
    let db = TestDb::create().await;
    let mut settings = bullmq_settings(&redis_url(), &prefix, "{topic}");
    settings.push(("OUTBOX_BULLMQ_JOB_OPTIONS", job_options.into()));
    let mut relay = Relay::start(&db.url, &settings);
    insert_json_sequence(&db.client, "t", 3, 0, 10, 10).await;
    worker.wait_for(30, WAIT).await;
    relay.kill();
    db.client
        .execute(
            "UPDATE outbox.events SET delivered_at = NULL, available_at = now()",
            &[],
        )
        .await
        .expect("forget the deliveries");
    let _again = Relay::start(&db.url, &settings);
    eventually("relayed again", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let jobs = processed_up_to_a_last_job(&db, &worker).await;
    assert_exactly_once_in_order(&jobs, 3, 10);
}

#[tokio::test]
async fn a_replay_after_a_lost_reply_adds_no_second_job() {
    a_replay_adds_no_second_job("{}").await;
}

#[tokio::test]
async fn a_replay_adds_no_second_job_also_when_jobs_are_removed_on_completion() {
    a_replay_adds_no_second_job(r#"{"removeOnComplete":true}"#).await;
}

#[tokio::test]
async fn a_redis_outage_uses_no_attempts_and_loses_nothing() {
    // Persisted with every write, so that what was added before the SIGKILL is still there.
    let mut redis = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let prefix = unique("bqout");
    let worker = BullmqWorker::start(&redis.url(), &prefix, &["t"])
        .await
        .expect("BullMQ worker");
    let db = TestDb::create().await;
    let mut settings = bullmq_settings(&redis.url(), &prefix, "{topic}");
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);
    wait_ready(&relay, 200, WAIT).await;
    insert_json_sequence(&db.client, "t", 3, 0, 30, 10).await;
    eventually("first events delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    redis.kill();
    insert_json_sequence(&db.client, "t", 3, 30, 60, 5).await;
    wait_ready(&relay, 503, WAIT).await;
    eventually("the relay counts the outage", WAIT, || async {
        relay.outages().await > 0.0
    })
    .await;
    assert!(db.undelivered().await > 0, "nothing delivered while down");

    redis.restart().await;
    assert_delivered_without_attempts(&db, WAIT).await;
    wait_ready(&relay, 200, WAIT).await;
    eventually("every job processed", WAIT, || async {
        distinct_payloads(&worker.received()) >= 180
    })
    .await;
    // The worker may process a job that was active when Redis died again later (BullMQ's stalled
    // jobs): the order to check is the order of the adds, from the queue's events stream.
    let mut con = redis_client(&redis.url()).await;
    let added = jobs_in_add_order(&mut con, &prefix, "t", &worker.received()).await;
    assert_exactly_once_in_order(&added, 3, 60);
}

/// The jobs the worker processed, once each, in the order they were added to `queue` (the
/// "added" entries of BullMQ's events stream).
async fn jobs_in_add_order(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    queue: &str,
    processed: &[Received],
) -> Vec<Received> {
    let stream = format!("{prefix}:{queue}:events");
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis_query(con, redis::cmd("XRANGE").arg(&stream).arg("-").arg("+")).await;
    entries
        .into_iter()
        .filter(|(_, fields)| fields.contains(&("event".into(), "added".into())))
        .filter_map(|(_, fields)| {
            let id = fields.into_iter().find(|(name, _)| name == "jobId")?.1;
            processed.iter().find(|m| m.message_id == id).cloned()
        })
        .collect()
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_dead_lettered_and_its_key_continues() {
    let prefix = unique("bqjson");
    let worker = BullmqWorker::start(&redis_url(), &prefix, &["t"])
        .await
        .expect("BullMQ worker");
    let db = TestDb::create().await;
    let mut settings = bullmq_settings(&redis_url(), &prefix, "{topic}");
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let _relay = Relay::start(&db.url, &settings);
    db.insert("t", Some("a"), b"\"a:0\"", "{}").await;
    let bad = db.insert("t", Some("a"), b"not json", "{}").await;
    db.insert("t", Some("a"), b"\"a:2\"", "{}").await;
    eventually("settled", WAIT, || async { db.undelivered().await == 0 }).await;
    let reason = db.dead_letter_reason(bad).await.expect("dead-lettered");
    assert!(reason.contains("not JSON"), "{reason}");
    let jobs = processed_up_to_a_last_job(&db, &worker).await;
    let payloads: Vec<&[u8]> = jobs.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [b"a:0".as_slice(), b"a:2".as_slice()],
        "the key continues in order"
    );
}
