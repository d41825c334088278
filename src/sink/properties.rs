//! Property tests of every message format through every sink's binding: any event that passed
//! the row check (any topic, key, headers and payload bytes) becomes a message or is refused with
//! its reason, never a panic; what each format promises holds (docs/formats.md): raw carries the
//! payload byte for byte and every header, CloudEvents structured documents parse back to the
//! event, and every event header is carried, used as an attribute, or left out by a documented
//! rule. Each sink's own encoder has its properties in its folder (`properties.rs`).

use std::borrow::Cow;

use base64::Engine;
use proptest::prelude::*;
use serde_json::Value;

use crate::format::{self, Binding, Format, Message, Mode};
use crate::outbox::arbitrary;
use crate::outbox::event::Event;
use crate::settings::Settings;
use crate::sink::{http, kafka, nats, rabbitmq, redis, stdout};

/// Every sink's binding (the bullmq sink has no format: its own properties cover it).
const BINDINGS: [(&str, Binding); 6] = [
    ("stdout", stdout::BINDING),
    ("rabbitmq", rabbitmq::BINDING),
    ("kafka", kafka::BINDING),
    ("redis", redis::BINDING),
    ("nats", nats::BINDING),
    ("http", http::BINDING),
];

/// Every format: raw, CloudEvents in both modes with any source, MassTransit.
pub(crate) fn formats() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Raw),
        (arbitrary::text(), any::<bool>()).prop_map(|(source, binary)| Format::CloudEvents {
            source,
            mode: if binary {
                Mode::Binary
            } else {
                Mode::Structured
            },
        }),
        Just(masstransit()),
    ]
}

/// The MassTransit format as the settings make it.
pub(crate) fn masstransit() -> Format {
    Format::read(&Settings::from_pairs(&[("OUTBOX_FORMAT", "masstransit")]).default_sink())
        .expect("the masstransit format")
}

fn header<'a>(message: &'a Message<'_>, name: &str) -> Vec<&'a str> {
    message
        .headers
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.as_ref())
        .collect()
}

fn event_header<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A header value as the consumer reads it back: percent-decoded where the binding encodes.
fn decoded<'a>(binding: &Binding, value: &'a str) -> Cow<'a, str> {
    if binding.is_percent_encoded() {
        percent_encoding::percent_decode_str(value).decode_utf8_lossy()
    } else {
        Cow::Borrowed(value)
    }
}

/// Whether `name` starts with the binding's attribute prefix, in any case: such an event
/// header is never passed on (docs/formats.md, "The rules").
fn has_prefix(binding: &Binding, name: &str) -> bool {
    let prefix = binding.attribute_prefix();
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The event's headers a format other than raw passes on as transport headers.
fn passed_on<'a>(event: &'a Event, binding: &Binding) -> Vec<(&'a str, &'a str)> {
    event
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| {
            *n != format::TYPE_HEADER
                && *n != format::CONTENT_TYPE_HEADER
                && !has_prefix(binding, n)
                && Some(*n) != binding.key_header_name()
        })
        .collect()
}

/// The key header the binding adds, if it has one and the event a key.
fn key_header<'a>(event: &'a Event, binding: &Binding) -> Option<(&'static str, &'a str)> {
    binding.key_header_name().zip(event.key.as_deref())
}

fn check_raw(event: &Event, binding: &Binding, message: &Message<'_>) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        message.body.as_ref(),
        event.payload.as_slice(),
        "byte for byte"
    );
    let mut expected: Vec<(&str, &str)> = event
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| Some(*n) != binding.key_header_name())
        .collect();
    expected.extend(key_header(event, binding));
    let got: Vec<(&str, &str)> = message
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_ref()))
        .collect();
    prop_assert_eq!(got, expected, "every header, as it is");
    let content_type = message.content_type.as_deref();
    if binding.names_raw_content_type() {
        prop_assert_eq!(content_type, Some(format::raw_content_type(event)));
    } else {
        prop_assert_eq!(content_type, None);
    }
    Ok(())
}

