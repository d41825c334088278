//! The latency (`BENCH_ONLY=latency`): single-row autocommit inserts at `BENCH_LATENCY_RATE`
//! with NOTIFY on, each event's time from its COMMIT returning to the producer to its arrival at
//! a consumer; the relay's and its PostgreSQL backends' CPU at that rate, next to the floor of a
//! bare NOTIFY + DELETE loop; for Kafka, a plain producer's send-to-receipt time as reference.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;

use super::machine::{quantile, relay_backends_cpu_secs};
use super::poller;
use super::raw_kafka::raw_latency;
use super::settings::{Settings, SinkKind};
use super::table::{Table, progress, ratio, thousands};
use super::target::Target;
use super::workload::{TOPIC, fresh_database, produce_timed, set_notify};
use crate::harness::{Inbox, Postgres, Relay, metric_sum, parse_seq, try_connect};

const P50_TARGET_MS: f64 = 3.0;
const P99_TARGET_MS: f64 = 10.0;
/// The relay's CPU per 1M events at the latency rows' rate (1,000/s: 4% of a core).
const SLOW_RATE_CPU_TARGET: f64 = 40.0;
/// The relay's PostgreSQL backends' CPU per 1M events at that rate (issue 33).
const PG_CPU_TARGET: f64 = 100.0;
/// Kafka's p50 over the raw producer's in the same run (issue 33).
const KAFKA_P50_OVER_RAW_MS: f64 = 2.0;

struct Latency {
    count: u64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Mean claim / publish / mark time per batch, from the relay's own histograms.
    split: String,
    cpu_per_million: f64,
    cpu_percent: f64,
    /// CPU of the relay's PostgreSQL backends per 1M events.
    pg_cpu_per_million: Result<f64>,
    problem: Option<String>,
    /// Kafka: p50 and p99 of a plain producer to the same consumer setup, in the same run.
    raw: Option<Result<(f64, f64)>>,
}

/// The bare loop's CPU per 1M events, its own and its PostgreSQL backend's.
#[derive(Clone, Copy)]
pub struct Floor {
    cpu: f64,
    pg_cpu: f64,
}

/// The floor row: a bare NOTIFY + DELETE loop at the latency rows' rate. Its CPU per 1M events,
/// to compare the relay's with.
pub async fn bare_loop_rows(s: &Settings, pg: &Postgres, table: &mut Table) -> Option<Floor> {
    progress(&format!(
        "floor: a bare NOTIFY + DELETE loop at {} ev/s",
        s.latency_rate
    ));
    match bare_loop_cpu(s, pg).await {
        Ok((floor, claims_per_event)) => {
            table.info(
                &format!(
                    "floor: bare NOTIFY + DELETE...RETURNING loop at {}/s, one thread, no TLS, no broker",
                    thousands(s.latency_rate as f64)
                ),
                format!(
                    "{:.1} CPU-s per 1M events, its PostgreSQL backend {:.1}; {claims_per_event:.2} claims per event",
                    floor.cpu, floor.pg_cpu
                ),
            );
            Some(floor)
        }
        Err(e) => {
            table.error("floor: bare NOTIFY + DELETE loop", &e);
            None
        }
    }
}

/// The bare loop's CPU per 1M events and claims per event, with the latency rows' producer.
async fn bare_loop_cpu(s: &Settings, pg: &Postgres) -> Result<(Floor, f64)> {
    let (db, url) = fresh_database(pg, "bare").await?;
    let result = async {
        let client = try_connect(&url).await?;
        set_notify(&client, true).await?;
        let count = s.latency_rate * s.latency_secs;
        let poller = poller::start(&url, count, Duration::from_secs(30)).await?;
        produce_timed(&url, s.latency_rate, count, s.latency_conns, false).await?;
        let run = poller.finish().await?;
        if run.claimed != count {
            bail!("the bare loop claimed {} of {count} events", run.claimed);
        }
        let per_million = |secs: f64| secs / count as f64 * 1e6;
        let floor = Floor {
            cpu: per_million(run.cpu_secs),
            pg_cpu: per_million(run.pg_cpu_secs),
        };
        Ok((floor, run.claims as f64 / count as f64))
    }
    .await;
    pg.drop(&db).await;
    result
}

