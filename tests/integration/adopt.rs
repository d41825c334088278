//! Adopting the outbox tables applications already have (`OUTBOX_ADOPT`): the tables are created
//! as the frameworks create them (tests/harness/adopt/*.sql), rows are written as the
//! frameworks write them, and the relay runs without `OUTBOX_ADOPT`: its core is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use lapin::ExchangeKind;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

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
            INSERT_OUTBOX_MESSAGE,
            &[
                &body,
                &MASSTRANSIT_ENVELOPE,
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
        .execute(INSERT_OUTBOX_STATE, &[&outbox_id])
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
               VALUES ('{{}}', '{MASSTRANSIT_ENVELOPE}', '{m}', 'urn:message:X', now(), '{m}', '{c}', '{destination}');"#,
            m = Uuid::new_v4(),
            c = Uuid::new_v4(),
        ))
        .await
        .expect("a consumer outbox message");
    // A message without a destination cannot be published: a dead letter, listed as any other.
    let lost = write_outbox_without_destination(&db.client).await;
    // A message to an exchange that does not exist yet: dead-lettered, then retried once it does.
    let late_exchange = unique("Contracts:OrderLate");
    let late_destination = format!("rabbitmq://localhost/{late_exchange}");
    let (late_outbox, late_ids) = committed_outbox(&db.client, &late_destination, 1).await;

    assert_eq!(
        count(&db.client, BUS_MESSAGES).await,
        9,
        "the rows stay until the broker acknowledged their message"
    );
    assert_eq!(count(&db.client, STATES).await, 4);
    assert_eq!(
        count(&db.client, CONSUMER_MESSAGES).await,
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
        assert_eq!(message.content_type.as_deref(), Some(MASSTRANSIT_ENVELOPE));
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

    eventually("both dead letters", WAIT, || async {
        db.count("dead_lettered_at IS NOT NULL").await == 2
    })
    .await;
    eventually("all others delivered", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await == 7
    })
    .await;
    // The delivered messages' rows are gone, their outboxes' states too; the dead letters keep theirs.
    eventually("the delivered rows removed", WAIT, || async {
        count(&db.client, BUS_MESSAGES).await == 2 && count(&db.client, STATES).await == 2
    })
    .await;
    let kept = outbox_ids_left(&db.client).await;
    assert_eq!(
        kept,
        BTreeSet::from([lost, late_outbox]),
        "the dead letters' outboxes"
    );
    assert_eq!(count(&db.client, CONSUMER_MESSAGES).await, 1);

    let status = outbox_command(&["status", "--json"], &db.url);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["pending"], 0, "{json}");
    assert_eq!(json["dead_letters"], 2, "{json}");
    assert_eq!(json["adopted"][0]["framework"], "masstransit", "{json}");
    assert!(
        json.get("conflicts").is_none(),
        "the relay's own removal is no evidence of a second deliverer: {json}"
    );
    let list = outbox_command(&["dead-letters", "list", "--json"], &db.url);
    for outbox_id in [lost, late_outbox] {
        assert!(
            text(&list.stdout).contains(&outbox_id.to_string()),
            "{}",
            text(&list.stdout)
        );
    }

    // Retried once its exchange exists, the late message is delivered and its rows go.
    let late = Rabbit::declare(&amqp_url(), &late_exchange, ExchangeKind::Fanout, "").await;
    let retried = outbox_command(&["dead-letters", "retry", "--all"], &db.url);
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    let arrived = late.wait_for(1, WAIT).await;
    assert_eq!(arrived[0].message_id, late_ids[0].to_string());
    eventually("the retried message's rows removed", WAIT, || async {
        outbox_ids_left(&db.client).await == BTreeSet::from([lost])
    })
    .await;
    // Discarded for good, the message without a destination goes too.
    eventually(
        "the message without destination dead-lettered again",
        WAIT,
        || async { db.count("dead_lettered_at IS NOT NULL").await == 1 },
    )
    .await;
    let discarded = outbox_command(&["dead-letters", "discard", "--all"], &db.url);
    assert!(discarded.status.success(), "{}", text(&discarded.stderr));
    assert_eq!(count(&db.client, BUS_MESSAGES).await, 0);
    assert_eq!(count(&db.client, STATES).await, 0);
    assert_eq!(count(&db.client, CONSUMER_MESSAGES).await, 1);
    relay.stop().await.expect("the relay stops");
}

