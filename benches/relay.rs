//! `make bench` (`cargo bench --bench relay`): the real release binary `outbox-relay run` as a
//! child process against the local PostgreSQL and RabbitMQ (and Kafka when `KAFKA_BROKERS` is set),
//! each scenario on a database of its own, migrated by `outbox-relay migrate`. Prints one table.
//!
//! Per sink: drain of a preloaded backlog, the highest steady producer rate with a flat backlog,
//! COMMIT-to-consumer latency at 1k events/s with NOTIFY (for Kafka next to a plain producer's
//! send-to-receive latency to the same consumer setup), and the relay's CPU and peak RSS. In the
//! same run, the limits the relay cannot beat: raw publishing to RabbitMQ with confirms (and raw
//! Kafka produce), raw claim-and-delete from PostgreSQL, and the producer's own insert rate with
//! and without the NOTIFY trigger. Settings: see `Settings::from_env` and the README's
//! "Performance" section.
//!
//! The redis, nats and http sinks (`benches/support/sinks.rs`) each get their own stream or
//! receiver per scenario, removed afterwards, and their raw limit in the same run: pipelined XADD
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

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use outbox_relay::outbox::session::OnDelivery;
use support::*;

const CLAIM_SQL: &str = include_str!("../sql/queries/claim.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../sql/queries/mark_delivered.sql");
/// `OUTBOX_BATCH_MAX_BYTES` and `OUTBOX_MAX_PAYLOAD_BYTES` defaults.
const RELAY_DEFAULT_BYTES: i64 = 16 * 1024 * 1024;

// Targets of issue 7.
const DRAIN_RATIO_TARGET: f64 = 0.7;
const P50_TARGET_MS: f64 = 3.0;
const P99_TARGET_MS: f64 = 10.0;
const CPU_PER_MILLION_TARGET: f64 = 5.0;
/// The relay's CPU per 1M events at the latency rows' rate (1,000/s: 4% of a core).
const SLOW_RATE_CPU_TARGET: f64 = 40.0;
const RSS_TARGET_MIB: f64 = 50.0;
/// The relay's setting that deletes each event as its delivery is recorded.
const DELETE_ON_DELIVERY: &[(&str, &str)] = &[("OUTBOX_RETENTION_SECS", "0")];
// Target of the production-database issue: lag p99 under 1 s while another session holds a
// snapshot or a transaction open.
const SOAK_LAG_P99_TARGET_SECS: f64 = 1.0;

fn main() {
    if std::env::var_os(sinks::RECEIVER_ONLY).is_some() {
        std::process::exit(sinks::serve_receiver_until_stdin_closes());
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(2);
        }
    };
    start_watchdog(settings.timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(bench(settings));
    kill_children();
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// The table

#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(
        &mut self,
        measure: &str,
        result: String,
        limit: String,
        ratio: String,
        target: &str,
        met: Option<bool>,
    ) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        self.rows.push([
            measure.to_string(),
            result,
            limit,
            ratio,
            target.to_string(),
            met.to_string(),
        ]);
    }

    /// A figure with an absolute target of issue 7 (no limit to compare with).
    fn target(&mut self, measure: &str, result: String, target: &str, met: bool) {
        self.row(
            measure,
            result,
            String::new(),
            String::new(),
            target,
            Some(met),
        );
    }

    fn info(&mut self, measure: &str, result: String) {
        self.row(measure, result, String::new(), String::new(), "", None);
    }

    fn error(&mut self, measure: &str, e: &anyhow::Error) {
        let text = format!("{e:#}").replace('\n', " ");
        let text: String = text.chars().take(160).collect();
        self.info(measure, format!("ERROR: {text}"));
    }

    fn print(&self) {
        let header = [
            "measure",
            "result",
            "limit / baseline",
            "ratio",
            "target",
            "met",
        ];
        let mut widths = header.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut out = String::from("|");
            for (cell, w) in cells.iter().zip(widths) {
                out.push_str(&format!(" {cell:<w$} |"));
            }
            out
        };
        println!("{}", line(header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!(
            "{}",
            line([&rule[0], &rule[1], &rule[2], &rule[3], &rule[4], &rule[5]])
        );
        for row in &self.rows {
            println!(
                "{}",
                line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])
            );
        }
    }
}

fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn rate(r: f64) -> String {
    format!("{} ev/s", thousands(r))
}

fn ratio(value: f64, limit: Option<f64>) -> String {
    match limit {
        Some(l) if l > 0.0 => format!("{:.2}", value / l),
        _ => String::new(),
    }
}

fn events_label(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn progress(what: &str) {
    eprintln!("bench: [{}] {what}", load_average());
}

// ---------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Limits {
    pg_delete: Option<f64>,
    rabbitmq: Option<f64>,
    kafka: Option<f64>,
    redis: Option<f64>,
    nats: Option<f64>,
    http: Option<f64>,
    /// Per sink: PostgreSQL's claim+delete and the raw publisher at the same time (see
    /// [`outbox_limit`]).
    outbox: Vec<(SinkKind, f64)>,
    /// The raw publishers' own CPU per 1M messages (this process, which runs nothing else
    /// meanwhile): what the client library costs without the relay. RabbitMQ's is measured into
    /// a queue nobody consumes, HTTP's against a receiver in another process.
    client_cpu: Vec<(SinkKind, f64)>,
}

impl Limits {
    fn outbox(&self, sink: SinkKind) -> Option<f64> {
        self.outbox
            .iter()
            .find(|(kind, _)| *kind == sink)
            .map(|&(_, rate)| rate)
    }

    /// Keeps a raw client's own CPU per 1M messages, measured on its own, and shows it.
    fn note_client_cpu(
        &mut self,
        table: &mut Table,
        sink: SinkKind,
        measure: &str,
        cpu: Result<f64>,
    ) {
        match cpu {
            Ok(cpu) => {
                self.client_cpu.push((sink, cpu));
                table.info(measure, format!("{cpu:.2} CPU-s"));
            }
            Err(e) => table.error(measure, &e),
        }
    }

    fn client_cpu(&self, sink: SinkKind) -> Option<f64> {
        self.client_cpu
            .iter()
            .find(|(kind, _)| *kind == sink)
            .map(|&(_, cpu)| cpu)
    }
}

/// The limit row's text: the rate and the raw publisher's own CPU per 1M messages.
fn limit_result(rate_per_sec: f64, cpu_per_million: f64) -> String {
    format!(
        "{}; the publisher's own CPU {cpu_per_million:.2} CPU-s per 1M",
        rate(rate_per_sec)
    )
}

