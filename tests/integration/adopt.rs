//! Adopting the outbox tables applications already have (`OUTBOX_ADOPT`): the tables are created
//! as the frameworks create them (tests/integration/adopt/*.sql), rows are written as the
//! frameworks write them, and the relay runs without `OUTBOX_ADOPT`: its core is the same.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use lapin::ExchangeKind;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const DEBEZIUM_TABLE: &str = include_str!("adopt/debezium.sql");
const MASSTRANSIT_TABLES: &str = include_str!("adopt/masstransit.sql");
const ENVELOPE: &str = "application/vnd.masstransit+json";

/// `outbox-relay <args>` on `url` with `env` (e.g. `OUTBOX_ADOPT`).
fn outbox(args: &[&str], url: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(relay_bin());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("OUTBOX_DATABASE_URL", url);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run outbox-relay")
}

/// `outbox-relay migrate` on `url` with `env`.
fn migrate_with(url: &str, env: &[(&str, &str)]) -> Output {
    outbox(&["migrate"], url, env)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A database holding the framework's tables (`tables`), migrated with `OUTBOX_ADOPT=framework`.
async fn adopted(tables: &str, framework: &str) -> TestDb {
    let db = TestDb::create_empty().await;
    db.client
        .batch_execute(tables)
        .await
        .expect("the framework's tables");
    let output = migrate_with(&db.url, &[("OUTBOX_ADOPT", framework)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains(&format!(
            "adoption ({framework}): capture trigger installed"
        )),
        "{}",
        text(&output.stdout)
    );
    db
}

/// One Debezium outbox row, inserted as Debezium's Quarkus extension does; its id.
async fn insert_outboxevent(
    client: &impl GenericClient,
    aggregate: &str,
    key: &str,
    seq: u32,
) -> Uuid {
    let id = Uuid::new_v4();
    let payload = format!(r#"{{"key":"{key}","seq":{seq},"note":"naïve ✓"}}"#);
    client
        .execute(
            "INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload) \
             VALUES ($1, $2, $3, 'OrderEvent', now(), $4::text::jsonb)",
            &[&id, &aggregate, &key, &payload],
        )
        .await
        .expect("insert an outboxevent row");
    id
}

/// The `seq` of a Debezium test payload.
fn seq_of(payload: &[u8]) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(payload).expect("the payload is JSON");
    json["seq"].as_u64().expect("seq")
}

#[tokio::test]
async fn debezium_rows_arrive_mapped_in_key_order_across_late_commits_and_deletes() {
    let db = adopted(DEBEZIUM_TABLE, "debezium").await;
    let rabbit = Rabbit::setup("outbox.event.#").await;
    // A transaction that commits after later ones: its row must not be skipped.
    let mut late_client = connect(&db.url).await;
    let late = late_client.transaction().await.expect("begin");
    let mut ids: BTreeMap<Uuid, (String, u32)> = BTreeMap::new();
    ids.insert(
        insert_outboxevent(&late, "Order", "A", 0).await,
        ("A".into(), 0),
    );

    let mut relay = Relay::start(&db.url, &rabbitmq_settings(&rabbit.exchange, &amqp_url()));
    for seq in 0..5 {
        let id = insert_outboxevent(&db.client, "Order", "B", seq).await;
        ids.insert(id, ("B".into(), seq));
    }
    // Debezium Quarkus's default: the row is deleted again in its own transaction.
    let mut writer = connect(&db.url).await;
    let tx = writer.transaction().await.expect("begin");
    for seq in 0..3 {
        let id = insert_outboxevent(&tx, "Customer", "C", seq).await;
        ids.insert(id, ("C".into(), seq));
        tx.execute("DELETE FROM public.outboxevent WHERE id = $1", &[&id])
            .await
            .expect("delete the row again");
    }
    tx.commit().await.expect("commit");
    rabbit.wait_for(8, WAIT).await;
    late.commit().await.expect("the late commit");
    let id = insert_outboxevent(&db.client, "Order", "A", 1).await;
    ids.insert(id, ("A".into(), 1));

    let received = rabbit.wait_for(10, WAIT).await;
    assert_eq!(received.len(), 10, "each row exactly once");
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &received {
        let id: Uuid = message
            .message_id
            .parse()
            .expect("the message id is the row's id");
        let (key, seq) = ids.get(&id).expect("a row's id");
        let aggregate = if key == "C" { "Customer" } else { "Order" };
        assert_eq!(message.destination, format!("outbox.event.{aggregate}"));
        assert_eq!(message.key.as_deref(), Some(key.as_str()));
        assert_eq!(message.header("id"), Some(id.to_string().as_str()));
        assert_eq!(message.header("type"), Some("OrderEvent"));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        assert_eq!(payload["note"], "naïve ✓");
        assert_eq!(u64::from(*seq), seq_of(&message.payload));
        order
            .entry(key.clone())
            .or_default()
            .push(seq_of(&message.payload));
    }
    assert_eq!(order["A"], [0, 1]);
    assert_eq!(order["B"], [0, 1, 2, 3, 4]);
    assert_eq!(
        order["C"],
        [0, 1, 2],
        "rows deleted in their transaction too"
    );
    let left: i64 = db
        .client
        .query_one("SELECT count(*) FROM public.outboxevent", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 7, "the application's own rows are its own");
    eventually("all marked delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await == 10
    })
    .await;

    let status = outbox_command(&["status", "--json"], &db.url);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["pending"], 0, "{json}");
    assert_eq!(json["adopted"][0]["table"], "public.outboxevent", "{json}");
    assert_eq!(json["adopted"][0]["framework"], "debezium", "{json}");
    assert_eq!(json["adopted"][0]["enabled"], true, "{json}");
    db.client
        .batch_execute("ALTER TABLE public.outboxevent DISABLE TRIGGER outbox_adopt_capture")
        .await
        .expect("a DBA disables the capture");
    let check = outbox(&["check"], &db.url, &[("OUTBOX_SINK", "stdout")]);
    assert!(
        text(&check.stdout).contains(
            "adopted table: public.outboxevent (debezium): WARNING: capture trigger disabled"
        ),
        "{}",
        text(&check.stdout)
    );
    relay.stop().await.expect("the relay stops");
}

