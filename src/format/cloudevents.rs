//! CloudEvents 1.0: binary content mode (attributes in headers named as the binding says) and
//! structured mode (the JSON event format as the body).

use std::borrow::Cow;

use serde_json::value::RawValue;
use uuid::Uuid;

use super::binding::Binding;
use super::{
    CLOUDEVENTS_JSON, CONTENT_TYPE_HEADER, Message, TYPE_HEADER, data_content_type, event_type,
    is_json_media_type, is_text_media_type, json_payload, passed_on, time, wrapped,
};
use crate::outbox::event::Event;

pub(super) fn binary<'a>(event: &'a Event, source: &'a str, binding: &Binding) -> Message<'a> {
    let encode = |value: Cow<'a, str>| -> Cow<'a, str> {
        if binding.percent_encode {
            percent_encode(value)
        } else {
            value
        }
    };
    let [specversion, id, source_name, type_name, subject, time_name] = binding.attributes;
    let mut headers = Vec::with_capacity(8 + event.headers.len());
    headers.push((specversion, Cow::Borrowed("1.0")));
    headers.push((id, Cow::Owned(event.message_id.to_string())));
    headers.push((source_name, encode(Cow::Borrowed(source))));
    headers.push((type_name, encode(Cow::Borrowed(event_type(event)))));
    if let Some(key) = &event.key {
        headers.push((subject, encode(Cow::Borrowed(key.as_str()))));
    }
    headers.push((time_name, encode(Cow::Owned(time(event)))));
    let content_type = data_content_type(event);
    if let Some(name) = binding.content_type_header {
        headers.push((name, Cow::Borrowed(content_type)));
    }
    headers.extend(
        passed_on(event, binding, &[TYPE_HEADER, CONTENT_TYPE_HEADER])
            .map(|(n, v)| (n, Cow::Borrowed(v))),
    );
    Message {
        content_type: Some(Cow::Borrowed(content_type)),
        headers,
        body: Cow::Borrowed(&event.payload),
    }
}

/// The JSON event format: attributes and data in one document.
#[derive(serde::Serialize)]
struct StructuredEvent<'a> {
    specversion: &'static str,
    id: &'a Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    time: String,
    datacontenttype: &'a str,
    /// JSON data as it is, text as a string...
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
    /// ...anything else (or JSON that does not parse) as base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

/// The `data` member of a structured CloudEvent.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

pub(super) fn structured<'a>(
    event: &'a Event,
    source: &'a str,
    binding: &Binding,
) -> Result<Message<'a>, String> {
    use base64::Engine;
    let datacontenttype = data_content_type(event);
    let data = if is_json_media_type(datacontenttype) {
        json_payload(event).map(Data::Json)
    } else if is_text_media_type(datacontenttype) {
        std::str::from_utf8(&event.payload).ok().map(Data::Text)
    } else {
        None
    };
    let document = StructuredEvent {
        specversion: "1.0",
        id: &event.message_id,
        source,
        kind: event_type(event),
        subject: event.key.as_deref(),
        time: time(event),
        datacontenttype,
        data_base64: data
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&event.payload)),
        data,
    };
    let body = serde_json::to_vec(&document)
        .map_err(|e| format!("cannot encode the event as a CloudEvent: {e}"))?;
    Ok(wrapped(
        event,
        binding,
        CLOUDEVENTS_JSON,
        body,
        &[TYPE_HEADER, CONTENT_TYPE_HEADER],
    ))
}

/// The HTTP binding's percent-encoding of header values: space, `"`, `%` and anything outside
/// printable ASCII, as UTF-8 bytes.
fn percent_encode(value: Cow<'_, str>) -> Cow<'_, str> {
    let needs = |b: u8| !(0x21..=0x7E).contains(&b) || b == b'"' || b == b'%';
    if !value.bytes().any(needs) {
        return value;
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if needs(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}
