//! Metric names, label values and the Prometheus recorder. Knows nothing of the relay: the
//! relay, the background jobs and `/readyz` record under these names.

use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const LAG: &str = "outbox_relay_lag_seconds";
pub const PENDING: &str = "outbox_relay_pending_events";
pub const DELIVERED: &str = "outbox_relay_delivered_total";
pub const PUBLISH_ERRORS: &str = "outbox_relay_publish_errors_total";
pub const DEAD_LETTERED: &str = "outbox_relay_dead_lettered_total";
pub const PUBLISH_DURATION: &str = "outbox_relay_publish_duration_seconds";
pub const DEAD_LETTER_EVENTS: &str = "outbox_relay_dead_letter_events";
pub const LEADER: &str = "outbox_relay_leader";
pub const READY: &str = "outbox_relay_ready";
pub const RECONNECTS: &str = "outbox_relay_reconnects_total";
pub const LANES_OWNED: &str = "outbox_relay_lanes_owned";
pub const LANES_UNOWNED: &str = "outbox_relay_lanes_unowned";
pub const REBALANCES: &str = "outbox_relay_rebalances_total";
pub const LAST_DELIVERY: &str = "outbox_relay_last_delivery_timestamp_seconds";
pub const BATCH_SIZE: &str = "outbox_relay_batch_size";
pub const DB_QUERY_DURATION: &str = "outbox_relay_db_query_duration_seconds";
/// Only while traces are on (src/otel): spans lost to a full queue or a failed export.
pub const TRACE_SPANS_DROPPED: &str = "outbox_relay_trace_spans_dropped_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// Installs the global recorder; the handle renders `/metrics`. `sinks` are the configured
/// sinks' names: the per-sink series start at zero for each.
pub fn install(sinks: &[&str]) -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .map_err(|e| format!("cannot configure metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    register(sinks);
    Ok(handle)
}

/// Every label value the relay records (src/relay, src/outbox/session.rs); keep them in step.
const ERROR_KINDS: &[&str] = &["event", "outage"];
const RECONNECT_TARGETS: &[&str] = &["database", "broker"];
const QUERIES: &[&str] = &[
    "claim",
    "mark",
    "record_failures",
    "park",
    "listen",
    "unlisten",
];

/// Puts every series on `/metrics` at once, at zero: a counter that first appears at 1 has no
/// earlier sample, so `increase()` and `rate()` would miss the first event after a restart, and a
/// ratio over a missing series has no value at all. A histogram shows with empty buckets.
/// `LAST_DELIVERY` stays absent until the first delivery: 0 would read as a delivery in 1970.
fn register(sinks: &[&str]) {
    use metrics::{counter, gauge, histogram};
    for sink in sinks.iter().map(|s| s.to_string()) {
        counter!(DELIVERED, "sink" => sink.clone()).increment(0);
        counter!(DEAD_LETTERED, "sink" => sink.clone()).increment(0);
        for kind in ERROR_KINDS {
            counter!(PUBLISH_ERRORS, "kind" => *kind, "sink" => sink.clone()).increment(0);
        }
        let _ = histogram!(PUBLISH_DURATION, "sink" => sink.clone());
        let _ = histogram!(BATCH_SIZE, "sink" => sink);
    }
    for target in RECONNECT_TARGETS {
        counter!(RECONNECTS, "target" => *target).increment(0);
    }
    counter!(REBALANCES).increment(0);
    for name in [
        LAG,
        PENDING,
        DEAD_LETTER_EVENTS,
        LEADER,
        READY,
        LANES_OWNED,
        LANES_UNOWNED,
    ] {
        gauge!(name).set(0.0);
    }
    // Registering a histogram is enough for the exporter to render it; the handle is not needed.
    for query in QUERIES {
        let _ = histogram!(DB_QUERY_DURATION, "query" => *query);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        LAG,
        Unit::Seconds,
        "Age of the oldest deliverable undelivered event, 0 when none."
    );
    describe_gauge!(PENDING, "Events not yet delivered and not dead-lettered.");
    describe_counter!(
        DELIVERED,
        "Events acknowledged by the broker and marked delivered."
    );
    describe_counter!(
        PUBLISH_ERRORS,
        "Failed publishes: of an event (label kind=event) or of a whole batch during a broker outage (kind=outage)."
    );
    describe_counter!(DEAD_LETTERED, "Events moved to the dead letters.");
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time to publish one batch and receive the broker's acknowledgements."
    );
    describe_gauge!(DEAD_LETTER_EVENTS, "Events currently dead-lettered.");
    describe_gauge!(
        LEADER,
        "1 on a replica that relays (owns lanes), 0 on one that stands by."
    );
    describe_gauge!(LANES_OWNED, "Lanes this replica owns and relays.");
    describe_gauge!(
        LANES_UNOWNED,
        "Lanes no replica owned at this replica's last rebalance (their events wait)."
    );
    describe_counter!(
        REBALANCES,
        "Rebalances in which this replica took or gave up lanes."
    );
    describe_gauge!(READY, "1 while connected to PostgreSQL and every sink.");
    describe_counter!(
        RECONNECTS,
        "Connection attempts after a failure, by target (database, broker)."
    );
    describe_gauge!(
        LAST_DELIVERY,
        Unit::Seconds,
        "Unix time of the last successful delivery."
    );
    describe_histogram!(BATCH_SIZE, "Events per published batch.");
    describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "Round-trip time of the relay's queries, by query."
    );
}

pub fn observe_query(query: &'static str, started: Instant) {
    metrics::histogram!(DB_QUERY_DURATION, "query" => query)
        .record(started.elapsed().as_secs_f64());
}
