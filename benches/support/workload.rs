//! The bench's workload: events of 256 bytes over `BENCH_KEYS` keys, inserted as a backlog or by
//! producers at a rate, and PostgreSQL's plain claim the relay is measured against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio_postgres::Client;

use super::settings::SinkKind;
use crate::harness::{Postgres, pg_error, try_connect, unique};

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

/// [`PAYLOAD_SQL`] as a JSON string (BullMQ's job data must be JSON): the same size, the digits
/// after the opening quote, the same bytes as [`json_payload`].
pub const JSON_PAYLOAD_SQL: &str =
    "convert_to('\"' || lpad(i::text, 12, '0') || repeat('x', 242) || '\"', 'UTF8')";

/// [`payload`] as a JSON string of the same size: the bullmq sink's events (a worker's
/// `job.data` is the string, which starts with the sequence number).
pub fn json_payload(seq: u64) -> Vec<u8> {
    let mut p = format!("\"{seq:012}").into_bytes();
    p.resize(PAYLOAD_BYTES - 1, b'x');
    p.push(b'"');
    p
}

/// A 256-byte ASCII payload that starts with the event's sequence number (12 digits), so a
/// consumer can tell which event it got.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("{seq:012}").into_bytes();
    p.resize(PAYLOAD_BYTES, b'x');
    p
}

/// PostgreSQL's plain claim of the next `$1` pending events, with no relay's rules: the limits
/// and floors the relay is measured against.
pub const PLAIN_CLAIM: &str = "DELETE FROM outbox.events WHERE id IN ( \
       SELECT id FROM outbox.events \
       WHERE delivered_at IS NULL AND dead_lettered_at IS NULL \
       ORDER BY id LIMIT $1) \
     RETURNING id, topic, key, payload, headers, message_id, created_at, attempts";

/// [`PLAIN_CLAIM`] keeping the delivered history: each claimed event is marked delivered, a new
/// row version, as the relay records a delivery by default. What any relay that keeps the
/// history in the table pays at least.
pub const PLAIN_CLAIM_MARKING: &str = "UPDATE outbox.events SET delivered_at = now() WHERE id IN ( \
       SELECT id FROM outbox.events \
       WHERE delivered_at IS NULL AND dead_lettered_at IS NULL \
       ORDER BY id LIMIT $1) \
     RETURNING id, topic, key, payload, headers, message_id, created_at, attempts";

pub async fn set_notify(client: &Client, on: bool) -> Result<()> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    client
        .batch_execute(&format!(
            "ALTER TABLE outbox.events {verb} TRIGGER events_notify"
        ))
        .await
        .map_err(|e| anyhow!("{verb} TRIGGER events_notify: {}", pg_error(&e)))
}

/// `INSERT ... SELECT` of the events numbered `$1..=$2`; `json`: with [`JSON_PAYLOAD_SQL`].
async fn prepare_insert_series(client: &Client, json: bool) -> Result<tokio_postgres::Statement> {
    let payload = if json { JSON_PAYLOAD_SQL } else { PAYLOAD_SQL };
    Ok(client
        .prepare(&format!(
            "INSERT INTO outbox.events (topic, key, payload) \
             SELECT '{TOPIC}', (i % {keys})::text, {payload} \
             FROM generate_series($1::bigint, $2::bigint) i",
            keys = keys()
        ))
        .await?)
}

/// Inserts events `first..=last` with one statement per `chunk` (`json`: JSON payloads).
pub async fn insert_series(
    client: &Client,
    first: u64,
    last: u64,
    chunk: u64,
    json: bool,
) -> Result<()> {
    let statement = prepare_insert_series(client, json).await?;
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
    let statement = prepare_insert_series(client, false).await?;
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
        let client = try_connect(url).await?;
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
/// `conns` connections (`json`: with [`json_payload`]s, the bullmq sink's). Returns, per event,
/// the instant its COMMIT returned to the producer.
pub async fn produce_timed(
    url: &str,
    rate: u64,
    count: u64,
    conns: usize,
    json: bool,
) -> Result<Vec<Option<Instant>>> {
    let committed: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; count as usize]));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..conns as u64 {
        let client = try_connect(url).await?;
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare("INSERT INTO outbox.events (topic, key, payload) VALUES ($1, $2, $3)")
                .await?;
            let mut seq = c;
            while seq < count {
                tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
                let key = (seq % keys()).to_string();
                let payload = match json {
                    true => json_payload(seq),
                    false => payload(seq),
                };
                client
                    .execute(&statement, &[&TOPIC, &key, &payload])
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

/// A migrated database `name` holding `events` events, inserted with the NOTIFY trigger off,
/// vacuumed and analyzed; scenarios copy it ([`backlog_copy`]). `json`: with JSON payloads (the
/// bullmq sink's). How long the inserts took.
pub async fn build_backlog(pg: &Postgres, name: &str, events: u64, json: bool) -> Result<Duration> {
    let url = pg.create(name, None, true).await?;
    let client = try_connect(&url).await?;
    let started = Instant::now();
    set_notify(&client, false).await?;
    insert_series(&client, 1, events, 250_000, json).await?;
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

/// A copy of the backlog for one scenario: its name (to drop it) and URL.
pub async fn backlog_copy(pg: &Postgres, template: &str, what: &str) -> Result<(String, String)> {
    created(pg, unique(&format!("outbox_bench_{what}")), Some(template)).await
}

/// A new migrated database for one scenario: its name (to drop it) and URL.
pub async fn fresh_database(pg: &Postgres, what: &str) -> Result<(String, String)> {
    created(pg, unique(&format!("outbox_bench_{what}")), None).await
}

/// Database `name`, migrated, empty or a copy of `template`; dropped again if that fails.
async fn created(pg: &Postgres, name: String, template: Option<&str>) -> Result<(String, String)> {
    match pg.create(&name, template, true).await {
        Ok(url) => Ok((name, url)),
        Err(e) => {
            pg.drop(&name).await;
            Err(e)
        }
    }
}

/// The preloaded backlogs the scenarios copy: with the plain payloads, and with their JSON
/// strings when a sink needs those (bullmq); each a template database's name.
#[derive(Default)]
pub struct Backlogs {
    pub plain: Option<String>,
    pub json: Option<String>,
}

impl Backlogs {
    /// The backlog of `sink`'s events, if it was loaded.
    pub fn of(&self, sink: SinkKind) -> Option<&str> {
        match sink.json_payloads() {
            true => self.json.as_deref(),
            false => self.plain.as_deref(),
        }
    }

    /// Whether any backlog was loaded.
    pub fn any(&self) -> bool {
        self.plain.is_some() || self.json.is_some()
    }
}
