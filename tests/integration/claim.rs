//! The claim on a busy production database: long transactions elsewhere, transactions held open
//! by writers, losing the session mid-batch, large payloads.

use std::time::Duration;

use outbox_relay::outbox::session::{OnDelivery, steady_claim_sql};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Index entries that scans of `index` returned, as PostgreSQL's statistics count them (live and
/// dead: a dead entry that a snapshot still protects is returned and then skipped).
async fn index_entries_read(db: &TestDb, index: &str) -> i64 {
    db.client
        .query_one(
            "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
             WHERE schemaname = 'outbox' AND indexrelname = $1",
            &[&index],
        )
        .await
        .expect("index statistics")
        .get(0)
}

/// Runs a relay (stdout sink) until every event is delivered, then stops it and waits until its
/// backend is gone, so that PostgreSQL has its statistics.
async fn drain_with_a_relay(db: &TestDb) {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let mut relay = Relay::start(&db.url, &settings);
    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert!(relay.terminate(WAIT).await.success());
    let name = database_name(&db.url).to_string();
    eventually("the relay's backend ended", WAIT, || async {
        db.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name LIKE 'outbox-relay%'",
                &[&name],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            == 0
    })
    .await;
}

async fn insert_series(db: &TestDb, n: i64) {
    db.client
        .execute(
            "INSERT INTO outbox.events (topic, key, payload) \
             SELECT 't', (i % 100)::text, convert_to(i::text, 'UTF8') FROM generate_series(1, $1::bigint) i",
            &[&n],
        )
        .await
        .expect("insert events");
}

#[tokio::test]
async fn a_long_snapshot_elsewhere_does_not_make_each_claim_walk_the_delivered_history() {
    const N: i64 = 20_000;
    let db = TestDb::create().await;
    // Another session's snapshot: no dead row version from now on can be removed.
    let holder = connect(&db.url).await;
    holder
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM outbox.schema_migrations",
        )
        .await
        .expect("hold a snapshot");

    insert_series(&db, N).await;
    let before = index_entries_read(&db, "events_pending_lane_idx").await;
    drain_with_a_relay(&db).await;
    let first = index_entries_read(&db, "events_pending_lane_idx").await - before;

    // The same again with N delivered events behind: a claim that reads the pending index from
    // its start would walk them on each of its N / 500 batches (about N * N / 1000 entries).
    insert_series(&db, N).await;
    let before = index_entries_read(&db, "events_pending_lane_idx").await;
    drain_with_a_relay(&db).await;
    let second = index_entries_read(&db, "events_pending_lane_idx").await - before;
    holder.batch_execute("COMMIT").await.expect("end snapshot");

    eprintln!("pending-index entries read: first {N} events {first}, next {N} events {second}");
    assert!(first > 0, "the statistics saw the relay's scans");
    // A new leader's first claim reads from the first id once (N entries here).
    assert!(
        second < first + 2 * N,
        "the second drain read {second} index entries against {first} for the first: \
         the claim walks delivered history"
    );
}

#[tokio::test]
async fn a_watched_transaction_is_looked_up_through_the_index_after_one_transaction_wrote_thousands()
 {
    let db = TestDb::create().await;
    // A backfill: one transaction writes 20,000 events, and the table is analyzed (as autovacuum
    // does after a bulk load). The statistics then say that every row has that one txid, and a
    // lookup by txid looked to the planner like a read of the whole table.
    insert_series(&db, 20_000).await;
    db.client
        .batch_execute("ANALYZE outbox.events")
        .await
        .expect("analyze");
    // A transaction in progress elsewhere: every claim's snapshot lists it, so every claim looks
    // it up (another replica's claim is such a transaction, any writer of the application too).
    let holder = connect(&db.url).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let txid: String = holder
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .expect("txid")
        .get(0);
    prepare_claim_as_the_relay_does(&db.client).await;
    let plan = explain_claim(&db.client, &format!("ARRAY['{txid}']"), "NULL").await;
    holder.batch_execute("COMMIT").await.expect("commit");
    assert!(
        !plan.contains("Seq Scan"),
        "the claim reads the whole table for a watched transaction:\n{plan}"
    );
}

/// Prepares the claim with the relay session's own settings.
async fn prepare_claim_as_the_relay_does(client: &tokio_postgres::Client) {
    let settings = include_str!("../../sql/queries/session_settings.sql");
    let claim = include_str!("../../sql/queries/claim.sql");
    client
        .batch_execute(&format!("{settings} PREPARE claim AS {claim}"))
        .await
        .expect("prepare the claim");
}