/// `sink`'s latency rows; `floor`: the bare loop's CPU per 1M events.
pub async fn latency_rows(
    s: &Settings,
    pg: &Postgres,
    sink: SinkKind,
    floor: Option<Floor>,
    table: &mut Table,
) {
    let name = sink.name();
    progress(&format!("{name}: latency at {} ev/s", s.latency_rate));
    let l = match latency(s, pg, sink).await {
        Ok(l) => l,
        Err(e) => return table.error(&format!("{name}: latency"), &e),
    };
    let at = thousands(s.latency_rate as f64);
    let what = format!(
        "{name}: COMMIT->{} at {at}/s, NOTIFY on ({} events)",
        consumer_name(sink),
        thousands(l.count as f64)
    );
    // Kafka's baseline: the same consumer behind a plain producer.
    let (raw50, raw99) = match &l.raw {
        Some(Ok((p50, p99))) => (format!("raw {p50:.2} ms"), format!("raw {p99:.2} ms")),
        _ => (String::new(), String::new()),
    };
    // Kafka's targets are against its raw producer (tansu's own latency is most of it).
    let (p50_target, p50_met, p99_target, p99_met) = match &l.raw {
        Some(Ok((raw_p50, _))) => (
            format!("<= raw + {KAFKA_P50_OVER_RAW_MS} ms"),
            Some(l.p50 <= raw_p50 + KAFKA_P50_OVER_RAW_MS),
            String::new(),
            None,
        ),
        Some(Err(_)) => (String::new(), None, String::new(), None),
        None => (
            format!("<= {P50_TARGET_MS} ms"),
            Some(l.p50 <= P50_TARGET_MS),
            format!("<= {P99_TARGET_MS} ms"),
            Some(l.p99 <= P99_TARGET_MS),
        ),
    };
    table.row(
        &format!("{what} p50"),
        format!("{:.2} ms", l.p50),
        raw50,
        String::new(),
        &p50_target,
        p50_met,
    );
    table.row(
        &format!("{what} p99"),
        format!("{:.2} ms", l.p99),
        raw99,
        String::new(),
        &p99_target,
        p99_met,
    );
    if let Some(Err(e)) = &l.raw {
        table.error(&format!("{name}: raw produce->consume latency"), e);
    }
    table.info(&format!("{what} max"), format!("{:.2} ms", l.max));
    table.info(
        &format!("{name}: at that rate, mean claim / publish / mark per batch; rates"),
        l.split.clone(),
    );
    table.row(
        &format!("{name}: relay CPU at {at}/s"),
        format!(
            "{:.1} CPU-s per 1M events ({:.1}% of a core)",
            l.cpu_per_million, l.cpu_percent
        ),
        floor.map_or_else(String::new, |f| format!("bare loop {:.1}", f.cpu)),
        ratio(l.cpu_per_million, floor.map(|f| f.cpu)),
        &format!("<= {SLOW_RATE_CPU_TARGET} CPU-s, <= 2x bare loop"),
        Some(
            l.cpu_per_million <= SLOW_RATE_CPU_TARGET
                && floor.is_none_or(|f| l.cpu_per_million <= 2.0 * f.cpu),
        ),
    );
    match &l.pg_cpu_per_million {
        Ok(cpu) => table.row(
            &format!("{name}: PostgreSQL CPU for the relay at {at}/s"),
            format!("{cpu:.1} CPU-s per 1M events (its backends)"),
            floor.map_or_else(String::new, |f| format!("bare loop {:.1}", f.pg_cpu)),
            ratio(*cpu, floor.map(|f| f.pg_cpu)),
            &format!("<= {PG_CPU_TARGET} CPU-s, <= 2x bare loop"),
            Some(*cpu <= PG_CPU_TARGET && floor.is_none_or(|f| *cpu <= 2.0 * f.pg_cpu)),
        ),
        Err(e) => table.error(&format!("{name}: PostgreSQL CPU for the relay"), e),
    }
    if let Some(problem) = l.problem {
        table.info(&format!("{name}: latency check"), problem);
    }
}

/// Who receives the events in the latency rows: for bullmq, a job's processing by the harness's
/// worker, whose pickup (one Node.js process, concurrency 1, woken from its blocking wait) is
/// part of the measured time, as it is of an application's.
fn consumer_name(sink: SinkKind) -> &'static str {
    match sink {
        SinkKind::Bullmq => "job processed (one Node.js BullMQ worker, its pickup included)",
        _ => "consumer",
    }
}

