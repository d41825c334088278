//! `BENCH_ONLY=adoption`: what adopting a framework's own outbox table costs (docs/adoption.md).
//!
//! - The application's insert rate with the capture trigger disabled and enabled, alternated in
//!   three rounds, for Debezium's and MassTransit's tables, written with the tests' statements
//!   (one row per statement, pipelined in the transaction as EF Core and Npgsql batch them): one
//!   row per transaction, and 100.
//! - The relay's recording with MassTransit's removal (the triggers on `outbox.events` that delete
//!   the delivered messages' rows), disabled and enabled, alternated: marking 100-event batches
//!   delivered, and statements that mark nothing (every claim runs one).
//! - A drain of an adopted MassTransit table against the same events written to `outbox.events`
//!   directly (same topic, keys, payloads and headers), alternated, per sink (RabbitMQ, stdout),
//!   counted at the consumer.
//!
//! Its databases are named `outbox_adoptbench_*`: another run's `drop_leftovers("outbox_bench_")`
//! would drop a template of this one's while it is not connected.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::future::try_join_all;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::settings::{Settings, SinkKind};
use super::table::{Table, progress, rate, thousands};
use super::target::Target;
use super::workload::{PAYLOAD_BYTES, TOPIC};
use crate::harness::{
    DEBEZIUM_TABLE, INSERT_OUTBOX_MESSAGE, INSERT_OUTBOX_STATE, MASSTRANSIT_ENVELOPE,
    MASSTRANSIT_TABLES, Postgres, pg_error, relay_bin, try_connect, unique,
};

/// Rounds of each alternated measurement.
const ROUNDS: usize = 3;
/// At most this many events per drain (`BENCH_EVENTS` otherwise): eight drains in all.
const MAX_EVENTS: u64 = 200_000;
/// Messages per MassTransit outbox (one key each) in the drains and the recording.
const PER_OUTBOX: u64 = 100;

pub async fn adoption_rows(s: &Settings, pg: &Postgres, table: &mut Table) {
    if let Err(e) = insert_rows(pg, table).await {
        table.error("adoption: the application's insert", &e);
    }
    let events = s.events.min(MAX_EVENTS).div_ceil(PER_OUTBOX) * PER_OUTBOX;
    progress(&format!(
        "adoption: preloading {events} MassTransit messages"
    ));
    let (adopted, plain) = match templates(pg, events).await {
        Ok(templates) => templates,
        Err(e) => {
            table.error("adoption: preload", &e);
            return;
        }
    };
    if let Err(e) = recording_rows(pg, &adopted, table).await {
        table.error("adoption: the relay's recording", &e);
    }
    for sink in [SinkKind::RabbitMq, SinkKind::Stdout] {
        if let Err(e) = drain_rows(s, pg, &adopted, &plain, events, sink, table).await {
            table.error(&format!("adoption: {} drain", sink.name()), &e);
        }
    }
    pg.drop(&adopted).await;
    pg.drop(&plain).await;
}

