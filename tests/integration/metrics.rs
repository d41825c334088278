//! `/metrics` from the first second (every documented series with every label set, on the first
//! scrape), and the backlog gauges on the active relay only.

use std::collections::{BTreeMap, BTreeSet};
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

/// One metric: name, type, and its label sets (`(label, value)` pairs).
type Series = (
    &'static str,
    &'static str,
    Vec<Vec<(&'static str, &'static str)>>,
);

/// The series a fresh relay with the one sink `stdout` shows, by metric: its type in `# TYPE`,
/// and every label set (a histogram's, of its `_count`). docs/operations.md's table lists the same
/// names with the same label names (checked below), so a metric documented but not registered at
/// start, or registered without a label set, fails here.
fn expected_series() -> Vec<Series> {
    let none = || vec![vec![]];
    let sink = || vec![vec![("sink", "stdout")]];
    vec![
        ("outbox_relay_lag_seconds", "gauge", none()),
        ("outbox_relay_pending_events", "gauge", none()),
        ("outbox_relay_delivered_total", "counter", sink()),
        (
            "outbox_relay_publish_errors_total",
            "counter",
            vec![
                vec![("kind", "event"), ("sink", "stdout")],
                vec![("kind", "outage"), ("sink", "stdout")],
            ],
        ),
        ("outbox_relay_dead_lettered_total", "counter", sink()),
        ("outbox_relay_publish_duration_seconds", "histogram", sink()),
        ("outbox_relay_dead_letter_events", "gauge", none()),
        ("outbox_relay_leader", "gauge", none()),
        ("outbox_relay_lanes_owned", "gauge", none()),
        ("outbox_relay_lanes_unowned", "gauge", none()),
        ("outbox_relay_rebalances_total", "counter", none()),
        ("outbox_relay_ready", "gauge", none()),
        (
            "outbox_relay_reconnects_total",
            "counter",
            vec![vec![("target", "database")], vec![("target", "broker")]],
        ),
        ("outbox_relay_batch_size", "histogram", sink()),
        (
            "outbox_relay_db_query_duration_seconds",
            "histogram",
            [
                "claim",
                "mark",
                "record_failures",
                "park",
                "listen",
                "unlisten",
            ]
            .into_iter()
            .map(|q| vec![("query", q)])
            .collect(),
        ),
    ]
}

/// Absent until the first delivery (0 would read as a delivery in 1970).
const ABSENT_AT_START: &str = "outbox_relay_last_delivery_timestamp_seconds";

type Labels = BTreeMap<String, String>;

/// Every sample of the Prometheus text: (series name, labels, value).
fn samples(body: &str) -> Vec<(String, Labels, f64)> {
    let mut samples = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples.push((name.to_string(), labels, value.parse().expect("a number")));
    }
    samples
}

/// The metric table of docs/operations.md: name -> label names (`{kind,sink}`).
fn documented_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let text = std::fs::read_to_string(path).expect("docs/operations.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `outbox_relay_"))
        .map(|l| {
            let cell = l.split('`').next().expect("a name cell");
            let (name, labels) = cell.split_once('{').unwrap_or((cell, ""));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            (format!("outbox_relay_{name}"), labels)
        })
        .collect()
}

#[test]
fn the_documented_metrics_are_the_ones_checked_at_start() {
    let documented = documented_metrics();
    let mut checked: BTreeMap<String, BTreeSet<String>> = expected_series()
        .into_iter()
        .map(|(name, _, sets)| {
            let labels = sets[0].iter().map(|(k, _)| k.to_string()).collect();
            (name.to_string(), labels)
        })
        .collect();
    checked.insert(ABSENT_AT_START.into(), BTreeSet::new());
    assert_eq!(checked, documented, "docs/operations.md's metric table");
    // The contract's six are among them.
    let contract = std::fs::read_to_string("/work/shared/CONTRACT.md").unwrap_or_default();
    for name in contract
        .lines()
        .filter_map(|l| l.strip_prefix("| `outbox_relay_"))
        .filter_map(|l| l.split('`').next())
    {
        assert!(
            documented.contains_key(&format!("outbox_relay_{name}")),
            "the contract's outbox_relay_{name} is documented and checked"
        );
    }
}

#[tokio::test]
async fn every_metric_and_label_set_is_there_from_the_start_counters_at_zero() {
    let db = TestDb::create().await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    let relay = Relay::start(&db.url, &settings);
    // The first scrape that answers, before any event was written.
    let body = first_metrics(&relay).await;
    let samples = samples(&body);

    for (name, kind, label_sets) in expected_series() {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is a {kind}:\n{body}"
        );
        let series = match kind {
            "histogram" => format!("{name}_count"),
            _ => name.to_string(),
        };
        let shown: Vec<(&Labels, f64)> = samples
            .iter()
            .filter(|(n, _, _)| *n == series)
            .map(|(_, labels, value)| (labels, *value))
            .collect();
        let mut expected: Vec<Labels> = label_sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        let mut got: Vec<Labels> = shown.iter().map(|(l, _)| (*l).clone()).collect();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "{series}: every label set, no other:\n{body}"
        );
        for (labels, value) in shown {
            match (kind, name) {
                // Taking the lanes is the relay's first step and may come before this scrape;
                // the first claim too (a query duration).
                (_, "outbox_relay_rebalances_total") => assert!(value <= 1.0, "{name}"),
                (_, "outbox_relay_db_query_duration_seconds") => {}
                ("counter" | "histogram", _) => {
                    assert_eq!(value, 0.0, "{series} {labels:?} at 0 from the start")
                }
                _ => {}
            }
        }
        if kind == "histogram" {
            for labels in &label_sets {
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let inf = format!("{name}_bucket{{{},le=\"+Inf\"}}", labels.join(","));
                assert!(body.contains(&inf), "{inf}: buckets shown:\n{body}");
            }
        }
    }
    assert!(
        !body.contains(ABSENT_AT_START),
        "{ABSENT_AT_START} absent before the first delivery:\n{body}"
    );

    // Still there, and counted, once the relay has work: the same series, not new ones.
    db.insert("orders", Some("1"), b"a", "{}").await;
    eventually("one delivery counted", Duration::from_secs(30), || async {
        relay.metric("outbox_relay_delivered_total").await == Some(1.0)
    })
    .await;
    let after = relay.metrics().await.expect("/metrics");
    assert!(after.contains(ABSENT_AT_START), "{after}");
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