/// A bus outbox message, inserted as EF Core saves MassTransit's `OutboxMessage`; its
/// SequenceNumber.
async fn insert_outbox_message(
    client: &impl GenericClient,
    outbox_id: Uuid,
    message_id: Uuid,
    destination: Option<&str>,
    body: &str,
) -> i64 {
    client
        .query_one(
            r#"INSERT INTO "OutboxMessage" ("Body", "ContentType", "ConversationId", "CorrelationId",
                   "DestinationAddress", "EnqueueTime", "ExpirationTime", "FaultAddress", "Headers",
                   "InboxConsumerId", "InboxMessageId", "InitiatorId", "MessageId", "MessageType",
                   "OutboxId", "Properties", "RequestId", "ResponseAddress", "SentTime", "SourceAddress")
               VALUES ($1, $2, $3, NULL, $4, NULL, NULL, NULL, $5, NULL, NULL, NULL, $6,
                   'urn:message:Contracts:OrderCreated', $7, NULL, NULL, NULL, now(),
                   'rabbitmq://localhost/shop_web_bus_abc')
               RETURNING "SequenceNumber""#,
            &[
                &body,
                &ENVELOPE,
                &Uuid::new_v4(),
                &destination,
                &r#"{"MT-Activity-Id":"00-abc-def-01","Retry":3}"#,
                &message_id,
                &outbox_id,
            ],
        )
        .await
        .expect("insert an OutboxMessage")
        .get(0)
}

/// MassTransit's JSON envelope of message `message_id` to `destination`.
fn envelope(message_id: Uuid, destination: &str, n: usize) -> String {
    format!(
        r#"{{"messageId":"{message_id}","destinationAddress":"{destination}","messageType":["urn:message:Contracts:OrderCreated"],"message":{{"orderId":{n},"name":"naïve ✓"}},"sentTime":"2026-12-06T10:00:00Z","headers":{{}}}}"#
    )
}

/// One bus outbox: its OutboxState row, then its messages, as the bus outbox's SaveChanges writes
/// them (in `client`'s transaction). The message ids, in SequenceNumber order.
async fn write_outbox(
    client: &impl GenericClient,
    destination: &str,
    messages: usize,
) -> (Uuid, Vec<Uuid>) {
    let outbox_id = Uuid::new_v4();
    client
        .execute(
            r#"INSERT INTO "OutboxState" ("OutboxId", "Created", "Delivered", "LastSequenceNumber", "LockId", "RowVersion")
               VALUES ($1, now(), NULL, NULL, '00000000-0000-0000-0000-000000000000', NULL)"#,
            &[&outbox_id],
        )
        .await
        .expect("insert the OutboxState");
    let mut sent = Vec::new();
    let mut last = 0;
    for n in 0..messages {
        let message_id = Uuid::new_v4();
        let body = envelope(message_id, destination, n);
        let seq =
            insert_outbox_message(client, outbox_id, message_id, Some(destination), &body).await;
        assert!(seq > last, "SequenceNumber grows");
        last = seq;
        sent.push(message_id);
    }
    (outbox_id, sent)
}