/// The plan of the prepared claim for these watched txids ($3) and last xmax ($8), as text.
async fn explain_claim(client: &tokio_postgres::Client, watched: &str, xmax: &str) -> String {
    let plan = explain(
        client,
        &format!(
            "EXPLAIN EXECUTE claim(500, 1, {watched}, '{{}}', 1073741824, 1073741824, \
             NULL, {xmax}, '{{}}', '{{}}')"
        ),
    )
    .await;
    assert!(!plan.is_empty(), "EXPLAIN printed a plan");
    plan
}

/// What an `EXPLAIN` statement printed, one plan line per line.
async fn explain(client: &tokio_postgres::Client, explain: &str) -> String {
    let plan: Vec<String> = client
        .simple_query(explain)
        .await
        .expect("explain")
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    plan.join("\n")
}

#[tokio::test]
async fn a_transaction_held_open_delays_only_its_own_events() {
    let db = TestDb::create().await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);

    let writer = connect(&db.url).await;
    writer
        .batch_execute(
            "BEGIN; INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'w', 'held'::bytea)",
        )
        .await
        .expect("open a writing transaction");
    // Later ids, committed while the writer stays open, in two rounds so that the claim's floor
    // passes the writer's id in between.
    for round in 0..2 {
        insert_series(&db, 100).await;
        eventually(
            "events committed after the open writer are delivered",
            WAIT,
            || async { db.count("delivered_at IS NOT NULL").await == 100 * (round + 1) },
        )
        .await;
    }
    assert!(!relay.stdout().contains("held"));

    writer.batch_execute("COMMIT").await.expect("commit writer");
    eventually(
        "the writer's event is delivered once committed",
        WAIT,
        || async { db.undelivered().await == 0 && relay.stdout().contains("\"key\":\"w\"") },
    )
    .await;
}

/// A transaction the last claim saw in progress notifies news when it commits: with polls an hour
/// apart, only that notification can bring its event (a notification of a transaction the
/// claim saw committed would not count).
#[tokio::test]
async fn the_commit_of_a_transaction_a_claim_saw_in_progress_wakes_the_relay() {
    let db = TestDb::create().await;
    let mut settings = notified_only_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);
    let writer = connect(&db.url).await;
    writer
        .batch_execute(
            "BEGIN; INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'w', 'held'::bytea)",
        )
        .await
        .expect("open a writing transaction");
    // Claimed by its notification, with the writer in the claim's snapshot as in progress.
    db.insert("t", Some("k"), b"{}", "{}").await;
    eventually(
        "the event committed after the writer began",
        WAIT,
        || async { db.count("delivered_at IS NOT NULL").await == 1 },
    )
    .await;
    writer.batch_execute("COMMIT").await.expect("commit writer");
    eventually("the writer's event, by its notification", WAIT, || async {
        db.undelivered().await == 0 && relay.stdout().contains("\"key\":\"w\"")
    })
    .await;
}

#[tokio::test]
async fn losing_the_session_mid_publish_abandons_the_batch_at_once() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let relay = Relay::start(
        &db.url,
        &rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr)),
    );
    wait_ready(&relay, 200, WAIT).await;

    // The broker stops answering; the relay's publishes wait for confirms.
    proxy.freeze();
    for i in 0..5 {
        let payload = format!("fenced-{i}");
        db.insert("t", Some(&format!("k{i}")), payload.as_bytes(), "{}")
            .await;
    }
    eventually("the relay is publishing", WAIT, || async {
        proxy.held_bytes() > 0
    })
    .await;

    let admin = connect(&admin_url()).await;
    assert!(terminate_relay_backends(&admin, database_name(&db.url)).await >= 1);
    // Without the fence the relay would wait for the broker, still leading in its own eyes.
    eventually(
        "the relay abandons the batch while the broker is still silent",
        Duration::from_secs(10),
        || async { relay.stderr().contains("session lost while publishing") },
    )
    .await;
    assert_eq!(
        db.count("delivered_at IS NOT NULL").await,
        0,
        "nothing was marked"
    );

    proxy.restore();
    eventually("every event delivered after all", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    rabbit.wait_for(5, WAIT).await;
    eventually("all five events reached the queue", WAIT, || async {
        distinct_payloads(&rabbit.received()) == 5
    })
    .await;
    assert_eq!(db.count("attempts > 0").await, 0, "no attempt used");
}

