//! `make bench` (`cargo bench --bench relay`): the real release binary `outbox-relay run` as a
//! child process against the local PostgreSQL and RabbitMQ (and Kafka when `KAFKA_BROKERS` is set),
//! each scenario on a database of its own, migrated by `outbox-relay migrate`. Prints one table.
//!
//! Per sink: drain of a preloaded backlog, the highest steady producer rate with a flat backlog,
//! COMMIT-to-consumer latency at 1k events/s with NOTIFY (for Kafka next to a plain producer's
//! send-to-receive latency to the same consumer setup), and the relay's CPU and peak RSS. In the
//! same run, the limits the relay cannot beat: raw publishing to RabbitMQ with confirms (and raw
//! Kafka produce), raw claim-and-delete from PostgreSQL, and the producer's own insert rate with
//! and without the NOTIFY trigger. `BENCH_ONLY=tracing`: the drain and the relay's CPU with
//! OpenTelemetry traces off and on (every event sampled, to the bench's own OTLP receiver).
//! `BENCH_ONLY=adoption`: what adopting a framework's outbox table costs (support/adoption.rs).
//! Settings: see `Settings::from_env` and the README's "Performance" section.
//!
//! The redis, nats and http sinks each get their own stream or receiver per scenario (the tests'
//! harness, `tests/harness`, through `benches/support/target.rs`), removed afterwards, and their raw limit in the same run: pipelined XADD
//! (`OUTBOX_BATCH_SIZE` per pipeline), JetStream publish then all acks (`OUTBOX_BATCH_SIZE` per
//! batch), and `BENCH_EVENTS` unsigned POSTs, 32 in flight, to the bench's webhook receiver. The
//! drain checks what the service holds: XLEN, the stream's message count, the distinct
//! `webhook-id`s (the relay signs with a `whsec_` secret). Their settings:
//! - `BENCH_REDIS_URL` (else `TEST_REDIS_URL`, default `redis://127.0.0.1:6379`): the relay gets
//!   `OUTBOX_REDIS_STREAM_TEMPLATE=<unique>.{topic}`.
//! - `BENCH_NATS_URL` (else `TEST_NATS_URL`, default `nats://127.0.0.1:4222`, JetStream on): the
//!   bench creates a file-storage stream capturing `<unique>.>` and deletes it afterwards.
//! - `BENCH_SINKS` defaults to rabbitmq, stdout, kafka (with `KAFKA_BROKERS`), redis and nats
//!   when their server answers at start (PING / the NATS `INFO` greeting), and http (its receiver
//!   is the bench's own, on a free loopback port).

#[path = "../tests/harness/mod.rs"]
mod harness;
mod support;

use std::time::Instant;

use harness::{Postgres, use_relay_bin};
use support::adoption::adoption_rows;
use support::distance::farther_brokers;
use support::drain::drain_rows;
use support::formats::formats_rows;
use support::latency::{bare_loop_rows, latency_rows};
use support::limits::{Limits, limits_rows, producer_rows};
use support::machine::{load_average, machine_description};
use support::memory::memory_rows;
use support::raw_http::{RECEIVER_ONLY, serve_receiver_until_stdin_closes};
use support::replicas::replicas_rows;
use support::settings::{Settings, start_watchdog};
use support::soak::soak_rows;
use support::steady::steady_rows;
use support::table::{Table, progress};
use support::traces::tracing_rows;
use support::workload::{Backlogs, PAYLOAD_BYTES, build_backlog, keys};

fn main() {
    if std::env::var_os(RECEIVER_ONLY).is_some() {
        std::process::exit(serve_receiver_until_stdin_closes());
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(2);
        }
    };
    use_relay_bin(settings.relay_bin.clone());
    start_watchdog(settings.timeout);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(bench(settings));
    harness::kill_relays();
    std::process::exit(code);
}

