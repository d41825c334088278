//! Helpers of `benches/relay.rs`: settings, databases, the relay as a child process, brokers,
//! producers and the CPU/memory readings from /proc. Every wait has a deadline.

pub mod memory;
pub mod poller;
pub mod sinks;
pub mod soak;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use outbox_relay::format::{Binding, DEFAULT_CLOUDEVENTS_SOURCE, Format, Mode};
use outbox_relay::outbox::event::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

/// The topic (AMQP routing key) of every bench event.
pub const TOPIC: &str = "bench";
/// Payload size of every bench event.
pub const PAYLOAD_BYTES: usize = 256;
/// Distinct event keys (`seq % keys()`), like aggregate ids: `BENCH_KEYS`, default 1000. With
/// fewer keys than `OUTBOX_BATCH_SIZE`, a batch holds several events of a key, which NATS and
/// HTTP publish in several key-ordered waves; `BENCH_KEYS=1` measures one hot key.
pub fn keys() -> u64 {
    static KEYS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KEYS.get_or_init(|| {
        std::env::var("BENCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1000)
    })
}
/// The payload as SQL for the generate_series value `i`: the same bytes as [`payload`].
pub const PAYLOAD_SQL: &str = "convert_to(lpad(i::text, 12, '0') || repeat('x', 244), 'UTF8')";

/// A 256-byte ASCII payload that starts with the event's sequence number (12 digits), so a
/// consumer can tell which event it got.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("{seq:012}").into_bytes();
    p.resize(PAYLOAD_BYTES, b'x');
    p
}

/// The headers (Redis: fields) binary CloudEvents add to a bench message, named and filled by the
/// relay's own format code ([`Format::message`]), so that a raw reference publisher carries
/// exactly what the relay would.
pub struct CloudEventsAttributes {
    format: Format,
    event: Event,
}

impl CloudEventsAttributes {
    pub fn new() -> CloudEventsAttributes {
        CloudEventsAttributes {
            format: Format::CloudEvents {
                source: DEFAULT_CLOUDEVENTS_SOURCE.to_string(),
                mode: Mode::Binary,
            },
            event: Event {
                id: 0,
                topic: TOPIC.to_string(),
                key: None,
                payload: Vec::new(),
                headers: Vec::new(),
                message_id: uuid::Uuid::nil(),
                created_at: chrono::Utc::now(),
                attempts: 0,
            },
        }
    }

    /// The attributes of the message `id` of `key`, created now, as `binding` carries them.
    pub fn of(
        &mut self,
        binding: Binding,
        id: uuid::Uuid,
        key: &str,
    ) -> Result<Vec<(&str, Cow<'_, str>)>> {
        self.event.message_id = id;
        self.event.key = Some(key.to_string());
        self.event.created_at = chrono::Utc::now();
        let message = self
            .format
            .message(&self.event, binding)
            .map_err(|e| anyhow!("formatting a bench message: {e}"))?;
        Ok(message.headers)
    }
}