/// How many `query` statements the relay's session ran, from its `/metrics`.
async fn statements(relay: &Relay, query: &str) -> f64 {
    let series = format!("outbox_relay_db_query_duration_seconds_count{{query=\"{query}\"}} ");
    relay
        .get("/metrics")
        .await
        .and_then(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Settings under which only notifications make the relay claim: polls and lane checks an hour
/// apart, no stall check.
fn notified_only_settings() -> Vec<(&'static str, String)> {
    let mut settings: Vec<_> = fast_settings()
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "OUTBOX_POLL_INTERVAL_MS" | "OUTBOX_LEADER_POLL_MS"))
        .collect();
    settings.push(("OUTBOX_POLL_INTERVAL_MS", "3600000".into()));
    settings.push(("OUTBOX_LEADER_POLL_MS", "3600000".into()));
    settings.push(("OUTBOX_STALL_TIMEOUT_SECS", "0".into()));
    settings
}

/// A stdout relay under [`notified_only_settings`] that has relayed and marked a first event:
/// it has joined its lanes and settled, so what follows counts only the events after it.
async fn settled_notified_stdout_relay(db: &TestDb) -> Relay {
    let mut settings = notified_only_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);
    db.insert("t", Some("k"), b"{}", "{}").await;
    eventually("the first event marked delivered", WAIT, || async {
        statements(&relay, "mark").await >= 1.0 && db.undelivered().await == 0
    })
    .await;
    relay
}

/// The claim statements (full and steady) and mark statements the relay's session ran so far.
async fn claims_and_marks(relay: &Relay) -> (f64, f64) {
    (
        statements(relay, "claim").await + statements(relay, "claim_steady").await,
        statements(relay, "mark").await,
    )
}

/// With NOTIFY on, an event that comes alone is claimed once and marked once: no early claim
/// while it is published (it would come back empty). Polls and lane checks are an hour apart
/// here, so every claim is one a notification asked for.
#[tokio::test]
async fn an_isolated_event_costs_one_claim_and_one_mark() {
    let db = TestDb::create().await;
    let relay = settled_notified_stdout_relay(&db).await;
    for n in 1..=3 {
        let (claims, marks) = claims_and_marks(&relay).await;
        db.insert("t", Some("k"), b"{}", "{}").await;
        eventually("the event marked delivered", WAIT, || async {
            statements(&relay, "mark").await > marks
        })
        .await;
        assert_eq!(db.undelivered().await, 0, "event {n} delivered");
        let (claims_now, marks_now) = claims_and_marks(&relay).await;
        assert_eq!(
            (claims_now - claims, marks_now - marks),
            (1.0, 1.0),
            "event {n}: claims and marks it cost"
        );
    }
}