const BUS_MESSAGES: &str = r#"SELECT count(*) FROM "OutboxMessage" WHERE "OutboxId" IS NOT NULL"#;
const CONSUMER_MESSAGES: &str =
    r#"SELECT count(*) FROM "OutboxMessage" WHERE "InboxMessageId" IS NOT NULL"#;
const STATES: &str = r#"SELECT count(*) FROM "OutboxState""#;

/// The count `sql` selects.
async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("count")
        .get::<_, i64>(0)
}

/// The OutboxIds that still have an OutboxState row.
async fn outbox_ids_left(client: &Client) -> BTreeSet<Uuid> {
    client
        .query(r#"SELECT "OutboxId" FROM "OutboxState""#, &[])
        .await
        .expect("states")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// MassTransit's delivery service, as its Entity Framework code runs on PostgreSQL: lock the oldest
/// outbox, take it (LockId), read its messages after LastSequenceNumber, delete each one sent by its
/// key (EF's Remove), then record LastSequenceNumber (more to deliver) or delete the state (done).
/// `sent` of the outbox's messages are sent; true when the outbox is done.
async fn masstransit_delivers(client: &mut Client, outbox_id: Uuid, sent: usize) -> bool {
    let tx = client.transaction().await.expect("begin");
    tx.query(
        r#"SELECT * FROM "public"."OutboxState" WHERE "OutboxId" = $1 FOR UPDATE SKIP LOCKED"#,
        &[&outbox_id],
    )
    .await
    .expect("lock the outbox");
    tx.execute(
        r#"UPDATE "OutboxState" SET "LockId" = $1 WHERE "OutboxId" = $2"#,
        &[&Uuid::new_v4(), &outbox_id],
    )
    .await
    .expect("take the outbox");
    let messages: Vec<i64> = tx
        .query(
            r#"SELECT "SequenceNumber" FROM "OutboxMessage" WHERE "OutboxId" = $1 AND "SequenceNumber" > 0
               ORDER BY "SequenceNumber" LIMIT 100"#,
            &[&outbox_id],
        )
        .await
        .expect("read the messages")
        .iter()
        .map(|row| row.get(0))
        .collect();
    for seq in &messages[..sent] {
        tx.execute(
            r#"DELETE FROM "OutboxMessage" WHERE "SequenceNumber" = $1"#,
            &[seq],
        )
        .await
        .expect("remove a sent message");
    }
    let done = sent == messages.len();
    if done {
        tx.execute(
            r#"DELETE FROM "OutboxState" WHERE "OutboxId" = $1"#,
            &[&outbox_id],
        )
        .await
        .expect("remove the outbox");
    } else {
        tx.execute(
            r#"UPDATE "OutboxState" SET "LastSequenceNumber" = $1 WHERE "OutboxId" = $2"#,
            &[&messages[sent - 1], &outbox_id],
        )
        .await
        .expect("record the last sent");
    }
    tx.commit().await.expect("commit");
    done
}

#[tokio::test]
async fn masstransit_refuses_to_relay_beside_its_own_delivery_service() {
    let db = adopted(MASSTRANSIT_TABLES, "masstransit").await;
    // The application's role, as MassTransit's delivery service connects in each instance.
    let app = login("").await;
    db.client
        .batch_execute(&format!(
            r#"GRANT SELECT, INSERT, UPDATE, DELETE ON "OutboxMessage", "OutboxState" TO {}"#,
            app.0
        ))
        .await
        .expect("grant the application its tables");
    let app_url = format!("{}?application_name=Shop.Api", url_as(&db.url, &app));
    let mut service = connect(&app_url).await;
    let destination = format!("rabbitmq://localhost/{}", unique("Contracts:OrderPaid"));
    let (partial, _) = committed_outbox(&db.client, &destination, 3).await;
    let (whole, _) = committed_outbox(&db.client, &destination, 2).await;
    assert!(!masstransit_delivers(&mut service, partial, 2).await);
    // A later MassTransit deletes a range of an outbox's messages in one statement.
    service
        .execute(
            r#"DELETE FROM "OutboxMessage" WHERE "OutboxId" = $1 AND "SequenceNumber" <= $2"#,
            &[&whole, &i64::MAX],
        )
        .await
        .expect("remove the sent range");
    service
        .execute(
            r#"DELETE FROM "OutboxState" WHERE "OutboxId" = $1"#,
            &[&whole],
        )
        .await
        .expect("remove the outbox");

    let consumer = StdoutConsumer::default();
    let mut relay = Relay::start(&db.url, &stdout_sink_settings());
    let status = relay.exited(WAIT).await;
    let stderr = relay.stderr();
    assert_eq!(status.code(), Some(2), "a configuration error: {stderr}");
    for part in [
        "MassTransit's own delivery service is evidently still running",
        &format!(
            "4 bus outbox message(s) of public.\"OutboxMessage\" deleted by someone other than the relay: role {}, application_name \"Shop.Api\", from 127.0.0.1",
            app.0
        ),
        "1 row(s) of public.\"OutboxState\" with \"Delivered\" or \"LastSequenceNumber\" set",
        "UseBusOutbox(x => x.DisableDeliveryService())",
        "DELETE FROM outbox.adoption_conflicts",
    ] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }
    assert_eq!(
        db.count("delivered_at IS NOT NULL").await,
        0,
        "nothing relayed"
    );
    // `check`, run before switching on, says the same.
    let check = outbox(&["check"], &db.url, &[("OUTBOX_SINK", "stdout")]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    assert!(
        text(&check.stderr).contains("UseBusOutbox(x => x.DisableDeliveryService())"),
        "{}",
        text(&check.stderr)
    );
    let status = outbox_command(&["status", "--json"], &db.url);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["conflicts"][0]["evidence"], "deleted", "{json}");
    assert_eq!(json["conflicts"][0]["rows"], 4, "{json}");
    assert_eq!(json["conflicts"][0]["usename"], app.0.as_str(), "{json}");
    assert_eq!(json["conflicts"][1]["evidence"], "marked", "{json}");

    // Once the delivery service is off, the SQL the message gives clears the evidence.
    let clear = stderr
        .split("outbox-relay migrate`: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the SQL that clears the evidence");
    db.client
        .batch_execute(clear)
        .await
        .expect("clear the evidence");
    let mut relay = Relay::start(&db.url, &stdout_sink_settings());
    consumer.attach(&relay);
    // The message MassTransit did not send: the relay sends it, and its rows go.
    let received = consumer.wait_for(1, WAIT).await;
    assert_eq!(
        received[0].key.as_deref(),
        Some(partial.to_string().as_str())
    );
    eventually("the partial outbox removed", WAIT, || async {
        count(&db.client, STATES).await == 0
    })
    .await;

    // The delivery service switched on again later: a message the relay holds for an hour
    // (EnqueueTime), sent and deleted by MassTransit. The running relay stops.
    let later = Uuid::new_v4();
    db.client
        .batch_execute(&format!(
            r#"BEGIN;
            INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId") VALUES ('{later}', now(), '{later}');
            INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "EnqueueTime", "MessageId",
                "MessageType", "OutboxId", "SentTime")
            VALUES ('{{}}', '{MASSTRANSIT_ENVELOPE}', '{destination}', now() + interval '1 hour', gen_random_uuid(),
                'urn:message:Contracts:OrderPaid', '{later}', now());
            COMMIT;"#
        ))
        .await
        .expect("a delayed message");
    assert!(masstransit_delivers(&mut service, later, 1).await);
    let status = relay.exited(WAIT).await;
    let stderr = relay.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("1 bus outbox message(s) of public.\"OutboxMessage\" deleted by someone other than the relay"),
        "{stderr}"
    );
    drop(service);
    drop_login(&db, &app).await;
}