async fn bench(s: Settings) -> i32 {
    let pg = Pg {
        admin_url: s.admin_url.clone(),
        relay_bin: s.relay_bin.clone(),
    };
    pg.drop_leftovers().await;
    let mut table = Table::default();
    let pg_version = match pg.admin().await {
        Ok(admin) => admin
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("bench: PostgreSQL is not reachable: {e:#}");
            return 1;
        }
    };
    let started = Instant::now();
    let load_before = load_average();
    let n = s.events;
    let nl = events_label(n);
    progress(&format!(
        "{}; PostgreSQL {pg_version}; {} events of {PAYLOAD_BYTES} bytes; batch {}; sinks {}",
        machine_description(),
        n,
        s.batch_size,
        s.sinks
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    ));

    // The backlog: loaded once, copied per scenario (CREATE DATABASE ... TEMPLATE).
    let template =
        if s.wants("limits") || s.wants("drain") || s.wants("replicas") || s.wants("formats") {
            let name = unique("outbox_bench_backlog");
            progress(&format!("preloading {n} events into {name}"));
            match build_backlog(&s, &pg, &name).await {
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
        } else {
            None
        };

    let mut limits = Limits::default();
    if s.wants("limits") {
        if let Some(tmpl) = &template {
            progress("limit: PostgreSQL claim+delete");
            match raw_pg_delete(&s, &pg, tmpl).await {
                Ok(r) => {
                    limits.pg_delete = Some(r);
                    table.info(
                        &format!("limit: PostgreSQL claim+delete, {nl} backlog, batches of {}, no broker", s.batch_size),
                        rate(r),
                    );
                }
                Err(e) => table.error("limit: PostgreSQL claim+delete", &e),
            }
            for on_delivery in [OnDelivery::Mark, OnDelivery::Delete] {
                let verb = recording(on_delivery);
                progress(&format!("reference: the relay's own claim SQL, {verb}"));
                match raw_pg_relay_sql(&s, &pg, tmpl, on_delivery).await {
                    Ok((r, done)) => table.row(
                        &format!(
                            "ref: relay's claim.sql, each {verb} the batch before, no broker (first {})",
                            events_label(done)
                        ),
                        rate(r),
                        "PG claim+delete".into(),
                        ratio(r, limits.pg_delete),
                        "",
                        None,
                    ),
                    Err(e) => table.error("ref: relay's claim SQL", &e),
                }
            }
        }
        progress("limit: RabbitMQ publish with confirms");
        match raw_rabbit_publishers(&s, 1).await {
            Ok(r) => {
                limits.rabbitmq = Some(r);
                table.info(
                    &format!(
                        "limit: RabbitMQ publish+confirm, {nl} msgs, batches of {}, no DB",
                        s.batch_size
                    ),
                    rate(r),
                );
            }
            Err(e) => table.error("limit: RabbitMQ publish+confirm", &e),
        }
        // The client's own CPU needs a run without the consumer, which shares this process.
        limits.note_client_cpu(
            &mut table,
            SinkKind::RabbitMq,
            "limit: RabbitMQ publisher CPU per 1M msgs (lapin, no consumer in the process)",
            raw_rabbit_client_cpu(&s).await,
        );
        if let Some(brokers) = &s.kafka_brokers {
            progress("limit: Kafka produce");
            let cpu = own_cpu_secs();
            match raw_kafka(&s, brokers, false).await {
                Ok(r) => {
                    let cpu = cpu_per_million_since(cpu, n);
                    limits.kafka = Some(r);
                    limits.client_cpu.push((SinkKind::Kafka, cpu));
                    table.info(
                        &format!(
                            "limit: Kafka produce (idempotent, acks=all), {nl} msgs, batches of {}",
                            s.batch_size
                        ),
                        limit_result(r, cpu),
                    );
                }
                Err(e) => table.error("limit: Kafka produce", &e),
            }
        }
        if s.sinks.contains(&SinkKind::Redis) {
            progress("limit: Redis pipelined XADD");
            let cpu = own_cpu_secs();
            match sinks::redis_raw_xadd(&s.redis_url, n, s.batch_size, false).await {
                Ok(took) => {
                    let cpu = cpu_per_million_since(cpu, n);
                    let r = n as f64 / took.as_secs_f64();
                    limits.redis = Some(r);
                    limits.client_cpu.push((SinkKind::Redis, cpu));
                    table.info(
                        &format!(
                            "limit: Redis pipelined XADD, {nl} msgs, pipelines of {}, no DB",
                            s.batch_size
                        ),
                        limit_result(r, cpu),
                    );
                }
                Err(e) => table.error("limit: Redis pipelined XADD", &e),
            }
        }
        if s.sinks.contains(&SinkKind::Nats) {
            progress("limit: JetStream publish+ack");
            let cpu = own_cpu_secs();
            match sinks::nats_raw_publish(&s.nats_url, n, s.batch_size).await {
                Ok(took) => {
                    let cpu = cpu_per_million_since(cpu, n);
                    let r = n as f64 / took.as_secs_f64();
                    limits.nats = Some(r);
                    limits.client_cpu.push((SinkKind::Nats, cpu));
                    table.info(
                        &format!(
                            "limit: JetStream publish+ack, {nl} msgs, batches of {}, no DB",
                            s.batch_size
                        ),
                        limit_result(r, cpu),
                    );
                }
                Err(e) => table.error("limit: JetStream publish+ack", &e),
            }
        }
        if s.sinks.contains(&SinkKind::Http) {
            progress("limit: HTTP client CPU, receiver in another process");
            limits.note_client_cpu(
                &mut table,
                SinkKind::Http,
                "limit: HTTP client CPU per 1M POSTs (reqwest, receiver in another process)",
                sinks::http_raw_client_cpu(n).await,
            );
            progress("limit: HTTP POST");
            match raw_http(n, false).await {
                Ok(r) => {
                    limits.http = Some(r);
                    table.info(
                        &format!(
                            "limit: HTTP POST, {} in flight, {nl} requests, unsigned, no DB",
                            sinks::WEBHOOK_CONCURRENCY
                        ),
                        rate(r),
                    );
                }
                Err(e) => table.error("limit: HTTP POST", &e),
            }
        }
    }

    if s.wants("limits")
        && let Some(tmpl) = &template
    {
        for &sink in s.sinks.iter().filter(|&&k| k != SinkKind::Stdout) {
            let name = sink.name();
            progress(&format!(
                "limit: PostgreSQL claim+delete and {name} raw at once"
            ));
            match outbox_limit(&s, &pg, tmpl, sink).await {
                Ok(r) => {
                    limits.outbox.push((sink, r));
                    table.info(
                        &format!("limit: PG claim+delete and {name} raw at once, {nl}"),
                        rate(r),
                    );
                }
                Err(e) => table.error(&format!("limit: PG claim+delete and {name} raw"), &e),
            }
        }
    }

    if s.wants("producer") {
        progress("producer insert rate with and without NOTIFY");
        match producer_rates(&s, &pg).await {
            Ok((on, off)) => {
                let what = format!("producer: {} conns, 1 event per tx", s.producer_conns);
                table.info(&format!("{what}, NOTIFY trigger on"), rate(on));
                table.row(
                    &format!("{what}, NOTIFY trigger off"),
                    rate(off),
                    "NOTIFY on".into(),
                    ratio(off, Some(on)),
                    "",
                    None,
                );
            }
            Err(e) => table.error("producer insert rate", &e),
        }
    }

    // The floor of the relay's CPU at the latency rows' rate (see support/poller.rs).
    let bare_loop = if s.wants("latency") {
        progress(&format!(
            "floor: a bare NOTIFY + DELETE loop at {} ev/s",
            s.latency_rate
        ));
        match bare_loop_cpu(&s, &pg).await {
            Ok(cpu) => Some(cpu),
            Err(e) => {
                table.error("floor: bare NOTIFY + DELETE loop", &e);
                None
            }
        }
    } else {
        None
    };
    if let Some((cpu, claims_per_event)) = bare_loop {
        table.info(
            &format!(
                "floor: bare NOTIFY + DELETE...RETURNING loop at {}/s, one thread, no TLS, no broker",
                thousands(s.latency_rate as f64)
            ),
            format!("{cpu:.1} CPU-s per 1M events; {claims_per_event:.2} claims per event"),
        );
    }

    for &sink in &s.sinks {
        let name = sink.name();
        let limit = match sink {
            SinkKind::RabbitMq => limits.rabbitmq,
            SinkKind::Stdout => limits.pg_delete,
            SinkKind::Kafka => limits.kafka,
            SinkKind::Redis => limits.redis,
            SinkKind::Nats => limits.nats,
            SinkKind::Http => limits.http,
        };
        let limit_name = match sink {
            SinkKind::RabbitMq => "RabbitMQ raw",
            SinkKind::Stdout => "PG claim+delete",
            SinkKind::Kafka => "Kafka raw",
            SinkKind::Redis => "Redis XADD raw",
            SinkKind::Nats => "JetStream raw",
            SinkKind::Http => "HTTP POST raw",
        };
        let mut drain_rate = None;
        if s.wants("drain")
            && let Some(tmpl) = &template
        {
            // As configured by default (delivered events kept), then deleted on delivery.
            for (recorded, settings) in
                [("", &[][..]), (", deleted on delivery", DELETE_ON_DELIVERY)]
            {
                progress(&format!("{name}: drain {n} events{recorded}"));
                let d = match drain_configured(&s, &pg, tmpl, sink, settings).await {
                    Ok(d) => d,
                    Err(e) => {
                        table.error(&format!("{name}: drain{recorded}"), &e);
                        continue;
                    }
                };
                // The steady state runs as configured by default: its baseline is that drain.
                if settings.is_empty() {
                    drain_rate = Some(d.rate);
                }
                table.row(
                    &format!("{name}: drain {nl} backlog{recorded}"),
                    rate(d.rate),
                    limit_name.into(),
                    ratio(d.rate, limit),
                    &format!(">= {DRAIN_RATIO_TARGET:.2} of limit"),
                    limit.map(|l| d.rate >= DRAIN_RATIO_TARGET * l),
                );
                if let Some(outbox) = limits.outbox(sink) {
                    table.row(
                        &format!(
                            "{name}: drain{recorded} / PG claim+delete and {name} raw at once"
                        ),
                        rate(d.rate),
                        "outbox limit".into(),
                        ratio(d.rate, Some(outbox)),
                        "",
                        None,
                    );
                }
                table.info(
                    &format!("{name}: drain{recorded} rate early (5-15%) / late (85-95%)"),
                    format!("{} / {}", rate(d.early), rate(d.late)),
                );
                table.info(
                    &format!("{name}: drain{recorded} time in claim / publish / mark"),
                    d.split,
                );
                table.info(
                    &format!(
                        "{name}: drain{recorded} CPU cores: relay / PG / broker / bench / machine"
                    ),
                    d.cores,
                );
                let client = limits.client_cpu(sink);
                table.row(
                    &format!("{name}: relay CPU per 1M events (drain{recorded})"),
                    format!("{:.2} CPU-s", d.cpu_per_million),
                    client.map_or_else(String::new, |c| format!("raw publisher {c:.2} CPU-s")),
                    ratio(d.cpu_per_million, client),
                    &format!("<= {CPU_PER_MILLION_TARGET} CPU-s"),
                    Some(d.cpu_per_million <= CPU_PER_MILLION_TARGET),
                );
                table.target(
                    &format!("{name}: relay peak RSS, {nl} backlog{recorded}"),
                    format!("{:.1} MiB", d.rss_mib),
                    &format!("<= {RSS_TARGET_MIB} MiB"),
                    d.rss_mib <= RSS_TARGET_MIB,
                );
                if let Some(problem) = d.problem {
                    table.info(&format!("{name}: drain{recorded} check"), problem);
                }
            }
        }
        if s.wants("steady") {
            progress(&format!("{name}: steady state"));
            match steady(&s, &pg, sink, drain_rate).await {
                Ok(st) => {
                    let best = st.best.map_or("none of the rates".into(), rate);
                    table.row(
                        &format!("{name}: steady max, NOTIFY off (tried {})", st.tried),
                        best,
                        "drain".into(),
                        st.best.map_or(String::new(), |b| ratio(b, drain_rate)),
                        "",
                        None,
                    );
                    if let Some(note) = st.note {
                        table.info(&format!("{name}: steady at that rate"), note);
                    }
                }
                Err(e) => table.error(&format!("{name}: steady state"), &e),
            }
        }
        if s.wants("latency") {
            progress(&format!("{name}: latency at {} ev/s", s.latency_rate));
            match latency(&s, &pg, sink).await {
                Ok(l) => {
                    let what = format!(
                        "{name}: COMMIT->consumer at {}/s, NOTIFY on ({} events)",
                        thousands(s.latency_rate as f64),
                        thousands(l.count as f64)
                    );
                    // Kafka's baseline: the same consumer behind a plain producer.
                    let (raw50, raw99) = match &l.raw {
                        Some(Ok((p50, p99))) => {
                            (format!("raw {p50:.2} ms"), format!("raw {p99:.2} ms"))
                        }
                        _ => (String::new(), String::new()),
                    };
                    table.row(
                        &format!("{what} p50"),
                        format!("{:.2} ms", l.p50),
                        raw50,
                        String::new(),
                        &format!("<= {P50_TARGET_MS} ms"),
                        Some(l.p50 <= P50_TARGET_MS),
                    );
                    table.row(
                        &format!("{what} p99"),
                        format!("{:.2} ms", l.p99),
                        raw99,
                        String::new(),
                        &format!("<= {P99_TARGET_MS} ms"),
                        Some(l.p99 <= P99_TARGET_MS),
                    );
                    if let Some(Err(e)) = &l.raw {
                        table.error(&format!("{name}: raw produce->consume latency"), e);
                    }
                    table.info(&format!("{what} max"), format!("{:.2} ms", l.max));
                    table.info(
                        &format!(
                            "{name}: at that rate, mean claim / publish / mark per batch; rates"
                        ),
                        l.split.clone(),
                    );
                    table.row(
                        &format!(
                            "{name}: relay CPU at {}/s",
                            thousands(s.latency_rate as f64)
                        ),
                        format!(
                            "{:.1} CPU-s per 1M events ({:.1}% of a core)",
                            l.cpu_per_million, l.cpu_percent
                        ),
                        bare_loop.map_or_else(String::new, |(c, _)| format!("bare loop {c:.1}")),
                        ratio(l.cpu_per_million, bare_loop.map(|(c, _)| c)),
                        &format!("<= {SLOW_RATE_CPU_TARGET} CPU-s"),
                        Some(l.cpu_per_million <= SLOW_RATE_CPU_TARGET),
                    );
                    match &l.pg_cpu_per_million {
                        Ok(cpu) => table.info(
                            &format!(
                                "{name}: PostgreSQL CPU for the relay at {}/s",
                                thousands(s.latency_rate as f64)
                            ),
                            format!("{cpu:.1} CPU-s per 1M events (its backends)"),
                        ),
                        Err(e) => table.error(&format!("{name}: PostgreSQL CPU for the relay"), e),
                    }
                    if let Some(problem) = l.problem {
                        table.info(&format!("{name}: latency check"), problem);
                    }
                }
                Err(e) => table.error(&format!("{name}: latency"), &e),
            }
        }
    }

    if s.wants("replicas")
        && let Some(tmpl) = &template
    {
        replicas_rows(&s, &pg, tmpl, &mut table).await;
    }

    if s.wants("formats")
        && let Some(tmpl) = &template
    {
        formats_rows(&s, &pg, tmpl, &mut table).await;
    }

    if s.wants("memory") {
        progress("memory: a backlog of huge payloads to stdout");
        match memory::memory(&s, &pg).await {
            Ok(m) => {
                // One batch (no early claim with large payloads), plus one event as the database
                // protocol reads it and one as the sink writes it, plus the process itself.
                let bound = m.budget_mib as f64 + 2.0 * m.payload_mib as f64 + 32.0;
                table.target(
                    &format!(
                        "memory: {} events of {} MiB, OUTBOX_BATCH_MAX_BYTES {} MiB: peak RSS",
                        m.events, m.payload_mib, m.budget_mib
                    ),
                    format!(
                        "{:.1} MiB ({:.0} s, {} batches)",
                        m.peak_rss_mib, m.seconds, m.batches
                    ),
                    &format!("<= budget + 2 x payload + 32 MiB = {bound:.0} MiB"),
                    m.peak_rss_mib <= bound,
                );
            }
            Err(e) => table.error("memory", &e),
        }
    }
    if s.wants("soak") {
        soak_rows(&s, &pg, &mut table).await;
    }

    if let Some(tmpl) = &template {
        pg.drop(tmpl).await;
    }
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
    0
}