fn check_binary(
    event: &Event,
    source: &str,
    binding: &Binding,
    message: &Message<'_>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        message.body.as_ref(),
        event.payload.as_slice(),
        "byte for byte"
    );
    let [specversion, id, source_name, type_name, subject, time] = binding.attribute_names();
    let one = |name: &str| -> Result<String, TestCaseError> {
        let values = header(message, name);
        prop_assert_eq!(values.len(), 1, "{} once", name);
        Ok(decoded(binding, values[0]).into_owned())
    };
    prop_assert_eq!(one(specversion)?, "1.0");
    prop_assert_eq!(one(id)?, event.message_id.to_string());
    prop_assert_eq!(one(source_name)?, source);
    prop_assert_eq!(one(type_name)?, format::event_type(event));
    match &event.key {
        Some(key) => prop_assert_eq!(&one(subject)?, key),
        None => prop_assert!(header(message, subject).is_empty()),
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(&one(time)?);
    prop_assert_eq!(
        parsed.map(|t| t.timestamp_micros()).ok(),
        Some(event.created_at.timestamp_micros())
    );
    let content_type = format::data_content_type(event);
    prop_assert_eq!(message.content_type.as_deref(), Some(content_type));
    let mut count = 5 + usize::from(event.key.is_some());
    if let Some(name) = binding.content_type_header_name() {
        prop_assert_eq!(header(message, name), [content_type]);
        count += 1;
    }
    let passed = passed_on(event, binding);
    for (name, value) in &passed {
        prop_assert!(header(message, name).contains(value), "{} passes on", name);
    }
    prop_assert_eq!(message.headers.len(), count + passed.len(), "nothing else");
    Ok(())
}

/// A JSON document's members, each as written: numbers are not converted, so a payload with
/// numbers beyond a double (`1e400`, valid JSON) is checked byte for byte too.
pub(crate) type Document = std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>;

pub(crate) fn document(body: &[u8]) -> Result<Document, TestCaseError> {
    serde_json::from_slice(body).map_err(|e| TestCaseError::fail(format!("not a JSON object: {e}")))
}

/// A member of a document as a value (`Null` when absent).
fn member(doc: &Document, name: &str) -> Value {
    doc.get(name)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null)
}

/// JSON text without its white space (also inside strings, alike on both sides): what a payload
/// embedded as it is keeps, however the document around it is spaced.
pub(crate) fn squeezed(json: &str) -> Vec<u8> {
    json.bytes().filter(|b| !b" \t\r\n".contains(b)).collect()
}

/// The payload as a JSON text, as an envelope embeds it.
pub(crate) fn payload_json(event: &Event) -> Option<&str> {
    serde_json::from_slice::<&serde_json::value::RawValue>(&event.payload)
        .ok()
        .map(|raw| raw.get())
}

/// A structured CloudEvent parses back to the event: its attributes and its data, the payload
/// as JSON (as written), as text or as base64, byte for byte.
fn check_structured(
    event: &Event,
    source: &str,
    binding: &Binding,
    message: &Message<'_>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        message.content_type.as_deref(),
        Some(format::CLOUDEVENTS_JSON)
    );
    let doc = document(&message.body)?;
    prop_assert_eq!(member(&doc, "specversion"), "1.0");
    prop_assert_eq!(member(&doc, "id"), event.message_id.to_string());
    prop_assert_eq!(member(&doc, "source"), source);
    prop_assert_eq!(member(&doc, "type"), format::event_type(event));
    prop_assert_eq!(
        member(&doc, "subject"),
        event.key.as_deref().map_or(Value::Null, Value::from)
    );
    prop_assert_eq!(
        member(&doc, "datacontenttype"),
        format::data_content_type(event)
    );
    let content_type = format::data_content_type(event);
    match (doc.get("data"), member(&doc, "data_base64")) {
        (Some(data), Value::Null) if json_media_type(content_type) => {
            prop_assert_eq!(Some(data.get()), payload_json(event));
        }
        (Some(data), Value::Null) => {
            let text: String = serde_json::from_str(data.get())
                .map_err(|e| TestCaseError::fail(format!("text data: {e}")))?;
            prop_assert_eq!(text.as_bytes(), event.payload.as_slice());
        }
        (None, Value::String(base64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bytes, event.payload.clone());
        }
        other => prop_assert!(false, "data or data_base64, one of them: {:?}", other),
    }
    check_wrapped_headers(event, binding, message, &passed_on(event, binding))
}