/// Drops a role of [`login`] with its grants and sessions.
async fn drop_login(db: &TestDb, role: &(String, String)) {
    let admin = connect(&admin_url()).await;
    db.client
        .batch_execute(&format!("DROP OWNED BY {}", role.0))
        .await
        .expect("drop the grants");
    let _ = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role.0],
        )
        .await;
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {}", role.0))
        .await
        .expect("drop the login role");
}

#[tokio::test]
async fn masstransit_delayed_messages_wait_for_their_enqueue_time_and_hold_their_outbox() {
    let db = adopted(MASSTRANSIT_TABLES, "masstransit").await;
    let consumer = StdoutConsumer::default();
    let mut relay = Relay::start(&db.url, &stdout_sink_settings());
    consumer.attach(&relay);
    let (delayed, other) = (Uuid::new_v4(), Uuid::new_v4());
    let written = std::time::Instant::now();
    // One outbox: a message delayed by 3 s (EnqueueTime), then one that is not; another outbox.
    db.client
        .batch_execute(&format!(
            r#"BEGIN;
            INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
                VALUES ('{delayed}', now(), '{delayed}'), ('{other}', now(), '{other}');
            INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "EnqueueTime", "MessageId",
                "MessageType", "OutboxId", "SentTime")
            VALUES ('delayed', 'text/plain', 'queue:orders', now() + interval '3 seconds', gen_random_uuid(), 'urn:message:X', '{delayed}', now()),
                   ('after the delayed one', 'text/plain', 'queue:orders', NULL, gen_random_uuid(), 'urn:message:X', '{delayed}', now()),
                   ('other outbox', 'text/plain', 'queue:orders', now() - interval '1 hour', gen_random_uuid(), 'urn:message:X', '{other}', now());
            COMMIT;"#
        ))
        .await
        .expect("write the outboxes");
    let first = consumer.wait_for(1, WAIT).await;
    assert_eq!(
        first[0].payload, b"other outbox",
        "an EnqueueTime past is no delay"
    );
    assert_eq!(first[0].destination, "orders");
    let all = consumer.wait_for(3, WAIT).await;
    let elapsed = written.elapsed();
    let bodies: Vec<&[u8]> = all.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(
        bodies,
        [&b"other outbox"[..], b"delayed", b"after the delayed one"],
        "the delayed message holds its outbox's later one"
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "published after its EnqueueTime, not {elapsed:?} after the commit"
    );
    eventually("the delivered rows removed", WAIT, || async {
        count(&db.client, STATES).await == 0
    })
    .await;
    relay.stop().await.expect("the relay stops");
}

