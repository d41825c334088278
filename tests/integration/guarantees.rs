//! The delivery guarantees one at a time, on real PostgreSQL and RabbitMQ: scheduled delivery,
//! retries that wait for `available_at`, a refused event never overtaken by its key, retention,
//! repairing a dead letter, a PostgreSQL outage.

use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Position of the first message with `payload`, if it arrived.
fn first_position(received: &[Received], payload: &[u8]) -> Option<usize> {
    received.iter().position(|m| m.payload == payload)
}

/// Runs a multi-row `INSERT ... RETURNING id, payload`; the ids in the order of `payloads`.
async fn insert_returning(db: &TestDb, sql: &str, payloads: &[&str]) -> Vec<i64> {
    let rows = db.client.query(sql, &[]).await.expect("insert");
    let by_payload: std::collections::HashMap<Vec<u8>, i64> =
        rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    payloads.iter().map(|p| by_payload[p.as_bytes()]).collect()
}

/// `SELECT extract(epoch FROM <column>)::float8 FROM outbox.events WHERE id = <id>`.
async fn epoch(db: &TestDb, column: &str, id: i64) -> Option<f64> {
    db.client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM {column})::float8 FROM outbox.events WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .expect("read timestamp")
        .get(0)
}

#[tokio::test]
async fn a_scheduled_event_is_not_published_before_its_time_and_holds_back_only_its_key() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let relay = Relay::start(&db.url, &rabbitmq_settings(&rabbit.exchange, &amqp_url()));
    wait_ready(&relay, 200, WAIT).await;

    // One transaction: the scheduled event, a later event of its key, and an event of another key.
    let ids = insert_returning(
        &db,
        "INSERT INTO outbox.events (topic, key, payload, available_at) VALUES
             ('orders', 's', 's:0', now() + interval '2 seconds'),
             ('orders', 's', 's:1', now()),
             ('orders', 'o', 'o:0', now())
         RETURNING id, payload",
        &["s:0", "s:1", "o:0"],
    )
    .await;
    let inserted = Instant::now();
    let (scheduled, later, other) = (ids[0], ids[1], ids[2]);
    assert!(scheduled < later, "s:0 comes first in its key's order");

    // Let about a second pass since the insert; the proof is the check below, made while
    // PostgreSQL's clock (the one the relay schedules by) is still before `available_at`.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(inserted.elapsed())).await;
    let received = rabbit.received();
    let row = db
        .client
        .query_one(
            "SELECT extract(epoch FROM now() - created_at)::float8,
                    extract(epoch FROM available_at - now())::float8,
                    (SELECT count(*) FROM outbox.events WHERE key = 's' AND delivered_at IS NOT NULL)
             FROM outbox.events WHERE id = $1",
            &[&scheduled],
        )
        .await
        .expect("scheduled row");
    let (since_insert, until_due, delivered): (f64, f64, i64) =
        (row.get(0), row.get(1), row.get(2));
    assert!(
        since_insert >= 0.9 && until_due > 0.0,
        "the check ran about a second in, before the time: {since_insert} s after the insert, \
         {until_due} s before available_at"
    );
    assert_eq!(
        delivered, 0,
        "neither event of key s delivered before the time"
    );
    assert!(
        first_position(&received, b"s:0").is_none() && first_position(&received, b"s:1").is_none(),
        "nothing of key s was published before the time: {received:?}"
    );

    eventually("the other key flows at once", WAIT, || async {
        first_position(&rabbit.received(), b"o:0").is_some()
    })
    .await;
    eventually(
        "the scheduled event and the one after it delivered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    let available_at = epoch(&db, "available_at", scheduled).await.expect("set");
    let scheduled_at = epoch(&db, "delivered_at", scheduled).await.expect("set");
    let later_at = epoch(&db, "delivered_at", later).await.expect("set");
    let other_at = epoch(&db, "delivered_at", other).await.expect("set");
    assert!(scheduled_at >= available_at, "delivered after its time");
    assert!(later_at >= available_at, "the later event of key s waited");
    assert!(
        other_at < available_at,
        "key o did not wait: delivered {} s before s:0 was due",
        available_at - other_at
    );

    eventually("s:1 arrived", WAIT, || async {
        first_position(&rabbit.received(), b"s:1").is_some()
    })
    .await;
    let received = rabbit.received();
    let first = first_position(&received, b"s:0").expect("s:0 arrived");
    assert!(
        received
            .iter()
            .enumerate()
            .filter(|(_, m)| m.payload == b"s:1")
            .all(|(i, _)| i > first),
        "every copy of s:1 arrived after s:0: {received:?}"
    );
    assert_eq!(
        metric_sum(
            &relay.get("/metrics").await.expect("metrics").1,
            "outbox_relay_publish_errors_total",
            "kind=\"event\""
        )
        .unwrap_or(0.0),
        0.0,
        "waiting for a schedule is not an error"
    );
}