fn json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == format::JSON || essence.ends_with("+json")
}

/// The transport headers of a document: its content type, `passed`, the key header; none on a
/// binding without headers.
fn check_wrapped_headers(
    event: &Event,
    binding: &Binding,
    message: &Message<'_>,
    passed: &[(&str, &str)],
) -> Result<(), TestCaseError> {
    if !binding.has_headers() {
        prop_assert!(message.headers.is_empty());
        return Ok(());
    }
    let content_type = message.content_type.as_deref().unwrap_or_default();
    let mut expected: Vec<(&str, &str)> = Vec::new();
    expected.extend(
        binding
            .content_type_header_name()
            .map(|n| (n, content_type)),
    );
    expected.extend(passed);
    expected.extend(key_header(event, binding));
    let got: Vec<(&str, &str)> = message
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_ref()))
        .collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

/// MassTransit's envelope: the payload as `message` (as written), the headers inside.
fn check_masstransit(
    event: &Event,
    binding: &Binding,
    message: &Message<'_>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        message.content_type.as_deref(),
        Some(format::MASSTRANSIT_JSON)
    );
    let doc = document(&message.body)?;
    prop_assert_eq!(doc.get("message").map(|m| m.get()), payload_json(event));
    prop_assert_eq!(member(&doc, "messageId"), event.message_id.to_string());
    prop_assert_eq!(
        member(&doc, "messageType"),
        serde_json::json!([format!("urn:message:{}", format::event_type(event))])
    );
    let guid = |name| event_header(event, name).filter(|v| uuid::Uuid::parse_str(v).is_ok());
    let correlation = guid(format::CORRELATION_ID_HEADER);
    let conversation = guid(format::CONVERSATION_ID_HEADER);
    let id = |v: Option<&str>| v.map_or(Value::Null, Value::from);
    prop_assert_eq!(member(&doc, "correlationId"), id(correlation));
    prop_assert_eq!(member(&doc, "conversationId"), id(conversation));
    let inside: serde_json::Map<String, Value> = event
        .headers
        .iter()
        .filter(|(n, _)| {
            n != format::TYPE_HEADER
                && n != format::CONTENT_TYPE_HEADER
                && !(n == format::CORRELATION_ID_HEADER && correlation.is_some())
                && !(n == format::CONVERSATION_ID_HEADER && conversation.is_some())
        })
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    prop_assert_eq!(member(&doc, "headers"), Value::Object(inside));
    check_wrapped_headers(event, binding, message, &[])
}

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn every_format_carries_any_event_through_every_binding_or_names_why_not(
        event in arbitrary::event(),
        format in formats(),
    ) {
        for (sink, binding) in BINDINGS {
            let result = format.message(&event, binding);
            match (&format, result) {
                (Format::Raw, Ok(message)) => check_raw(&event, &binding, &message)?,
                (Format::CloudEvents { source, mode }, Ok(message)) => {
                    if *mode == Mode::Binary && binding.has_headers() {
                        check_binary(&event, source, &binding, &message)?;
                    } else {
                        check_structured(&event, source, &binding, &message)?;
                    }
                }
                (Format::MassTransit { .. }, Ok(message)) => {
                    check_masstransit(&event, &binding, &message)?;
                }
                (Format::MassTransit { .. }, Err(reason)) => {
                    prop_assert!(reason.contains("not JSON"), "{}: {}", sink, reason);
                    prop_assert!(payload_json(&event).is_none(), "{}: a JSON payload refused: {}", sink, reason);
                }
                (_, Err(reason)) => prop_assert!(false, "{}: {:?} refused: {}", sink, format, reason),
            }
        }
    }
}
