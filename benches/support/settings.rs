//! The bench's settings (`BENCH_*` and a few `OUTBOX_*` passed on to the relay), which sinks
//! and scenarios run, and the watchdog that bounds the whole run.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::harness::kill_relays;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    RabbitMq,
    Stdout,
    Kafka,
    Redis,
    Nats,
    Http,
    Bullmq,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::RabbitMq => "rabbitmq",
            SinkKind::Stdout => "stdout",
            SinkKind::Kafka => "kafka",
            SinkKind::Redis => "redis",
            SinkKind::Nats => "nats",
            SinkKind::Http => "http",
            SinkKind::Bullmq => "bullmq",
        }
    }

    /// Whether its events need JSON payloads (BullMQ's job data is JSON): its backlog is one of
    /// [`json_payload`](super::workload::json_payload)s.
    pub fn json_payloads(self) -> bool {
        self == SinkKind::Bullmq
    }

    /// What its drains are measured against in each round (see `limits::outbox_reference`).
    pub fn reference_name(self) -> &'static str {
        match self {
            SinkKind::Stdout => "PG claim+delete",
            _ => "PG claim+delete and the raw publisher at once",
        }
    }

    /// The name of the limit its drain is compared with.
    pub fn limit_name(self) -> &'static str {
        match self {
            SinkKind::RabbitMq => "RabbitMQ raw",
            SinkKind::Stdout => "PG claim+delete",
            SinkKind::Kafka => "Kafka raw",
            SinkKind::Redis => "Redis XADD raw",
            SinkKind::Nats => "JetStream raw",
            SinkKind::Http => "HTTP POST raw",
            SinkKind::Bullmq => "BullMQ add raw",
        }
    }
}

pub struct Settings {
    /// Backlog size of the drain and of the raw PostgreSQL limit.
    pub events: u64,
    pub batch_size: u64,
    /// Drains per format in `BENCH_ONLY=formats` (`BENCH_FORMAT_ROUNDS`, default 2): one drain
    /// varies by up to ~15% on a shared VM, so judging a 10% cost takes several.
    pub format_rounds: u64,
    /// Rounds of drains in `BENCH_ONLY=drain` (`BENCH_DRAIN_ROUNDS`, default 3): each measures
    /// the outbox reference, then the kept and the deleted drain in alternating order.
    pub drain_rounds: u64,
    /// Drains per setting, traces off and on, in `BENCH_ONLY=tracing` (`BENCH_TRACING_ROUNDS`,
    /// default 2), alternating off, on, off, on, ... for the same reason.
    pub tracing_rounds: u64,
    /// Drains per replica count in `BENCH_ONLY=replicas` (`BENCH_REPLICA_ROUNDS`, default 1),
    /// alternating 1, 2, 4, 1, 2, 4, ... so that a drift of the machine hits every count.
    pub replica_rounds: u64,
    pub sinks: Vec<SinkKind>,
    pub scenarios: Vec<String>,
    pub admin_url: String,
    pub amqp_url: String,
    pub kafka_brokers: Option<String>,
    /// `BENCH_REDIS_URL` (else `TEST_REDIS_URL`), default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `BENCH_NATS_URL` (else `TEST_NATS_URL`), default `nats://127.0.0.1:4222`; JetStream on.
    pub nats_url: String,
    pub latency_rate: u64,
    pub latency_secs: u64,
    pub latency_conns: usize,
    pub steady_warmup_secs: u64,
    pub steady_secs: u64,
    pub steady_rates: Option<Vec<u64>>,
    pub producer_conns: usize,
    pub producer_secs: u64,
    pub relay_bin: PathBuf,
    pub timeout: Duration,
    /// `BENCH_BROKER_DELAY_MS` (default 0): RabbitMQ's and NATS's answers reach every client this
    /// much later ([`super::distance`]).
    pub broker_delay: Duration,
}

pub fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

fn env_str(names: &[&str], default: &str) -> String {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_string())
}

pub const SCENARIOS: &[&str] = &[
    "limits", "producer", "drain", "steady", "latency", "memory", "soak", "replicas", "formats",
    "tracing", "adoption",
];

impl Settings {
    pub fn from_env() -> Result<Settings> {
        let kafka_brokers = std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|v| !v.is_empty());
        let redis_url = env_str(
            &["BENCH_REDIS_URL", "TEST_REDIS_URL"],
            "redis://127.0.0.1:6379",
        );
        let nats_url = env_str(
            &["BENCH_NATS_URL", "TEST_NATS_URL"],
            "nats://127.0.0.1:4222",
        );
        Ok(Settings {
            events: env_u64("BENCH_EVENTS", 1_000_000)?.max(1_000),
            batch_size: env_u64("OUTBOX_BATCH_SIZE", 500)?.max(1),
            format_rounds: env_u64("BENCH_FORMAT_ROUNDS", 2)?.max(1),
            drain_rounds: env_u64("BENCH_DRAIN_ROUNDS", 3)?.max(1),
            tracing_rounds: env_u64("BENCH_TRACING_ROUNDS", 2)?.max(1),
            replica_rounds: env_u64("BENCH_REPLICA_ROUNDS", 1)?.max(1),
            sinks: sinks_from_env(kafka_brokers.is_some(), &redis_url, &nats_url)?,
            scenarios: scenarios_from_env()?,
            admin_url: env_str(
                &["BENCH_DATABASE_URL", "TEST_DATABASE_URL"],
                "postgres://postgres:postgres@127.0.0.1:5432/postgres",
            ),
            amqp_url: env_str(
                &["BENCH_AMQP_URL", "TEST_AMQP_URL"],
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            kafka_brokers,
            redis_url,
            nats_url,
            latency_rate: env_u64("BENCH_LATENCY_RATE", 1_000)?.max(1),
            latency_secs: env_u64("BENCH_LATENCY_SECS", 20)?.max(1),
            latency_conns: env_u64("BENCH_LATENCY_CONNS", 4)?.max(1) as usize,
            steady_warmup_secs: env_u64("BENCH_STEADY_WARMUP_SECS", 3)?,
            steady_secs: env_u64("BENCH_STEADY_SECS", 12)?.max(2),
            steady_rates: steady_rates_from_env()?,
            producer_conns: env_u64("BENCH_PRODUCER_CONNS", 8)?.max(1) as usize,
            producer_secs: env_u64("BENCH_PRODUCER_SECS", 5)?.max(1),
            relay_bin: relay_bin_from_env()?,
            timeout: Duration::from_secs(env_u64("BENCH_TIMEOUT_SECS", 1800)?),
            broker_delay: Duration::from_millis(env_u64("BENCH_BROKER_DELAY_MS", 0)?),
        })
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }

