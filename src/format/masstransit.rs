//! MassTransit's JSON envelope (`application/vnd.masstransit+json`).

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::binding::Binding;
use super::{
    CONTENT_TYPE_HEADER, CONVERSATION_ID_HEADER, CORRELATION_ID_HEADER, MASSTRANSIT_JSON,
    MASSTRANSIT_SOURCE_ADDRESS, Message, TYPE_HEADER, event_type, header, json_payload, key_header,
    time,
};
use crate::outbox::event::Event;

/// MassTransit's JSON envelope (`MessageEnvelope`, camelCase as its System.Text.Json serializer
/// writes it). Fields it has that the relay cannot know (requestId, initiatorId, the addresses
/// of destination, response and fault, expirationTime) are left out, as MassTransit does when
/// they are not set.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    message_id: &'a Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    source_address: &'static str,
    message_type: [String; 1],
    message: &'a RawValue,
    sent_time: String,
    headers: Headers<'a>,
    host: &'a RawValue,
}

/// The event's headers as a JSON object, without those the envelope has fields for.
struct Headers<'a> {
    event: &'a Event,
    skip: [Option<&'static str>; 4],
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &self.event.headers {
            if !self.skip.contains(&Some(name.as_str())) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// A header that is a UUID, as MassTransit's `Guid` fields need.
fn uuid_header<'a>(event: &'a Event, name: &'static str) -> Option<(&'a str, &'static str)> {
    header(event, name)
        .filter(|v| Uuid::parse_str(v).is_ok())
        .map(|v| (v, name))
}

pub(super) fn masstransit<'a>(
    event: &'a Event,
    host: &'a RawValue,
    binding: &Binding,
) -> Result<Message<'a>, String> {
    let message = json_payload(event).ok_or_else(|| {
        "format masstransit: the payload is not JSON, and MassTransit's envelope carries the \
         message as JSON; write a JSON payload or use another format for this topic"
            .to_string()
    })?;
    let correlation = uuid_header(event, CORRELATION_ID_HEADER);
    let conversation = uuid_header(event, CONVERSATION_ID_HEADER);
    let envelope = Envelope {
        message_id: &event.message_id,
        correlation_id: correlation.map(|(v, _)| v),
        conversation_id: conversation.map(|(v, _)| v),
        source_address: MASSTRANSIT_SOURCE_ADDRESS,
        message_type: [format!("urn:message:{}", event_type(event))],
        message,
        sent_time: time(event),
        headers: Headers {
            event,
            skip: [
                Some(TYPE_HEADER),
                Some(CONTENT_TYPE_HEADER),
                correlation.map(|(_, n)| n),
                conversation.map(|(_, n)| n),
            ],
        },
        host,
    };
    let body = serde_json::to_vec(&envelope)
        .map_err(|e| format!("cannot encode the MassTransit envelope: {e}"))?;
    // The headers travel inside the envelope, as MassTransit's serializer puts them: the
    // transport carries only the envelope's content type and the key, none of the event's
    // headers (an event's own `content-type` would contradict the envelope's).
    let mut headers = Vec::with_capacity(2);
    if binding.headers {
        headers.extend(
            binding
                .content_type_header
                .map(|name| (name, Cow::Borrowed(MASSTRANSIT_JSON))),
        );
        headers.extend(key_header(event, binding));
    }
    Ok(Message {
        content_type: Some(Cow::Borrowed(MASSTRANSIT_JSON)),
        headers,
        body: Cow::Owned(body),
    })
}

/// MassTransit's `HostInfo` for the relay's process.
pub(super) fn host_info() -> Box<RawValue> {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host = serde_json::json!({
        "machineName": machine,
        "processName": "outbox-relay",
        "processId": std::process::id(),
        "assembly": "outbox-relay",
        "assemblyVersion": env!("CARGO_PKG_VERSION"),
        "frameworkVersion": "Rust",
        "massTransitVersion": null,
        "operatingSystemVersion": std::env::consts::OS,
    });
    // A JSON value always serializes; the fallback (`null`) only satisfies the type.
    serde_json::value::to_raw_value(&host).unwrap_or_default()
}
