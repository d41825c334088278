//! An event as its webhook request: the URL for its topic, the format's headers and body, and the
//! Standard Webhooks headers. No I/O.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};

use super::settings::HttpConfig;
use super::signing::signature;
use crate::format::{self, Binding, Format};
use crate::outbox::event::Event;

/// The CloudEvents HTTP protocol binding: `ce-*` headers with percent-encoded values, the content
/// type in `Content-Type` (in raw too).
pub const BINDING: Binding = Binding::dashed()
    .content_type_header("Content-Type")
    .percent_encoded()
    .raw_names_content_type();

/// Event headers never copied into the request: the webhook headers this sink sets, what HTTP
/// itself manages (framing, hop-by-hop headers, which HTTP/2 forbids), and `content-type`, which
/// becomes the request's content type.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Why an event gives no request.
#[derive(Debug)]
pub(super) enum Unencodable {
    /// The event's fault: its topic, payload or headers cannot be sent.
    Event(String),
    /// A webhook header the sink made is not a valid value.
    WebhookHeader(InvalidHeaderValue),
}

/// The signed `POST` of `event`, sent at `timestamp` (Unix seconds).
pub(super) fn request(
    config: &HttpConfig,
    event: &Event,
    timestamp: u64,
) -> Result<reqwest::Request, Unencodable> {
    let url = config.url.for_topic(&event.topic).map_err(|e| {
        Unencodable::Event(format!(
            "WEBHOOK_URL with topic {:?} is not a valid URL: {e}",
            event.topic
        ))
    })?;
    let message = config
        .format
        .message(event, BINDING)
        .map_err(Unencodable::Event)?;
    let mut headers = request_headers(&config.format, &message).map_err(Unencodable::Event)?;
    let id = event.message_id.to_string();
    let webhook_header =
        |text: String| HeaderValue::from_str(&text).map_err(Unencodable::WebhookHeader);
    headers.insert("webhook-id", webhook_header(id.clone())?);
    headers.insert("webhook-timestamp", webhook_header(timestamp.to_string())?);
    if !config.keys.is_empty() {
        let signature = signature(&config.keys, &id, timestamp, &message.body);
        headers.insert("webhook-signature", webhook_header(signature)?);
    }
    // The header map moves into the request whole (a builder's `.headers()` re-inserts each).
    let mut request = reqwest::Request::new(reqwest::Method::POST, url);
    *request.headers_mut() = headers;
    *request.body_mut() = Some(message.body.into_owned().into());
    Ok(request)
}