/// The soak's figures (see `support::soak`): one row per phase and the recovery after each hold.
async fn soak_rows(s: &Settings, pg: &Pg, table: &mut Table) {
    let settings = match soak::SoakSettings::from_env() {
        Ok(settings) => settings,
        Err(e) => return table.error("soak", &e),
    };
    progress(&format!(
        "soak: stdout at {} ev/s, holds of {} s",
        settings.rate,
        settings.hold.as_secs()
    ));
    let report = match soak::soak(s, pg, &settings).await {
        Ok(report) => report,
        Err(e) => return table.error("soak", &e),
    };
    let at = format!("soak at {}/s", thousands(report.rate as f64));
    for p in &report.phases {
        let held = matches!(p.phase, soak::Phase::SnapshotHeld | soak::Phase::WriterHeld);
        table.target(
            &format!("{at}, {}: lag p99 / max", p.phase.name()),
            format!("{:.2} / {:.2} s", p.lag_p99, p.lag_max),
            "p99 < 1 s",
            p.lag_p99 < SOAK_LAG_P99_TARGET_SECS,
        );
        table.info(
            &format!("{at}, {}: claim mean / max, backlog max", p.phase.name()),
            format!(
                "{:.2} / {:.2} ms, {} events",
                p.claim_mean_ms,
                p.claim_max_ms,
                thousands(p.backlog_max as f64)
            ),
        );
        table.info(
            &format!(
                "{at}, {}: dead tuples, table size at the end{}",
                p.phase.name(),
                if held { " (not removable)" } else { "" }
            ),
            format!(
                "{}, {:.1} MiB",
                thousands(p.dead_tuples_end as f64),
                p.table_mib_end
            ),
        );
    }
    for (phase, after) in &report.recovered_after {
        table.info(
            &format!("{at}: backlog under 1 s of production, {}", phase.name()),
            after.map_or("not within the phase".into(), |t| format!("after {t:.0} s")),
        );
    }
    table.target(
        &format!("{at}: delivered / produced (+ the held writer's event)"),
        format!(
            "{} / {} (+1: {})",
            thousands(report.delivered as f64),
            thousands(report.produced as f64),
            if report.held_event_delivered {
                "delivered"
            } else {
                "MISSING"
            }
        ),
        "all",
        report.held_event_delivered && report.delivered > report.produced,
    );
    table.info(
        &format!("{at}: everything delivered after the producer stopped"),
        report
            .drained_after
            .map_or("NOT within 5 min".into(), |t| format!("after {t:.0} s")),
    );
    table.info(
        &format!("{at}: relay peak RSS"),
        format!("{:.1} MiB", report.peak_rss_mib),
    );
}

// ---------------------------------------------------------------------------------------------
// Backlog and limits

/// A migrated database holding `s.events` events, inserted with the NOTIFY trigger off, vacuumed
/// and analyzed; scenarios copy it.
async fn build_backlog(s: &Settings, pg: &Pg, name: &str) -> Result<Duration> {
    let url = pg.create(name, None).await?;
    let client = connect(&url).await?;
    let started = Instant::now();
    set_notify(&client, false).await?;
    insert_series(&client, 1, s.events, 250_000).await?;
    client
        .batch_execute("VACUUM (ANALYZE) outbox.events")
        .await
        .map_err(|e| anyhow!("VACUUM: {}", pg_error(&e)))?;
    let took = started.elapsed();
    drop(client);
    // Wait for the session to end, so the database can serve as a template.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(took)
}

