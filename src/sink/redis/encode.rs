//! An event as its stream entry, and the dedup key that remembers it: no I/O.

use std::borrow::Cow;

use crate::format::{Binding, Format, Message};
use crate::outbox::event::Event;

/// Redis has no CloudEvents binding: binary mode's fields are named like the Kafka binding's
/// headers (`ce_*`, `content-type`).
pub const BINDING: Binding = Binding::underscored();

/// Where the remembered message ids live: `outbox-relay:dedup:{<hash tag>}:<message id>`.
pub(super) const DEDUP_PREFIX: &str = "outbox-relay:dedup:";

/// The dedup key of a message id for `stream`: it carries the stream key's hash tag (the part
/// Redis Cluster hashes), so that the script's two keys always hash to the same slot.
pub(super) fn dedup_key(stream: &str, message_id: &str) -> String {
    format!("{DEDUP_PREFIX}{{{}}}:{message_id}", hash_tag(stream))
}

/// What Redis Cluster hashes of `key`: the text inside its first `{...}` when not empty, else
/// the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// An event as its stream entry carries it in the sink's format (the contract's `message_id`,
/// `topic` and `key` come from the event itself).
#[derive(Debug)]
pub(super) struct Entry<'a> {
    /// The format's fields: binary CloudEvents' attributes and `content-type`, or the
    /// document's `content-type`; none in raw.
    pub(super) fields: Vec<(&'a str, Cow<'a, str>)>,
    /// The `payload` field: the payload itself, or the document that wraps it.
    pub(super) payload: Cow<'a, [u8]>,
    /// The `headers` field: the event's headers the format passes on, as a JSON object.
    pub(super) headers: String,
}

impl<'a> Entry<'a> {
    /// `Err` is an event the format cannot carry (the event's fault).
    pub(super) fn new(format: &'a Format, event: &'a Event) -> Result<Entry<'a>, String> {
        let Message { headers, body, .. } = format.message(event, BINDING)?;
        // The format module names its own headers as the Kafka binding does and passes on no
        // event header that could be taken for one of them.
        let (fields, passed): (Vec<_>, Vec<_>) = headers
            .into_iter()
            .partition(|(name, _)| !format.is_raw() && is_format_field(name));
        let headers: serde_json::Map<String, serde_json::Value> = passed
            .into_iter()
            .map(|(name, value)| (name.to_string(), serde_json::Value::String(value.into())))
            .collect();
        Ok(Entry {
            fields,
            payload: body,
            headers: serde_json::Value::Object(headers).to_string(),
        })
    }

    /// The bytes the entry adds to a script call, roughly.
    pub(super) fn size(&self, event: &Event) -> usize {
        self.payload.len()
            + self.headers.len()
            + event.topic.len()
            + event.key.as_ref().map_or(0, String::len)
            + self
                .fields
                .iter()
                .map(|(n, v)| n.len() + v.len() + 6)
                .sum::<usize>()
            + 64
    }
}