/// Events that come one by one, faster than the relay's mark delay, are each claimed by their
/// notification, and each claim marks the batch before it: one statement per event, not a claim
/// and a mark. The last batch is marked on its own once nothing follows.
/// 100 events of 100 keys, one every 5 ms, until each is marked delivered.
async fn trickle_until_delivered(db: &TestDb) {
    for n in 0..100 {
        db.insert("t", Some(&format!("k{n}")), b"{}", "{}").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("every event marked delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
}

#[tokio::test]
async fn a_steady_trickle_is_marked_by_the_next_claims() {
    let db = TestDb::create().await;
    let relay = settled_notified_stdout_relay(&db).await;
    let (claims, marks) = claims_and_marks(&relay).await;
    // One event every 5 ms: the producer's pace, well within the 50 ms a delivered batch waits
    // for the next claim to mark it.
    trickle_until_delivered(&db).await;
    let (claims_now, marks_now) = claims_and_marks(&relay).await;
    let (claims, marks) = (claims_now - claims, marks_now - marks);
    assert!(claims >= 10.0, "the trickle took {claims} claims");
    assert!(
        marks * 4.0 <= claims,
        "{marks} separate marks for {claims} claims: delivered batches were not marked by the next claim"
    );
}

/// At a steady rate each claim takes everything it sees, so the next one reads only what
/// committed since, with the steady claim (planned once per session), not the full claim
/// (planned afresh at each call, most of a claim's cost to PostgreSQL).
#[tokio::test]
async fn a_steady_trickle_is_claimed_by_the_steady_claim() {
    let db = TestDb::create().await;
    let relay = settled_notified_stdout_relay(&db).await;
    let full = statements(&relay, "claim").await;
    let steady = statements(&relay, "claim_steady").await;
    trickle_until_delivered(&db).await;
    let full = statements(&relay, "claim").await - full;
    let steady = statements(&relay, "claim_steady").await - steady;
    assert!(steady >= 10.0, "the trickle took {steady} steady claims");
    assert!(
        full * 10.0 <= steady,
        "{full} full claims for {steady} steady ones: the relay planned claims afresh at a steady rate"
    );
}

/// Each notification names the transaction that wrote the events, so that the relay can tell
/// one its last claim already read (see `Session::take_wakeup`).
#[tokio::test]
async fn a_notification_names_the_writing_transaction() {
    let db = TestDb::create().await;
    let (listener, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute("LISTEN outbox_events")
        .await
        .expect("listen");
    let txid: String = db
        .client
        .query_one(
            "WITH e AS (INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'k', '{}') \
             RETURNING 1) SELECT pg_current_xact_id()::text FROM e",
            &[],
        )
        .await
        .expect("insert")
        .get(0);
    let (channel, payload) = tokio::time::timeout(WAIT, notifications.recv())
        .await
        .expect("a notification in time")
        .expect("a notification");
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("outbox_events", txid.as_str())
    );
}

/// On a steady stream with a linger, the relay stops listening (it claims again after each batch
/// anyway) and every event still goes out; once the stream ends it listens again, so an event
/// that comes alone later is relayed by its notification (polls are an hour apart here).
#[tokio::test]
async fn a_steady_stream_pauses_notifications_and_the_next_isolated_event_still_goes_out() {
    let db = TestDb::create().await;
    let mut settings = notified_only_settings();
    settings.push(("OUTBOX_BATCH_LINGER_MS", "20".into()));
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);
    db.insert("t", Some("k"), b"{}", "{}").await;
    eventually("the first event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    // A stream of single-event transactions, until the relay has stopped listening.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut produced = 1;
    while statements(&relay, "unlisten").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never stopped listening during a stream of {produced} events"
        );
        for i in 0..20 {
            db.insert("t", Some(&format!("k{i}")), b"{}", "{}").await;
        }
        produced += 20;
    }
    eventually("the stream delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    eventually("the relay listening again", WAIT, || async {
        statements(&relay, "listen").await >= 1.0
    })
    .await;
    db.insert("t", Some("k"), b"{}", "{}").await;
    eventually(
        "the isolated event delivered by its notification",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
}

