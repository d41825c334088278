//! Message formats (`OUTBOX_FORMAT`): what a published message looks like, for every sink.
//!
//! - `raw`: the payload verbatim, the event's headers as they are (what the relay always did).
//! - `cloudevents`: CloudEvents 1.0, binary content mode (attributes in headers named as each
//!   protocol binding says) or structured mode (`application/cloudevents+json` body).
//! - `masstransit`: MassTransit's JSON envelope (`application/vnd.masstransit+json`).
//!
//! This module knows no broker library. [`Format::message`] turns an [`Event`] into a
//! [`Message`] for a [`Binding`]: header names as that binding spells them, the content type and
//! the body. A sink sends exactly that: its own additions (message id property, Kafka key, ...)
//! stay in the sink. Each sink declares its [`Binding`] (its `BINDING` const), built from the
//! protocol conventions in `binding.rs`: this module knows no sink by name.
//!
//! The rules (also in docs/formats.md): `type` = the event's header `type`, else its topic;
//! `datacontenttype` = the header `content-type`, else `application/json`; CloudEvents `id` = the
//! message id, `source` = `CLOUDEVENTS_SOURCE`, `subject` = the key, `time` = `created_at`.

mod binding;
mod cloudevents;
mod masstransit;

pub use binding::Binding;

use std::borrow::Cow;

use chrono::SecondsFormat;
use serde_json::value::RawValue;

use crate::outbox::event::Event;
use crate::settings::{ConfigError, SinkSettings};

/// The format settings every sink reads (without `OUTBOX_` or `OUTBOX_SINK_<NAME>_`).
pub const SETTINGS: &[&str] = &["FORMAT", "CLOUDEVENTS_SOURCE", "CLOUDEVENTS_MODE"];

pub const DEFAULT_CLOUDEVENTS_SOURCE: &str = "/outbox-relay";
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
pub const MASSTRANSIT_JSON: &str = "application/vnd.masstransit+json";
pub const JSON: &str = "application/json";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Event headers with a meaning for the formats.
pub const TYPE_HEADER: &str = "type";
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const CORRELATION_ID_HEADER: &str = "correlation-id";
pub const CONVERSATION_ID_HEADER: &str = "conversation-id";

/// What `sourceAddress` says in a MassTransit envelope: the relay, not an endpoint.
pub const MASSTRANSIT_SOURCE_ADDRESS: &str = "urn:outbox-relay";

/// A sink's message format, read once from its settings.
#[derive(Debug, Clone)]
pub enum Format {
    Raw,
    CloudEvents {
        /// `CLOUDEVENTS_SOURCE`.
        source: String,
        mode: Mode,
    },
    MassTransit {
        /// The envelope's `host`, serialized once at start.
        host: Box<RawValue>,
    },
}

/// CloudEvents content mode (`CLOUDEVENTS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in headers, the payload as the body.
    Binary,
    /// The whole event as one `application/cloudevents+json` body.
    Structured,
}

/// An event as a binding carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// The content type, for a sink with a property for it (RabbitMQ's `content_type`); also in
    /// `headers` when the binding has a content-type header. `None`: raw, and the binding names
    /// none.
    pub content_type: Option<Cow<'a, str>>,
    /// Header name and value, named for the binding: the format's attributes, then the event's
    /// headers that pass through.
    pub headers: Vec<(&'a str, Cow<'a, str>)>,
    /// The message body: the payload itself unless the format wraps it.
    pub body: Cow<'a, [u8]>,
}