pub fn parse_seq(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data.get(..12)?).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    RabbitMq,
    Stdout,
    Kafka,
    Redis,
    Nats,
    Http,
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
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
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
        let sinks_env = std::env::var("BENCH_SINKS").ok().filter(|v| !v.is_empty());
        // The default: every sink whose service is there (http's receiver is the bench's own).
        let default_sinks = match &sinks_env {
            Some(_) => String::new(),
            None => {
                let mut names = vec!["rabbitmq", "stdout"];
                if kafka_brokers.is_some() {
                    names.push("kafka");
                }
                if sinks::answers(&redis_url, 6379) {
                    names.push("redis");
                }
                if sinks::answers(&nats_url, 4222) {
                    names.push("nats");
                }
                names.push("http");
                names.join(",")
            }
        };
        let mut sinks = Vec::new();
        for name in sinks_env.unwrap_or(default_sinks).split(',') {
            sinks.push(match name.trim() {
                "rabbitmq" => SinkKind::RabbitMq,
                "stdout" => SinkKind::Stdout,
                "kafka" if kafka_brokers.is_some() => SinkKind::Kafka,
                "kafka" => bail!("BENCH_SINKS names kafka but KAFKA_BROKERS is not set"),
                "redis" => SinkKind::Redis,
                "nats" => SinkKind::Nats,
                "http" => SinkKind::Http,
                other => bail!("BENCH_SINKS: unknown sink {other:?}"),
            });
        }
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
        let steady_rates = match std::env::var("BENCH_STEADY_RATES") {
            Ok(v) if !v.is_empty() => Some(
                v.split(',')
                    .map(|r| r.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("BENCH_STEADY_RATES: comma-separated events/s")?,
            ),
            _ => None,
        };
        let relay_bin = std::env::var("BENCH_RELAY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_outbox-relay")));
        if !relay_bin.exists() {
            bail!(
                "relay binary {} is missing; run `cargo build --release` first",
                relay_bin.display()
            );
        }
        let settings = Settings {
            events: env_u64("BENCH_EVENTS", 1_000_000)?.max(1_000),
            batch_size: env_u64("OUTBOX_BATCH_SIZE", 500)?.max(1),
            format_rounds: env_u64("BENCH_FORMAT_ROUNDS", 2)?.max(1),
            replica_rounds: env_u64("BENCH_REPLICA_ROUNDS", 1)?.max(1),
            sinks,
            scenarios,
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
            steady_rates,
            producer_conns: env_u64("BENCH_PRODUCER_CONNS", 8)?.max(1) as usize,
            producer_secs: env_u64("BENCH_PRODUCER_SECS", 5)?.max(1),
            relay_bin,
            timeout: Duration::from_secs(env_u64("BENCH_TIMEOUT_SECS", 1800)?),
        };
        Ok(settings)
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }

    /// Environment of the relay child for `sink`, besides the database and HTTP address.
    pub fn relay_env(&self, sink: &SinkTarget) -> Vec<(String, String)> {
        let mut env = vec![
            ("OUTBOX_BATCH_SIZE".to_string(), self.batch_size.to_string()),
            // Purging delivered rows is left out of the measurement.
            ("OUTBOX_RETENTION_SECS".to_string(), "86400".to_string()),
            ("OUTBOX_SHUTDOWN_TIMEOUT_SECS".to_string(), "20".to_string()),
        ];
        // Tuning to compare, passed on when set (the relay's default otherwise).
        if let Ok(linger) = std::env::var("OUTBOX_BATCH_LINGER_MS") {
            env.push(("OUTBOX_BATCH_LINGER_MS".into(), linger));
        }
        match sink {
            SinkTarget::Stdout => env.push(("OUTBOX_SINK".into(), "stdout".into())),
            SinkTarget::RabbitMq { exchange } => {
                env.push(("OUTBOX_SINK".into(), "rabbitmq".into()));
                env.push(("OUTBOX_AMQP_URL".into(), self.amqp_url.clone()));
                env.push(("OUTBOX_AMQP_EXCHANGE".into(), exchange.clone()));
            }
            SinkTarget::Kafka { prefix } => {
                env.push(("OUTBOX_SINK".into(), "kafka".into()));
                env.push((
                    "OUTBOX_KAFKA_BROKERS".into(),
                    self.kafka_brokers.clone().unwrap_or_default(),
                ));
                env.push((
                    "OUTBOX_KAFKA_TOPIC_TEMPLATE".into(),
                    format!("{prefix}.{{topic}}"),
                ));
                if let Some(properties) = kafka::properties() {
                    env.push(("OUTBOX_KAFKA_PROPERTIES".into(), properties));
                }
            }
            SinkTarget::Redis { prefix } => {
                env.push(("OUTBOX_SINK".into(), "redis".into()));
                env.push(("OUTBOX_REDIS_URL".into(), self.redis_url.clone()));
                env.push((
                    "OUTBOX_REDIS_STREAM_TEMPLATE".into(),
                    format!("{prefix}.{{topic}}"),
                ));
                // The dedup keys cost the same whatever their expiry; this one bounds what a
                // run leaves in a shared Redis if it is killed before deleting them.
                env.push(("OUTBOX_REDIS_DEDUP_SECS".into(), "3600".into()));
            }
            SinkTarget::Nats { prefix } => {
                env.push(("OUTBOX_SINK".into(), "nats".into()));
                env.push(("OUTBOX_NATS_URL".into(), self.nats_url.clone()));
                env.push((
                    "OUTBOX_NATS_SUBJECT_TEMPLATE".into(),
                    format!("{prefix}.{{topic}}"),
                ));
            }
            SinkTarget::Http { url } => {
                env.push(("OUTBOX_SINK".into(), "http".into()));
                env.push(("OUTBOX_WEBHOOK_URL".into(), url.clone()));
                env.push(("OUTBOX_WEBHOOK_SECRET".into(), sinks::WEBHOOK_SECRET.into()));
            }
        }
        env
    }
}