/// A copy of the backlog for one scenario; dropped by `f`'s caller through the returned name.
async fn backlog_copy(pg: &Pg, template: &str, what: &str) -> Result<(String, String)> {
    let name = unique(&format!("outbox_bench_{what}"));
    let url = pg.create(&name, Some(template)).await?;
    Ok((name, url))
}

async fn raw_pg_delete(s: &Settings, pg: &Pg, template: &str) -> Result<f64> {
    let (db, url) = backlog_copy(pg, template, "pgraw").await?;
    let result = async {
        let claims = PlainClaims::prepare(&url).await?;
        let took = claims.run(s).await?;
        Ok(s.events as f64 / took.as_secs_f64())
    }
    .await;
    pg.drop(&db).await;
    result
}

/// PostgreSQL's plain claim of a backlog, batch by batch (`DELETE ... RETURNING`, no relay).
struct PlainClaims {
    client: tokio_postgres::Client,
    statement: tokio_postgres::Statement,
}

impl PlainClaims {
    async fn prepare(url: &str) -> Result<PlainClaims> {
        let client = connect(url).await?;
        let statement = client.prepare(PLAIN_CLAIM).await?;
        Ok(PlainClaims { client, statement })
    }

    /// Claims the whole backlog; how long it took.
    async fn run(&self, s: &Settings) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(60 + s.events / 1000);
        let started = Instant::now();
        let mut total = 0u64;
        let mut bytes = 0usize;
        loop {
            let rows = self
                .client
                .query(&self.statement, &[&(s.batch_size as i64)])
                .await
                .map_err(|e| anyhow!("claim+delete: {}", pg_error(&e)))?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                bytes += row
                    .try_get::<_, &[u8]>("payload")
                    .map_err(|e| anyhow!("claim+delete payload: {e}"))?
                    .len();
            }
            total += rows.len() as u64;
            if Instant::now() > deadline {
                bail!("claim+delete took longer than its deadline");
            }
        }
        let took = started.elapsed();
        if total != s.events || bytes != total as usize * PAYLOAD_BYTES {
            bail!(
                "claimed {total} events ({bytes} bytes), expected {}",
                s.events
            );
        }
        Ok(took)
    }
}

/// The most any relay from a PostgreSQL outbox can drain on this machine into `sink`:
/// PostgreSQL's plain claim+delete of the backlog and the raw publisher of as many messages,
/// running at the same time on the same cores, as a relay that overlapped them perfectly and
/// cost nothing itself would. Rate: events / the later of the two to finish.
async fn outbox_limit(s: &Settings, pg: &Pg, template: &str, sink: SinkKind) -> Result<f64> {
    let (db, url) = backlog_copy(pg, template, "outboxlimit").await?;
    let result = async {
        let claims = PlainClaims::prepare(&url).await?;
        let n = s.events;
        let publish = async {
            let rate = match sink {
                SinkKind::RabbitMq => raw_rabbit_publishers(s, 1).await?,
                SinkKind::Kafka => match &s.kafka_brokers {
                    Some(brokers) => raw_kafka(s, brokers, false).await?,
                    None => bail!("no Kafka brokers"),
                },
                SinkKind::Redis => {
                    let took = sinks::redis_raw_xadd(&s.redis_url, n, s.batch_size, false).await?;
                    n as f64 / took.as_secs_f64()
                }
                SinkKind::Nats => {
                    let took = sinks::nats_raw_publish(&s.nats_url, n, s.batch_size).await?;
                    n as f64 / took.as_secs_f64()
                }
                SinkKind::Http => raw_http(n, false).await?,
                SinkKind::Stdout => bail!("stdout's limit is PostgreSQL's alone"),
            };
            Ok(Duration::from_secs_f64(n as f64 / rate))
        };
        let (claimed, published) = tokio::join!(claims.run(s), publish);
        let took = claimed?.max(published?);
        Ok(n as f64 / took.as_secs_f64())
    }
    .await;
    pg.drop(&db).await;
    result
}

/// How the relay records a delivery, in the reference rows' labels.
fn recording(on_delivery: OnDelivery) -> &'static str {
    match on_delivery {
        OnDelivery::Mark => "marking",
        OnDelivery::Delete => "deleting",
    }
}

/// The relay's own queries without a broker, as it runs them: each claim also records the batch
/// before it delivered; for at most 20 s.
async fn raw_pg_relay_sql(
    s: &Settings,
    pg: &Pg,
    template: &str,
    on_delivery: OnDelivery,
) -> Result<(f64, u64)> {
    let (db, url) = backlog_copy(pg, template, "pgsql").await?;
    let result = async {
        let client = connect(&url).await?;
        // As the relay's session does (see src/outbox/session.rs); the fence is NULL as for one
        // relay owning every lane.
        client
            .batch_execute(
                "SET max_parallel_workers_per_gather = 0; SET plan_cache_mode = force_custom_plan; \
                 SET jit = off",
            )
            .await?;
        let every_lane: Option<Vec<i32>> = None;
        let claim = client.prepare(CLAIM_SQL).await?;
        let mark = client.prepare(MARK_DELIVERED_SQL).await?;
        let started = Instant::now();
        let mut total = 0u64;
        // The claim's cursor (see src/outbox/session.rs): floor id and watched transactions.
        let mut floor = 0i64;
        let mut xip: Vec<String> = Vec::new();
        let mut xmax: Option<String> = None;
        // Claimed by the last claim, recorded by the next.
        let mut previous: Vec<i64> = Vec::new();
        while started.elapsed() < Duration::from_secs(20) {
            let (marked, deleted) = on_delivery.split(&previous);
            let rows = client
                .query(
                    &claim,
                    &[
                        &(s.batch_size as i64),
                        &floor,
                        &xip,
                        &previous,
                        // The relay's default byte budget and payload limit (i64::MAX would
                        // overflow the claim's `limit + 1`).
                        &RELAY_DEFAULT_BYTES,
                        &RELAY_DEFAULT_BYTES,
                        &every_lane,
                        &xmax,
                        &marked,
                        &deleted,
                    ],
                )
                .await
                .map_err(|e| anyhow!("claim: {}", pg_error(&e)))?;
            let first = rows
                .first()
                .ok_or_else(|| anyhow!("claim: no cursor row"))?;
            if first.try_get::<_, bool>("advanced")? {
                floor = first.try_get("next_floor")?;
                xip = first.try_get("next_xip")?;
                xmax = first.try_get("next_xmax")?;
            }
            let ids: Vec<i64> = rows
                .iter()
                .filter_map(|r| r.try_get::<_, Option<i64>>("id").ok().flatten())
                .collect();
            previous.clear();
            if ids.is_empty() {
                break;
            }
            total += ids.len() as u64;
            previous = ids;
        }
        // Cut off by the time limit: the last batch is recorded alone, as the relay does when
        // nothing follows.
        let (marked, deleted) = on_delivery.split(&previous);
        client
            .execute(&mark, &[&marked, &every_lane, &deleted])
            .await
            .map_err(|e| anyhow!("mark: {}", pg_error(&e)))?;
        Ok((total as f64 / started.elapsed().as_secs_f64(), total))
    }
    .await;
    pg.drop(&db).await;
    result
}

async fn raw_kafka(s: &Settings, brokers: &str, cloudevents_headers: bool) -> Result<f64> {
    let topic = format!("{}.{TOPIC}", unique("outbox_bench_raw"));
    kafka::create_topic(brokers, &topic).await?;
    let took =
        kafka::raw_produce(brokers, &topic, s.events, s.batch_size, cloudevents_headers).await?;
    Ok(s.events as f64 / took.as_secs_f64())
}

/// The bench's webhook receiver hit by `count` POSTs with the relay's default concurrency.
async fn raw_http(count: u64, cloudevents_headers: bool) -> Result<f64> {
    let receiver = sinks::HookReceiver::start().await?;
    let result = async {
        let took = sinks::http_raw_post(
            &receiver.url(),
            count,
            sinks::WEBHOOK_CONCURRENCY,
            cloudevents_headers,
        )
        .await?;
        if receiver.distinct_ids() != count {
            bail!(
                "the receiver got {} distinct webhook-ids for {count} requests",
                receiver.distinct_ids()
            );
        }
        Ok(count as f64 / took.as_secs_f64())
    }
    .await;
    receiver.stop();
    result
}

async fn producer_rates(s: &Settings, pg: &Pg) -> Result<(f64, f64)> {
    let db = unique("outbox_bench_producer");
    let result = async {
        let url = pg.create(&db, None).await?;
        let client = connect(&url).await?;
        set_notify(&client, true).await?;
        // A listener, as the relay would be.
        let listener = connect(&url).await?;
        listener.batch_execute("LISTEN outbox_events").await?;
        let secs = Duration::from_secs(s.producer_secs);
        let on = insert_flat_out(&url, s.producer_conns, secs).await? as f64 / secs.as_secs_f64();
        set_notify(&client, false).await?;
        let off = insert_flat_out(&url, s.producer_conns, secs).await? as f64 / secs.as_secs_f64();
        Ok((on, off))
    }
    .await;
    pg.drop(&db).await;
    result
}