impl Format {
    /// Reads `FORMAT`, `CLOUDEVENTS_SOURCE` and `CLOUDEVENTS_MODE` of one sink.
    pub fn read(settings: &SinkSettings) -> Result<Format, ConfigError> {
        let format = settings.get("FORMAT").unwrap_or("raw");
        if format != "cloudevents" {
            for setting in ["CLOUDEVENTS_SOURCE", "CLOUDEVENTS_MODE"] {
                if settings.get(setting).is_some() {
                    return Err(settings.error(
                        setting,
                        format!(
                            "applies only with {}=cloudevents, which is {format:?}",
                            settings.var("FORMAT")
                        ),
                    ));
                }
            }
        }
        match format {
            "raw" => Ok(Format::Raw),
            "cloudevents" => {
                let mode = match settings.get("CLOUDEVENTS_MODE") {
                    None | Some("binary") => Mode::Binary,
                    Some("structured") => Mode::Structured,
                    Some(other) => {
                        return Err(settings.error(
                            "CLOUDEVENTS_MODE",
                            format!("expected binary or structured, got {other:?}"),
                        ));
                    }
                };
                let source = settings
                    .get("CLOUDEVENTS_SOURCE")
                    .unwrap_or(DEFAULT_CLOUDEVENTS_SOURCE);
                Ok(Format::CloudEvents {
                    source: source.to_string(),
                    mode,
                })
            }
            "masstransit" => Ok(Format::MassTransit {
                host: masstransit::host_info(),
            }),
            other => Err(settings.error(
                "FORMAT",
                format!("expected raw, cloudevents or masstransit, got {other:?}"),
            )),
        }
    }

    pub fn is_raw(&self) -> bool {
        matches!(self, Format::Raw)
    }

    /// The event as `binding` carries it in this format. `Err` is an event this format cannot
    /// carry (masstransit: a payload that is not JSON); it is the event's fault.
    pub fn message<'a>(
        &'a self,
        event: &'a Event,
        binding: Binding,
    ) -> Result<Message<'a>, String> {
        match self {
            Format::Raw => Ok(Message {
                content_type: binding
                    .raw_content_type
                    .then(|| raw_content_type(event).into()),
                headers: event
                    .headers
                    .iter()
                    .filter(|(n, _)| !is_key_header(n, &binding))
                    .map(|(n, v)| (n.as_str(), Cow::Borrowed(v.as_str())))
                    .chain(key_header(event, &binding))
                    .collect(),
                body: Cow::Borrowed(&event.payload),
            }),
            Format::CloudEvents { source, mode } => {
                if *mode == Mode::Binary && binding.headers {
                    Ok(cloudevents::binary(event, source, &binding))
                } else {
                    cloudevents::structured(event, source, &binding)
                }
            }
            Format::MassTransit { host } => masstransit::masstransit(event, host, &binding),
        }
    }
}

/// CloudEvents `type`, MassTransit's message type and the `{type}` of templates: the event's
/// header `type`, else its topic.
pub fn event_type(event: &Event) -> &str {
    header(event, TYPE_HEADER).unwrap_or(&event.topic)
}

/// CloudEvents `datacontenttype`: the event's header `content-type`, else `application/json`.
pub fn data_content_type(event: &Event) -> &str {
    header(event, CONTENT_TYPE_HEADER).unwrap_or(JSON)
}

/// The raw format's content type (RabbitMQ): the header `content-type`, else `application/json`
/// when the payload is JSON, else `application/octet-stream`.
pub fn raw_content_type(event: &Event) -> &str {
    header(event, CONTENT_TYPE_HEADER).unwrap_or(if is_json(&event.payload) {
        JSON
    } else {
        OCTET_STREAM
    })
}

/// Whether an event header has the name of the binding's key header, which is the relay's own:
/// such a header is not passed on, so that it can never be taken for the key (nor replace it).
fn is_key_header(name: &str, binding: &Binding) -> bool {
    binding.key_header == Some(name)
}

/// The binding's key header, if it has one and the event a key.
fn key_header<'a>(event: &'a Event, binding: &Binding) -> Option<(&'a str, Cow<'a, str>)> {
    binding
        .key_header
        .zip(event.key.as_deref())
        .map(|(name, key)| (name, Cow::Borrowed(key)))
}

fn header<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

fn json_payload(event: &Event) -> Option<&RawValue> {
    serde_json::from_slice::<&RawValue>(&event.payload).ok()
}

/// A media type without parameters, lower-case.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type is JSON (`application/json`, `...+json`).
fn is_json_media_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == JSON || essence.ends_with("+json")
}