/// [`write_outbox`] in a transaction of its own, committed, as one SaveChanges.
async fn committed_outbox(
    client: &Client,
    destination: &str,
    messages: usize,
) -> (Uuid, Vec<Uuid>) {
    client.batch_execute("BEGIN").await.expect("begin");
    let written = write_outbox(client, destination, messages).await;
    client.batch_execute("COMMIT").await.expect("commit");
    written
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
        // Debezium: the capture; MassTransit: the capture and the guard.
        let expected = if framework == "masstransit" { 2 } else { 1 };
        assert_eq!(triggers, expected, "{framework}: each trigger once");
        let removal: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'outbox_adopt_remove_%' AND tgrelid = 'outbox.events'::regclass",
                &[],
            )
            .await
            .expect("count triggers")
            .get(0);
        assert_eq!(
            removal,
            2 * (expected - 1),
            "{framework}: the removal after delivery (update, delete), once"
        );
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
    // MassTransit's tables beside Debezium's, adopted too: the relay's role reads the guard's
    // evidence at start and while it runs, and the removal runs with migrate's rights.
    db.client
        .batch_execute(MASSTRANSIT_TABLES)
        .await
        .expect("MassTransit's tables");
    let output = migrate_with(&db.url, &[("OUTBOX_ADOPT", "masstransit")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // The application's role: its own tables, nothing of the outbox schema.
    let app = login("").await;
    db.client
        .batch_execute(&format!(
            r#"GRANT SELECT, INSERT, DELETE ON public.outboxevent TO {0};
               GRANT SELECT, INSERT ON "OutboxMessage", "OutboxState" TO {0};"#,
            app.0
        ))
        .await
        .expect("grant the application its tables");
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
    let tx = as_app.transaction().await.expect("begin");
    let (outbox_id, message_ids) = write_outbox(&tx, "queue:orders", 1).await;
    tx.commit().await.expect("commit");

    let consumer = StdoutConsumer::default();
    let mut relay = Relay::start(&url_as(&db.url, &relay_role), &stdout_sink_settings());
    consumer.attach(&relay);
    let received = consumer.wait_for(2, WAIT).await;
    assert_eq!(received[0].destination, "outbox.event.Order");
    assert_eq!(received[0].key.as_deref(), Some("7"));
    assert_eq!(received[0].message_id, id.to_string());
    assert_eq!(received[0].header("type"), Some("OrderEvent"));
    assert_eq!(seq_of(&received[0].payload), 0);
    assert_eq!(received[1].destination, "orders");
    assert_eq!(received[1].key, Some(outbox_id.to_string()));
    assert_eq!(received[1].message_id, message_ids[0].to_string());
    eventually("the MassTransit rows removed", WAIT, || async {
        count(&db.client, STATES).await == 0 && count(&db.client, BUS_MESSAGES).await == 0
    })
    .await;
    relay
        .check_alive()
        .expect("the guard reads its evidence as the relay's role");
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

/// A long transaction elsewhere, holding its snapshot until it is rolled back.
async fn hold_a_snapshot(url: &str) -> Client {
    let holder = connect(url).await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM outbox.events")
        .await
        .expect("take the snapshot");
    holder
}

#[tokio::test]
async fn masstransit_outboxes_survive_a_sigkill_and_a_held_snapshot_in_order() {
    let db = adopted(MASSTRANSIT_TABLES, "masstransit").await;
    let exchange = unique("Contracts:OrderShipped");
    let rabbit = Rabbit::declare(&amqp_url(), &exchange, ExchangeKind::Fanout, "").await;
    let held = hold_a_snapshot(&db.url).await;
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
    held.batch_execute("ROLLBACK")
        .await
        .expect("end the long transaction");
    relay.stop().await.expect("the relay stops");
}

#[tokio::test]
async fn debezium_rows_survive_a_sigkill_and_a_held_snapshot_in_key_order() {
    let db = adopted(DEBEZIUM_TABLE, "debezium").await;
    let rabbit = Rabbit::setup("outbox.event.#").await;
    let held = hold_a_snapshot(&db.url).await;
    // 400 rows over 4 aggregates, 100 per statement, as a batch of Debezium Quarkus's inserts;
    // half of them deleted again in their transaction (its default).
    for (n, aggregate) in ["a0", "a1", "a2", "a3"].iter().enumerate() {
        let delete = if n % 2 == 0 {
            "DELETE FROM public.outboxevent WHERE aggregateid = $1;"
        } else {
            ""
        };
        db.client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
                 SELECT gen_random_uuid(), 'Order', '{aggregate}', 'OrderEvent', now(),
                        jsonb_build_object('key', '{aggregate}', 'seq', s)
                 FROM generate_series(0, 99) AS s;
                 {}
                 COMMIT;",
                delete.replace("$1", &format!("'{aggregate}'"))
            ))
            .await
            .expect("write 100 rows");
    }
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url());
    settings.push(("OUTBOX_BATCH_SIZE", "10".into()));
    let mut relay = Relay::start(&db.url, &settings);
    eventually("some delivered", WAIT, || async { rabbit.count() >= 40 }).await;
    relay.kill();
    let at_kill = db.undelivered().await;
    eprintln!("killed with {at_kill} of 400 rows undelivered");
    assert!(at_kill > 0, "killed mid-stream");
    let mut relay = Relay::start(&db.url, &settings);
    eventually("every row delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    // First arrivals in seq order per aggregate, every seq of each (a redelivery after the kill
    // may repeat a tail: at least once).
    let mut firsts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in rabbit.received() {
        let key = message.key.clone().expect("the key is aggregateid");
        let seq = seq_of(&message.payload);
        let seen = firsts.entry(key).or_default();
        if !seen.contains(&seq) {
            seen.push(seq);
        }
    }
    assert_eq!(firsts.len(), 4, "every aggregate");
    for (key, seqs) in &firsts {
        assert_eq!(
            *seqs,
            (0..100).collect::<Vec<u64>>(),
            "{key}: order and completeness"
        );
    }
    held.batch_execute("ROLLBACK")
        .await
        .expect("end the long transaction");
    relay.stop().await.expect("the relay stops");
}