#[tokio::test]
async fn masstransit_messages_arrive_unchanged_in_sequence_order_and_the_rows_go() {
    let db = adopted(MASSTRANSIT_TABLES, "masstransit").await;
    let exchange = unique("Contracts:OrderCreated");
    let rabbit = Rabbit::declare(&amqp_url(), &exchange, ExchangeKind::Fanout, "").await;
    let destination = format!("rabbitmq://localhost/{exchange}?type=fanout");
    // Two application transactions open at once; the later-begun one commits first.
    let mut first_client = connect(&db.url).await;
    let mut second_client = connect(&db.url).await;
    let first = first_client.transaction().await.expect("begin");
    let second = second_client.transaction().await.expect("begin");
    let (first_outbox, first_ids) = write_outbox(&first, &destination, 3).await;
    let (second_outbox, second_ids) = write_outbox(&second, &destination, 4).await;
    second.commit().await.expect("commit");
    first.commit().await.expect("commit");
    // A consumer outbox message (MassTransit delivers it itself when its consumer completes).
    db.client
        .batch_execute(&format!(
            r#"INSERT INTO "InboxState" ("MessageId", "ConsumerId", "LockId", "Received", "ReceiveCount")
               VALUES ('{m}', '{c}', '{c}', now(), 1);
               INSERT INTO "OutboxMessage" ("Body", "ContentType", "MessageId", "MessageType", "SentTime",
                   "InboxMessageId", "InboxConsumerId", "DestinationAddress")
               VALUES ('{{}}', '{ENVELOPE}', '{m}', 'urn:message:X', now(), '{m}', '{c}', '{destination}');"#,
            m = Uuid::new_v4(),
            c = Uuid::new_v4(),
        ))
        .await
        .expect("a consumer outbox message");
    // A message without a destination cannot be published: a dead letter, listed as any other.
    let lost = write_outbox_without_destination(&db.client).await;

    let count = |sql: &'static str| {
        let client = &db.client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count(r#"SELECT count(*) FROM "OutboxMessage" WHERE "OutboxId" IS NOT NULL"#).await,
        0,
        "bus outbox messages are moved into outbox.events at once"
    );
    assert_eq!(count(r#"SELECT count(*) FROM "OutboxState""#).await, 0);
    assert_eq!(
        count(r#"SELECT count(*) FROM "OutboxMessage" WHERE "InboxMessageId" IS NOT NULL"#).await,
        1,
        "the consumer outbox is MassTransit's"
    );

    let mut settings = rabbitmq_settings("{topic}", &amqp_url());
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let mut relay = Relay::start(&db.url, &settings);
    let received = rabbit.wait_for(7, WAIT).await;
    assert_eq!(received.len(), 7, "each bus outbox message exactly once");
    let mut by_outbox: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for message in &received {
        assert_eq!(message.exchange, exchange, "the destination's exchange");
        assert_eq!(message.content_type.as_deref(), Some(ENVELOPE));
        let id: Uuid = message.message_id.parse().expect("MessageId");
        let n = first_ids
            .iter()
            .chain(&second_ids)
            .position(|m| *m == id)
            .expect("a sent message");
        let n = if n < first_ids.len() {
            n
        } else {
            n - first_ids.len()
        };
        assert_eq!(
            message.payload,
            envelope(id, &destination, n).as_bytes(),
            "Body byte for byte"
        );
        let json: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        assert_eq!(
            json["messageId"],
            id.to_string(),
            "envelope and property agree"
        );
        assert_eq!(message.header("MT-Activity-Id"), Some("00-abc-def-01"));
        by_outbox
            .entry(message.key.clone().expect("the key is the OutboxId"))
            .or_default()
            .push(id);
    }
    assert_eq!(
        by_outbox[&first_outbox.to_string()],
        first_ids,
        "SequenceNumber order"
    );
    assert_eq!(
        by_outbox[&second_outbox.to_string()],
        second_ids,
        "SequenceNumber order"
    );

    eventually(
        "the message without destination dead-lettered",
        WAIT,
        || async { db.count("dead_lettered_at IS NOT NULL").await == 1 },
    )
    .await;
    let list = outbox_command(&["dead-letters", "list", "--json"], &db.url);
    assert!(
        text(&list.stdout).contains(&lost.to_string()),
        "{}",
        text(&list.stdout)
    );
    eventually("all others delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await == 7
    })
    .await;
    assert_eq!(count(r#"SELECT count(*) FROM "OutboxState""#).await, 0);
    relay.stop().await.expect("the relay stops");
}

/// A bus outbox whose one message has no DestinationAddress, committed; its OutboxId (the key).
async fn write_outbox_without_destination(client: &Client) -> Uuid {
    let outbox_id = Uuid::new_v4();
    let message_id = Uuid::new_v4();
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute(
            r#"INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId") VALUES ($1, now(), $1)"#,
            &[&outbox_id],
        )
        .await
        .expect("state");
    insert_outbox_message(client, outbox_id, message_id, None, "{}").await;
    client.batch_execute("COMMIT").await.expect("commit");
    outbox_id
}

#[tokio::test]
async fn migrate_installs_each_capture_once_from_many_processes() {
    for (tables, framework, table) in [
        (DEBEZIUM_TABLE, "debezium", "public.outboxevent"),
        (MASSTRANSIT_TABLES, "masstransit", "\"OutboxMessage\""),
    ] {
        let db = TestDb::create_empty().await;
        db.client.batch_execute(tables).await.expect("tables");
        let spawn = || {
            Command::new(relay_bin())
                .arg("migrate")
                .env("OUTBOX_DATABASE_URL", &db.url)
                .env("OUTBOX_ADOPT", framework)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn migrate")
        };
        let runs = [spawn(), spawn(), spawn()];
        for run in runs {
            let output = run.wait_with_output().expect("migrate exits");
            assert!(
                output.status.success(),
                "{framework}: {}",
                text(&output.stderr)
            );
        }
        let again = migrate_with(&db.url, &[("OUTBOX_ADOPT", framework)]);
        assert!(
            text(&again.stdout).contains("up to date"),
            "{framework}: {}",
            text(&again.stdout)
        );
        let triggers: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'outbox_adopt_%' AND tgrelid = $1::text::regclass",
                &[&table],
            )
            .await
            .expect("count triggers")
            .get(0);
        assert_eq!(triggers, 1, "{framework}: one capture trigger");
    }
}

#[tokio::test]
async fn migrate_refuses_what_it_cannot_adopt_and_names_why() {
    let db = TestDb::create_empty().await;
    let missing = migrate_with(&db.url, &[("OUTBOX_ADOPT", "debezium")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("OUTBOX_ADOPT_TABLE public.outboxevent: no such table"),
        "{}",
        text(&missing.stderr)
    );
    db.client
        .batch_execute(DEBEZIUM_TABLE)
        .await
        .expect("table");
    let column = migrate_with(
        &db.url,
        &[
            ("OUTBOX_ADOPT", "debezium"),
            ("OUTBOX_ADOPT_TOPIC_TEMPLATE", "events.{tenant}"),
        ],
    );
    assert_eq!(column.status.code(), Some(1));
    assert!(
        text(&column.stderr).contains("column \"tenant\""),
        "{}",
        text(&column.stderr)
    );
    let not_masstransit = migrate_with(
        &db.url,
        &[
            ("OUTBOX_ADOPT", "masstransit"),
            ("OUTBOX_ADOPT_TABLE", "public.outboxevent"),
        ],
    );
    assert!(
        text(&not_masstransit.stderr).contains("is not MassTransit's OutboxMessage table"),
        "{}",
        text(&not_masstransit.stderr)
    );
    let unknown = migrate_with(&db.url, &[("OUTBOX_ADOPT", "nservicebus")]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("OUTBOX_ADOPT"),
        "{}",
        text(&unknown.stderr)
    );
}

/// A login role of the test's own (roles are cluster-wide, so the name is unique).
async fn login(grants: &str) -> (String, String) {
    let name = unique("adopt_login");
    let password = unique("pw");
    connect(&admin_url())
        .await
        .batch_execute(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}'; {}",
            grants.replace("{role}", &name)
        ))
        .await
        .expect("create login role");
    (name, password)
}

/// `database_url` with these credentials.
fn url_as(database_url: &str, (name, password): &(String, String)) -> String {
    let (scheme, rest) = database_url.split_once("://").expect("postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{name}:{password}@{host}")
}

#[tokio::test]
async fn adoption_works_under_the_least_privilege_roles() {
    let db = adopted(DEBEZIUM_TABLE, "debezium").await;
    // The application's role: its own table, nothing of the outbox schema.
    let app = login("").await;
    db.client
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, DELETE ON public.outboxevent TO {}",
            app.0
        ))
        .await
        .expect("grant the application its table");
    let relay_role = login("GRANT outbox_relay TO {role};").await;

    let mut as_app = connect(&url_as(&db.url, &app)).await;
    let tx = as_app.transaction().await.expect("begin");
    let id = insert_outboxevent(&tx, "Order", "7", 0).await;
    tx.execute("DELETE FROM public.outboxevent WHERE id = $1", &[&id])
        .await
        .expect("the application deletes its row");
    tx.commit().await.expect("commit");
    let denied = as_app
        .execute("SELECT count(*) FROM outbox.events", &[])
        .await;
    assert!(denied.is_err(), "the application cannot read the outbox");

    let consumer = StdoutConsumer::default();
    let mut relay = Relay::start(&url_as(&db.url, &relay_role), &stdout_sink_settings());
    consumer.attach(&relay);
    let received = consumer.wait_for(1, WAIT).await;
    assert_eq!(received[0].destination, "outbox.event.Order");
    assert_eq!(received[0].key.as_deref(), Some("7"));
    assert_eq!(received[0].message_id, id.to_string());
    assert_eq!(received[0].header("type"), Some("OrderEvent"));
    assert_eq!(seq_of(&received[0].payload), 0);
    relay.stop().await.expect("the relay stops");
    drop(as_app);

    let admin = connect(&admin_url()).await;
    db.client
        .batch_execute(&format!("DROP OWNED BY {}", app.0))
        .await
        .expect("drop the grants");
    for (name, _) in [&app, &relay_role] {
        let _ = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[name],
            )
            .await;
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
            .await
            .expect("drop the login role");
    }
}