/// `outbox-relay migrate` with `OUTBOX_ADOPT=framework` on `url`.
fn adopt(url: &str, framework: &str) -> Result<()> {
    let output = Command::new(relay_bin())
        .arg("migrate")
        .env("OUTBOX_DATABASE_URL", url)
        .env("OUTBOX_ADOPT", framework)
        .env("RUST_LOG", "warn")
        .output()
        .context("outbox-relay migrate")?;
    if !output.status.success() {
        bail!(
            "migrate (OUTBOX_ADOPT={framework}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn sql(client: &Client, text: &str) -> Result<()> {
    client
        .batch_execute(text)
        .await
        .map_err(|e| anyhow!("{}: {}", text.lines().next().unwrap_or(text), pg_error(&e)))
}

/// A writer's shape: rows per transaction.
#[derive(Clone, Copy)]
enum Shape {
    One,
    Hundred,
}

impl Shape {
    fn rows(self) -> u64 {
        match self {
            Shape::One => 1,
            Shape::Hundred => 100,
        }
    }

    /// Transactions per measurement: about 2 s of inserts either way on the development machine.
    fn transactions(self) -> u64 {
        match self {
            Shape::One => 1_000,
            Shape::Hundred => 100,
        }
    }
}

/// The insert rates, capture off and on, per framework and shape.
async fn insert_rows(pg: &Postgres, table: &mut Table) -> Result<()> {
    let name = unique("outbox_adoptbench_insert");
    let url = pg.create(&name, None, true).await?;
    let result = async {
        let client = try_connect(&url).await?;
        sql(&client, DEBEZIUM_TABLE).await?;
        sql(&client, MASSTRANSIT_TABLES).await?;
        adopt(&url, "debezium")?;
        adopt(&url, "masstransit")?;
        for framework in ["debezium", "masstransit"] {
            for shape in [Shape::One, Shape::Hundred] {
                insert_row(&client, framework, shape, table).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop(&name).await;
    result
}

async fn insert_row(
    client: &Client,
    framework: &str,
    shape: Shape,
    table: &mut Table,
) -> Result<()> {
    let captured = match framework {
        "debezium" => "public.outboxevent",
        _ => "\"OutboxMessage\"",
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        for enabled in [false, true] {
            let state = if enabled { "ENABLE" } else { "DISABLE" };
            sql(
                client,
                &format!("ALTER TABLE {captured} {state} TRIGGER outbox_adopt_capture"),
            )
            .await?;
            sql(
                client,
                "TRUNCATE outbox.events, public.outboxevent, \"OutboxMessage\", \"OutboxState\"",
            )
            .await?;
            sql(client, "VACUUM ANALYZE outbox.events").await?;
            let started = Instant::now();
            for _ in 0..shape.transactions() {
                match framework {
                    "debezium" => write_debezium(client, shape.rows()).await?,
                    _ => write_masstransit(client, shape.rows()).await?,
                }
            }
            let rows_per_sec =
                (shape.transactions() * shape.rows()) as f64 / started.elapsed().as_secs_f64();
            progress(&format!(
                "adoption: {framework} insert, {} row(s)/tx, round {round}, capture {}: {}",
                shape.rows(),
                if enabled { "on" } else { "off" },
                thousands(rows_per_sec)
            ));
            if enabled {
                on.push(rows_per_sec);
            } else {
                off.push(rows_per_sec);
            }
        }
    }
    let (off_mean, on_mean) = (mean(&off), mean(&on));
    table.row(
        &format!(
            "adoption: {framework} insert, {} row(s) per transaction, capture on (off)",
            shape.rows()
        ),
        format!("{} rows/s ({})", thousands(on_mean), thousands(off_mean)),
        "capture off".into(),
        format!("{:.2}", on_mean / off_mean),
        "",
        None,
    );
    table.info(
        &format!(
            "adoption: {framework} insert, {} row(s)/tx, rounds off / on (spread)",
            shape.rows()
        ),
        format!("{} / {}", rounds(&off), rounds(&on)),
    );
    Ok(())
}

/// Debezium's row, as the tests insert it (Debezium's Quarkus extension): `rows` statements in
/// one transaction.
async fn write_debezium(client: &Client, rows: u64) -> Result<()> {
    let insert = client
        .prepare(
            "INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload) \
             VALUES ($1, $2, $3, 'OrderEvent', now(), $4::text::jsonb)",
        )
        .await?;
    let values: Vec<(Uuid, String, String)> = (0..rows)
        .map(|n| {
            let key = format!("{}", n % 17);
            let payload = format!(r#"{{"key":"{key}","seq":{n},"note":"naïve ✓"}}"#);
            (Uuid::new_v4(), key, payload)
        })
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 4]> = values
        .iter()
        .map(|(id, key, payload)| [id as &(dyn ToSql + Sync), &"Order", key, payload])
        .collect();
    sql(client, "BEGIN").await?;
    try_join_all(params.iter().map(|p| client.execute(&insert, p)))
        .await
        .map_err(|e| anyhow!("insert an outboxevent row: {}", pg_error(&e)))?;
    sql(client, "COMMIT").await
}

/// MassTransit's bus outbox, as the tests write it (as EF Core saves it): the state, then `rows`
/// messages, in one transaction.
async fn write_masstransit(client: &Client, rows: u64) -> Result<()> {
    let state = client.prepare(INSERT_OUTBOX_STATE).await?;
    let message = client.prepare(INSERT_OUTBOX_MESSAGE).await?;
    let outbox_id = Uuid::new_v4();
    let destination = "rabbitmq://localhost/Contracts:OrderCreated?type=fanout";
    let headers = r#"{"MT-Activity-Id":"00-abc-def-01","Retry":3}"#;
    let values: Vec<(Uuid, Uuid, String)> = (0..rows)
        .map(|n| {
            let message_id = Uuid::new_v4();
            (message_id, Uuid::new_v4(), envelope(message_id, n))
        })
        .collect();
    sql(client, "BEGIN").await?;
    client
        .execute(&state, &[&outbox_id])
        .await
        .map_err(|e| anyhow!("insert the OutboxState: {}", pg_error(&e)))?;
    let params: Vec<[&(dyn ToSql + Sync); 7]> = values
        .iter()
        .map(|(message_id, conversation, body)| {
            [
                body as &(dyn ToSql + Sync),
                &MASSTRANSIT_ENVELOPE,
                conversation,
                &destination,
                &headers,
                message_id,
                &outbox_id,
            ]
        })
        .collect();
    try_join_all(params.iter().map(|p| client.execute(&message, p)))
        .await
        .map_err(|e| anyhow!("insert an OutboxMessage: {}", pg_error(&e)))?;
    sql(client, "COMMIT").await
}

/// MassTransit's JSON envelope of message `message_id`, padded to the bench's payload size.
fn envelope(message_id: Uuid, n: u64) -> String {
    let mut body = format!(
        r#"{{"messageId":"{message_id}","messageType":["urn:message:Contracts:OrderCreated"],"message":{{"orderId":{n},"pad":""}}}}"#
    );
    let pad = PAYLOAD_BYTES.saturating_sub(body.len());
    body.insert_str(body.len() - 3, &"x".repeat(pad));
    body
}

/// Two template databases of `events` events each: MassTransit's tables adopted, the messages
/// written there (and captured); and the same events (topic, key, payload, headers) written to
/// `outbox.events` directly.
async fn templates(pg: &Postgres, events: u64) -> Result<(String, String)> {
    let adopted = unique("outbox_adoptbench_adopted");
    let url = pg.create(&adopted, None, true).await?;
    let client = try_connect(&url).await?;
    sql(&client, MASSTRANSIT_TABLES).await?;
    adopt(&url, "masstransit")?;
    sql(
        &client,
        &format!(
            r#"ALTER TABLE outbox.events DISABLE TRIGGER events_notify;
            INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
            SELECT gen_random_uuid(), now(), '00000000-0000-0000-0000-000000000000'
            FROM generate_series(1, {outboxes});
            INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId",
                "MessageType", "OutboxId", "SentTime")
            SELECT rpad('{{"message":' || m.n || ',"pad":"', {PAYLOAD_BYTES} - 2, 'x') || '"}}', '{MASSTRANSIT_ENVELOPE}',
                   'rabbitmq://localhost/{TOPIC}', '{{"MT-Activity-Id":"00-abc-def-01"}}', gen_random_uuid(),
                   'urn:message:Contracts:OrderCreated', s."OutboxId", now()
            FROM (SELECT "OutboxId", row_number() OVER (ORDER BY "OutboxId") AS o FROM "OutboxState") s
            CROSS JOIN LATERAL generate_series(1, {PER_OUTBOX}) AS m(n)
            ORDER BY s.o, m.n;
            ALTER TABLE outbox.events ENABLE TRIGGER events_notify;"#,
            outboxes = events / PER_OUTBOX
        ),
    )
    .await?;
    sql(
        &client,
        r#"VACUUM ANALYZE outbox.events, "OutboxMessage", "OutboxState""#,
    )
    .await?;
    drop(client);
    // The same events (topic, keys of 100 events, payloads, the headers the capture writes),
    // written as a writer of outbox.events would write them.
    let plain = unique("outbox_adoptbench_plain");
    let plain_url = pg.create(&plain, None, true).await?;
    let plain_client = try_connect(&plain_url).await?;
    sql(
        &plain_client,
        &format!(
            r#"ALTER TABLE outbox.events DISABLE TRIGGER events_notify;
            INSERT INTO outbox.events (topic, key, payload, headers)
            SELECT '{TOPIC}', o.key,
                   convert_to(rpad('{{"message":' || m.n || ',"pad":"', {PAYLOAD_BYTES} - 2, 'x') || '"}}', 'UTF8'),
                   '{{"MT-Activity-Id":"00-abc-def-01","content-type":"{MASSTRANSIT_ENVELOPE}"}}'
            FROM (SELECT gen_random_uuid()::text AS key, o FROM generate_series(1, {outboxes}) AS o) o
            CROSS JOIN LATERAL generate_series(1, {PER_OUTBOX}) AS m(n)
            ORDER BY o.o, m.n;
            ALTER TABLE outbox.events ENABLE TRIGGER events_notify;"#,
            outboxes = events / PER_OUTBOX
        ),
    )
    .await?;
    sql(&plain_client, "VACUUM ANALYZE outbox.events").await?;
    drop(plain_client);
    // The templates' last sessions end before they are copied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((adopted, plain))
}

/// The names of MassTransit's removal triggers on `outbox.events`.
async fn removal_triggers(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'outbox.events'::regclass \
             AND tgname LIKE 'outbox_adopt_remove_%'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Marking delivered with the removal disabled and enabled, on copies of the adopted template.
async fn recording_rows(pg: &Postgres, adopted: &str, table: &mut Table) -> Result<()> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut empty_off, mut empty_on) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        for enabled in [false, true] {
            let name = unique("outbox_adoptbench_recording");
            let url = pg.create(&name, Some(adopted), false).await?;
            let result = mark_all(&url, enabled).await;
            pg.drop(&name).await;
            let (per_event, per_empty) = result?;
            progress(&format!(
                "adoption: recording, round {round}, removal {}: {per_event:.1} us per event, {per_empty:.1} us per empty mark",
                if enabled { "on" } else { "off" },
            ));
            if enabled {
                on.push(per_event);
                empty_on.push(per_empty);
            } else {
                off.push(per_event);
                empty_off.push(per_empty);
            }
        }
    }
    let us = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.info(
        "adoption: masstransit recording, us per event marked delivered (100 per statement), removal off / on",
        format!(
            "{:.1} / {:.1} (rounds {} / {})",
            mean(&off),
            mean(&on),
            us(&off),
            us(&on)
        ),
    );
    table.info(
        "adoption: masstransit recording, us per statement marking nothing, removal off / on",
        format!(
            "{:.1} / {:.1} (rounds {} / {})",
            mean(&empty_off),
            mean(&empty_on),
            us(&empty_off),
            us(&empty_on)
        ),
    );
    Ok(())
}

/// Marks every event delivered, 100 per statement as the relay's mark does, then runs 1,000
/// statements that mark nothing; microseconds per event and per empty statement.
async fn mark_all(url: &str, removal: bool) -> Result<(f64, f64)> {
    let client = try_connect(url).await?;
    if !removal {
        for trigger in removal_triggers(&client).await? {
            sql(
                &client,
                &format!("ALTER TABLE outbox.events DISABLE TRIGGER {trigger}"),
            )
            .await?;
        }
    }
    let ids: Vec<i64> = client
        .query("SELECT id FROM outbox.events ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mark = client
        .prepare(
            "UPDATE outbox.events SET delivered_at = now() \
             WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL",
        )
        .await?;
    let started = Instant::now();
    for batch in ids.chunks(100) {
        let batch = batch.to_vec();
        client.execute(&mark, &[&batch]).await?;
    }
    let per_event = started.elapsed().as_secs_f64() * 1e6 / ids.len().max(1) as f64;
    let left: i64 = client
        .query_one(r#"SELECT count(*) FROM "OutboxMessage""#, &[])
        .await?
        .get(0);
    let expected = if removal { 0 } else { ids.len() as i64 };
    if left != expected {
        bail!("{left} OutboxMessage rows left after the marks, expected {expected}");
    }
    // In one server-side loop: the round trips would hide the triggers' fixed cost.
    let started = Instant::now();
    sql(
        &client,
        "DO $$ BEGIN FOR i IN 1 .. 1000 LOOP \
         UPDATE outbox.events SET delivered_at = now() \
         WHERE id = ANY('{}'::bigint[]) AND delivered_at IS NULL; END LOOP; END $$",
    )
    .await?;
    let per_empty = started.elapsed().as_secs_f64() * 1e6 / 1_000.0;
    Ok((per_event, per_empty))
}

/// Drains of the adopted table and of the same events in `outbox.events`, alternated.
async fn drain_rows(
    s: &Settings,
    pg: &Postgres,
    adopted: &str,
    plain: &str,
    events: u64,
    sink: SinkKind,
    table: &mut Table,
) -> Result<()> {
    let (mut adopted_rates, mut plain_rates) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS.min(2) {
        for (template, label) in [(plain, "outbox.events"), (adopted, "adopted")] {
            let name = unique("outbox_adoptbench_drain");
            let url = pg.create(&name, Some(template), false).await?;
            let result = drain(s, &url, sink, events).await;
            let left = if template == adopted && result.is_ok() {
                left_rows(&url).await
            } else {
                Ok(0)
            };
            pg.drop(&name).await;
            let per_sec = result?;
            let left = left?;
            if left != 0 {
                bail!("{left} OutboxMessage rows left after the adopted drain");
            }
            progress(&format!(
                "adoption: {} drain of {events} from {label}, round {round}: {}",
                sink.name(),
                rate(per_sec)
            ));
            if template == adopted {
                adopted_rates.push(per_sec);
            } else {
                plain_rates.push(per_sec);
            }
        }
    }
    let rates = |v: &[f64]| {
        v.iter()
            .map(|r| thousands(*r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.row(
        &format!(
            "adoption: {} drain of {events} MassTransit messages, adopted (outbox.events)",
            sink.name()
        ),
        format!(
            "{} ({})",
            rate(mean(&adopted_rates)),
            rate(mean(&plain_rates))
        ),
        "outbox.events".into(),
        format!("{:.2}", mean(&adopted_rates) / mean(&plain_rates)),
        "",
        None,
    );
    table.info(
        &format!(
            "adoption: {} drain rounds, adopted / outbox.events",
            sink.name()
        ),
        format!("{} / {}", rates(&adopted_rates), rates(&plain_rates)),
    );
    Ok(())
}

async fn left_rows(url: &str) -> Result<i64> {
    let client = try_connect(url).await?;
    Ok(client
        .query_one(r#"SELECT count(*) FROM "OutboxMessage""#, &[])
        .await?
        .get(0))
}

/// One drain of the database at `url` into `sink`: events per second, from the relay's start to
/// the last message at the consumer (RabbitMQ's queue; the relay's stdout lines).
async fn drain(s: &Settings, url: &str, sink: SinkKind, events: u64) -> Result<f64> {
    let target = Target::open(s, sink, true).await?;
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    let started = Instant::now();
    let result = async {
        let (mut relay, received) = target.spawn_relay(url, &env)?;
        let received = received.context("no consumer for this sink")?;
        received
            .try_wait_for(events, Duration::from_secs(120 + events / 500))
            .await?;
        let took = started.elapsed();
        // The last marks land after the last message: wait for them before stopping.
        relay
            .wait_delivered(events, Duration::from_secs(60))
            .await?;
        relay.stop().await?;
        anyhow::Ok(events as f64 / took.as_secs_f64())
    }
    .await;
    target.close().await;
    result
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Rates in run order, and their spread (max - min) against the mean.
fn rounds(values: &[f64]) -> String {
    let (min, max) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let list: Vec<String> = values.iter().map(|v| thousands(*v)).collect();
    format!(
        "{} ({:.0}%)",
        list.join(", "),
        (max - min) / mean(values) * 100.0
    )
}
