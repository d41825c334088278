//! Any bytes as an outbox row's `headers` JSON, topic and payload (separated by 0xff): the row is
//! an event or refused with its reason, and the event goes through every format and every sink's
//! binding: raw carries the payload byte for byte, the documents parse back as JSON. Never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox_relay::format::{Format, Mode};
use outbox_relay::outbox::event::ClaimedRow;
use outbox_relay::sink::{http, kafka, nats, rabbitmq, redis, stdout};
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let headers = parts.next().unwrap_or_default();
    let topic = String::from_utf8_lossy(parts.next().unwrap_or(b"t")).into_owned();
    let payload = parts.next().unwrap_or_default().to_vec();
    let Ok(headers) = serde_json::from_slice::<serde_json::Value>(headers) else {
        return;
    };
    let row = ClaimedRow {
        id: 1,
        topic,
        key: Some("k".into()),
        payload_bytes: i32::try_from(payload.len()).unwrap_or(i32::MAX),
        payload: Some(payload),
        headers,
        message_id: uuid::Uuid::nil(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        attempts: 0,
    };
    let event = match row.check(1 << 20) {
        Ok(event) => event,
        Err(invalid) => {
            assert!(!invalid.reason.is_empty());
            return;
        }
    };
    let host = serde_json::value::to_raw_value(&serde_json::json!({"processName": "fuzz"}))
        .expect("a JSON value");
    let formats = [
        Format::Raw,
        Format::CloudEvents {
            source: "/fuzz".into(),
            mode: Mode::Binary,
        },
        Format::CloudEvents {
            source: "/fuzz".into(),
            mode: Mode::Structured,
        },
        Format::MassTransit { host },
    ];
    let bindings = [
        stdout::BINDING,
        rabbitmq::BINDING,
        kafka::BINDING,
        redis::BINDING,
        nats::BINDING,
        http::BINDING,
    ];
    for format in &formats {
        for binding in bindings {
            match format.message(&event, binding) {
                Ok(message) => {
                    if format.is_raw() {
                        assert_eq!(message.body.as_ref(), event.payload.as_slice());
                    } else if message.body.as_ref() != event.payload.as_slice() {
                        serde_json::from_slice::<std::collections::BTreeMap<String, Box<RawValue>>>(
                            &message.body,
                        )
                        .expect("a document that parses back");
                    }
                }
                Err(reason) => {
                    assert!(matches!(format, Format::MassTransit { .. }), "{reason}");
                    assert!(reason.contains("not JSON"), "{reason}");
                }
            }
        }
    }
});
