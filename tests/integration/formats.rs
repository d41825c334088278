//! Message formats on RabbitMQ beyond the conformance suite (which reads every sink's CloudEvents
//! back with the official CloudEvents SDK for Python and checks MassTransit's envelope field by
//! field against its `MessageEnvelope`: `tests/harness/conformance.rs` and `formats.rs`): the
//! raw format's content type and key header, MassTransit's publish and send topologies (the
//! `{type}` exchange template, the default exchange), and an unknown format.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// A message with every AMQP property the formats set.
#[derive(Debug, Clone)]
struct AmqpMessage {
    exchange: String,
    message_id: Option<String>,
    content_type: Option<String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An exchange of `kind` and a queue bound to it for `binding` (the harness's consumer), and what
/// arrives in the queue with every property the formats set.
struct Queue {
    exchange: String,
    rabbit: Rabbit,
}

impl Queue {
    async fn bind(exchange: &str, kind: ExchangeKind, binding: &str) -> Queue {
        Queue {
            exchange: exchange.to_string(),
            rabbit: Rabbit::declare(&amqp_url(), exchange, kind, binding).await,
        }
    }

    async fn topic() -> Queue {
        Queue::bind(&unique("formats_exchange"), ExchangeKind::Topic, "#").await
    }

    fn received(&self) -> Vec<AmqpMessage> {
        self.rabbit
            .received()
            .into_iter()
            .map(|r| AmqpMessage {
                exchange: r.exchange,
                message_id: Some(r.message_id).filter(|id| !id.is_empty()),
                content_type: r.content_type,
                headers: r.headers,
                body: r.payload,
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<AmqpMessage> {
        eventually(&format!("{n} messages"), WAIT, || async {
            self.received().len() >= n
        })
        .await;
        self.received()
    }
}

fn by_id(messages: &[AmqpMessage], message_id: &str) -> AmqpMessage {
    messages
        .iter()
        .find(|m| m.message_id.as_deref() == Some(message_id))
        .unwrap_or_else(|| panic!("message {message_id} arrived: {messages:#?}"))
        .clone()
}

async fn wait_dead_lettered(db: &TestDb, id: i64) -> String {
    eventually(&format!("event {id} dead-lettered"), WAIT, || async {
        db.dead_letter_reason(id).await.is_some()
    })
    .await;
    db.dead_letter_reason(id).await.unwrap_or_default()
}

#[tokio::test]
async fn raw_format_on_rabbitmq_sets_content_type_and_the_key_header() {
    let db = TestDb::create().await;
    let queue = Queue::topic().await;
    let json = db
        .insert("orders", Some("42"), b"{\"id\":42}", r#"{"trace":"abc"}"#)
        .await;
    let bytes = db.insert("blobs", None, &[0xff, 0x00], "{}").await;
    let text = db
        .insert(
            "notes",
            Some("n1"),
            b"{\"looks\":\"like json\"}",
            r#"{"content-type":"text/plain; charset=utf-8"}"#,
        )
        .await;
    let _relay = Relay::start(&db.url, &rabbitmq_settings(&queue.exchange, &amqp_url()));
    let received = queue.wait_for(3).await;
    let ids = db.message_ids().await;

    let json = by_id(&received, &ids[&json]);
    assert_eq!(json.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        json.headers.get("outbox-key").map(String::as_str),
        Some("42")
    );
    assert_eq!(json.headers.get("trace").map(String::as_str), Some("abc"));
    assert_eq!(json.body, b"{\"id\":42}");
    let bytes = by_id(&received, &ids[&bytes]);
    assert_eq!(
        bytes.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(
        !bytes.headers.contains_key("outbox-key"),
        "null key: no header"
    );
    assert_eq!(bytes.body, [0xff, 0x00]);
    let text = by_id(&received, &ids[&text]);
    assert_eq!(
        text.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    // What consumers saw before stays: the header itself too.
    assert_eq!(
        text.headers.get("content-type").map(String::as_str),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn masstransit_envelope_goes_to_the_exchange_of_its_message_type() {
    let db = TestDb::create().await;
    // MassTransit's publish topology: a fanout exchange named after the message type.
    let namespace = unique("Contracts");
    let message_type = format!("{namespace}:OrderCreated");
    let queue = Queue::bind(&message_type, ExchangeKind::Fanout, "").await;
    let correlation = uuid::Uuid::new_v4().to_string();
    let created = db
        .insert(
            "orders",
            Some("42"),
            b"{\"orderId\":42,\"lines\":[1,2]}",
            &format!(
                r#"{{"type":"{message_type}","correlation-id":"{correlation}","tenant":"t1"}}"#
            ),
        )
        .await;
    // No consumer ever declared this type's exchange: dead-lettered with the reason, not lost.
    let missing_type = format!("{namespace}:OrderCancelled");
    let missing = db
        .insert(
            "orders",
            Some("43"),
            b"{\"orderId\":43}",
            &format!(r#"{{"type":"{missing_type}"}}"#),
        )
        .await;
    // MassTransit needs JSON.
    let not_json = db
        .insert(
            "orders",
            Some("44"),
            b"not json",
            &format!(r#"{{"type":"{message_type}"}}"#),
        )
        .await;
    // A later event of that key, on the same route: held back until the bad one is settled.
    let after_not_json = db
        .insert(
            "orders",
            Some("44"),
            b"{\"orderId\":44}",
            &format!(r#"{{"type":"{message_type}"}}"#),
        )
        .await;
    let mut settings = rabbitmq_settings("{type}", &amqp_url());
    settings.push(("OUTBOX_FORMAT", "masstransit".into()));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    let _relay = Relay::start(&db.url, &settings);

    let received = queue.wait_for(1).await;
    let ids = db.message_ids().await;
    let message = by_id(&received, &ids[&created]);
    assert_eq!(message.exchange, queue.exchange);
    assert_eq!(
        message.headers,
        BTreeMap::from([("outbox-key".to_string(), "42".to_string())]),
        "the event's headers travel inside the envelope"
    );
    assert_eq!(
        message.content_type.as_deref(),
        Some("application/vnd.masstransit+json")
    );
    let envelope: serde_json::Value = serde_json::from_slice(&message.body).expect("JSON");
    let rows = rows(&db.client).await;
    assert_masstransit_envelope(
        &envelope,
        &ids[&created],
        &message_type,
        serde_json::json!({"orderId": 42, "lines": [1, 2]}),
        serde_json::json!({"tenant": "t1"}),
        rows[&ids[&created]].created_at,
    );
    assert_eq!(envelope["correlationId"], correlation.as_str());

    let reason = wait_dead_lettered(&db, missing).await;
    assert!(
        reason.contains(&missing_type) && reason.contains("does not exist"),
        "{reason}"
    );
    let reason = wait_dead_lettered(&db, not_json).await;
    assert!(reason.contains("not JSON"), "{reason}");
    eventually("the key's later event delivered", WAIT, || async {
        db.count(&format!(
            "id = {after_not_json} AND attempts = 0 AND delivered_at IS NOT NULL"
        ))
        .await
            == 1
    })
    .await;

    // Once a consumer declared the exchange, retrying the dead letter delivers it.
    let late = Queue::bind(&missing_type, ExchangeKind::Fanout, "").await;
    let out = outbox_command(&["dead-letters", "retry", &missing.to_string()], &db.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arrived = late.wait_for(1).await;
    assert_eq!(
        arrived[0].message_id.as_deref(),
        Some(ids[&missing].as_str())
    );
    // Counted last, so that a copy published along with the bad event would have arrived.
    let copies = queue
        .wait_for(2)
        .await
        .iter()
        .filter(|m| m.message_id.as_deref() == Some(ids[&after_not_json].as_str()))
        .count();
    assert_eq!(
        copies, 1,
        "the key's later event was published once, after the bad one was dead-lettered"
    );
}

#[tokio::test]
async fn masstransit_send_to_a_queue_through_the_default_exchange() {
    let db = TestDb::create().await;
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let name = unique("order_service");
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    // The default exchange routes by queue name: the topic names the receiving endpoint.
    let id = db.insert(&name, None, b"{\"orderId\":7}", "{}").await;
    let mut settings = rabbitmq_settings("", &amqp_url());
    settings.push(("OUTBOX_FORMAT", "masstransit".into()));
    let _relay = Relay::start(&db.url, &settings);
    eventually("delivered", WAIT, || async { db.undelivered().await == 0 }).await;
    let got = channel
        .basic_get(
            name.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .expect("basic.get")
        .expect("a message in the queue");
    let envelope: serde_json::Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
    assert_eq!(
        envelope["messageType"],
        serde_json::json!([format!("urn:message:{name}")])
    );
    assert_eq!(envelope["messageId"], db.message_ids().await[&id].as_str());
}

#[tokio::test]
async fn an_unknown_format_is_a_configuration_error_naming_the_setting() {
    let db = TestDb::create().await;
    let mut settings = rabbitmq_settings("{type}.{bogus}", &amqp_url());
    settings.push(("OUTBOX_FORMAT", "cloudevents".into()));
    let mut relay = Relay::start(&db.url, &settings);
    let status = relay.exited(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(2), "{}", relay.stderr());
    assert!(
        relay.stderr().contains("OUTBOX_AMQP_EXCHANGE"),
        "{}",
        relay.stderr()
    );

    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINKS", "audit=stdout".into()));
    settings.push(("OUTBOX_ROUTES", "*=audit".into()));
    settings.push(("OUTBOX_SINK_AUDIT_FORMAT", "protobuf".into()));
    let mut relay = Relay::start(&db.url, &settings);
    let status = relay.exited(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(2), "{}", relay.stderr());
    assert!(
        relay.stderr().contains("OUTBOX_SINK_AUDIT_FORMAT"),
        "{}",
        relay.stderr()
    );
}