/// Runs the scenarios `BENCH_ONLY` names, in order, and prints the table.
async fn bench(mut s: Settings) -> i32 {
    let delay = s.broker_delay;
    let _proxies = match delay.is_zero() {
        true => Vec::new(),
        false => match farther_brokers(&mut s, delay).await {
            Ok(proxies) => proxies,
            Err(e) => {
                eprintln!("bench: BENCH_BROKER_DELAY_MS: {e:#}");
                return 1;
            }
        },
    };
    let pg = Postgres::new(&s.admin_url);
    pg.drop_leftovers("outbox_bench_").await;
    let pg_version = match server_version(&pg).await {
        Ok(version) => version,
        Err(e) => {
            eprintln!("bench: PostgreSQL is not reachable: {e:#}");
            return 1;
        }
    };
    let started = Instant::now();
    let load_before = load_average();
    progress(&format!(
        "{}; PostgreSQL {pg_version}; {} events of {PAYLOAD_BYTES} bytes; batch {}; sinks {}",
        machine_description(),
        s.events,
        s.batch_size,
        s.sinks
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    ));
    let mut table = Table::default();
    let backlogs = backlogs(&s, &pg, &mut table).await;
    let limits = match s.wants("limits") {
        true => limits_rows(&s, &pg, &backlogs, &mut table).await,
        false => Limits::default(),
    };
    if s.wants("producer") {
        producer_rows(&s, &pg, &mut table).await;
    }
    sink_rows(&s, &pg, &backlogs, &limits, &mut table).await;
    if backlogs.any() && s.wants("replicas") {
        replicas_rows(&s, &pg, &backlogs, &mut table).await;
    }
    if backlogs.any() && s.wants("formats") {
        formats_rows(&s, &pg, &backlogs, &mut table).await;
    }
    if backlogs.any() && s.wants("tracing") {
        tracing_rows(&s, &pg, &backlogs, &mut table).await;
    }
    if s.wants("memory") {
        memory_rows(&s, &pg, &mut table).await;
    }
    if s.wants("soak") {
        soak_rows(&s, &pg, &mut table).await;
    }
    if s.wants("adoption") {
        adoption_rows(&s, &pg, &mut table).await;
    }
    for template in [&backlogs.plain, &backlogs.json].into_iter().flatten() {
        pg.drop(template).await;
    }
    print_table(&s, &pg_version, &load_before, started, &table);
    0
}

async fn server_version(pg: &Postgres) -> anyhow::Result<String> {
    let admin = pg.admin().await?;
    Ok(admin
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default())
}

/// The backlogs the limits, drains, replicas, formats and tracing copy: loaded once each (CREATE DATABASE
/// ... TEMPLATE), the one of JSON payloads only for a sink that needs it (bullmq).
async fn backlogs(s: &Settings, pg: &Postgres, table: &mut Table) -> Backlogs {
    let mut backlogs = Backlogs::default();
    if !["limits", "drain", "replicas", "formats", "tracing"]
        .iter()
        .any(|w| s.wants(w))
    {
        return backlogs;
    }
    let plain = s.sinks.iter().any(|k| !k.json_payloads()) || s.wants("limits");
    if plain {
        backlogs.plain = backlog(s, pg, false, table).await;
    }
    if s.sinks.iter().any(|k| k.json_payloads()) {
        backlogs.json = backlog(s, pg, true, table).await;
    }
    backlogs
}

/// One backlog of `BENCH_EVENTS` events (`json`: JSON payloads); its name.
async fn backlog(s: &Settings, pg: &Postgres, json: bool, table: &mut Table) -> Option<String> {
    let name = harness::unique(match json {
        true => "outbox_bench_backlog_json",
        false => "outbox_bench_backlog",
    });
    progress(&format!("preloading {} events into {name}", s.events));
    match build_backlog(pg, &name, s.events, json).await {
        Ok(took) => {
            progress(&format!("preloaded in {:.1} s", took.as_secs_f64()));
            Some(name)
        }
        Err(e) => {
            table.error("preload backlog", &e);
            pg.drop(&name).await;
            None
        }
    }
}

/// Per sink: the drains, the steady state and the latency (after the floor of a bare loop).
async fn sink_rows(
    s: &Settings,
    pg: &Postgres,
    backlogs: &Backlogs,
    limits: &Limits,
    table: &mut Table,
) {
    // The floor of the relay's CPU at the latency rows' rate (see support/poller.rs).
    let bare_loop = match s.wants("latency") {
        true => bare_loop_rows(s, pg, table).await,
        false => None,
    };
    for &sink in &s.sinks {
        let mut drain_rate = None;
        if let Some(template) = backlogs.of(sink).filter(|_| s.wants("drain")) {
            drain_rate = drain_rows(s, pg, template, sink, limits, table).await;
        }
        if s.wants("steady") && sink.json_payloads() {
            // Its producers insert the plain payloads, which this sink dead-letters.
            table.info(
                &format!("{}: steady state", sink.name()),
                "not measured: its producers' payloads are not JSON".into(),
            );
        } else if s.wants("steady") {
            steady_rows(s, pg, sink, drain_rate, table).await;
        }
        if s.wants("latency") {
            latency_rows(s, pg, sink, bare_loop, table).await;
        }
    }
}

fn print_table(s: &Settings, pg_version: &str, load_before: &str, started: Instant, table: &Table) {
    println!();
    println!(
        "outbox-relay bench: {}; PostgreSQL {pg_version}; {PAYLOAD_BYTES}-byte payloads; {} keys; OUTBOX_BATCH_SIZE={}; \
         OUTBOX_BATCH_LINGER_MS={}; load average {load_before} before, {} after; {:.0} s",
        machine_description(),
        keys(),
        s.batch_size,
        std::env::var("OUTBOX_BATCH_LINGER_MS").unwrap_or_else(|_| "default".into()),
        load_average(),
        started.elapsed().as_secs_f64()
    );
    println!();
    table.print();
}