#[tokio::test]
async fn a_batch_stays_within_its_byte_budget_and_an_oversized_payload_is_not_read() {
    let db = TestDb::create().await;
    for i in 0..20 {
        db.insert("t", Some(&format!("k{i}")), &[b'x'; 1000], "{}")
            .await;
    }
    let big = db.insert("t", Some("big"), &[b'y'; 5000], "{}").await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings.push(("OUTBOX_BATCH_MAX_BYTES", "3000".into()));
    settings.push(("OUTBOX_MAX_PAYLOAD_BYTES", "4000".into()));
    let relay = Relay::start(&db.url, &settings);

    eventually("every event settled", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let body = relay.get("/metrics").await.expect("metrics").1;
    let batches = metric_sum(&body, "outbox_relay_batch_size_count", "").unwrap_or(0.0);
    let published = metric_sum(&body, "outbox_relay_batch_size_sum", "").unwrap_or(0.0);
    assert_eq!(published, 20.0, "{body}");
    assert!(
        batches >= 7.0,
        "20 events of 1000 bytes within 3000 bytes per batch need at least 7 batches, got {batches}"
    );
    let error: String = db
        .client
        .query_one(
            "SELECT last_error FROM outbox.events WHERE id = $1 AND dead_lettered_at IS NOT NULL",
            &[&big],
        )
        .await
        .expect("the oversized event is dead-lettered")
        .get(0);
    assert!(
        error.contains("5000 bytes") && error.contains("OUTBOX_MAX_PAYLOAD_BYTES"),
        "{error}"
    );
}

/// A transaction that got its transaction id after the last completed one is in progress but not
/// in its snapshot's in-progress list (only xids below `xmax` are listed). Here: B takes a txid,
/// then A (a higher txid) writes id X, then B writes id Y > X and commits. A claim now sees Y and
/// moves its floor past X, while A may be above the snapshot's xmax. When A commits, the next claim
/// must still find X (it watches every transaction from the last xmax on), not only the rescan.
#[tokio::test]
async fn an_event_of_a_transaction_above_the_snapshots_xmax_is_not_skipped() {
    let db = TestDb::create().await;
    let a = connect(&db.url).await;
    let b = connect(&db.url).await;
    let relay = connect(&db.url).await;
    b.batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .expect("B takes its txid");
    a.batch_execute(
        "BEGIN; INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'a', 'x')",
    )
    .await
    .expect("A writes X");
    b.batch_execute(
        "INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'b', 'y'); COMMIT",
    )
    .await
    .expect("B writes Y and commits");
    let claim = ClaimSql::prepare(&relay).await;
    let run = |floor: i64, xip: Vec<String>, xmax: Option<String>| {
        let (relay, claim) = (&relay, &claim);
        async move {
            let rows = claim
                .run(
                    relay,
                    500,
                    (floor, &xip, xmax.as_deref()),
                    &[],
                    OnDelivery::Mark.split(&[]),
                )
                .await;
            let ids = ClaimSql::ids(&rows);
            let first = &rows[0];
            let next: (i64, Vec<String>, Option<String>) = (
                first.get("next_floor"),
                first.get("next_xip"),
                first.get("next_xmax"),
            );
            (ids, next)
        }
    };
    let (first_ids, (floor, xip, xmax)) = run(0, Vec::new(), None).await;
    assert_eq!(
        first_ids.len(),
        1,
        "only B's event is visible: {first_ids:?}"
    );
    assert!(floor > first_ids[0], "the floor moved past Y");
    a.batch_execute("COMMIT").await.expect("A commits");
    let (late_ids, _) = run(floor, xip, xmax).await;
    assert_eq!(late_ids.len(), 1, "A's event is claimed as a late commit");
    assert!(late_ids[0] < first_ids[0], "X is below Y");
}

const CLAIM: &str = include_str!("../../sql/queries/claim.sql");
const CLAIM_STEADY: &str = include_str!("../../sql/queries/claim_steady.sql");

/// `sql/queries/claim.sql` (or `claim_steady.sql`) run by hand, as the relay's session runs it
/// (every lane held).
struct ClaimSql(tokio_postgres::Statement);

impl ClaimSql {
    async fn prepare(client: &tokio_postgres::Client) -> ClaimSql {
        ClaimSql::prepare_sql(client, CLAIM).await
    }

    async fn prepare_sql(client: &tokio_postgres::Client, sql: &str) -> ClaimSql {
        ClaimSql(client.prepare(sql).await.expect("prepare the claim"))
    }

    /// Claims up to `batch` events from the cursor (floor, watched txids, xmax), skipping
    /// `skipped`, marking `marked` delivered and deleting `deleted` (see [`OnDelivery::split`]).
    async fn run(
        &self,
        client: &tokio_postgres::Client,
        batch: i64,
        (floor, xip, xmax): (i64, &[String], Option<&str>),
        skipped: &[i64],
        (marked, deleted): (&[i64], &[i64]),
    ) -> Vec<tokio_postgres::Row> {
        let every_lane: Option<Vec<i32>> = None;
        client
            .query(
                &self.0,
                &[
                    &batch,
                    &floor,
                    &xip,
                    &skipped,
                    &(1i64 << 30),
                    &(1i64 << 30),
                    &every_lane,
                    &xmax,
                    &marked,
                    &deleted,
                ],
            )
            .await
            .expect("claim")
    }

    fn ids(rows: &[tokio_postgres::Row]) -> Vec<i64> {
        rows.iter()
            .filter_map(|r| r.get::<_, Option<i64>>("id"))
            .collect()
    }
}

/// Two claims of two events each from three: the second records the first's batch as
/// `on_delivery` says; returns the first batch. The second claim must not take that batch again,
/// though its own snapshot still sees it undelivered.
async fn claim_after_a_batch_recorded(db: &TestDb, on_delivery: OnDelivery) -> Vec<i64> {
    insert_series(db, 3).await;
    let claim = ClaimSql::prepare(&db.client).await;
    let first = ClaimSql::ids(
        &claim
            .run(&db.client, 2, (0, &[], None), &[], on_delivery.split(&[]))
            .await,
    );
    assert_eq!(first.len(), 2, "a batch of two: {first:?}");
    let second = ClaimSql::ids(
        &claim
            .run(
                &db.client,
                2,
                (0, &[], None),
                &first,
                on_delivery.split(&first),
            )
            .await,
    );
    assert_eq!(second.len(), 1, "only the third event: {second:?}");
    assert!(!first.contains(&second[0]), "{second:?} was in {first:?}");
    first
}

/// The relay records a batch delivered whole with its next claim, in the same statement.
#[tokio::test]
async fn a_claim_marks_the_batch_before_it_delivered_and_does_not_take_it_again() {
    let db = TestDb::create().await;
    let first = claim_after_a_batch_recorded(&db, OnDelivery::Mark).await;
    assert_eq!(
        db.delivered_ids().await,
        first,
        "the first batch is marked, the second is not"
    );
}

/// With `OUTBOX_RETENTION_SECS=0` the claim deletes the batch before it instead of marking it.
#[tokio::test]
async fn a_claim_deletes_the_batch_before_it_delivered_when_nothing_is_retained() {
    let db = TestDb::create().await;
    claim_after_a_batch_recorded(&db, OnDelivery::Delete).await;
    assert_eq!(db.count("true").await, 1, "the first batch is deleted");
    assert_eq!(
        db.delivered_ids().await,
        Vec::<i64>::new(),
        "nothing marked"
    );
}

/// With `OUTBOX_RETENTION_SECS=0` every event's row goes in the statement that records its
/// delivery (the next claim on a stream, a mark of its own when the outbox falls quiet): no row
/// is ever marked delivered, and every row deleted is an event stdout got.
#[tokio::test]
async fn with_no_retention_each_event_is_deleted_as_its_delivery_is_recorded() {
    let db = TestDb::create().await;
    // Each row's fate, as it happens: marked delivered, or deleted.
    db.client
        .batch_execute(
            "CREATE TABLE public.row_fates (id bigint, fate text);
             CREATE FUNCTION public.note_fate() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF TG_OP = 'DELETE' THEN
                     INSERT INTO public.row_fates VALUES (OLD.id, 'deleted');
                 ELSIF NEW.delivered_at IS NOT NULL THEN
                     INSERT INTO public.row_fates VALUES (NEW.id, 'marked');
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER note_fate AFTER UPDATE OR DELETE ON outbox.events
                 FOR EACH ROW EXECUTE FUNCTION public.note_fate();",
        )
        .await
        .expect("the fate trigger");
    let scheduled = db.insert_scheduled().await;
    let mut settings = notified_only_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings.push(("OUTBOX_RETENTION_SECS", "0".into()));
    settings.push(("OUTBOX_BATCH_SIZE", "50".into()));
    let mut relay = Relay::start(&db.url, &settings);
    // A backlog of several batches (each recorded by the claim after it), then single events
    // far enough apart that each is recorded alone.
    insert_series(&db, 500).await;
    eventually("the backlog deleted", WAIT, || async {
        db.count("true").await == 1
    })
    .await;
    for n in 0..3 {
        let marks = statements(&relay, "mark").await;
        db.insert("t", Some("k"), format!("single {n}").as_bytes(), "{}")
            .await;
        eventually("the single event recorded alone", WAIT, || async {
            statements(&relay, "mark").await > marks
        })
        .await;
    }
    assert!(relay.terminate(WAIT).await.success(), "{}", relay.stderr());

    let remaining: Vec<i64> = db
        .client
        .query("SELECT id FROM outbox.events", &[])
        .await
        .expect("remaining rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        remaining,
        vec![scheduled],
        "only the scheduled event is left"
    );
    let fates: Vec<(i64, String)> = db
        .client
        .query("SELECT id, fate FROM public.row_fates ORDER BY id", &[])
        .await
        .expect("fates")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        fates.iter().all(|(_, fate)| fate == "deleted"),
        "rows marked delivered instead of deleted: {:?}",
        fates
            .iter()
            .filter(|(_, fate)| fate != "deleted")
            .collect::<Vec<_>>()
    );
    assert_eq!(fates.len(), 503, "each event deleted once");
    // The rows deleted are exactly the events stdout got.
    let published: std::collections::HashSet<String> = relay
        .stdout()
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(v["payload"].as_str()?.to_string())
        })
        .collect();
    let expected: std::collections::HashSet<String> = (1..=500)
        .map(|i| i.to_string())
        .chain((0..3).map(|n| format!("single {n}")))
        .collect();
    assert_eq!(published, expected, "every deleted event was published");
}