// ---------------------------------------------------------------------------------------------
// Sinks

/// A sink's broker side for one scenario: where the relay publishes and what a consumer got.
struct Target {
    target: SinkTarget,
    received: Option<Received>,
    rabbit: Option<Rabbit>,
    kafka_task: Option<tokio::task::JoinHandle<()>>,
    service: Option<Service>,
}

/// The redis, nats and http sinks' side: a stream or the webhook receiver of the scenario's own.
enum Service {
    Redis(sinks::RedisStream),
    Nats(sinks::NatsStream),
    Http(sinks::HookReceiver),
}

impl Target {
    /// `consume`: whether Kafka needs a consumer (RabbitMQ always has one, so its queue stays short).
    async fn open(s: &Settings, sink: SinkKind, consume: bool) -> Result<Target> {
        Ok(match sink {
            SinkKind::Stdout => Target {
                target: SinkTarget::Stdout,
                received: None,
                rabbit: None,
                kafka_task: None,
                service: None,
            },
            SinkKind::RabbitMq => {
                let rabbit = Rabbit::setup(&s.amqp_url).await?;
                Target {
                    target: SinkTarget::RabbitMq {
                        exchange: rabbit.exchange.clone(),
                    },
                    received: Some(rabbit.received.clone()),
                    rabbit: Some(rabbit),
                    kafka_task: None,
                    service: None,
                }
            }
            SinkKind::Kafka => {
                let brokers = s.kafka_brokers.clone().context("KAFKA_BROKERS")?;
                let prefix = unique("outbox_bench");
                let topic = format!("{prefix}.{TOPIC}");
                kafka::create_topic(&brokers, &topic).await?;
                let (received, kafka_task) = if consume {
                    let (r, t) = kafka::consume(&brokers, &topic)?;
                    (Some(r), Some(t))
                } else {
                    (None, None)
                };
                Target {
                    target: SinkTarget::Kafka { prefix },
                    received,
                    rabbit: None,
                    kafka_task,
                    service: None,
                }
            }
            SinkKind::Redis => {
                let (stream, received) = sinks::RedisStream::setup(&s.redis_url, consume).await?;
                Target {
                    target: SinkTarget::Redis {
                        prefix: stream.prefix.clone(),
                    },
                    received,
                    rabbit: None,
                    kafka_task: None,
                    service: Some(Service::Redis(stream)),
                }
            }
            SinkKind::Nats => {
                let (stream, received) = sinks::NatsStream::setup(&s.nats_url, consume).await?;
                Target {
                    target: SinkTarget::Nats {
                        prefix: stream.prefix.clone(),
                    },
                    received,
                    rabbit: None,
                    kafka_task: None,
                    service: Some(Service::Nats(stream)),
                }
            }
            SinkKind::Http => {
                let receiver = sinks::HookReceiver::start().await?;
                Target {
                    target: SinkTarget::Http {
                        url: receiver.url(),
                    },
                    received: Some(receiver.received()),
                    rabbit: None,
                    kafka_task: None,
                    service: Some(Service::Http(receiver)),
                }
            }
        })
    }

    /// What the service holds after `n` events were delivered, when it is not `n`: the stream's
    /// length (XLEN), the JetStream stream's message count, the receiver's distinct webhook-ids.
    async fn check_delivered(&self, n: u64) -> Option<String> {
        match &self.service {
            None => None,
            Some(Service::Redis(stream)) => match stream.xlen().await {
                Ok(len) if len == n => None,
                Ok(len) => Some(format!("XLEN {} is {len} for {n} events", stream.stream)),
                Err(e) => Some(format!("XLEN failed: {e:#}")),
            },
            Some(Service::Nats(stream)) => match stream.count().await {
                Ok(count) if count == n => None,
                Ok(count) => Some(format!("the stream holds {count} messages for {n} events")),
                Err(e) => Some(format!("stream info failed: {e:#}")),
            },
            Some(Service::Http(receiver)) => {
                let ids = receiver.distinct_ids();
                (ids != n).then(|| {
                    format!(
                        "the receiver got {ids} distinct webhook-ids ({} requests) for {n} events",
                        receiver.requests()
                    )
                })
            }
        }
    }

    async fn close(self) {
        if let Some(rabbit) = self.rabbit {
            rabbit.teardown().await;
        }
        if let Some(task) = self.kafka_task {
            task.abort();
        }
        match self.service {
            None => {}
            Some(Service::Redis(stream)) => stream.teardown().await,
            Some(Service::Nats(stream)) => stream.teardown().await,
            Some(Service::Http(receiver)) => receiver.stop(),
        }
    }
}

struct Drain {
    rate: f64,
    early: f64,
    late: f64,
    split: String,
    cores: String,
    cpu_per_million: f64,
    rss_mib: f64,
    problem: Option<String>,
}

/// A drain with extra relay settings (a message format, a retention).
async fn drain_configured(
    s: &Settings,
    pg: &Pg,
    template: &str,
    sink: SinkKind,
    format: &[(&str, &str)],
) -> Result<Drain> {
    let (db, url) = backlog_copy(pg, template, "drain").await?;
    let target = Target::open(s, sink, false).await;
    let result = match &target {
        Ok(t) => drain_with(s, &url, t, format).await,
        Err(e) => Err(anyhow!("{e:#}")),
    };
    if let Ok(t) = target {
        t.close().await;
    }
    pg.drop(&db).await;
    result
}

async fn drain_with(
    s: &Settings,
    url: &str,
    target: &Target,
    format: &[(&str, &str)],
) -> Result<Drain> {
    let n = s.events;
    let before = CpuSnapshot::take();
    let mut env = s.relay_env(&target.target);
    env.extend(format.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (mut relay, _) = RelayProc::spawn(&s.relay_bin, url, &env, RelayStdout::Null)?;
    let samples = relay
        .wait_delivered(n, Duration::from_secs(120 + n / 1000))
        .await?;
    let after = CpuSnapshot::take();
    let cpu = relay.cpu_secs();
    let rss_mib = relay.peak_rss_mib();
    let body = relay.metrics().await.unwrap_or_default();
    let elapsed = samples.last().map_or(f64::NAN, |s| s.0);
    relay.stop().await?;
    let mut problem = target.check_delivered(n).await;
    if problem.is_none()
        && let Some(received) = &target.received
    {
        if let Err(e) = received.wait_for(n, Duration::from_secs(60)).await {
            problem = Some(format!("{e:#}"));
        } else if received.count() != n {
            problem = Some(format!(
                "the consumer got {} messages for {n} events",
                received.count()
            ));
        }
    }
    let crossing = |fraction: f64| {
        let goal = (n as f64 * fraction) as u64;
        samples.iter().find(|s| s.1 >= goal).map(|s| s.0)
    };
    let segment = |from: f64, to: f64| match (crossing(from), crossing(to)) {
        (Some(a), Some(b)) if b > a => n as f64 * (to - from) / (b - a),
        _ => f64::NAN,
    };
    let sum = |name: &str, label: &str| metric_sum(&body, name, label).unwrap_or(0.0);
    let claim = sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"claim\"",
    );
    let mark = sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"mark\"",
    );
    let publish = sum("outbox_relay_publish_duration_seconds_sum", "");
    let batches = sum("outbox_relay_publish_duration_seconds_count", "");
    let pct = |x: f64| 100.0 * x / elapsed;
    let split = format!(
        "{:.0}% / {:.0}% / {:.0}% of {:.1} s; {} batches, {:.2} / {:.2} / {:.2} ms each",
        pct(claim),
        pct(publish),
        pct(mark),
        elapsed,
        thousands(batches),
        1000.0 * claim / batches,
        1000.0 * publish / batches,
        1000.0 * mark / batches,
    );
    let used = after.since(&before);
    let cores = format!(
        "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} of {}",
        cpu / used.wall,
        used.postgres / used.wall,
        used.broker / used.wall,
        used.bench / used.wall,
        used.machine_busy / used.wall,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    Ok(Drain {
        rate: n as f64 / elapsed,
        early: segment(0.05, 0.15),
        late: segment(0.85, 0.95),
        split,
        cores,
        cpu_per_million: cpu / (n as f64 / 1e6),
        rss_mib,
        problem,
    })
}

