//! MassTransit's EF Core outbox adopted (`OUTBOX_ADOPT=masstransit`) and relayed to Kafka: the
//! topic is the destination's name (`topic:orders` -> `orders`, as MassTransit's Kafka rider
//! addresses a topic), the record key the OutboxId, the `message-id` header the MessageId, the
//! `content-type` header the ContentType, the value the Body; each outbox in SequenceNumber order;
//! the rows removed once Kafka acknowledged, also when the relay keeps no history.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use uuid::Uuid;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn kafka_masstransit_outboxes_arrive_in_sequence_order_and_their_rows_go() {
    let brokers = kafka_brokers();
    let topic = unique("orders");
    create_topic(&brokers, &topic, 2).await;
    let db = TestDb::create_empty().await;
    db.client
        .batch_execute(MASSTRANSIT_TABLES)
        .await
        .expect("MassTransit's tables");
    let migrated = Command::new(relay_bin())
        .arg("migrate")
        .env("OUTBOX_DATABASE_URL", &db.url)
        .env("OUTBOX_ADOPT", "masstransit")
        .output()
        .expect("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    // Four outboxes of 25 messages, each written as one SaveChanges: the state, then the messages.
    let mut sent: BTreeMap<String, Vec<(Uuid, String)>> = BTreeMap::new();
    for outbox in 0..4 {
        let outbox_id = Uuid::new_v4();
        db.client.batch_execute("BEGIN").await.expect("begin");
        db.client
            .execute(
                r#"INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId") VALUES ($1, now(), $1)"#,
                &[&outbox_id],
            )
            .await
            .expect("the state");
        for n in 0..25 {
            let message_id = Uuid::new_v4();
            let body = format!(
                r#"{{"messageId":"{message_id}","messageType":["urn:message:Contracts:OrderPlaced"],"message":{{"outbox":{outbox},"n":{n}}}}}"#
            );
            db.client
                .execute(
                    r#"INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId",
                           "MessageType", "OutboxId", "SentTime")
                       VALUES ($1, $2, $3, '{"MT-Activity-Id":"00-abc-01"}', $4, 'urn:message:Contracts:OrderPlaced', $5, now())"#,
                    &[&body, &MASSTRANSIT_ENVELOPE, &format!("topic:{topic}"), &message_id, &outbox_id],
                )
                .await
                .expect("a message");
            sent.entry(outbox_id.to_string())
                .or_default()
                .push((message_id, body));
        }
        db.client.batch_execute("COMMIT").await.expect("commit");
    }
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
        count(r#"SELECT count(*) FROM "OutboxMessage""#).await,
        100,
        "the rows stay until Kafka acknowledged their message"
    );

    let reader = KafkaConsumer::start(&brokers, &topic, 2);
    let mut settings = kafka_settings(&brokers);
    settings.push(("OUTBOX_RETENTION_SECS", "0".into()));
    settings.push(("OUTBOX_BATCH_SIZE", "10".into()));
    let mut relay = Relay::start(&db.url, &settings);
    let records = reader.wait_for(100, WAIT).await;
    assert_eq!(records.len(), 100, "each message once");
    let mut arrived: BTreeMap<String, Vec<(Uuid, String)>> = BTreeMap::new();
    for record in &records {
        assert_eq!(record.destination, topic, "the destination's name");
        assert_eq!(record.content_type.as_deref(), Some(MASSTRANSIT_ENVELOPE));
        assert_eq!(record.header("MT-Activity-Id"), Some("00-abc-01"));
        let key = record.key.clone().expect("the OutboxId is the record key");
        let message_id: Uuid = record.message_id.parse().expect("the MessageId");
        let body = String::from_utf8(record.payload.clone()).expect("UTF-8");
        arrived.entry(key).or_default().push((message_id, body));
    }
    assert_eq!(
        arrived, sent,
        "bodies byte for byte, each outbox in SequenceNumber order"
    );
    eventually("the rows removed", WAIT, || async {
        count(r#"SELECT count(*) FROM "OutboxMessage""#).await == 0
            && count(r#"SELECT count(*) FROM "OutboxState""#).await == 0
    })
    .await;
    assert_eq!(
        count("SELECT count(*) FROM outbox.events").await,
        0,
        "deleted on delivery (OUTBOX_RETENTION_SECS=0)"
    );
    relay.stop().await.expect("the relay stops");
}