/// What one claim statement returned: the ids and its cursor row.
struct Took {
    ids: Vec<i64>,
    advanced: bool,
    complete: bool,
    /// The cursor for the next claim (floor, watched txids, xmax).
    next: (i64, Vec<String>, Option<String>),
}

impl Took {
    fn of(rows: &[tokio_postgres::Row]) -> Took {
        let first = &rows[0];
        Took {
            ids: ClaimSql::ids(rows),
            advanced: first.get("advanced"),
            complete: first.get("complete"),
            next: (
                first.get("next_floor"),
                first.get("next_xip"),
                first.get("next_xmax"),
            ),
        }
    }
}

/// Runs `claim` with a batch of `batch` from `cursor`, skipping and marking `marked`.
async fn take(
    db: &TestDb,
    claim: &ClaimSql,
    batch: i64,
    cursor: &(i64, Vec<String>, Option<String>),
    marked: &[i64],
) -> Took {
    let (floor, xip, xmax) = cursor;
    Took::of(
        &claim
            .run(
                &db.client,
                batch,
                (*floor, xip, xmax.as_deref()),
                marked,
                OnDelivery::Mark.split(marked),
            )
            .await,
    )
}

/// After a claim that took everything it saw, the steady claim takes exactly what committed
/// since (marking the batch before it, which it does not take again), and says so.
#[tokio::test]
async fn the_steady_claim_takes_what_committed_since_the_last_claim() {
    let db = TestDb::create().await;
    insert_series(&db, 3).await;
    let full = ClaimSql::prepare(&db.client).await;
    let steady = ClaimSql::prepare_sql(&db.client, CLAIM_STEADY).await;
    let first = take(&db, &full, 500, &(0, Vec::new(), None), &[]).await;
    assert_eq!(first.ids.len(), 3, "{:?}", first.ids);
    assert!(
        first.advanced && first.complete,
        "the full claim took all it saw"
    );

    insert_series(&db, 2).await;
    let second = take(&db, &steady, 500, &first.next, &first.ids).await;
    assert_eq!(
        second.ids.len(),
        2,
        "only the two new events: {:?}",
        second.ids
    );
    assert!(second.ids.iter().all(|id| !first.ids.contains(id)));
    assert!(second.advanced && second.complete);
    assert_eq!(
        db.delivered_ids().await,
        first.ids,
        "the first batch marked"
    );
    assert!(
        second.next.0 > second.ids[1],
        "the floor moved past the batch"
    );

    let third = take(&db, &steady, 500, &second.next, &second.ids).await;
    assert_eq!(third.ids, Vec::<i64>::new(), "nothing committed since");
    assert!(third.advanced && third.complete);
}

