//! What the message formats must look like, the same for every sink: the CloudEvents cases
//! (a `type` header, a `content-type` header, binary data, no key) and what the SDK must read
//! back, and MassTransit's envelope checked field by field against its own types.

use super::db::TestDb;
use super::sdk::{Parsed, assert_common_attributes, rows};

/// Events covering the rules: a `type` header, a `content-type` header, binary data, no key.
pub async fn insert_cloudevents_cases(db: &TestDb) -> [i64; 3] {
    [
        db.insert(
            "orders",
            Some("42"),
            b"{\"orderId\":42}",
            r#"{"type":"com.example.order.created","trace":"abc"}"#,
        )
        .await,
        db.insert(
            "blobs",
            None,
            &[0xff, 0x00, 0x01],
            r#"{"content-type":"application/octet-stream"}"#,
        )
        .await,
        db.insert(
            "notes",
            Some("key with spaces é"),
            b"hello",
            r#"{"content-type":"text/plain"}"#,
        )
        .await,
    ]
}

/// Checks what the SDK read against the rules, for the events of `insert_cloudevents_cases`.
pub async fn assert_cloudevents_cases(db: &TestDb, ids: [i64; 3], parsed: &[Parsed], source: &str) {
    let rows = rows(&db.client).await;
    let message_ids = db.message_ids().await;
    for event in parsed {
        assert_common_attributes(event, &rows, source);
    }
    let find = |id: i64| {
        parsed
            .iter()
            .find(|p| p.id == message_ids[&id])
            .unwrap_or_else(|| panic!("event {id} parsed: {parsed:#?}"))
            .clone()
    };
    let order = find(ids[0]);
    assert_eq!(order.kind, "com.example.order.created", "type header");
    assert_eq!(order.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(order.data, serde_json::json!({"orderId": 42}));
    let blob = find(ids[1]);
    assert_eq!(blob.kind, "blobs", "type = topic without a type header");
    assert_eq!(
        blob.datacontenttype.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(blob.data, serde_json::json!({"base64": "/wAB"}));
    assert_eq!(blob.subject, None);
    let note = find(ids[2]);
    assert_eq!(note.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(note.data, serde_json::json!({"text": "hello"}));
    assert_eq!(note.subject.as_deref(), Some("key with spaces é"));
    eprintln!("verified with: {}", order.sdk);
}

/// MassTransit's `MessageEnvelope` (MassTransit.Abstractions, Serialization/MessageEnvelope.cs),
/// camelCase as its System.Text.Json serializer writes it: every field the relay may write.
pub const MASSTRANSIT_ENVELOPE_FIELDS: &[&str] = &[
    "messageId",
    "requestId",
    "correlationId",
    "conversationId",
    "initiatorId",
    "sourceAddress",
    "destinationAddress",
    "responseAddress",
    "faultAddress",
    "messageType",
    "message",
    "expirationTime",
    "sentTime",
    "headers",
    "host",
];

/// MassTransit's `HostInfo` (MassTransit.Abstractions, Contracts/HostInfo.cs).
pub const MASSTRANSIT_HOST_FIELDS: &[&str] = &[
    "machineName",
    "processName",
    "processId",
    "assembly",
    "assemblyVersion",
    "frameworkVersion",
    "massTransitVersion",
    "operatingSystemVersion",
];

/// Checks a MassTransit envelope against MassTransit's own types: only `MessageEnvelope` fields,
/// `messageId`, `messageType`, `message`, `headers`, `sentTime` = created_at, a full `HostInfo`.
pub fn assert_masstransit_envelope(
    envelope: &serde_json::Value,
    message_id: &str,
    message_type: &str,
    message: serde_json::Value,
    headers: serde_json::Value,
    created_at: chrono::DateTime<chrono::Utc>,
) {
    let fields = envelope.as_object().expect("an object");
    for name in fields.keys() {
        assert!(
            MASSTRANSIT_ENVELOPE_FIELDS.contains(&name.as_str()),
            "{name} is a MessageEnvelope field"
        );
    }
    assert_eq!(envelope["messageId"], message_id);
    assert_eq!(
        envelope["messageType"],
        serde_json::json!([format!("urn:message:{message_type}")])
    );
    assert_eq!(envelope["message"], message);
    assert_eq!(envelope["headers"], headers);
    assert_eq!(envelope["sourceAddress"], "urn:outbox-relay");
    let sent: chrono::DateTime<chrono::Utc> = envelope["sentTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("sentTime is RFC 3339")
        .into();
    assert_eq!(sent, created_at, "sentTime = created_at");
    let host = envelope["host"].as_object().expect("host");
    for name in MASSTRANSIT_HOST_FIELDS {
        assert!(host.contains_key(*name), "host.{name}");
    }
    assert!(
        envelope["host"]["processId"].is_u64(),
        "HostInfo.ProcessId is an int"
    );
}