/// Scale-out: the same backlog drained by 1, 2 and 4 replicas in lanes mode, per sink, in
/// `BENCH_REPLICA_ROUNDS` rounds of 1, 2, 4 replicas (so that a drift of the machine hits every
/// count); each count's figures are the means of its rounds.
async fn replicas_rows(s: &Settings, pg: &Pg, template: &str, table: &mut Table) {
    let nl = events_label(s.events);
    let rounds = s.replica_rounds;
    for &sink in &s.sinks {
        let name = sink.name();
        let mut drains: [Vec<ReplicasDrain>; REPLICA_COUNTS.len()] = Default::default();
        for round in 1..=rounds {
            for (replicas, drains) in REPLICA_COUNTS.into_iter().zip(&mut drains) {
                progress(&format!(
                    "{name}: drain {nl} with {replicas} replica(s), round {round}"
                ));
                match drain_replicas(s, pg, template, sink, replicas).await {
                    Ok(d) => {
                        if let Some(problem) = &d.problem {
                            table.info(
                                &format!("{name}: {replicas} replica(s) check"),
                                problem.clone(),
                            );
                        }
                        drains.push(d);
                    }
                    Err(e) => table.error(&format!("{name}: drain with {replicas} replica(s)"), &e),
                }
            }
        }
        let complete = drains.iter().all(|d| d.len() == rounds as usize);
        let mean_of = |d: &[ReplicasDrain], f: fn(&ReplicasDrain) -> f64| {
            complete.then(|| mean(d.iter().map(f)))
        };
        let one = mean_of(&drains[0], |d| d.steady_rate);
        for (replicas, drains) in REPLICA_COUNTS.into_iter().zip(&drains) {
            let (Some(steady_rate), Some(whole), Some(cpu), Some(cores)) = (
                mean_of(drains, |d| d.steady_rate),
                mean_of(drains, |d| d.rate),
                mean_of(drains, |d| d.cpu_per_million),
                mean_of(drains, |d| d.machine_cores),
            ) else {
                continue;
            };
            let (target, met) = if replicas == 4 {
                (
                    format!(">= {REPLICAS_RATIO_TARGET:.1} of 1 replica"),
                    one.map(|o| steady_rate >= REPLICAS_RATIO_TARGET * o),
                )
            } else {
                (String::new(), None)
            };
            let (baseline, versus) = against_first(replicas == 1, "1 replica", steady_rate, one);
            table.row(
                &format!(
                    "{name}: drain {nl} backlog, {replicas} replica(s) (lanes), 10-90% delivered, mean of {rounds}"
                ),
                rate(steady_rate),
                baseline,
                versus,
                &target,
                met,
            );
            table.info(
                &format!("{name}: {replicas} replica(s): 10-90% rates, in run order"),
                in_run_order(drains.iter().map(|d| d.steady_rate)),
            );
            table.info(
                &format!("{name}: {replicas} replica(s): whole drain, from the relays' start"),
                rate(whole),
            );
            table.info(
                &format!("{name}: {replicas} replica(s): relay CPU per 1M events (all replicas) / machine cores busy"),
                format!("{cpu:.2} CPU-s / {cores:.2}"),
            );
        }
        if sink == SinkKind::RabbitMq {
            rabbit_publishers_rows(s, table).await;
        }
    }
}

/// The mean of measurements alternated in rounds (NaN for none).
fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    values.sum::<f64>() / n as f64
}

/// Rates as a list, in the order they were measured.
fn in_run_order(rates: impl Iterator<Item = f64>) -> String {
    rates.map(rate).collect::<Vec<_>>().join(", ")
}

/// RabbitMQ's own cost of scale-out, in the same run: the raw publisher (as the relay publishes,
/// see `rabbit_raw_publish`) on 1 connection, then on 4 connections side by side, as 1 and 4
/// replicas publish, into the same single queue; `BENCH_REPLICA_ROUNDS` rounds of 1, 4.
async fn rabbit_publishers_rows(s: &Settings, table: &mut Table) {
    const CONNECTIONS: [u64; 2] = [1, 4];
    let nl = events_label(s.events);
    let rounds = s.replica_rounds;
    let mut rates: [Vec<f64>; CONNECTIONS.len()] = Default::default();
    for round in 1..=rounds {
        for (publishers, rates) in CONNECTIONS.into_iter().zip(&mut rates) {
            progress(&format!(
                "rabbitmq: raw publish {nl} on {publishers} connection(s), round {round}"
            ));
            match raw_rabbit_publishers(s, publishers).await {
                Ok(r) => rates.push(r),
                Err(e) => table.error(
                    &format!("rabbitmq: raw publish on {publishers} connection(s)"),
                    &e,
                ),
            }
        }
    }
    if rates.iter().any(|r| r.len() != rounds as usize) {
        return;
    }
    let one = mean(rates[0].iter().copied());
    for (publishers, rates) in CONNECTIONS.into_iter().zip(&rates) {
        let r = mean(rates.iter().copied());
        let (baseline, versus) = against_first(publishers == 1, "1 connection", r, Some(one));
        table.row(
            &format!(
                "rabbitmq: broker reference, raw publish on {publishers} connection(s), mean of {rounds}"
            ),
            rate(r),
            baseline,
            versus,
            "",
            None,
        );
        table.info(
            &format!("rabbitmq: raw publish on {publishers} connection(s), in run order"),
            in_run_order(rates.iter().copied()),
        );
    }
}

/// RabbitMQ's limit: `publishers` connections side by side, each publishing its share of the
/// events as the relay does (see `rabbit_raw_publish`), until the consumer has them all.
/// The raw RabbitMQ publisher's CPU per 1M messages, into a queue that nobody consumes (this
/// process runs nothing else meanwhile).
async fn raw_rabbit_client_cpu(s: &Settings) -> Result<f64> {
    let rabbit = Rabbit::setup_with(&s.amqp_url, false).await?;
    let cpu = own_cpu_secs();
    let result = rabbit_raw_publish(&s.amqp_url, &rabbit.exchange, s.events, s.batch_size).await;
    let cpu = cpu_per_million_since(cpu, s.events);
    rabbit.teardown().await;
    result.map(|_| cpu)
}

async fn raw_rabbit_publishers(s: &Settings, publishers: u64) -> Result<f64> {
    let rabbit = Rabbit::setup(&s.amqp_url).await?;
    let result = async {
        let each = s.events / publishers;
        let started = Instant::now();
        let runs = (0..publishers)
            .map(|_| rabbit_raw_publish(&s.amqp_url, &rabbit.exchange, each, s.batch_size));
        for run in futures_util::future::join_all(runs).await {
            run?;
        }
        let took = started.elapsed();
        rabbit
            .received
            .wait_for(each * publishers, Duration::from_secs(60))
            .await?;
        Ok((each * publishers) as f64 / took.as_secs_f64())
    }
    .await;
    rabbit.teardown().await;
    result
}

/// What a message format costs: the same backlog drained in `raw` and in binary CloudEvents,
/// alternately (raw, cloudevents, raw, cloudevents, ...) so that a drift of the machine hits both;
/// each format's rate is the mean of its `BENCH_FORMAT_ROUNDS` drains, and so is the relay's CPU
/// per event, which shows the format's own cost without the drains' noise.
async fn formats_rows(s: &Settings, pg: &Pg, template: &str, table: &mut Table) {
    let nl = events_label(s.events);
    let rounds = s.format_rounds;
    let cloudevents: &[(&str, &str)] = &[("OUTBOX_FORMAT", "cloudevents")];
    for &sink in &s.sinks {
        let name = sink.name();
        let (mut raw, mut ce) = (Vec::new(), Vec::new());
        // The broker's (receiver's) and its client's own cost of the format's headers, in the
        // same rounds, where the bench has a raw publisher (Kafka, Redis, HTTP).
        let (mut plain_refs, mut ce_refs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (format, drains) in [(&[][..], &mut raw), (cloudevents, &mut ce)] {
                let label = if format.is_empty() {
                    "raw"
                } else {
                    "cloudevents"
                };
                progress(&format!("{name}: drain {nl} in {label}, round {round}"));
                match drain_configured(s, pg, template, sink, format).await {
                    Ok(d) => {
                        if let Some(problem) = &d.problem {
                            table.info(&format!("{name}: {label} drain check"), problem.clone());
                        }
                        drains.push(d);
                    }
                    Err(e) => table.error(&format!("{name}: {label} drain"), &e),
                }
            }
            for (headers, rates) in [(false, &mut plain_refs), (true, &mut ce_refs)] {
                progress(&format!(
                    "{name}: raw reference {nl}, cloudevents headers {headers}, round {round}"
                ));
                match format_reference(s, sink, headers).await {
                    Some(Ok(r)) => rates.push(r),
                    Some(Err(e)) => table.error(&format!("{name}: raw reference"), &e),
                    None => {}
                }
            }
        }
        if !ce_refs.is_empty() && ce_refs.len() == plain_refs.len() {
            let (plain, with_headers) = (
                mean(plain_refs.iter().copied()),
                mean(ce_refs.iter().copied()),
            );
            table.row(
                &format!(
                    "{name}: reference, raw publisher with the cloudevents headers, mean of {}",
                    ce_refs.len()
                ),
                rate(with_headers),
                "raw publisher".to_string(),
                ratio(with_headers, Some(plain)),
                "",
                None,
            );
            table.info(
                &format!(
                    "{name}: raw publisher without / with the cloudevents headers, in run order"
                ),
                format!(
                    "{} / {}",
                    in_run_order(plain_refs.iter().copied()),
                    in_run_order(ce_refs.iter().copied())
                ),
            );
        }
        let complete = raw.len() == rounds as usize && ce.len() == rounds as usize;
        let mean_of = |d: &[Drain], f: fn(&Drain) -> f64| complete.then(|| mean(d.iter().map(f)));
        let (raw_rate, ce_rate) = (mean_of(&raw, |d| d.rate), mean_of(&ce, |d| d.rate));
        let each = |d: &[Drain]| in_run_order(d.iter().map(|d| d.rate));
        table.info(
            &format!("{name}: drains {nl} raw / cloudevents, in run order"),
            format!("{} / {}", each(&raw), each(&ce)),
        );
        if let (Some(raw_cpu), Some(ce_cpu)) = (
            mean_of(&raw, |d| d.cpu_per_million),
            mean_of(&ce, |d| d.cpu_per_million),
        ) {
            table.info(
                &format!("{name}: relay CPU per 1M raw / cloudevents, mean of {rounds}"),
                format!(
                    "{raw_cpu:.2} / {ce_cpu:.2} CPU-s ({:+.0}%)",
                    (ce_cpu / raw_cpu - 1.0) * 100.0
                ),
            );
        }
        if let Some(ce_rate) = ce_rate {
            table.row(
                &format!("{name}: drain {nl} in cloudevents (binary), mean of {rounds}"),
                rate(ce_rate),
                format!("raw, mean of {rounds}"),
                ratio(ce_rate, raw_rate),
                &format!(">= {FORMAT_RATIO_TARGET:.1} of raw"),
                raw_rate.map(|r| ce_rate >= FORMAT_RATIO_TARGET * r),
            );
        }
    }
}