/// More events committed since the last claim than one batch holds: the steady claim takes the
/// first batch in id order and leaves the cursor where it was, not complete, so that the full
/// claim reads on from it.
#[tokio::test]
async fn the_steady_claim_leaves_the_cursor_when_more_committed_than_a_batch() {
    let db = TestDb::create().await;
    insert_series(&db, 1).await;
    let full = ClaimSql::prepare(&db.client).await;
    let steady = ClaimSql::prepare_sql(&db.client, CLAIM_STEADY).await;
    let first = take(&db, &full, 500, &(0, Vec::new(), None), &[]).await;
    insert_series(&db, 5).await;
    let second = take(&db, &steady, 2, &first.next, &first.ids).await;
    assert_eq!(second.ids.len(), 2, "one batch: {:?}", second.ids);
    assert!(
        second.ids[0] == first.ids[0] + 1,
        "the first new ones: {:?}",
        second.ids
    );
    assert!(!second.advanced && !second.complete);
    let rest = take(&db, &full, 500, &first.next, &second.ids).await;
    assert_eq!(
        rest.ids.len(),
        3,
        "the full claim reads the rest: {:?}",
        rest.ids
    );
}

/// A deferred event (here one scheduled for later) needs what only the full claim does (due
/// events, keys held back behind them): the steady claim takes nothing and says `deferred`, and
/// no full claim calls itself complete while the event waits.
#[tokio::test]
async fn the_steady_claim_gives_way_to_the_full_claim_while_an_event_is_deferred() {
    let db = TestDb::create().await;
    insert_series(&db, 1).await;
    let full = ClaimSql::prepare(&db.client).await;
    let steady = ClaimSql::prepare_sql(&db.client, CLAIM_STEADY).await;
    let first = take(&db, &full, 500, &(0, Vec::new(), None), &[]).await;
    assert!(first.complete);
    db.client
        .batch_execute(
            "INSERT INTO outbox.events (topic, key, payload, available_at) \
             VALUES ('t', 'later', 'x', now() + interval '1 hour')",
        )
        .await
        .expect("schedule an event");
    insert_series(&db, 1).await;
    let rows = steady
        .run(
            &db.client,
            500,
            (first.next.0, &first.next.1, first.next.2.as_deref()),
            &first.ids,
            OnDelivery::Mark.split(&first.ids),
        )
        .await;
    let second = Took::of(&rows);
    assert!(rows[0].get::<_, bool>("deferred"));
    assert_eq!(
        second.ids,
        Vec::<i64>::new(),
        "the steady claim took nothing"
    );
    assert!(!second.advanced && !second.complete);
    let third = take(&db, &full, 500, &first.next, &[]).await;
    assert_eq!(third.ids.len(), 1, "the full claim takes the new event");
    assert!(
        third.advanced && !third.complete,
        "an event waits: not complete"
    );
}