/// Where the relay of one scenario publishes.
pub enum SinkTarget {
    Stdout,
    RabbitMq {
        exchange: String,
    },
    /// Kafka topic `{prefix}.bench`.
    Kafka {
        prefix: String,
    },
    /// Redis stream `{prefix}.bench`.
    Redis {
        prefix: String,
    },
    /// JetStream subject `{prefix}.bench`, captured by a stream of the bench's.
    Nats {
        prefix: String,
    },
    /// The bench's webhook receiver, `http://127.0.0.1:<port>/hook`.
    Http {
        url: String,
    },
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// PostgreSQL's plain claim of the next `$1` pending events, with no relay's rules: the limits
/// and floors the relay is measured against.
pub const PLAIN_CLAIM: &str = "DELETE FROM outbox.events WHERE id IN ( \
       SELECT id FROM outbox.events \
       WHERE delivered_at IS NULL AND dead_lettered_at IS NULL \
       ORDER BY id LIMIT $1) \
     RETURNING id, topic, key, payload, headers, message_id, created_at, attempts";

// ---------------------------------------------------------------------------------------------
// Watchdog: the whole bench is bounded in time, and relay children never outlive it.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "bench: BENCH_TIMEOUT_SECS ({}s) reached; stopping",
            limit.as_secs()
        );
        kill_children();
        std::process::exit(3);
    });
}

