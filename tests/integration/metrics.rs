//! `/metrics` from the first second, and the backlog gauges on the active relay only.

use std::time::{Duration, Instant};

use crate::harness::*;

/// `/metrics` as soon as the relay serves it.
async fn first_metrics(relay: &Relay) -> String {
    eventually("/metrics answers", Duration::from_secs(30), || async {
        relay.get("/metrics").await.is_some_and(|r| r.0 == 200)
    })
    .await;
    relay.get("/metrics").await.expect("/metrics").1
}

#[tokio::test]
async fn every_metric_and_label_set_is_there_from_the_start_counters_at_zero() {
    let db = TestDb::create().await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);
    let body = first_metrics(&relay).await;

    let counters = [
        ("outbox_relay_delivered_total", Some(r#"sink="stdout""#)),
        ("outbox_relay_dead_lettered_total", Some(r#"sink="stdout""#)),
        (
            "outbox_relay_publish_errors_total",
            Some(r#"kind="event",sink="stdout""#),
        ),
        (
            "outbox_relay_publish_errors_total",
            Some(r#"kind="outage",sink="stdout""#),
        ),
        (
            "outbox_relay_reconnects_total",
            Some(r#"target="database""#),
        ),
        ("outbox_relay_reconnects_total", Some(r#"target="broker""#)),
    ];
    for (name, label) in counters {
        let value = match label {
            Some(label) => metric_sum(&body, name, label),
            None => metric_sum(&body, name, ""),
        };
        assert_eq!(
            value,
            Some(0.0),
            "{name} {label:?} at 0 from the start:\n{body}"
        );
    }
    for gauge in [
        "outbox_relay_lag_seconds",
        "outbox_relay_pending_events",
        "outbox_relay_dead_letter_events",
        "outbox_relay_leader",
        "outbox_relay_ready",
    ] {
        assert!(
            metric_sum(&body, gauge, "").is_some(),
            "{gauge} missing:\n{body}"
        );
    }
    for histogram in [
        "outbox_relay_publish_duration_seconds",
        "outbox_relay_batch_size",
    ] {
        assert_eq!(
            metric_sum(&body, &format!("{histogram}_count"), ""),
            Some(0.0),
            "{histogram} shown, empty:\n{body}"
        );
        assert!(
            body.contains(&format!(
                "{histogram}_bucket{{sink=\"stdout\",le=\"+Inf\"}} 0"
            )),
            "{histogram} buckets, per sink:\n{body}"
        );
    }
    // The first claim may run before this scrape, so only presence is certain here.
    for query in ["claim", "mark", "record_failures"] {
        assert!(
            metric_sum(
                &body,
                "outbox_relay_db_query_duration_seconds_count",
                &format!("query=\"{query}\"")
            )
            .is_some(),
            "query duration of {query}:\n{body}"
        );
    }
    // Still there, and counted, once the relay has work: the same series, not new ones.
    db.insert("orders", Some("1"), b"a", "{}").await;
    eventually("one delivery counted", Duration::from_secs(30), || async {
        relay.metric("outbox_relay_delivered_total").await == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn only_the_active_relay_reports_the_backlog() {
    let db = TestDb::create().await;
    // Pending but not deliverable for an hour: the backlog stays at one event.
    db.client
        .execute(
            "INSERT INTO outbox.events (topic, key, payload, available_at) VALUES ('orders', '1', 'a', now() + interval '1 hour')",
            &[],
        )
        .await
        .expect("insert a scheduled event");
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    // One active replica and a standby (lanes mode: see lanes.rs).
    settings.push(("OUTBOX_REPLICA_MODE", "single".into()));
    let mut active = Relay::start(&db.url, &settings);
    eventually(
        "the active relay reports one pending event",
        Duration::from_secs(30),
        || async {
            active.metric("outbox_relay_leader").await == Some(1.0)
                && active.metric("outbox_relay_pending_events").await == Some(1.0)
        },
    )
    .await;

    let standby = Relay::start(&db.url, &settings);
    eventually(
        "the second relay stands by",
        Duration::from_secs(30),
        || async {
            standby
                .get("/readyz")
                .await
                .is_some_and(|(status, body)| status == 200 && body.contains("role: standby"))
        },
    )
    .await;
    // Several sampler periods (2 s): a standby that sampled would report the same event.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            standby.metric("outbox_relay_pending_events").await,
            Some(0.0),
            "a standby reports no backlog, so a sum over replicas counts it once"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    active.kill();
    eventually(
        "the standby takes over and reports the backlog",
        Duration::from_secs(30),
        || async {
            standby.metric("outbox_relay_leader").await == Some(1.0)
                && standby.metric("outbox_relay_pending_events").await == Some(1.0)
        },
    )
    .await;
}