/// The raw publisher's rate with or without the headers binary CloudEvents add; `None` for a
/// sink without one here.
async fn format_reference(s: &Settings, sink: SinkKind, headers: bool) -> Option<Result<f64>> {
    match sink {
        SinkKind::Kafka => Some(raw_kafka(s, s.kafka_brokers.as_deref()?, headers).await),
        SinkKind::Http => Some(raw_http(s.events, headers).await),
        SinkKind::Redis => Some(
            sinks::redis_raw_xadd(&s.redis_url, s.events, s.batch_size, headers)
                .await
                .map(|took| s.events as f64 / took.as_secs_f64()),
        ),
        _ => None,
    }
}

/// The baseline and ratio columns of a row measured against the first of its series (1 replica,
/// 1 connection): empty on the first row itself.
fn against_first(
    first: bool,
    baseline: &str,
    rate: f64,
    of_first: Option<f64>,
) -> (String, String) {
    if first {
        (String::new(), String::new())
    } else {
        (baseline.to_string(), ratio(rate, of_first))
    }
}

// Target of the formats issue: a format costs at most 10% of the drain rate.
const FORMAT_RATIO_TARGET: f64 = 0.9;

const REPLICA_COUNTS: [usize; 3] = [1, 2, 4];
// Target of the scale-out issue: on this 2-core machine, 4 replicas cost nothing.
const REPLICAS_RATIO_TARGET: f64 = 0.9;

struct ReplicasDrain {
    /// The whole drain, from starting the relays to the last event delivered.
    rate: f64,
    /// Between 10% and 90% delivered.
    steady_rate: f64,
    cpu_per_million: f64,
    machine_cores: f64,
    problem: Option<String>,
}

async fn drain_replicas(
    s: &Settings,
    pg: &Pg,
    template: &str,
    sink: SinkKind,
    replicas: usize,
) -> Result<ReplicasDrain> {
    let (db, url) = backlog_copy(pg, template, "replicas").await?;
    let target = Target::open(s, sink, false).await;
    let result = match &target {
        Ok(t) => drain_replicas_with(s, &url, t, replicas).await,
        Err(e) => Err(anyhow!("{e:#}")),
    };
    if let Ok(t) = target {
        t.close().await;
    }
    pg.drop(&db).await;
    result
}