/// A writer that took its txid before the last claim's snapshot, and commits after it: its
/// event lies below the floor, and the steady claim finds it by its txid.
#[tokio::test]
async fn the_steady_claim_finds_a_late_commit_below_the_floor() {
    let db = TestDb::create().await;
    let writer = connect(&db.url).await;
    writer
        .batch_execute(
            "BEGIN; INSERT INTO outbox.events (topic, key, payload) VALUES ('t', 'late', 'x')",
        )
        .await
        .expect("write and hold");
    let txid: String = writer
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .expect("the writer's txid")
        .get(0);
    insert_series(&db, 1).await;
    let full = ClaimSql::prepare(&db.client).await;
    let steady = ClaimSql::prepare_sql(&db.client, CLAIM_STEADY).await;
    let first = take(&db, &full, 500, &(0, Vec::new(), None), &[]).await;
    assert_eq!(
        first.ids.len(),
        1,
        "only the committed event: {:?}",
        first.ids
    );
    assert!(
        first.next.1.contains(&txid),
        "the writer is watched: {:?}",
        first.next.1
    );
    writer.batch_execute("COMMIT").await.expect("commit");
    let second = take(&db, &steady, 500, &first.next, &first.ids).await;
    assert_eq!(second.ids.len(), 1, "the late event: {:?}", second.ids);
    assert!(second.ids[0] < first.ids[0], "below the floor");
}

/// The steady claim is planned once per session (generic plan, sequential scans off, see
/// `src/outbox/session/claim.rs`): whatever the statistics say, that plan reads the outbox only
/// through index conditions, never a whole index or the table. Checked after a backlog was
/// analyzed, and after one transaction wrote every row (a backfill).
#[tokio::test]
async fn the_steady_claims_plan_reads_only_through_index_conditions() {
    for backfill in [false, true] {
        let db = TestDb::create().await;
        if backfill {
            insert_series(&db, 20_000).await;
        } else {
            for _ in 0..20 {
                insert_series(&db, 1_000).await;
            }
            db.client
                .batch_execute("UPDATE outbox.events SET delivered_at = now() WHERE id <= 15000")
                .await
                .expect("deliver most");
        }
        db.client
            .batch_execute("ANALYZE outbox.events")
            .await
            .expect("analyze");
        // As a session with a lane fence prepares it, and as one that holds every lane does.
        for fenced in [true, false] {
            assert_plan_reads_through_index_conditions(&db, fenced, backfill).await;
        }
    }
}

async fn assert_plan_reads_through_index_conditions(db: &TestDb, fenced: bool, backfill: bool) {
    db.client
        .batch_execute(&format!(
            "{} SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; \
             DEALLOCATE ALL; PREPARE steady AS {}",
            include_str!("../../sql/queries/session_settings.sql"),
            steady_claim_sql(fenced)
        ))
        .await
        .expect("prepare the steady claim");
    let lanes = if fenced { "'{1,2}'" } else { "NULL" };
    let plan = explain(
        &db.client,
        &format!(
            "EXPLAIN EXECUTE steady(500, 15001, ARRAY['1', '2'], '{{}}', 1073741824, \
             1073741824, {lanes}, '3', '{{}}', '{{}}')"
        ),
    )
    .await;
    assert!(plan.contains("Index"), "a plan: {plan}");
    for (n, line) in plan.lines().enumerate() {
        assert!(!line.contains("Seq Scan"), "a sequential scan:\n{plan}");
        let scan = line.contains("Index Scan") || line.contains("Index Only Scan");
        // The deferred-events probe reads its (nearly always empty) index in order.
        if scan && !line.contains("events_deferred") {
            let next = plan.lines().nth(n + 1).unwrap_or("");
            assert!(
                next.contains("Index Cond"),
                "a whole index read (backfill: {backfill}, fenced: {fenced}), line {n}:\n{plan}"
            );
        }
    }
}