    /// The relay's settings every scenario shares, besides the database, the HTTP address and
    /// the sink's own (see `Target`).
    pub fn relay_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("OUTBOX_BATCH_SIZE", self.batch_size.to_string()),
            // Purging delivered rows is left out of the measurement.
            ("OUTBOX_RETENTION_SECS", "86400".to_string()),
            ("OUTBOX_SHUTDOWN_TIMEOUT_SECS", "20".to_string()),
        ];
        // Tuning to compare, passed on when set (the relay's default otherwise).
        if let Ok(linger) = std::env::var("OUTBOX_BATCH_LINGER_MS") {
            env.push(("OUTBOX_BATCH_LINGER_MS", linger));
        }
        env
    }
}

/// `BENCH_SINKS`, by default every sink whose service is there (http's receiver is the bench's
/// own; bullmq's is Redis).
fn sinks_from_env(kafka: bool, redis_url: &str, nats_url: &str) -> Result<Vec<SinkKind>> {
    let names = match std::env::var("BENCH_SINKS").ok().filter(|v| !v.is_empty()) {
        Some(names) => names,
        None => {
            let mut names = vec!["rabbitmq", "stdout"];
            if kafka {
                names.push("kafka");
            }
            if answers(redis_url, 6379) {
                names.extend(["redis", "bullmq"]);
            }
            if answers(nats_url, 4222) {
                names.push("nats");
            }
            names.push("http");
            names.join(",")
        }
    };
    let mut sinks = Vec::new();
    for name in names.split(',') {
        sinks.push(match name.trim() {
            "rabbitmq" => SinkKind::RabbitMq,
            "stdout" => SinkKind::Stdout,
            "kafka" if kafka => SinkKind::Kafka,
            "kafka" => bail!("BENCH_SINKS names kafka but KAFKA_BROKERS is not set"),
            "redis" => SinkKind::Redis,
            "nats" => SinkKind::Nats,
            "http" => SinkKind::Http,
            "bullmq" => SinkKind::Bullmq,
            other => bail!("BENCH_SINKS: unknown sink {other:?}"),
        });
    }
    Ok(sinks)
}

/// `BENCH_ONLY`, by default every scenario.
fn scenarios_from_env() -> Result<Vec<String>> {
    let scenarios: Vec<String> = env_str(&["BENCH_ONLY"], &SCENARIOS.join(","))
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        bail!(
            "BENCH_ONLY: unknown scenario {bad:?} (known: {})",
            SCENARIOS.join(",")
        );
    }
    Ok(scenarios)
}

fn steady_rates_from_env() -> Result<Option<Vec<u64>>> {
    match std::env::var("BENCH_STEADY_RATES") {
        Ok(v) if !v.is_empty() => Ok(Some(
            v.split(',')
                .map(|r| r.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .context("BENCH_STEADY_RATES: comma-separated events/s")?,
        )),
        _ => Ok(None),
    }
}

/// `BENCH_RELAY_BIN`, else the package's own binary; it must exist.
fn relay_bin_from_env() -> Result<PathBuf> {
    let relay_bin = std::env::var("BENCH_RELAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(crate::harness::BIN));
    if !relay_bin.exists() {
        bail!(
            "relay binary {} is missing; run `cargo build --release` first",
            relay_bin.display()
        );
    }
    Ok(relay_bin)
}

/// Whether the server of `url` (the first of a comma-separated list) answers within 1 s: a Redis
/// answers `PING` (with `+PONG`, or an error when it wants a password), a NATS server greets with
/// `INFO`. Decides the default `BENCH_SINKS`.
pub fn answers(url: &str, default_port: u16) -> bool {
    let first = url.split(',').next().unwrap_or_default().trim();
    let Ok(parsed) = url::Url::parse(first) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let port = parsed.port().unwrap_or(default_port);
    let Some(addr) = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let probe = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let redis = parsed.scheme().starts_with("redis");
        if redis {
            stream.write_all(b"PING\r\n")?;
        }
        let mut buf = [0u8; 16];
        let got = stream.read(&mut buf)?;
        let reply = &buf[..got];
        Ok(if redis {
            reply.starts_with(b"+PONG") || reply.starts_with(b"-")
        } else {
            reply.starts_with(b"INFO")
        })
    };
    probe().unwrap_or(false)
}

/// Bounds the whole bench in time: after `limit`, kills the relays it started and exits 3.
pub fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "bench: BENCH_TIMEOUT_SECS ({}s) reached; stopping",
            limit.as_secs()
        );
        kill_relays();
        std::process::exit(3);
    });
}