/// The request's headers for a formatted event, without the webhook headers: the format's
/// headers (raw: the event's own) that HTTP can carry and that clash with nothing the sink or
/// HTTP sets, and `Content-Type`. `Err` is an event whose content type HTTP cannot carry in a
/// format that depends on it.
fn request_headers(format: &Format, message: &format::Message<'_>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(message.headers.len() + 4);
    // Raw: the event's last `content-type` header, if a valid value, as always.
    let mut raw_content_type = None;
    for (name, value) in &message.headers {
        if name.eq_ignore_ascii_case("content-type") {
            if format.is_raw() {
                raw_content_type = HeaderValue::from_str(value).ok();
            }
            continue;
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            continue;
        }
        // Names and values HTTP cannot carry are left out (see docs/sinks/http.md); attribute
        // values are percent-encoded by the format, so they always fit.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let content_type = match (&message.content_type, format.is_raw()) {
        // The format's own: the CloudEvents `datacontenttype` in binary mode, else the
        // document's type.
        (Some(content_type), false) => HeaderValue::from_str(content_type).map_err(|_| {
            format!(
                "the content type {content_type:?} (the event's content-type header) cannot be sent as an HTTP header value"
            )
        })?,
        _ => raw_content_type.unwrap_or(HeaderValue::from_static(format::JSON)),
    };
    headers.insert(reqwest::header::CONTENT_TYPE, content_type);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(headers: &[(&str, &str)], payload: &[u8]) -> Event {
        crate::outbox::event::test_event_with(Some("k 1"), headers, payload)
    }

    fn formatted(format: &Format, event: &Event) -> HeaderMap {
        let message = format.message(event, BINDING).expect("formats");
        request_headers(format, &message).expect("headers")
    }

    fn cloudevents(mode: crate::format::Mode) -> Format {
        Format::CloudEvents {
            source: "/relay".into(),
            mode,
        }
    }

    /// The naming the temporary `Binding::Http` gave, field for field.
    #[test]
    fn the_binding_names_headers_as_before() {
        assert_eq!(
            format!("{BINDING:?}"),
            r#"Binding { attributes: ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time"], content_type_header: Some("Content-Type"), prefix: "ce-", percent_encode: true, headers: true, key_header: None, raw_content_type: true }"#
        );
    }

    #[test]
    fn raw_headers_are_as_they_always_were() {
        let e = event(
            &[("tenant", "t1"), ("ce-id", "x"), ("webhook-id", "forged")],
            b"\xff",
        );
        let headers = formatted(&Format::Raw, &e);
        assert_eq!(headers["content-type"], "application/json", "not sniffed");
        assert_eq!(headers["tenant"], "t1");
        assert_eq!(headers["ce-id"], "x", "raw passes every header");
        assert!(headers.get("webhook-id").is_none());
        let text = event(&[("content-type", "text/plain")], b"hi");
        assert_eq!(formatted(&Format::Raw, &text)["content-type"], "text/plain");
    }

    #[test]
    fn cloudevents_binary_sets_the_bindings_headers_and_drops_forged_ones() {
        let e = event(
            &[
                ("type", "shop.note"),
                ("content-type", "text/plain"),
                ("tenant", "t1"),
                ("CE-Source", "forged"),
                ("Content-Length", "1"),
            ],
            b"hi",
        );
        let headers = formatted(&cloudevents(crate::format::Mode::Binary), &e);
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-id"], e.message_id.to_string().as_str());
        assert_eq!(headers["ce-source"], "/relay");
        assert_eq!(headers["ce-type"], "shop.note");
        assert_eq!(headers["ce-subject"], "k%201", "percent-encoded");
        assert!(headers.contains_key("ce-time"));
        assert_eq!(headers["content-type"], "text/plain", "datacontenttype");
        assert_eq!(headers["tenant"], "t1");
        assert_eq!(headers.get_all("ce-source").iter().count(), 1);
        assert!(headers.get("type").is_none() && headers.get("content-length").is_none());
        let bad = event(&[("content-type", "text/plain\nx")], b"hi");
        let binary = cloudevents(crate::format::Mode::Binary);
        let message = binary.message(&bad, BINDING).expect("formats");
        let err = request_headers(&binary, &message).expect_err("not an HTTP header value");
        assert!(err.contains("content type"), "{err}");
    }

    #[test]
    fn structured_and_masstransit_name_their_documents_content_type() {
        let e = event(&[("content-type", "text/plain"), ("tenant", "t1")], b"{}");
        let structured = formatted(&cloudevents(crate::format::Mode::Structured), &e);
        assert_eq!(structured["content-type"], format::CLOUDEVENTS_JSON);
        assert_eq!(structured["tenant"], "t1");
        assert!(structured.get("ce-id").is_none());
        let masstransit = Format::read(
            &crate::settings::Settings::from_pairs(&[("OUTBOX_FORMAT", "masstransit")])
                .default_sink(),
        )
        .expect("format");
        let headers = formatted(&masstransit, &e);
        assert_eq!(headers["content-type"], format::MASSTRANSIT_JSON);
        assert!(
            headers.get("tenant").is_none(),
            "the event's headers travel inside the envelope"
        );
    }

    #[test]
    fn a_request_is_signed_over_the_body_it_carries() {
        let config = crate::sink::http::settings::tests::read(&[
            ("OUTBOX_WEBHOOK_URL", "http://127.0.0.1:9/in/{topic}"),
            (
                "OUTBOX_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ])
        .expect("valid");
        let mut e = event(&[("tenant", "t1")], b"{}");
        e.topic = "orders/eu".into();
        let request = request(&config, &e, 1614265330).expect("request");
        assert_eq!(request.method(), reqwest::Method::POST);
        assert_eq!(request.url().path(), "/in/orders%2Feu");
        let headers = request.headers();
        let id = e.message_id.to_string();
        assert_eq!(headers["webhook-id"], id.as_str());
        assert_eq!(headers["webhook-timestamp"], "1614265330");
        assert_eq!(
            headers["webhook-signature"],
            signature(&config.keys, &id, 1614265330, b"{}").as_str()
        );
        assert_eq!(headers["tenant"], "t1");
        let body = request.body().and_then(reqwest::Body::as_bytes);
        assert_eq!(body, Some(&b"{}"[..]));
    }
}