pub fn kill_children() {
    let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

pub struct Pg {
    pub admin_url: String,
    pub relay_bin: PathBuf,
}

impl Pg {
    pub fn url(&self, db: &str) -> String {
        let (base, rest) = self
            .admin_url
            .rsplit_once('/')
            .unwrap_or((&self.admin_url, ""));
        match rest.split_once('?') {
            Some((_, query)) => format!("{base}/{db}?{query}"),
            None => format!("{base}/{db}"),
        }
    }

    pub async fn admin(&self) -> Result<Client> {
        connect(&self.admin_url).await
    }

    /// A new database: empty and migrated by `outbox-relay migrate`, or a copy of `template`
    /// (migrated again: a no-op, as on every deploy).
    pub async fn create(&self, name: &str, template: Option<&str>) -> Result<String> {
        let admin = self.admin().await?;
        let sql = match template {
            None => format!("CREATE DATABASE {name}"),
            Some(t) => {
                let version: i32 = admin
                    .query_one("SELECT current_setting('server_version_num')::int", &[])
                    .await?
                    .get(0);
                // FILE_COPY copies the files instead of writing the whole database into the WAL.
                let strategy = if version >= 150000 {
                    " STRATEGY FILE_COPY"
                } else {
                    ""
                };
                format!("CREATE DATABASE {name} TEMPLATE {t}{strategy}")
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                // The template's last session may still be closing.
                Err(e)
                    if Instant::now() < deadline && format!("{e:?}").contains("being accessed") =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(anyhow!("{sql}: {}", pg_error(&e))),
            }
        }
        let url = self.url(name);
        migrate(&self.relay_bin, &url)?;
        Ok(url)
    }

    pub async fn drop(&self, name: &str) {
        if let Ok(admin) = self.admin().await
            && let Err(e) = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
        {
            eprintln!("bench: cannot drop database {name}: {}", pg_error(&e));
        }
    }

    /// Drops databases an interrupted earlier run left behind (only those nobody is connected to).
    pub async fn drop_leftovers(&self) {
        let Ok(admin) = self.admin().await else {
            return;
        };
        let Ok(rows) = admin
            .query(
                "SELECT datname FROM pg_database d WHERE datname LIKE 'outbox\\_bench\\_%' \
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                &[],
            )
            .await
        else {
            return;
        };
        for row in rows {
            let name: String = row.get(0);
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

pub fn migrate(bin: &PathBuf, url: &str) -> Result<()> {
    let output = Command::new(bin)
        .arg("migrate")
        .env("OUTBOX_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .context("running outbox-relay migrate")?;
    if !output.status.success() {
        bail!(
            "outbox-relay migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

pub async fn set_notify(client: &Client, on: bool) -> Result<()> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    client
        .batch_execute(&format!(
            "ALTER TABLE outbox.events {verb} TRIGGER events_notify"
        ))
        .await
        .map_err(|e| anyhow!("{verb} TRIGGER events_notify: {}", pg_error(&e)))
}

/// `INSERT ... SELECT` of the events numbered `$1..=$2`.
async fn prepare_insert_series(client: &Client) -> Result<tokio_postgres::Statement> {
    Ok(client
        .prepare(&format!(
            "INSERT INTO outbox.events (topic, key, payload) \
             SELECT '{TOPIC}', (i % {keys})::text, {PAYLOAD_SQL} \
             FROM generate_series($1::bigint, $2::bigint) i",
            keys = keys()
        ))
        .await?)
}

/// Inserts events `first..=last` with one statement per `chunk`.
pub async fn insert_series(client: &Client, first: u64, last: u64, chunk: u64) -> Result<()> {
    let statement = prepare_insert_series(client).await?;
    let mut from = first;
    while from <= last {
        let to = (from + chunk - 1).min(last);
        client
            .execute(&statement, &[&(from as i64), &(to as i64)])
            .await
            .map_err(|e| anyhow!("inserting events: {}", pg_error(&e)))?;
        from = to + 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Producers

/// Inserts at `rate` events/s for `duration`, one autocommit `INSERT ... SELECT generate_series`
/// per 10 ms tick, catching up when a tick ran late. Adds every committed event to `inserted`.
pub async fn produce_in_ticks(
    client: &Client,
    rate: u64,
    duration: Duration,
    first_seq: u64,
    inserted: &AtomicU64,
) -> Result<u64> {
    let statement = prepare_insert_series(client).await?;
    let tick = Duration::from_millis(10);
    let start = tokio::time::Instant::now();
    let mut done = 0u64;
    let mut next = start;
    loop {
        // Due by the clock, not by the tick count: a slow commit is caught up with a larger batch.
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (rate as f64 * elapsed.as_secs_f64()) as u64;
        if due > done {
            let n = (due - done).min(20_000);
            let from = first_seq + done;
            client
                .execute(&statement, &[&(from as i64), &((from + n - 1) as i64)])
                .await
                .map_err(|e| anyhow!("producer insert: {}", pg_error(&e)))?;
            done += n;
            inserted.fetch_add(n, Ordering::Relaxed);
        }
        next = (next + tick).max(tokio::time::Instant::now());
        tokio::time::sleep_until(next).await;
    }
    Ok(done)
}

/// `conns` connections inserting one event per transaction as fast as they can for `duration`.
pub async fn insert_flat_out(url: &str, conns: usize, duration: Duration) -> Result<u64> {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + duration;
    for c in 0..conns {
        let client = connect(url).await?;
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare("INSERT INTO outbox.events (topic, key, payload) VALUES ($1, $2, $3)")
                .await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let seq = (c as u64) << 40 | n;
                let key = (seq % keys()).to_string();
                client
                    .execute(&statement, &[&TOPIC, &key, &payload(seq)])
                    .await
                    .map_err(|e| anyhow!("insert: {}", pg_error(&e)))?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// Single-row autocommit inserts of events `0..count` at `rate` events/s, spread round-robin over
/// `conns` connections. Returns, per event, the instant its COMMIT returned to the producer.
pub async fn produce_timed(
    url: &str,
    rate: u64,
    count: u64,
    conns: usize,
) -> Result<Vec<Option<Instant>>> {
    let committed: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; count as usize]));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..conns as u64 {
        let client = connect(url).await?;
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare("INSERT INTO outbox.events (topic, key, payload) VALUES ($1, $2, $3)")
                .await?;
            let mut seq = c;
            while seq < count {
                tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
                let key = (seq % keys()).to_string();
                client
                    .execute(&statement, &[&TOPIC, &key, &payload(seq)])
                    .await
                    .map_err(|e| anyhow!("insert: {}", pg_error(&e)))?;
                let now = Instant::now();
                if let Ok(mut all) = committed.lock() {
                    all[seq as usize] = Some(now);
                }
                seq += conns as u64;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let all = committed.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// What a consumer received: a count, and receipt instants by sequence number when recording.

#[derive(Clone, Default)]
pub struct Received {
    pub count: Arc<AtomicU64>,
    pub record: Arc<AtomicBool>,
    pub stamps: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Received {
    pub fn note(&self, data: &[u8], at: Instant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.record.load(Ordering::Relaxed)
            && let Some(seq) = parse_seq(data)
            && let Ok(mut stamps) = self.stamps.lock()
        {
            stamps.push((seq, at));
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn reset(&self, record: bool) {
        self.count.store(0, Ordering::Relaxed);
        if let Ok(mut stamps) = self.stamps.lock() {
            stamps.clear();
        }
        self.record.store(record, Ordering::Relaxed);
    }

    pub async fn wait_for(&self, n: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() >= deadline {
                bail!(
                    "the consumer got {} of {n} messages within {timeout:?}",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn stamps(&self) -> Vec<(u64, Instant)> {
        self.stamps.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Reads the stdout sink's JSON lines from the relay's stdout pipe, on a thread of its own.
pub fn read_stdout_lines(stdout: ChildStdout, received: Received) {
    std::thread::spawn(move || {
        let reader = std::io::BufReader::with_capacity(1 << 20, stdout);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let at = Instant::now();
            const FIELD: &[u8] = b"\"payload\":\"";
            let data = line
                .windows(FIELD.len())
                .position(|w| w == FIELD)
                .map(|p| &line[p + FIELD.len()..])
                .unwrap_or(&[]);
            received.note(data, at);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

/// A topic exchange and a durable queue bound to it with `#`, of this bench run's own, and a
/// consumer (auto-ack) on its own connection.
pub struct Rabbit {
    connection: Connection,
    pub exchange: String,
    pub queue: String,
    pub received: Received,
}

impl Rabbit {
    pub async fn setup(url: &str) -> Result<Rabbit> {
        Rabbit::setup_with(url, true).await
    }

    /// `consume`: whether this process consumes the queue (`received`); without, the messages
    /// stay queued until `teardown` deletes the queue.
    pub async fn setup_with(url: &str, consume: bool) -> Result<Rabbit> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        let exchange = unique("outbox_bench");
        let queue = unique("outbox_bench");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let received = Received::default();
        if !consume {
            return Ok(Rabbit {
                connection,
                exchange,
                queue,
                received,
            });
        }
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let sink = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                sink.note(&delivery.data, Instant::now());
            }
        });
        Ok(Rabbit {
            connection,
            exchange,
            queue,
            received,
        })
    }

    pub async fn teardown(self) {
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "bench done".into()).await;
    }
}

/// Publishes `count` events straight to RabbitMQ like the relay does (persistent, mandatory, a
/// message id, confirms): `batch` publishes, then their confirms. Returns the time until the last
/// confirm.
pub async fn rabbit_raw_publish(
    url: &str,
    exchange: &str,
    count: u64,
    batch: u64,
) -> Result<Duration> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = ShortString::from(exchange);
    let started = Instant::now();
    let mut seq = 0;
    while seq < count {
        let end = (seq + batch).min(count);
        let data: Vec<Vec<u8>> = (seq..end).map(payload).collect();
        let mut sends = Vec::with_capacity(data.len());
        for body in &data {
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()))
                .with_delivery_mode(2)
                .with_timestamp(0)
                .with_app_id(ShortString::from("outbox-relay-bench"))
                .with_headers(FieldTable::default());
            let send = channel.basic_publish(
                exchange.clone(),
                TOPIC.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            );
            sends.push(Box::pin(futures_util::future::maybe_done(send)));
        }
        // As the relay does: queue every message of the batch before waiting on any, so lapin's
        // I/O thread writes them together (the fastest way lapin publishes).
        std::future::poll_fn(|cx| {
            for send in &mut sends {
                let _ = std::future::Future::poll(send.as_mut(), cx);
            }
            std::task::Poll::Ready(())
        })
        .await;
        let mut confirms = Vec::with_capacity(sends.len());
        for mut send in sends {
            send.as_mut().await;
            match send.as_mut().take_output() {
                Some(confirm) => confirms.push(confirm?),
                None => bail!("basic.publish returned no result"),
            }
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                other => bail!("RabbitMQ did not accept a message: {other:?}"),
            }
        }
        seq = end;
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "bench done".into()).await;
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// Kafka (only with KAFKA_BROKERS)

pub mod kafka {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// Creates a one-partition topic (an existing one is fine).
    pub async fn create_topic(brokers: &str, topic: &str) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .context("creating the Kafka admin client")?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = tokio::time::timeout(
            Duration::from_secs(30),
            admin.create_topics(
                &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &options,
            ),
        )
        .await
        .context("creating a Kafka topic timed out")??;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("cannot create Kafka topic {name}: {code}"),
            }
        }
        Ok(())
    }

    /// `BENCH_KAFKA_PROPERTIES`: librdkafka properties (`name=value`, comma-separated) given to
    /// the relay as `OUTBOX_KAFKA_PROPERTIES` and to the bench's raw producers alike, to compare
    /// producer settings in one run.
    pub fn properties() -> Option<String> {
        std::env::var("BENCH_KAFKA_PROPERTIES")
            .ok()
            .filter(|v| !v.trim().is_empty())
    }

    /// The relay's producer settings (idempotent, acks=all, linger 5 ms), then
    /// `BENCH_KAFKA_PROPERTIES`.
    fn producer(brokers: &str) -> Result<FutureProducer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "outbox-relay-bench")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("acks", "all");
        for item in properties().iter().flat_map(|p| p.split(',')) {
            let (name, value) = item.split_once('=').with_context(|| {
                format!("BENCH_KAFKA_PROPERTIES: expected name=value, got {item:?}")
            })?;
            config.set(name.trim(), value.trim());
        }
        config.create().context("creating the Kafka producer")
    }

    /// Produces `count` events like the relay: `batch` sends, then their delivery reports. With
    /// `cloudevents_headers`, each message also carries the headers binary CloudEvents add
    /// ([`CloudEventsAttributes`]): the broker's and the client's own cost of the format.
    pub async fn raw_produce(
        brokers: &str,
        topic: &str,
        count: u64,
        batch: u64,
        cloudevents_headers: bool,
    ) -> Result<Duration> {
        let producer = producer(brokers)?;
        let mut cloudevents = cloudevents_headers.then(CloudEventsAttributes::new);
        let started = Instant::now();
        let mut seq = 0;
        while seq < count {
            let end = (seq + batch).min(count);
            let mut reports = Vec::with_capacity((end - seq) as usize);
            for s in seq..end {
                let data = payload(s);
                let key = (s % keys()).to_string();
                let id = uuid::Uuid::new_v4();
                let message_id = id.to_string();
                let mut headers = OwnedHeaders::new_with_capacity(8);
                if let Some(attributes) = &mut cloudevents {
                    for (name, value) in attributes.of(Binding::Kafka, id, &key)? {
                        headers = headers.insert(Header {
                            key: name,
                            value: Some(value.as_ref()),
                        });
                    }
                }
                let headers = headers.insert(Header {
                    key: "message-id",
                    value: Some(&message_id),
                });
                let mut record = FutureRecord::to(topic)
                    .payload(&data)
                    .key(&key)
                    .headers(headers);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match producer.send_result(record) {
                        Ok(report) => {
                            reports.push(report);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                            if Instant::now() < deadline =>
                        {
                            record = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => bail!("Kafka produce failed: {e}"),
                    }
                }
            }
            for report in reports {
                match report.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => bail!("Kafka delivery failed: {e}"),
                    Err(_) => bail!("the Kafka producer was closed"),
                }
            }
            seq = end;
        }
        Ok(started.elapsed())
    }

    /// The reference for the relay's latency: a plain producer with the relay's settings sends
    /// `count` events to a topic of their own at `rate` per second, each as soon as it is due (no
    /// database, no batching beyond librdkafka's), and the same consumer as the relay's scenario
    /// receives them. Returns the send-to-receipt times in ms, sorted.
    pub async fn raw_latency(brokers: &str, rate: u64, count: u64) -> Result<Vec<f64>> {
        let topic = format!("{}.{TOPIC}", unique("outbox_bench_rawlat"));
        create_topic(brokers, &topic).await?;
        let (received, task) = consume(brokers, &topic)?;
        let result = async {
            let producer = producer(brokers)?;
            let send = |seq: Option<u64>| {
                let data = seq.map_or_else(|| b"warm-up".to_vec(), payload);
                let key = seq.unwrap_or(0) % keys();
                let message_id = uuid::Uuid::new_v4().to_string();
                let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: "message-id",
                    value: Some(&message_id),
                });
                let key = key.to_string();
                let record = FutureRecord::to(&topic)
                    .payload(&data)
                    .key(&key)
                    .headers(headers);
                producer
                    .send_result(record)
                    .map_err(|(e, _)| anyhow!("Kafka produce failed: {e}"))
            };
            // The consumer has joined its group and fetches once a warm-up event came through.
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.count() == 0 {
                if Instant::now() >= deadline {
                    bail!("the Kafka consumer received no warm-up event within 60 s");
                }
                drop(send(None)?);
                let next = Instant::now() + Duration::from_millis(250);
                while received.count() == 0 && Instant::now() < next {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            received.reset(true);
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let start = tokio::time::Instant::now() + Duration::from_millis(50);
            let mut sent = Vec::with_capacity(count as usize);
            let mut reports = Vec::with_capacity(count as usize);
            for seq in 0..count {
                tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
                sent.push(Instant::now());
                reports.push(send(Some(seq))?);
            }
            for report in reports {
                match report.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => bail!("Kafka delivery failed: {e}"),
                    Err(_) => bail!("the Kafka producer was closed"),
                }
            }
            received.wait_for(count, Duration::from_secs(30)).await?;
            let mut first: Vec<Option<Instant>> = vec![None; count as usize];
            for (seq, at) in received.stamps() {
                if let Some(slot) = first.get_mut(seq as usize)
                    && slot.is_none()
                {
                    *slot = Some(at);
                }
            }
            let mut latencies: Vec<f64> = sent
                .iter()
                .zip(&first)
                .filter_map(|(s, r)| Some(r.as_ref()?.saturating_duration_since(*s)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect();
            if latencies.len() as u64 != count {
                bail!("{} of {count} raw events measured", latencies.len());
            }
            latencies.sort_by(f64::total_cmp);
            Ok(latencies)
        }
        .await;
        task.abort();
        result
    }

    /// The consumer's `fetch.wait.max.ms`: `BENCH_KAFKA_FETCH_WAIT_MS`, default 5. Kafka answers
    /// a fetch as soon as data arrives, so the wait costs nothing there; tansu 0.6 holds every
    /// fetch response for this long (`tansu-storage` `service/fetch.rs`), so that a message
    /// reaches the consumer 1 to 2 waits after it was written.
    pub fn fetch_wait_ms() -> String {
        std::env::var("BENCH_KAFKA_FETCH_WAIT_MS")
            .ok()
            .filter(|v| v.trim().parse::<u32>().is_ok())
            .unwrap_or_else(|| "5".into())
    }

    /// A consumer of `topic` from its beginning, noting what arrives.
    pub fn consume(brokers: &str, topic: &str) -> Result<(Received, tokio::task::JoinHandle<()>)> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("outbox_bench"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", fetch_wait_ms())
            .create()
            .context("creating the Kafka consumer")?;
        consumer.subscribe(&[topic])?;
        let received = Received::default();
        let sink = received.clone();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => sink.note(message.payload().unwrap_or(&[]), Instant::now()),
                    Err(e) => {
                        eprintln!("bench: kafka consumer: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok((received, task))
    }
}

// ---------------------------------------------------------------------------------------------
// The relay as a child process

pub struct RelayProc {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    stderr: PathBuf,
    pub started: Instant,
}

pub enum RelayStdout {
    Null,
    Piped,
}

impl RelayProc {
    pub fn spawn(
        bin: &PathBuf,
        database_url: &str,
        env: &[(String, String)],
        stdout: RelayStdout,
    ) -> Result<(RelayProc, Option<ChildStdout>)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let stderr = std::env::temp_dir().join(format!("{}.stderr", unique("outbox_bench_relay")));
        let mut command = Command::new(bin);
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("OUTBOX_DATABASE_URL", database_url)
            .env("OUTBOX_HTTP_ADDR", http.to_string())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?);
        match stdout {
            RelayStdout::Null => command.stdout(std::fs::File::create("/dev/null")?),
            RelayStdout::Piped => command.stdout(Stdio::piped()),
        };
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().context("starting outbox-relay run")?;
        let started = Instant::now();
        let pid = child.id();
        if let Ok(mut children) = CHILDREN.lock() {
            children.push(pid);
        }
        let out = child.stdout.take();
        Ok((
            RelayProc {
                child,
                pid,
                http,
                stderr,
                started,
            },
            out,
        ))
    }

    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("the relay exited ({status}):\n{}", self.stderr_tail());
        }
        Ok(())
    }

    pub async fn metrics(&self) -> Option<String> {
        let (status, body) = http_get(self.http, "/metrics").await?;
        (status == 200).then_some(body)
    }

    /// `outbox_relay_delivered_total`, 0 before the first delivery.
    pub async fn delivered(&self) -> Option<u64> {
        let body = self.metrics().await?;
        Some(metric_sum(&body, "outbox_relay_delivered_total", "").unwrap_or(0.0) as u64)
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Some((200, _)) = http_get(self.http, "/readyz").await {
                // Ready means connected; leading (holding the lock) follows within a round trip.
                if let Some(body) = self.metrics().await
                    && metric_sum(&body, "outbox_relay_leader", "") == Some(1.0)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the relay was not ready within {timeout:?}:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the delivered counter every 50 ms until it reaches `n`; samples (elapsed, delivered).
    pub async fn wait_delivered(&mut self, n: u64, timeout: Duration) -> Result<Vec<(f64, u64)>> {
        let deadline = Instant::now() + timeout;
        let mut samples = Vec::new();
        loop {
            self.check_alive()?;
            let delivered = self.delivered().await.unwrap_or(0);
            samples.push((self.started.elapsed().as_secs_f64(), delivered));
            if delivered >= n {
                return Ok(samples);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the relay delivered {delivered} of {n} events within {timeout:?}:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid).unwrap_or(f64::NAN)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.pid, "VmHWM:").map_or(f64::NAN, |k| k as f64 / 1024.0)
    }

    /// SIGTERM, then the exit within 30 s (SIGKILL after that).
    pub async fn stop(&mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if let Ok(mut children) = CHILDREN.lock() {
                    children.retain(|&p| p != self.pid);
                }
                if !status.success() {
                    bail!("the relay exited with {status}:\n{}", self.stderr_tail());
                }
                let _ = std::fs::remove_file(&self.stderr);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the relay did not stop within 30 s after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sum over the series of `name` whose labels contain `label` ("" for all).
pub fn metric_sum(body: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name
            && labels.contains(label)
            && let Ok(v) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// CPU and memory from /proc

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// This process's CPU seconds so far, to measure a raw publisher's own cost.
pub fn own_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id()).unwrap_or(f64::NAN)
}

/// This process's CPU per 1M messages since `start` (from [`own_cpu_secs`]), for `n` messages.
pub fn cpu_per_million_since(start: f64, n: u64) -> f64 {
    (own_cpu_secs() - start) / n as f64 * 1e6
}

/// utime + stime of the calling thread, in seconds.
pub fn thread_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/thread-self/stat")
}

fn stat_cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// CPU seconds of the PostgreSQL backends serving the relay with process id `relay_pid` (its
/// session and its pool: they name themselves `outbox-relay <host> pid <pid>`). PostgreSQL runs
/// on this machine, so its backends' /proc entries are readable.
pub async fn relay_backends_cpu_secs(client: &Client, relay_pid: u32) -> Result<f64> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
            &[&format!("outbox-relay % pid {relay_pid}")],
        )
        .await
        .context("listing the relay's PostgreSQL backends")?;
    let mut total = 0.0;
    for row in rows {
        let pid: i32 = row.try_get(0)?;
        let pid = u32::try_from(pid).context("a backend's pid")?;
        total += proc_cpu_secs(pid).with_context(|| format!("reading backend {pid}'s CPU"))?;
    }
    Ok(total)
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of the machine and of the processes that matter, at one instant.
pub struct CpuSnapshot {
    at: Instant,
    machine_busy: f64,
    by_pid: HashMap<u32, (String, f64)>,
    bench: f64,
}

/// CPU used between two snapshots, in seconds, by who.
pub struct CpuUse {
    pub wall: f64,
    pub machine_busy: f64,
    pub postgres: f64,
    /// RabbitMQ (beam.smp), Redis and NATS server processes.
    pub broker: f64,
    pub bench: f64,
}

impl CpuSnapshot {
    pub fn take() -> CpuSnapshot {
        let machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let v: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal
                Some(
                    v.iter().take(8).sum::<f64>()
                        - v.get(3).unwrap_or(&0.0)
                        - v.get(4).unwrap_or(&0.0),
                )
            })
            .unwrap_or(0.0)
            / clk_tck();
        let mut by_pid = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let comm = comm.trim();
                if (comm == "postgres"
                    || comm == "beam.smp"
                    || comm == "redis-server"
                    || comm == "nats-server")
                    && let Some(cpu) = proc_cpu_secs(pid)
                {
                    by_pid.insert(pid, (comm.to_string(), cpu));
                }
            }
        }
        CpuSnapshot {
            at: Instant::now(),
            machine_busy,
            by_pid,
            bench: proc_cpu_secs(std::process::id()).unwrap_or(0.0),
        }
    }

    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let mut postgres = 0.0;
        let mut broker = 0.0;
        for (pid, (comm, cpu)) in &self.by_pid {
            let before = earlier.by_pid.get(pid).map_or(0.0, |(_, c)| *c);
            let used = (cpu - before).max(0.0);
            if comm == "postgres" {
                postgres += used;
            } else {
                broker += used;
            }
        }
        CpuUse {
            wall: self.at.duration_since(earlier.at).as_secs_f64(),
            machine_busy: self.machine_busy - earlier.machine_busy,
            postgres,
            broker,
            bench: self.bench - earlier.bench,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Least-squares slope of (x, y).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The value at quantile `q` (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = proc_meminfo_kib("MemTotal:").map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    format!("{cores} cores, {cpu}, {mem_gib:.0} GiB")
}

fn proc_meminfo_kib(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