/// Whether a media type is text (`text/*`, XML).
fn is_text_media_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.starts_with("text/") || essence == "application/xml" || essence.ends_with("+xml")
}

fn time(event: &Event) -> String {
    event
        .created_at
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The event's headers other than those the format consumed, and none that could be taken for
/// one of the binding's attributes.
fn passed_on<'a>(
    event: &'a Event,
    binding: &Binding,
    consumed: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let binding = *binding;
    let prefix = binding.prefix;
    event
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(move |(n, _)| {
            !consumed.contains(n)
                && !is_key_header(n, &binding)
                && !n
                    .get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
}
/// A message whose body is a document of `content_type`; the event's other headers pass on.
fn wrapped<'a>(
    event: &'a Event,
    binding: &Binding,
    content_type: &'static str,
    body: Vec<u8>,
    consumed: &'a [&'a str],
) -> Message<'a> {
    let mut headers = Vec::with_capacity(1 + event.headers.len());
    if binding.headers {
        if let Some(name) = binding.content_type_header {
            headers.push((name, Cow::Borrowed(content_type)));
        }
        headers.extend(passed_on(event, binding, consumed).map(|(n, v)| (n, Cow::Borrowed(v))));
        headers.extend(key_header(event, binding));
    }
    Message {
        content_type: Some(Cow::Borrowed(content_type)),
        headers,
        body: Cow::Owned(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::sink::{http, kafka, nats, rabbitmq, stdout};
    use uuid::Uuid;

    fn event(headers: &[(&str, &str)], payload: &[u8]) -> Event {
        Event {
            id: 7,
            topic: "orders".into(),
            key: Some("42".into()),
            payload: payload.to_vec(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            message_id: Uuid::parse_str("6f1c8a52-3b0e-4f4e-9a57-1c2d3e4f5a6b").unwrap(),
            created_at: chrono::DateTime::parse_from_rfc3339("2026-11-25T16:30:00.123456Z")
                .unwrap()
                .into(),
            attempts: 0,
        }
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Format, ConfigError> {
        Format::read(&Settings::from_pairs(pairs).default_sink())
    }

    fn cloudevents(mode: Mode) -> Format {
        Format::CloudEvents {
            source: "/relay".into(),
            mode,
        }
    }

    fn headers<'a>(message: &'a Message<'a>) -> Vec<(&'a str, &'a str)> {
        message
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_ref()))
            .collect()
    }

    #[test]
    fn settings_are_read_and_bad_values_named() {
        assert!(read(&[]).unwrap().is_raw());
        match read(&[("OUTBOX_FORMAT", "cloudevents")]).unwrap() {
            Format::CloudEvents { source, mode } => {
                assert_eq!(source, DEFAULT_CLOUDEVENTS_SOURCE);
                assert_eq!(mode, Mode::Binary);
            }
            other => panic!("{other:?}"),
        }
        let structured = read(&[
            ("OUTBOX_FORMAT", "cloudevents"),
            ("OUTBOX_CLOUDEVENTS_MODE", "structured"),
            ("OUTBOX_CLOUDEVENTS_SOURCE", "//shop/orders"),
        ])
        .unwrap();
        assert!(
            matches!(structured, Format::CloudEvents { ref source, mode: Mode::Structured } if source == "//shop/orders")
        );
        assert!(matches!(
            read(&[("OUTBOX_FORMAT", "masstransit")]).unwrap(),
            Format::MassTransit { .. }
        ));
        let err = read(&[("OUTBOX_FORMAT", "avro")]).unwrap_err();
        assert_eq!(err.setting, "OUTBOX_FORMAT");
        assert!(err.problem.contains("masstransit"), "{err}");
        let err = read(&[
            ("OUTBOX_FORMAT", "cloudevents"),
            ("OUTBOX_CLOUDEVENTS_MODE", "batch"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_CLOUDEVENTS_MODE");
        let err = read(&[("OUTBOX_CLOUDEVENTS_SOURCE", "/x")]).unwrap_err();
        assert_eq!(err.setting, "OUTBOX_CLOUDEVENTS_SOURCE");
        assert!(err.problem.contains("OUTBOX_FORMAT=cloudevents"), "{err}");
    }

    #[test]
    fn raw_keeps_everything_and_names_a_content_type_only_where_asked() {
        let e = event(&[("trace", "abc")], b"{\"a\":1}");
        let kafka = Format::Raw.message(&e, kafka::BINDING).unwrap();
        assert_eq!(kafka.content_type, None);
        assert_eq!(headers(&kafka), [("trace", "abc")]);
        assert_eq!(kafka.body.as_ref(), b"{\"a\":1}");
        assert!(matches!(kafka.body, Cow::Borrowed(_)));
        let rabbit = Format::Raw.message(&e, rabbitmq::BINDING).unwrap();
        assert_eq!(rabbit.content_type.as_deref(), Some(JSON));
        assert_eq!(
            headers(&rabbit),
            [("trace", "abc"), (rabbitmq::KEY_HEADER, "42")]
        );
        let binary = event(&[], &[0xff, 0x00]);
        assert_eq!(raw_content_type(&binary), OCTET_STREAM);
        let text = event(&[("content-type", "text/plain")], b"{}");
        assert_eq!(raw_content_type(&text), "text/plain");
    }

    #[test]
    fn binary_mode_names_attributes_per_binding() {
        let e = event(
            &[
                ("type", "shop.order.created"),
                ("trace", "abc"),
                ("ce_id", "forged"),
            ],
            b"{\"a\":1}",
        );
        let format = cloudevents(Mode::Binary);
        let kafka = format.message(&e, kafka::BINDING).unwrap();
        assert_eq!(
            headers(&kafka),
            [
                ("ce_specversion", "1.0"),
                ("ce_id", "6f1c8a52-3b0e-4f4e-9a57-1c2d3e4f5a6b"),
                ("ce_source", "/relay"),
                ("ce_type", "shop.order.created"),
                ("ce_subject", "42"),
                ("ce_time", "2026-11-25T16:30:00.123456Z"),
                ("content-type", "application/json"),
                ("trace", "abc"),
            ]
        );
        assert!(matches!(kafka.body, Cow::Borrowed(_)));
        let rabbit = format.message(&e, rabbitmq::BINDING).unwrap();
        assert_eq!(rabbit.content_type.as_deref(), Some(JSON));
        assert!(headers(&rabbit).contains(&("ce-type", "shop.order.created")));
        assert!(headers(&rabbit).contains(&("ce_id", "forged")));
        assert!(
            !headers(&rabbit)
                .iter()
                .any(|(n, _)| *n == rabbitmq::KEY_HEADER),
            "ce-subject is the key"
        );
        assert!(!headers(&rabbit).iter().any(|(n, _)| *n == "content-type"));
        // Without a type header the topic is the type; without a key there is no subject.
        let mut plain = event(&[("content-type", "text/plain")], b"hi");
        plain.key = None;
        let nats = format.message(&plain, nats::BINDING).unwrap();
        assert!(headers(&nats).contains(&("ce-type", "orders")));
        assert!(headers(&nats).contains(&("content-type", "text/plain")));
        assert!(!headers(&nats).iter().any(|(n, _)| *n == "ce-subject"));
    }

    #[test]
    fn http_percent_encodes_attribute_values() {
        let mut e = event(&[], b"{}");
        e.key = Some("é 100%".into());
        let format = cloudevents(Mode::Binary);
        let http = format.message(&e, http::BINDING).unwrap();
        assert!(headers(&http).contains(&("ce-subject", "%C3%A9%20100%25")));
        assert!(headers(&http).contains(&("Content-Type", "application/json")));
    }

    #[test]
    fn structured_mode_is_one_json_document() {
        let e = event(&[("trace", "abc")], b"{\"a\":1}");
        let structured = cloudevents(Mode::Structured);
        let kafka = structured.message(&e, kafka::BINDING).unwrap();
        assert_eq!(
            headers(&kafka),
            [("content-type", CLOUDEVENTS_JSON), ("trace", "abc")]
        );
        let doc: serde_json::Value = serde_json::from_slice(&kafka.body).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "specversion": "1.0",
                "id": "6f1c8a52-3b0e-4f4e-9a57-1c2d3e4f5a6b",
                "source": "/relay",
                "type": "orders",
                "subject": "42",
                "time": "2026-11-25T16:30:00.123456Z",
                "datacontenttype": "application/json",
                "data": {"a": 1},
            })
        );
        let bytes = event(&[("content-type", "application/octet-stream")], &[0, 255]);
        let doc: serde_json::Value = serde_json::from_slice(
            &cloudevents(Mode::Structured)
                .message(&bytes, kafka::BINDING)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(doc["data_base64"], "AP8=");
        assert!(doc.get("data").is_none());
        // A binding without headers always gets structured mode.
        let binary = cloudevents(Mode::Binary);
        let stdout = binary.message(&e, stdout::BINDING).unwrap();
        assert!(stdout.headers.is_empty());
        assert_eq!(stdout.content_type.as_deref(), Some(CLOUDEVENTS_JSON));
    }

    #[test]
    fn masstransit_envelope_fields() {
        let format = read(&[("OUTBOX_FORMAT", "masstransit")]).unwrap();
        let e = event(
            &[
                ("type", "Contracts:OrderCreated"),
                ("correlation-id", "0b3a47c5-5a3c-4c8e-8f7e-9d1a2b3c4d5e"),
                ("conversation-id", "not-a-guid"),
                ("tenant", "t1"),
            ],
            b"{\"orderId\":42}",
        );
        let message = format.message(&e, rabbitmq::BINDING).unwrap();
        assert_eq!(message.content_type.as_deref(), Some(MASSTRANSIT_JSON));
        assert_eq!(
            headers(&message),
            [(rabbitmq::KEY_HEADER, "42")],
            "the event's headers go inside the envelope"
        );
        let doc: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(doc["messageId"], "6f1c8a52-3b0e-4f4e-9a57-1c2d3e4f5a6b");
        assert_eq!(
            doc["messageType"],
            serde_json::json!(["urn:message:Contracts:OrderCreated"])
        );
        assert_eq!(doc["message"], serde_json::json!({"orderId": 42}));
        assert_eq!(doc["correlationId"], "0b3a47c5-5a3c-4c8e-8f7e-9d1a2b3c4d5e");
        assert!(doc.get("conversationId").is_none(), "not a GUID");
        assert_eq!(
            doc["headers"],
            serde_json::json!({"conversation-id": "not-a-guid", "tenant": "t1"})
        );
        assert_eq!(doc["sentTime"], "2026-11-25T16:30:00.123456Z");
        assert_eq!(doc["sourceAddress"], MASSTRANSIT_SOURCE_ADDRESS);
        assert_eq!(doc["host"]["processName"], "outbox-relay");
        let kafka = format.message(&e, kafka::BINDING).unwrap();
        assert_eq!(headers(&kafka), [("content-type", MASSTRANSIT_JSON)]);

        let err = format
            .message(&event(&[], b"not json"), kafka::BINDING)
            .unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    /// Found by the format properties: the event's own `content-type` header went out beside the
    /// envelope's, a second `content-type` (Kafka, NATS, Redis) naming the wrong type.
    #[test]
    fn masstransit_transport_headers_are_the_envelopes_only() {
        let format = read(&[("OUTBOX_FORMAT", "masstransit")]).unwrap();
        let e = event(
            &[("content-type", "application/json"), ("tenant", "t1")],
            b"{}",
        );
        for binding in [kafka::BINDING, nats::BINDING, http::BINDING] {
            let message = format.message(&e, binding).unwrap();
            assert_eq!(message.headers.len(), 1, "{:?}", message.headers);
            assert_eq!(message.headers[0].1, MASSTRANSIT_JSON);
        }
        let rabbit = format.message(&e, rabbitmq::BINDING).unwrap();
        assert_eq!(headers(&rabbit), [(rabbitmq::KEY_HEADER, "42")]);
    }
}