async fn latency(s: &Settings, pg: &Postgres, sink: SinkKind) -> Result<Latency> {
    let (db, url) = fresh_database(pg, "latency").await?;
    let result = match Target::open(s, sink, true).await {
        Ok(target) => {
            let r = latency_with(s, &url, &target, sink.json_payloads()).await;
            target.close().await;
            r
        }
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    let mut result = result?;
    if sink == SinkKind::Kafka {
        let brokers = s.kafka_brokers.clone().context("KAFKA_BROKERS")?;
        let count = s.latency_rate * s.latency_secs;
        progress(&format!(
            "kafka: raw produce->consume at {} ev/s",
            s.latency_rate
        ));
        result.raw = Some(
            raw_latency(&brokers, s.latency_rate, count)
                .await
                .map(|l| (quantile(&l, 0.50), quantile(&l, 0.99))),
        );
    }
    Ok(result)
}

/// The relay of a latency run and what its consumer received (the stdout sink's: its lines).
async fn start_relay(s: &Settings, url: &str, target: &Target) -> Result<(Relay, Inbox)> {
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    let (mut relay, received) = target.spawn_relay(url, &env)?;
    let received = received.context("no consumer for this sink")?;
    relay.wait_leading(Duration::from_secs(30)).await?;
    Ok((relay, received))
}

/// The relay's and its backends' CPU, and its metrics, around the producer's run.
struct Costs {
    before: String,
    /// Seconds the producer ran, and the metrics when it stopped.
    produced: (f64, String),
    after: String,
    cpu: f64,
    pg_cpu: Result<f64>,
    wall: f64,
}

/// One event through the whole path, so that neither the relay's first connections nor a
/// consumer still joining its group (Kafka) counts in the measure; then records arrivals.
/// `json`: its payload is JSON (the bullmq sink dead-letters any other).
async fn warm_up(client: &Client, received: &Inbox, json: bool) -> Result<()> {
    received.reset(false);
    let payload: &[u8] = match json {
        true => b"\"warm-up\"",
        false => b"warm-up",
    };
    client
        .execute(
            "INSERT INTO outbox.events (topic, key, payload) VALUES ($1, 'warm-up', $2)",
            &[&TOPIC, &payload],
        )
        .await
        .context("inserting the warm-up event")?;
    received
        .try_wait_for(1, Duration::from_secs(60))
        .await
        .context("the warm-up event")?;
    received.reset(true);
    Ok(())
}

/// The latency run; `json`: the events' payloads are JSON (the bullmq sink's).
async fn latency_with(s: &Settings, url: &str, target: &Target, json: bool) -> Result<Latency> {
    let client = try_connect(url).await?;
    set_notify(&client, true).await?;
    let (mut relay, received) = start_relay(s, url, target).await?;
    warm_up(&client, &received, json).await?;
    let count = s.latency_rate * s.latency_secs;
    let before = relay.metrics().await.unwrap_or_default();
    let cpu_start = relay.cpu_secs();
    let pg_cpu_start = relay_backends_cpu_secs(&client, relay.pid).await;
    let wall = Instant::now();
    let committed = produce_timed(url, s.latency_rate, count, s.latency_conns, json).await?;
    // Claims and batches per second while the producer ran (not while waiting for stragglers).
    let produced = (
        wall.elapsed().as_secs_f64(),
        relay.metrics().await.unwrap_or_default(),
    );
    let problem = received
        .try_wait_for(count, Duration::from_secs(30))
        .await
        .err()
        .map(|e| format!("{e:#}"));
    let cpu = relay.cpu_secs() - cpu_start;
    // What the relay costs PostgreSQL: its backends' CPU (session and pool).
    let pg_cpu = match (
        pg_cpu_start,
        relay_backends_cpu_secs(&client, relay.pid).await,
    ) {
        (Ok(start), Ok(end)) => Ok(end - start),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let costs = Costs {
        wall: wall.elapsed().as_secs_f64(),
        after: relay.metrics().await.unwrap_or_default(),
        before,
        produced,
        cpu,
        pg_cpu,
    };
    let relay_log = relay.stderr_tail();
    relay.stop().await?;
    let first_receipt = first_receipts(&received, count);
    let (mut latency, early) = measured(count, &committed, &first_receipt, costs, problem);
    let missing = missing_report(&client, &first_receipt, &relay_log, json).await?;
    latency.problem = join_problems(latency.problem, missing);
    if early > 0 {
        let note = format!(
            "{early} received before their COMMIT returned to the producer (counted as 0 ms)"
        );
        latency.problem = join_problems(latency.problem, Some(note));
    }
    Ok(latency)
}

/// Per sequence number, when it first arrived: from the recorded stamps, or from the messages
/// where the consumer keeps them (the BullMQ worker: its job data, the JSON string's text, starts
/// with the sequence number).
fn first_receipts(received: &Inbox, count: u64) -> Vec<Option<Instant>> {
    let mut first: Vec<Option<Instant>> = vec![None; count as usize];
    let arrivals = match received.keeps() {
        true => received
            .received()
            .iter()
            .filter_map(|m| Some((parse_seq(&m.payload)?, m.at)))
            .collect(),
        false => received.stamps(),
    };
    for (seq, at) in arrivals {
        if let Some(slot) = first.get_mut(seq as usize)
            && slot.is_none()
        {
            *slot = Some(at);
        }
    }
    first
}

/// The latency figures from the producer's commits and the consumer's first receipts, and how
/// many arrived before their COMMIT returned.
fn measured(
    count: u64,
    committed: &[Option<Instant>],
    first_receipt: &[Option<Instant>],
    costs: Costs,
    mut problem: Option<String>,
) -> (Latency, usize) {
    let mut early = 0;
    let mut latencies: Vec<f64> = committed
        .iter()
        .zip(first_receipt)
        .filter_map(|(c, r)| match (c, r) {
            (Some(c), Some(r)) => Some(match r.checked_duration_since(*c) {
                Some(d) => d.as_secs_f64() * 1000.0,
                // Received before the producer saw its COMMIT return: the commit was visible first.
                None => {
                    early += 1;
                    0.0
                }
            }),
            _ => None,
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    if latencies.len() as u64 != count && problem.is_none() {
        problem = Some(format!("{} of {count} events measured", latencies.len()));
    }
    let latency = Latency {
        count: latencies.len() as u64,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        split: batch_split(&costs),
        cpu_per_million: costs.cpu / (count as f64 / 1e6),
        cpu_percent: 100.0 * costs.cpu / costs.wall,
        pg_cpu_per_million: costs.pg_cpu.map(|c| c / (count as f64 / 1e6)),
        problem,
        raw: None,
    };
    (latency, early)
}

/// The label of both claim statements' series (`claim` and `claim_steady`).
const CLAIMS: &str = "query=\"claim";

/// Mean claim / publish / mark per batch, and claims and batches per second while the producer
/// ran.
fn batch_split(costs: &Costs) -> String {
    let body = &costs.after;
    let mean_ms = |name: &str, label: &str| {
        let sum = metric_sum(body, &format!("{name}_sum"), label).unwrap_or(f64::NAN);
        let count = metric_sum(body, &format!("{name}_count"), label).unwrap_or(f64::NAN);
        1000.0 * sum / count
    };
    let query = "outbox_relay_db_query_duration_seconds";
    // Claims (each one a wake-up of the loop) and published batches per second.
    let per_sec = |name: &str, label: &str| {
        let count = |b: &str| metric_sum(b, &format!("{name}_count"), label).unwrap_or(f64::NAN);
        (count(&costs.produced.1) - count(&costs.before)) / costs.produced.0
    };
    format!(
        "{:.2} / {:.2} / {:.2} ms; {:.0} claims/s, {:.0} batches/s",
        mean_ms(query, CLAIMS),
        mean_ms("outbox_relay_publish_duration_seconds", ""),
        mean_ms(query, "query=\"mark\""),
        per_sec(query, CLAIMS),
        per_sec("outbox_relay_publish_duration_seconds", ""),
    )
}

/// What the outbox says of the first events that never arrived: delivered (a broker
/// acknowledgement the consumer never saw), or still pending, and why; with the relay's warnings.
/// `json`: the payloads are JSON strings, their digits after the opening quote.
async fn missing_report(
    client: &Client,
    first_receipt: &[Option<Instant>],
    relay_log: &str,
    json: bool,
) -> Result<Option<String>> {
    let missing: Vec<usize> = first_receipt
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(seq, _)| seq)
        .take(5)
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let digits_from: i32 = if json { 2 } else { 1 };
    let mut states = Vec::new();
    for seq in &missing {
        let row = client
            .query_opt(
                "SELECT id, delivered_at IS NOT NULL, attempts, coalesce(last_error, ''), \
                        extract(epoch FROM available_at - created_at)::float8 \
                 FROM outbox.events WHERE substring(payload FROM $2 FOR 12) = $1",
                &[&format!("{seq:012}").into_bytes(), &digits_from],
            )
            .await
            .context("looking up a missing event")?;
        states.push(match row {
            None => format!("{seq}: no row"),
            Some(r) => format!(
                "{seq}: id {} delivered {} attempts {} deferred {:.1} s {}",
                r.try_get::<_, i64>(0)?,
                r.try_get::<_, bool>(1)?,
                r.try_get::<_, i32>(2)?,
                r.try_get::<_, f64>(4)?,
                r.try_get::<_, String>(3)?,
            ),
        });
    }
    let warnings: Vec<&str> = relay_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    Ok(Some(format!(
        "never received: {}; relay warnings at the end: {}",
        states.join("; "),
        warnings.join(" / ")
    )))
}

/// `a; b`, or whichever is there.
fn join_problems(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}