/// One observation of the failing row.
#[derive(Debug, Clone, PartialEq)]
struct Attempted {
    attempts: i32,
    available_at: f64,
    dead_lettered: bool,
    /// PostgreSQL's clock when observed.
    seen_at: f64,
}

#[tokio::test]
async fn a_failing_event_waits_for_its_available_at_between_attempts_then_is_dead_lettered() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("good.#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "3".into()));
    settings.push(("OUTBOX_RETRY_BASE_DELAY_MS", "200".into()));
    settings.push(("OUTBOX_RETRY_MAX_DELAY_MS", "10000".into()));

    // One transaction, so one batch: an unroutable event, a later event of its key, another key.
    let ids = insert_returning(
        &db,
        "INSERT INTO outbox.events (topic, key, payload) VALUES
             ('nowhere.r', 'r', 'r:0'), ('good.r', 'r', 'r:1'), ('good.o', 'o', 'o:0')
         RETURNING id, payload",
        &["r:0", "r:1", "o:0"],
    )
    .await;
    let (failing, later, other) = (ids[0], ids[1], ids[2]);
    assert!(failing < later, "r:0 comes first in its key's order");
    let relay = Relay::start(&db.url, &settings);

    // Watch the failing row until it is dead-lettered.
    let mut seen: Vec<Attempted> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let row = db
            .client
            .query_one(
                "SELECT attempts, extract(epoch FROM available_at)::float8,
                        dead_lettered_at IS NOT NULL, extract(epoch FROM now())::float8
                 FROM outbox.events WHERE id = $1",
                &[&failing],
            )
            .await
            .expect("failing row");
        let now = Attempted {
            attempts: row.get(0),
            available_at: row.get(1),
            dead_lettered: row.get(2),
            seen_at: row.get(3),
        };
        if seen.last().is_none_or(|last| {
            (last.attempts, last.dead_lettered) != (now.attempts, now.dead_lettered)
        }) {
            seen.push(now.clone());
        }
        if now.dead_lettered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not dead-lettered within {WAIT:?}: {seen:?}\n{}",
            relay.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("retries: observed {seen:?}");

    let row = db
        .client
        .query_one(
            "SELECT attempts, last_error, available_at > created_at, dead_lettered_at >= available_at
             FROM outbox.events WHERE id = $1",
            &[&failing],
        )
        .await
        .expect("dead letter");
    let (attempts, last_error, moved, waited): (i32, String, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        attempts, 3,
        "every attempt counted, up to OUTBOX_MAX_ATTEMPTS"
    );
    assert!(last_error.contains("unroutable"), "{last_error}");
    assert!(moved, "a failure moves available_at forward");
    assert!(
        waited,
        "the last attempt came no earlier than the retry time the previous failure set"
    );
    // Each failure defers the event by a jittered delay under a ceiling that doubles per attempt
    // (200 ms, then 400 ms); seen just after the failure, the row is due within that ceiling.
    let mut previous: Option<&Attempted> = None;
    for observed in seen.iter().filter(|s| s.attempts > 0 && !s.dead_lettered) {
        let ceiling = 0.2 * f64::from(1 << (observed.attempts - 1));
        assert!(
            observed.available_at - observed.seen_at <= ceiling + 0.005,
            "attempt {} deferred by at most {ceiling} s: {seen:?}",
            observed.attempts
        );
        if let Some(previous) = previous {
            assert!(
                observed.available_at > previous.available_at,
                "each retry moves available_at further: {seen:?}"
            );
        }
        previous = Some(observed);
    }
    let dead_lettered_at = epoch(&db, "dead_lettered_at", failing).await.expect("set");
    eventually("the later event of its key delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let later_at = epoch(&db, "delivered_at", later).await.expect("set");
    let other_at = epoch(&db, "delivered_at", other).await.expect("set");
    // r:1 was published along with each attempt of r:0 (same batch) but is marked delivered, and
    // so relayed for good, only once r:0 is settled.
    assert!(
        later_at >= dead_lettered_at,
        "r:1 was marked delivered only after r:0 was dead-lettered"
    );
    assert!(other_at < dead_lettered_at, "key o did not wait for key r");
    // One publish per attempt: a failing event does not spin.
    eventually("three event errors counted", WAIT, || async {
        let body = relay.get("/metrics").await.map(|r| r.1).unwrap_or_default();
        metric_sum(&body, "outbox_relay_publish_errors_total", "kind=\"event\"") == Some(3.0)
            && metric_sum(&body, "outbox_relay_dead_lettered_total", "") == Some(1.0)
    })
    .await;
    eventually("r:1 and o:0 arrived", WAIT, || async {
        let received = rabbit.received();
        first_position(&received, b"r:1").is_some() && first_position(&received, b"o:0").is_some()
    })
    .await;
    assert!(first_position(&rabbit.received(), b"r:0").is_none());
    assert_eq!(
        metric_sum(
            &relay.get("/metrics").await.expect("metrics").1,
            "outbox_relay_publish_errors_total",
            "kind=\"event\""
        ),
        Some(3.0),
        "no attempt after the dead letter"
    );
}

#[tokio::test]
async fn a_refused_event_is_never_overtaken_by_a_later_event_of_its_key() {
    let db = TestDb::create().await;
    // Only "good.#" reaches a queue: "late.x" is unroutable until the test binds it.
    let rabbit = Rabbit::setup("good.#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1000".into()));
    let _relay = Relay::start(&db.url, &settings);

    // One transaction, so the relay claims all three in one batch.
    let ids = insert_returning(
        &db,
        "INSERT INTO outbox.events (topic, key, payload) VALUES \
         ('late.x', 'a', 'a:0'), ('good.a', 'a', 'a:1'), ('good.b', 'b', 'b:0') \
         RETURNING id, payload",
        &["a:0", "a:1", "b:0"],
    )
    .await;
    let (refused, later, other_key) = (ids[0], ids[1], ids[2]);
    eventually(
        "the unroutable event refused twice, the other key delivered",
        WAIT,
        || async {
            db.count(&format!("id = {refused} AND attempts >= 2")).await == 1
                && db
                    .count(&format!("id = {other_key} AND delivered_at IS NOT NULL"))
                    .await
                    == 1
        },
    )
    .await;
    rabbit.wait_for(1, WAIT).await;
    assert!(
        first_position(&rabbit.received(), b"a:1").is_none(),
        "a later event of the key was published while an earlier one was refused: {:?}",
        rabbit.received()
    );
    assert_eq!(
        db.count(&format!(
            "id = {later} AND attempts = 0 AND delivered_at IS NULL"
        ))
        .await,
        1,
        "the later event waited without using attempts"
    );

    // Fix the cause: the refused event goes through on its next retry, then the later one, once.
    let late = Rabbit::setup("#").await;
    bind_exchange(&rabbit.exchange, &late.exchange, "late.x").await;
    eventually("both events of the key delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(late.wait_for(1, WAIT).await[0].payload, b"a:0");
    let received = rabbit.wait_for(2, WAIT).await;
    let copies = received.iter().filter(|m| m.payload == b"a:1").count();
    assert_eq!(
        copies, 1,
        "published once, after the refused event: {received:?}"
    );
    let (refused_at, later_at) = (
        epoch(&db, "delivered_at", refused).await,
        epoch(&db, "delivered_at", later).await,
    );
    assert!(
        refused_at <= later_at,
        "delivered out of order: {refused_at:?} then {later_at:?}"
    );
}

#[tokio::test]
async fn a_keys_event_the_broker_took_after_refusing_an_earlier_one_is_published_again_after_it() {
    let db = TestDb::create().await;
    // The relay pipelines a key's events that take the same route (exchange and topic). A
    // headers exchange routes by headers, which that route leaves out: it returns the middle
    // event of the batch (no `pass` header) and takes the last.
    let rabbit = Rabbit::setup("#").await;
    let exchange = headers_exchange_to(&rabbit.exchange, &[("pass", "yes")]).await;
    let mut settings = rabbitmq_settings(&exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    let _relay = Relay::start(&db.url, &settings);

    // One transaction, so the relay claims all three in one batch.
    let ids = insert_returning(
        &db,
        "INSERT INTO outbox.events (topic, key, payload, headers) VALUES \
         ('orders', 'a', 'a:0', '{\"pass\": \"yes\"}'), ('orders', 'a', 'a:1', '{}'), \
         ('orders', 'a', 'a:2', '{\"pass\": \"yes\"}') \
         RETURNING id, payload",
        &["a:0", "a:1", "a:2"],
    )
    .await;
    let (refused, later) = (ids[1], ids[2]);
    eventually(
        "the returned event dead-lettered, the others delivered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    assert_eq!(
        db.count(&format!("id = {refused} AND dead_lettered_at IS NOT NULL"))
            .await,
        1
    );
    let (dead_lettered_at, later_at) = (
        epoch(&db, "dead_lettered_at", refused).await,
        epoch(&db, "delivered_at", later).await,
    );
    assert!(
        dead_lettered_at <= later_at,
        "the later event was marked delivered before the refused one was settled"
    );
    assert_eq!(
        db.count(&format!("id = {later} AND attempts = 0")).await,
        1,
        "the later event waited without using attempts"
    );
    // Taken with the refused event in flight (pipelined), then published again once that one
    // was settled: the last copy of each event is in key order.
    let received = rabbit.wait_for(3, WAIT).await;
    let payloads: Vec<&[u8]> = received.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads.first(), Some(&&b"a:0"[..]), "{payloads:?}");
    assert!(
        payloads[1..].iter().all(|p| *p == b"a:2") && payloads.len() >= 3,
        "a:2 published with the refused a:1 in flight and again after it: {payloads:?}"
    );
}

#[tokio::test]
async fn retention_deletes_delivered_events_and_keeps_pending_and_dead_lettered_ones() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_RETENTION_SECS", "1".into()));

    let pending = db.insert_scheduled().await;
    let dead = db.insert("t", Some("bad"), b"bad", "[1]").await;
    let relay = Relay::start(&db.url, &settings);

    for round in 0..2u64 {
        let mut ids = Vec::new();
        for seq in 0..20 {
            let payload = format!("g:{}", round * 100 + seq);
            ids.push(db.insert("t", Some("g"), payload.as_bytes(), "{}").await);
        }
        // Watch until every row is gone; none may go before it was delivered and retained 1 s.
        let mut delivered_at: std::collections::HashMap<i64, f64> = Default::default();
        let deadline = Instant::now() + WAIT;
        loop {
            // One statement, so `now` is the time of the snapshot that saw which rows are left.
            let rows = db
                .client
                .query(
                    "SELECT extract(epoch FROM now())::float8, e.id,
                            extract(epoch FROM e.delivered_at)::float8
                     FROM (SELECT 1) AS one
                     LEFT JOIN outbox.events e ON e.id = ANY($1)",
                    &[&ids],
                )
                .await
                .expect("rows");
            let now: f64 = rows[0].get(0);
            let mut present = std::collections::HashSet::new();
            for row in &rows {
                if let Some(id) = row.get::<_, Option<i64>>(1) {
                    present.insert(id);
                    if let Some(at) = row.get::<_, Option<f64>>(2) {
                        delivered_at.insert(id, at);
                    }
                }
            }
            for id in &ids {
                if present.contains(id) {
                    continue;
                }
                let at = delivered_at.get(id).unwrap_or_else(|| {
                    panic!("round {round}: event {id} was deleted before it was seen delivered")
                });
                // A small tolerance: the purge's clock is its own statement's start.
                assert!(
                    now - at >= 0.95,
                    "round {round}: event {id} deleted within the 1 s retention"
                );
            }
            if present.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: delivered events not deleted within {WAIT:?}\n{}",
                relay.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = rabbit.received();
        for seq in 0..20 {
            let payload = format!("g:{}", round * 100 + seq);
            assert!(
                first_position(&received, payload.as_bytes()).is_some(),
                "{payload} was published before its row was deleted"
            );
        }
    }

    let row = db
        .client
        .query_one(
            "SELECT count(*) FILTER (WHERE id = $1 AND delivered_at IS NULL AND dead_lettered_at IS NULL),
                    count(*) FILTER (WHERE id = $2 AND dead_lettered_at < now() - interval '1 second'),
                    count(*)
             FROM outbox.events",
            &[&pending, &dead],
        )
        .await
        .expect("remaining rows");
    let (pending_left, dead_left, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(pending_left, 1, "an undelivered event is never purged");
    assert_eq!(
        dead_left, 1,
        "a dead letter older than the retention is kept"
    );
    assert_eq!(
        total, 2,
        "only the pending event and the dead letter remain"
    );
}

#[tokio::test]
async fn a_dead_letter_retried_after_its_cause_was_fixed_is_delivered() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("good.#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let _relay = Relay::start(&db.url, &settings);

    let fixed = db.insert("late.x", Some("a"), b"a:0", "{}").await;
    let after = db.insert("good.a", Some("a"), b"a:1", "{}").await;
    let untouched = db.insert("late.y", Some("b"), b"b:0", "{}").await;
    eventually(
        "unroutable events dead-lettered, the rest delivered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    assert_eq!(
        db.count(&format!(
            "dead_lettered_at IS NOT NULL AND id IN ({fixed}, {untouched}) AND last_error LIKE '%unroutable%'"
        ))
        .await,
        2
    );
    assert_eq!(
        db.count(&format!("id = {after} AND delivered_at IS NOT NULL"))
            .await,
        1,
        "later events of the key continue after the dead letter"
    );
    let listed = outbox_command(&["dead-letters", "list", "--json"], &db.url);
    assert!(listed.status.success(), "{listed:?}");
    let letters: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let listed_ids: Vec<i64> = letters
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(listed_ids, vec![fixed, untouched]);

    // Fix the cause: from now on "late.x" reaches a queue (of a second exchange of the test's own).
    let late = Rabbit::setup("#").await;
    bind_exchange(&rabbit.exchange, &late.exchange, "late.x").await;
    let retried = outbox_command(&["dead-letters", "retry", &fixed.to_string()], &db.url);
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(
        String::from_utf8_lossy(&retried.stdout).contains("1 dead letter(s) put back"),
        "{}",
        String::from_utf8_lossy(&retried.stdout)
    );

    eventually(
        "the running relay delivers the retried event",
        WAIT,
        || async {
            db.count(&format!(
                "id = {fixed} AND delivered_at IS NOT NULL AND dead_lettered_at IS NULL"
            ))
            .await
                == 1
        },
    )
    .await;
    let message_id: String = db
        .client
        .query_one(
            "SELECT message_id::text FROM outbox.events WHERE id = $1",
            &[&fixed],
        )
        .await
        .expect("message id")
        .get(0);
    let arrived = late.wait_for(1, WAIT).await;
    assert_eq!(arrived[0].payload, b"a:0");
    assert_eq!(arrived[0].message_id, message_id, "the same message id");
    assert_eq!(
        db.count(&format!(
            "id = {untouched} AND dead_lettered_at IS NOT NULL"
        ))
        .await,
        1,
        "only the retried dead letter was put back"
    );
    let again = outbox_command(&["dead-letters", "retry", &fixed.to_string()], &db.url);
    assert_eq!(
        again.status.code(),
        Some(1),
        "a delivered event is no dead letter: {again:?}"
    );
}

#[tokio::test]
async fn a_postgresql_outage_is_survived_without_losing_or_dead_lettering() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(postgres_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&database_url_via(&db.url, proxy.addr), &settings);
    wait_ready(&relay, 200, WAIT).await;

    insert_keyed_sequence(&db.client, "t", 3, 0, 50, 10).await;
    eventually("first events delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    proxy.cut();
    wait_ready(&relay, 503, WAIT).await;
    // Written directly, not through the proxy: the application keeps working during the outage.
    insert_keyed_sequence(&db.client, "t", 3, 50, 100, 10).await;
    let cut_at = Instant::now();
    eventually("the relay keeps failing to reconnect", WAIT, || async {
        let body = relay.get("/metrics").await.map(|r| r.1).unwrap_or_default();
        metric_sum(
            &body,
            "outbox_relay_reconnects_total",
            "target=\"database\"",
        )
        .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    // Keep the outage going for a few seconds (it is not the proof: the checks below are).
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    let (status, body) = relay.get("/readyz").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database: disconnected"), "{body}");
    assert_eq!(
        db.undelivered().await,
        150,
        "nothing marked during the outage"
    );
    assert_eq!(
        distinct_payloads(&rabbit.received()),
        150,
        "nothing published without a session"
    );

    proxy.restore();
    wait_ready(&relay, 200, WAIT).await;
    eventually("delivered after recovery", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(
        db.count("dead_lettered_at IS NOT NULL OR attempts > 0")
            .await,
        0,
        "an outage uses no attempts"
    );
    eventually("every event arrived", WAIT, || async {
        distinct_payloads(&rabbit.received()) == 300
    })
    .await;
    assert_keys_ordered_and_complete(&rabbit.received(), 3, 100);
    assert_eq!(
        relay.metric("outbox_relay_leader").await,
        Some(1.0),
        "leads again"
    );
}