#[tokio::test]
async fn masstransit_outboxes_survive_a_sigkill_and_a_held_snapshot_in_order() {
    let db = adopted(MASSTRANSIT_TABLES, "masstransit").await;
    let exchange = unique("Contracts:OrderShipped");
    let rabbit = Rabbit::declare(&amqp_url(), &exchange, ExchangeKind::Fanout, "").await;
    // A long transaction holding its snapshot the whole time.
    let mut holder = connect(&db.url).await;
    let held = holder
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .expect("begin");
    held.query_one("SELECT count(*) FROM outbox.events", &[])
        .await
        .expect("take the snapshot");
    // Four bus outboxes of 100 messages each; body `k{outbox}:{n}`, as the harness checks read.
    for outbox in 0..4 {
        db.client
            .batch_execute(&format!(
                r#"BEGIN;
                INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
                    VALUES ('{id}', now(), '00000000-0000-0000-0000-000000000000');
                INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "MessageId",
                    "MessageType", "OutboxId", "SentTime")
                SELECT 'k{outbox}:' || n, 'text/plain', 'rabbitmq://localhost/{exchange}', gen_random_uuid(),
                    'urn:message:Contracts:OrderShipped', '{id}', now()
                FROM generate_series(0, 99) AS n;
                COMMIT;"#,
                id = Uuid::new_v4(),
            ))
            .await
            .expect("write a bus outbox");
    }
    let mut settings = rabbitmq_settings("{topic}", &amqp_url());
    settings.push(("OUTBOX_BATCH_SIZE", "10".into()));
    let mut relay = Relay::start(&db.url, &settings);
    eventually("some delivered", WAIT, || async { rabbit.count() >= 40 }).await;
    relay.kill();
    let at_kill = db.undelivered().await;
    eprintln!("killed with {at_kill} of 400 events undelivered");
    assert!(at_kill > 0, "killed mid-stream");
    let mut relay = Relay::start(&db.url, &settings);
    eventually("every message consumed", WAIT, || async {
        distinct_payloads(&rabbit.received()) >= 400
    })
    .await;
    assert_keys_ordered_and_complete(&rabbit.received(), 4, 100);
    eventually("every event marked delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    held.rollback().await.expect("end the long transaction");
    relay.stop().await.expect("the relay stops");
}