/// A field of the format's: a Kafka binding attribute header (`ce_*`) or `content-type`.
fn is_format_field(name: &str) -> bool {
    name == crate::format::CONTENT_TYPE_HEADER || name.starts_with("ce_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::redis::settings::tests::read;

    #[test]
    fn the_dedup_key_hashes_to_the_stream_keys_slot() {
        assert_eq!(hash_tag("orders"), "orders");
        assert_eq!(hash_tag("events:{orders}:paid"), "orders");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        assert_eq!(hash_tag("{{orders}}"), "{orders");
        assert_eq!(dedup_key("orders", "m1"), "outbox-relay:dedup:{orders}:m1");
        assert_eq!(
            dedup_key("events:{orders}:paid", "m1"),
            "outbox-relay:dedup:{orders}:m1"
        );
        for stream in ["orders", "events:{orders}:paid", "{{orders}}", "x{y"] {
            assert_eq!(
                hash_tag(&dedup_key(stream, "m1")),
                hash_tag(stream),
                "{stream}"
            );
        }
    }

    fn format(pairs: &[(&str, &str)]) -> Format {
        let mut all = vec![("OUTBOX_REDIS_URL", "redis://127.0.0.1")];
        all.extend_from_slice(pairs);
        read(&all).expect("valid").format
    }

    fn event(headers: &[(&str, &str)], payload: &[u8]) -> Event {
        crate::outbox::event::test_event_with(Some("k"), headers, payload)
    }

    fn field_names<'a>(entry: &'a Entry<'a>) -> Vec<&'a str> {
        entry.fields.iter().map(|(n, _)| *n).collect()
    }

    /// The naming the temporary `Binding::Redis` gave, field for field.
    #[test]
    fn the_binding_names_fields_as_before() {
        assert_eq!(
            format!("{BINDING:?}"),
            r#"Binding { attributes: ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time"], content_type_header: Some("content-type"), prefix: "ce_", percent_encode: false, headers: true, key_header: None, raw_content_type: false }"#
        );
    }

    #[test]
    fn raw_entries_keep_every_header_and_add_no_field() {
        let e = event(&[("content-type", "text/plain"), ("ce_id", "x")], b"hi");
        let raw = format(&[]);
        let entry = Entry::new(&raw, &e).expect("raw");
        assert!(entry.fields.is_empty());
        assert_eq!(entry.payload.as_ref(), b"hi");
        assert!(matches!(entry.payload, Cow::Borrowed(_)), "no copy");
        assert_eq!(
            entry.headers,
            r#"{"ce_id":"x","content-type":"text/plain"}"#
        );
    }

    #[test]
    fn cloudevents_fields_are_named_like_kafkas_headers() {
        let e = event(
            &[
                ("type", "shop.note"),
                ("content-type", "text/plain"),
                ("tenant", "t1"),
                ("ce_source", "forged"),
            ],
            b"hi",
        );
        let binary = format(&[("OUTBOX_FORMAT", "cloudevents")]);
        let entry = Entry::new(&binary, &e).expect("binary");
        assert_eq!(
            field_names(&entry),
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "content-type"
            ]
        );
        assert!(
            entry
                .fields
                .contains(&("ce_source", "/outbox-relay".into()))
        );
        assert!(
            entry
                .fields
                .contains(&("content-type", "text/plain".into()))
        );
        assert_eq!(entry.payload.as_ref(), b"hi");
        assert_eq!(entry.headers, r#"{"tenant":"t1"}"#, "forged ce_ left out");

        let structured = format(&[
            ("OUTBOX_FORMAT", "cloudevents"),
            ("OUTBOX_CLOUDEVENTS_MODE", "structured"),
        ]);
        let entry = Entry::new(&structured, &e).expect("structured");
        assert_eq!(
            entry.fields,
            [("content-type", crate::format::CLOUDEVENTS_JSON.into())]
        );
        let doc: serde_json::Value = serde_json::from_slice(&entry.payload).expect("JSON");
        assert_eq!(doc["data"], "hi");
        assert_eq!(entry.headers, r#"{"tenant":"t1"}"#);
    }

    #[test]
    fn masstransit_entries_hold_the_envelope_and_refuse_a_payload_that_is_not_json() {
        let masstransit = format(&[("OUTBOX_FORMAT", "masstransit")]);
        let e = event(&[("tenant", "t1")], b"{\"n\":1}");
        let entry = Entry::new(&masstransit, &e).expect("JSON payload");
        assert_eq!(
            entry.fields,
            [("content-type", crate::format::MASSTRANSIT_JSON.into())]
        );
        let envelope: serde_json::Value = serde_json::from_slice(&entry.payload).expect("JSON");
        assert_eq!(envelope["message"], serde_json::json!({"n": 1}));
        assert_eq!(envelope["headers"], serde_json::json!({"tenant": "t1"}));
        assert_eq!(
            entry.headers, "{}",
            "the headers travel inside the envelope"
        );
        let err = Entry::new(&masstransit, &event(&[], b"not json")).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }
}
