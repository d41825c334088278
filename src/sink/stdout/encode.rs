//! An event as one line of standard output: the raw format's JSON line, or the formatted message
//! written compactly. Pure: appends to a buffer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::format::{Binding, Format};
use crate::outbox::event::Event;

/// No headers at all: CloudEvents always go structured.
pub const BINDING: Binding = Binding::dashed().without_headers();

/// The raw format's line.
#[derive(Serialize)]
struct Line<'a> {
    id: i64,
    message_id: String,
    topic: &'a str,
    key: Option<&'a str>,
    /// The payload as text when it is UTF-8 (JSON payloads stay readable)...
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// ...and as base64 otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    headers: serde_json::Map<String, serde_json::Value>,
    created_at: String,
}

/// Appends the raw format's JSON line for `event`, without the newline.
pub(super) fn raw_line(event: &Event, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let text = std::str::from_utf8(&event.payload).ok();
    let line = Line {
        id: event.id,
        message_id: event.message_id.to_string(),
        topic: &event.topic,
        key: event.key.as_deref(),
        payload: text,
        payload_base64: text.is_none().then(|| BASE64.encode(&event.payload)),
        headers: event
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
        created_at: event.created_at.to_rfc3339(),
    };
    serde_json::to_writer(out, &line)
}

/// Appends one formatted message as a line, without the newline: a document that spans lines (a
/// pretty-printed JSON payload inside it) has its line breaks written as spaces. In JSON a line
/// break is white space between tokens (inside a string it is escaped), so the document stays
/// exactly as written, numbers and all (re-encoding it would round numbers beyond a double's
/// precision). `Err`: the event's fault.
pub(super) fn formatted_line(
    format: &Format,
    event: &Event,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let message = format.message(event, BINDING)?;
    out.extend(
        message
            .body
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Mode;

    fn event(payload: &[u8]) -> Event {
        Event {
            id: 7,
            topic: "orders".into(),
            key: Some("42".into()),
            payload: payload.to_vec(),
            headers: vec![("trace".into(), "abc".into())],
            message_id: uuid::Uuid::nil(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            attempts: 0,
        }
    }

    fn raw(event: &Event) -> serde_json::Value {
        let mut out = Vec::new();
        raw_line(event, &mut out).expect("encodes");
        serde_json::from_slice(&out).expect("one JSON document")
    }

    #[test]
    fn raw_lines_carry_text_as_text_and_bytes_as_base64() {
        let line = raw(&event(b"{\"a\":1}"));
        assert_eq!(line["id"], 7);
        assert_eq!(line["key"], "42");
        assert_eq!(line["payload"], "{\"a\":1}");
        assert_eq!(line["headers"], serde_json::json!({"trace": "abc"}));
        assert!(line.get("payload_base64").is_none());
        let bytes = raw(&event(&[0xff, 0x00]));
        assert_eq!(bytes["payload_base64"], "/wA=");
        assert!(bytes.get("payload").is_none());
    }

    #[test]
    fn a_formatted_message_is_one_line_and_structured() {
        let format = Format::CloudEvents {
            source: "/relay".into(),
            mode: Mode::Binary,
        };
        let mut out = Vec::new();
        formatted_line(&format, &event(b"{\n  \"a\": 1\n}"), &mut out).expect("formats");
        assert!(!out.contains(&b'\n'));
        let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(doc["data"], serde_json::json!({"a": 1}));
        let masstransit = Format::read(
            &crate::settings::Settings::from_pairs(&[("OUTBOX_FORMAT", "masstransit")])
                .default_sink(),
        )
        .expect("valid");
        let err = formatted_line(&masstransit, &event(b"not json"), &mut Vec::new()).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    /// Found by the stdout properties: a pretty-printed payload was re-encoded to fit one line,
    /// which rounded numbers beyond a double (and refused `1e400`, valid JSON).
    #[test]
    fn a_document_on_several_lines_keeps_its_numbers_as_written() {
        let format = Format::CloudEvents {
            source: "/relay".into(),
            mode: Mode::Structured,
        };
        let payload = b"{\n  \"big\": 18446744073709551616,\n  \"f\": 1.00000000000000001,\n  \"e\": 1e400\n}";
        let mut out = Vec::new();
        formatted_line(&format, &event(payload), &mut out).expect("formats");
        assert!(!out.contains(&b'\n'));
        let line = String::from_utf8(out).expect("UTF-8");
        for number in ["18446744073709551616", "1.00000000000000001", "1e400"] {
            assert!(line.contains(number), "{number} in {line}");
        }
    }
}