async fn drain_replicas_with(
    s: &Settings,
    url: &str,
    target: &Target,
    replicas: usize,
) -> Result<ReplicasDrain> {
    let n = s.events;
    let before = CpuSnapshot::take();
    let started = Instant::now();
    let mut env = s.relay_env(&target.target);
    env.push(("OUTBOX_REPLICA_MODE".into(), "lanes".into()));
    let mut relays = Vec::new();
    for _ in 0..replicas {
        relays.push(RelayProc::spawn(&s.relay_bin, url, &env, RelayStdout::Null)?.0);
    }
    let deadline = started + Duration::from_secs(120 + n / 1000);
    // Throughput once the replicas share the lanes: the rate between 10% and 90% delivered,
    // leaving out the start (processes starting, the first replica holding every lane until the
    // others join and it gives them up) and the tail.
    let (mut at_10, mut at_90) = (None, None);
    loop {
        let mut delivered = 0;
        for relay in &relays {
            delivered += relay.delivered().await.unwrap_or(0);
        }
        if at_10.is_none() && delivered >= n / 10 {
            at_10 = Some((Instant::now(), delivered));
        }
        if at_90.is_none() && delivered >= n - n / 10 {
            at_90 = Some((Instant::now(), delivered));
        }
        if delivered >= n {
            break;
        }
        if Instant::now() >= deadline {
            bail!("{replicas} replicas delivered {delivered} of {n} events in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = CpuSnapshot::take().since(&before);
    let cpu: f64 = relays.iter().map(RelayProc::cpu_secs).sum();
    for relay in &mut relays {
        relay.stop().await?;
    }
    let mut problem = None;
    if let Some(received) = &target.received
        && let Err(e) = received.wait_for(n, Duration::from_secs(60)).await
    {
        problem = Some(format!("{e:#}"));
    }
    let steady_rate = match (at_10, at_90) {
        (Some((t10, d10)), Some((t90, d90))) if t90 > t10 => {
            (d90 - d10) as f64 / (t90 - t10).as_secs_f64()
        }
        _ => f64::NAN,
    };
    Ok(ReplicasDrain {
        rate: n as f64 / elapsed,
        steady_rate,
        cpu_per_million: cpu / (n as f64 / 1e6),
        machine_cores: used.machine_busy / used.wall,
        problem,
    })
}

struct Steady {
    tried: String,
    best: Option<f64>,
    note: Option<String>,
}

async fn steady(s: &Settings, pg: &Pg, sink: SinkKind, drain_rate: Option<f64>) -> Result<Steady> {
    let db = unique("outbox_bench_steady");
    let url = pg.create(&db, None).await;
    let result = match url {
        Ok(url) => match Target::open(s, sink, false).await {
            Ok(target) => {
                let r = steady_with(s, &url, &target, drain_rate).await;
                target.close().await;
                r
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    result
}

async fn steady_with(
    s: &Settings,
    url: &str,
    target: &Target,
    drain_rate: Option<f64>,
) -> Result<Steady> {
    let client = connect(url).await?;
    set_notify(&client, false).await?;
    let rates: Vec<u64> = match (&s.steady_rates, drain_rate) {
        (Some(rates), _) => rates.clone(),
        (None, Some(d)) => [0.3, 0.5, 0.7, 0.85, 1.0]
            .iter()
            .map(|f| ((d * f / 100.0).round() as u64).max(1) * 100)
            .collect(),
        (None, None) => vec![1_000, 2_000, 5_000, 10_000, 20_000],
    };
    let (mut relay, _) = RelayProc::spawn(
        &s.relay_bin,
        url,
        &s.relay_env(&target.target),
        RelayStdout::Null,
    )?;
    relay.wait_ready(Duration::from_secs(30)).await?;
    let inserted = Arc::new(AtomicU64::new(0));
    let mut best = None;
    let mut note = None;
    let mut tried = Vec::new();
    for &r in &rates {
        tried.push(thousands(r as f64));
        // Start from an empty backlog.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let delivered = relay.delivered().await.unwrap_or(0);
            if inserted.load(Ordering::Relaxed).saturating_sub(delivered) <= s.batch_size {
                break;
            }
            if Instant::now() > deadline {
                bail!("the backlog of the previous rate did not drain within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let warmup = Duration::from_secs(s.steady_warmup_secs);
        let window = Duration::from_secs(s.steady_secs);
        let producer_client = connect(url).await?;
        let counter = inserted.clone();
        let first_seq = inserted.load(Ordering::Relaxed) + 1;
        let producer = tokio::spawn(async move {
            produce_in_ticks(
                &producer_client,
                r,
                warmup + window + Duration::from_millis(300),
                first_seq,
                &counter,
            )
            .await
        });
        tokio::time::sleep(warmup).await;
        let start = Instant::now();
        let cpu_start = relay.cpu_secs();
        let mut points = Vec::new();
        let mut first = None;
        let mut last = (0, 0);
        while start.elapsed() < window {
            let delivered = relay.delivered().await.unwrap_or(0);
            let ins = inserted.load(Ordering::Relaxed);
            let t = start.elapsed().as_secs_f64();
            first.get_or_insert((ins, delivered, t));
            last = (ins, delivered);
            points.push((t, ins as f64 - delivered as f64));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cpu = relay.cpu_secs() - cpu_start;
        let span = start.elapsed().as_secs_f64();
        producer.await.context("producer task")??;
        let (ins0, del0, t0) = first.unwrap_or((0, 0, 0.0));
        let measured = (points.last().map_or(span, |p| p.0) - t0).max(0.001);
        let produced = (last.0 - ins0) as f64 / measured;
        let delivered = (last.1 - del0) as f64 / measured;
        let growth = slope(&points);
        let sustained = produced >= 0.95 * r as f64 && growth <= 0.05 * r as f64;
        progress(&format!(
            "steady {r}/s: produced {produced:.0}/s, delivered {delivered:.0}/s, backlog slope {growth:.0}/s, \
             relay {:.0}% CPU -> {}",
            100.0 * cpu / span,
            if sustained { "flat" } else { "growing" }
        ));
        if produced < 0.95 * r as f64 {
            note = Some(format!(
                "the producer reached only {} at {} (producer-bound)",
                rate(produced),
                rate(r as f64)
            ));
            break;
        }
        if !sustained {
            break;
        }
        best = Some(r as f64);
        note = Some(format!(
            "relay {:.0}% of a core, {:.1} CPU-s per 1M events",
            100.0 * cpu / span,
            cpu / (delivered * span / 1e6).max(1e-9)
        ));
    }
    relay.stop().await?;
    Ok(Steady {
        tried: tried.join(", "),
        best,
        note,
    })
}

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

/// The bare loop's CPU per 1M events and claims per event, with the latency rows' producer.
async fn bare_loop_cpu(s: &Settings, pg: &Pg) -> Result<(f64, f64)> {
    let db = unique("outbox_bench_bare");
    let url = pg.create(&db, None).await;
    let result = async {
        let url = url?;
        let client = connect(&url).await?;
        set_notify(&client, true).await?;
        let count = s.latency_rate * s.latency_secs;
        let poller = poller::start(&url, count, Duration::from_secs(30)).await?;
        produce_timed(&url, s.latency_rate, count, s.latency_conns).await?;
        let run = poller.finish().await?;
        if run.claimed != count {
            bail!("the bare loop claimed {} of {count} events", run.claimed);
        }
        Ok((
            run.cpu_secs / count as f64 * 1e6,
            run.claims as f64 / count as f64,
        ))
    }
    .await;
    pg.drop(&db).await;
    result
}

async fn latency(s: &Settings, pg: &Pg, sink: SinkKind) -> Result<Latency> {
    let db = unique("outbox_bench_latency");
    let url = pg.create(&db, None).await;
    let result = match url {
        Ok(url) => match Target::open(s, sink, true).await {
            Ok(target) => {
                let r = latency_with(s, &url, &target).await;
                target.close().await;
                r
            }
            Err(e) => Err(e),
        },
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
            kafka::raw_latency(&brokers, s.latency_rate, count)
                .await
                .map(|l| (quantile(&l, 0.50), quantile(&l, 0.99))),
        );
    }
    Ok(result)
}

async fn latency_with(s: &Settings, url: &str, target: &Target) -> Result<Latency> {
    let client = connect(url).await?;
    set_notify(&client, true).await?;
    let stdout = matches!(target.target, SinkTarget::Stdout);
    let (mut relay, out) = RelayProc::spawn(
        &s.relay_bin,
        url,
        &s.relay_env(&target.target),
        if stdout {
            RelayStdout::Piped
        } else {
            RelayStdout::Null
        },
    )?;
    let received = match (&target.received, out) {
        (Some(r), _) => r.clone(),
        (None, Some(out)) => {
            let r = Received::default();
            read_stdout_lines(out, r.clone());
            r
        }
        (None, None) => bail!("no consumer for this sink"),
    };
    relay.wait_ready(Duration::from_secs(30)).await?;
    // One event through the whole path first, so that neither the relay's first connections nor
    // a consumer still joining its group (Kafka) counts in the measure.
    received.reset(false);
    client
        .execute(
            "INSERT INTO outbox.events (topic, key, payload) VALUES ($1, 'warm-up', 'warm-up')",
            &[&TOPIC],
        )
        .await
        .context("inserting the warm-up event")?;
    received
        .wait_for(1, Duration::from_secs(60))
        .await
        .context("the warm-up event")?;
    received.reset(true);
    let count = s.latency_rate * s.latency_secs;
    let before = relay.metrics().await.unwrap_or_default();
    let cpu_start = relay.cpu_secs();
    let pg_cpu_start = relay_backends_cpu_secs(&client, relay.pid).await;
    let wall = Instant::now();
    let committed = produce_timed(url, s.latency_rate, count, s.latency_conns).await?;
    // Claims and batches per second while the producer ran (not while waiting for stragglers).
    let produced = (
        wall.elapsed().as_secs_f64(),
        relay.metrics().await.unwrap_or_default(),
    );
    let mut problem = received
        .wait_for(count, Duration::from_secs(30))
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
    let wall = wall.elapsed().as_secs_f64();
    let body = relay.metrics().await.unwrap_or_default();
    let mean_ms = |name: &str, label: &str| {
        let sum = metric_sum(&body, &format!("{name}_sum"), label).unwrap_or(f64::NAN);
        let count = metric_sum(&body, &format!("{name}_count"), label).unwrap_or(f64::NAN);
        1000.0 * sum / count
    };
    let query = "outbox_relay_db_query_duration_seconds";
    // Claims (each one a wake-up of the loop) and published batches per second.
    let per_sec = |name: &str, label: &str| {
        let count = |b: &str| metric_sum(b, &format!("{name}_count"), label).unwrap_or(f64::NAN);
        (count(&produced.1) - count(&before)) / produced.0
    };
    let split = format!(
        "{:.2} / {:.2} / {:.2} ms; {:.0} claims/s, {:.0} batches/s",
        mean_ms(query, "query=\"claim\""),
        mean_ms("outbox_relay_publish_duration_seconds", ""),
        mean_ms(query, "query=\"mark\""),
        per_sec(query, "query=\"claim\""),
        per_sec("outbox_relay_publish_duration_seconds", ""),
    );
    let relay_log = relay.stderr_tail();
    relay.stop().await?;
    let mut first_receipt: Vec<Option<Instant>> = vec![None; count as usize];
    for (seq, at) in received.stamps() {
        if let Some(slot) = first_receipt.get_mut(seq as usize)
            && slot.is_none()
        {
            *slot = Some(at);
        }
    }
    let mut early = 0;
    let mut latencies: Vec<f64> = committed
        .iter()
        .zip(&first_receipt)
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
    let missing: Vec<usize> = first_receipt
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(seq, _)| seq)
        .take(5)
        .collect();
    if !missing.is_empty() {
        // What the outbox says of them: delivered (a broker acknowledgement the consumer never
        // saw), or still pending, and why.
        let mut states = Vec::new();
        for seq in &missing {
            let row = client
                .query_opt(
                    "SELECT id, delivered_at IS NOT NULL, attempts, coalesce(last_error, ''), \
                            extract(epoch FROM available_at - created_at)::float8 \
                     FROM outbox.events WHERE substring(payload FROM 1 FOR 12) = $1",
                    &[&format!("{seq:012}").into_bytes()],
                )
                .await
                .context("looking up a missing event")?;
            states.push(match row {
                None => format!("{seq}: no row"),
                Some(r) => format!(
                    "{seq}: id {} delivered {} attempts {} deferred {:.1} s {}",
                    r.get::<_, i64>(0),
                    r.get::<_, bool>(1),
                    r.get::<_, i32>(2),
                    r.get::<_, f64>(4),
                    r.get::<_, String>(3),
                ),
            });
        }
        let warnings: Vec<&str> = relay_log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let note = format!(
            "never received: {}; relay warnings at the end: {}",
            states.join("; "),
            warnings.join(" / ")
        );
        problem = Some(match problem {
            Some(p) => format!("{p}; {note}"),
            None => note,
        });
    }
    if early > 0 {
        let note = format!(
            "{early} received before their COMMIT returned to the producer (counted as 0 ms)"
        );
        problem = Some(match problem {
            Some(p) => format!("{p}; {note}"),
            None => note,
        });
    }
    Ok(Latency {
        count: latencies.len() as u64,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        split,
        cpu_per_million: cpu / (count as f64 / 1e6),
        cpu_percent: 100.0 * cpu / wall,
        pg_cpu_per_million: pg_cpu.map(|c| c / (count as f64 / 1e6)),
        problem,
        raw: None,
    })
}
