//! Nothing wedges the relay silently: a broker that stops answering ends in the publish timeout,
//! an outage that uses no attempts; a relay loop that hangs anyway fails `/healthz`. (A RabbitMQ
//! that blocks publishers is in `tests/blocked`, on a broker of its own.)

use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Asserts that `/healthz` answers 200 at every look during `period`.
async fn stays_healthy(relay: &Relay, period: Duration, why: &str) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let (status, body) = relay.get("/healthz").await.expect("healthz answers");
        assert_eq!(status, 200, "{why}: /healthz said {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_broker_that_stops_answering_is_an_outage_after_the_publish_timeout() {
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
    settings.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "1000".into()));
    settings.push(("OUTBOX_STALL_TIMEOUT_SECS", "3".into()));
    let relay = Relay::start(&db.url, &settings);
    wait_ready(&relay, 200, WAIT).await;
    insert_keyed_sequence(&db.client, "t", 2, 0, 5, 5).await;
    rabbit.wait_for(10, WAIT).await;

    proxy.freeze();
    insert_keyed_sequence(&db.client, "t", 2, 5, 25, 5).await;
    eventually("a publish times out as an outage", WAIT, || async {
        relay.outages().await >= 1.0
    })
    .await;
    assert!(
        relay.stderr().contains("OUTBOX_PUBLISH_TIMEOUT_MS"),
        "the warning names the setting:\n{}",
        relay.stderr()
    );
    // Connects time out too: the relay keeps retrying, says it is not ready, and is not stalled.
    wait_ready(&relay, 503, WAIT).await;
    stays_healthy(&relay, Duration::from_secs(4), "an outage is not a stall").await;
    assert!(
        db.undelivered().await > 0,
        "nothing is confirmed while frozen"
    );

    proxy.restore();
    assert_recovered_losslessly(&db, &rabbit, 2, 25, WAIT).await;
    wait_ready(&relay, 200, WAIT).await;
}

#[tokio::test]
async fn healthz_fails_while_the_active_relay_is_wedged_and_a_standby_stays_healthy() {
    let db = TestDb::create().await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "1000".into()));
    settings.push(("OUTBOX_STALL_TIMEOUT_SECS", "2".into()));
    settings.push(("OUTBOX_REPLICA_MODE", "single".into()));
    let active = Relay::start(&db.url, &settings);
    db.insert("t", None, b"first", "{}").await;
    eventually("first event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let standby = Relay::start(&db.url, &settings);
    eventually("second relay stands by", WAIT, || async {
        standby
            .get("/readyz")
            .await
            .is_some_and(|(status, body)| status == 200 && body.contains("role: standby"))
    })
    .await;
    stays_healthy(
        &active,
        Duration::from_secs(3),
        "an idle relay is not stalled",
    )
    .await;

    // A lock like a migration's: the active relay's next claim waits for it, without a timeout.
    let locker = connect(&db.url).await;
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE outbox.events IN ACCESS EXCLUSIVE MODE; \
             INSERT INTO outbox.events (topic, payload) VALUES ('t', 'second');",
        )
        .await
        .expect("lock the outbox table");
    eventually("/healthz fails on the wedged relay", WAIT, || async {
        active.get("/healthz").await.is_some_and(|(status, body)| {
            status == 503
                && body.contains("stalled")
                && body.contains("OUTBOX_STALL_TIMEOUT_SECS=2")
        })
    })
    .await;
    assert!(
        active.stderr().contains("stalled"),
        "the failing check is logged:\n{}",
        active.stderr()
    );
    stays_healthy(
        &standby,
        Duration::from_secs(1),
        "a standby is never stalled",
    )
    .await;

    locker.batch_execute("COMMIT").await.expect("unlock");
    eventually("/healthz recovers once the loop moves", WAIT, || async {
        active.get("/healthz").await.map(|r| r.0) == Some(200)
    })
    .await;
    eventually(
        "the event committed under the lock is delivered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
}
