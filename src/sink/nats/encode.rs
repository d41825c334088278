//! An event as its NATS message, and the subjects a message can be published to: no I/O.

use std::str::FromStr;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use crate::format::{Binding, Format};
use crate::outbox::event::Event;

/// The NATS protocol binding: `ce-*` headers, a `content-type` header.
pub const BINDING: Binding = Binding::dashed();

/// The NATS message of an event in `format`: its headers, `Nats-Msg-Id` and the body (raw: the
/// event's headers and the payload verbatim).
pub(super) fn message(
    event: &Event,
    subject: &str,
    format: &Format,
) -> Result<PublishMessage, String> {
    check_subject(subject)
        .map_err(|problem| format!("topic {:?} gives subject {problem}", event.topic))?;
    let formatted = format.message(event, BINDING)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &formatted.headers {
        if name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
        {
            return Err(format!(
                "header {name:?}: headers starting with Nats- are JetStream directives, reserved for the relay (Nats-Msg-Id is the message id)"
            ));
        }
        let header_name = HeaderName::from_str(name).map_err(|_| {
            format!("header name {name:?} is not a valid NATS header name (no ':', spaces, control or non-ASCII characters)")
        })?;
        let header_value = HeaderValue::from_str(value.as_ref())
            .map_err(|_| format!("header {name:?}: a NATS header value cannot contain CR or LF"))?;
        headers.append(header_name, header_value);
    }
    headers.insert(NATS_MESSAGE_ID, event.message_id.to_string().as_str());
    Ok(PublishMessage::build()
        .payload(Bytes::copy_from_slice(&formatted.body))
        .headers(headers))
}

/// A subject a message can be published to: dot-separated non-empty tokens, no wildcards, no
/// white space, and not the system's API subjects.
pub(super) fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("\"\": a NATS subject cannot be empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{subject:?}: a NATS subject cannot contain white space or control characters"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "{subject:?}: a NATS subject cannot have empty tokens (leading, trailing or double dots)"
        ));
    }
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return Err(format!(
            "{subject:?}: a message cannot be published to a wildcard subject"
        ));
    }
    if subject.starts_with("$JS.") || subject.starts_with("$SYS.") || subject.starts_with("$JSC.") {
        return Err(format!(
            "{subject:?}: subjects starting with $JS., $JSC. or $SYS. are NATS's own API"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::nats::settings::tests::read;

    /// The naming the temporary `Binding::Nats` gave, field for field.
    #[test]
    fn the_binding_names_headers_as_before() {
        assert_eq!(
            format!("{BINDING:?}"),
            r#"Binding { attributes: ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time"], content_type_header: Some("content-type"), prefix: "ce-", percent_encode: false, headers: true, key_header: None, raw_content_type: false }"#
        );
    }

    #[test]
    fn subjects_and_headers_nats_cannot_carry_are_the_events_fault() {
        assert!(check_subject("orders.paid").is_ok());
        for bad in ["", "a b", "a..b", ".a", "a.", "a.*", "a.>", "$JS.API.INFO"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        let mut event = crate::outbox::event::test_event(1, Some("k"));
        event.headers = vec![("trace".into(), "abc".into())];
        assert!(message(&event, "t", &Format::Raw).is_ok());
        event.headers = vec![("Nats-Rollup".into(), "all".into())];
        assert!(
            message(&event, "t", &Format::Raw)
                .unwrap_err()
                .contains("reserved")
        );
        event.headers = vec![("a:b".into(), "x".into())];
        assert!(message(&event, "t", &Format::Raw).is_err());
        event.headers = vec![("a".into(), "x\r\ny".into())];
        assert!(message(&event, "t", &Format::Raw).is_err());
    }

    #[test]
    fn a_format_applies_and_an_event_it_cannot_carry_is_the_events_fault() {
        // The headers' naming (ce-*, content-type) is tested in `format`.
        let mut event = crate::outbox::event::test_event(1, Some("k"));
        event.payload = b"not json".to_vec();
        let cloudevents = Format::CloudEvents {
            source: "/relay".into(),
            mode: crate::format::Mode::Binary,
        };
        assert!(message(&event, "t", &cloudevents).is_ok());
        let masstransit = read(&[
            ("OUTBOX_NATS_URL", "nats://127.0.0.1:4222"),
            ("OUTBOX_FORMAT", "masstransit"),
        ])
        .expect("valid")
        .format;
        let err = message(&event, "t", &masstransit).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }
}
