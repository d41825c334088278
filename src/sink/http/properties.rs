//! Any event through the webhook encoder: a signed request carrying the format's body and every
//! header HTTP can carry (the rest is left out as docs/sinks/http.md says), or a refusal that
//! names why (the URL for its topic, its content type, or the format's reason).

use proptest::prelude::*;
use reqwest::header::{HeaderName, HeaderValue};

use super::encode::{BINDING, Unencodable, request};
use super::settings::HttpConfig;
use crate::format;
use crate::outbox::arbitrary;
use crate::sink::properties::formats;

/// The names docs/sinks/http.md says are never copied from the event.
const RESERVED: &[&str] = &[
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

fn config() -> impl Strategy<Value = HttpConfig> {
    let url = prop::sample::select(vec![
        "http://127.0.0.1:9/in/{topic}",
        "https://{topic}.example.com/hooks",
        "http://127.0.0.1:9/in?topic={topic}#{topic}",
        "http://127.0.0.1:9/fixed",
    ]);
    (url, any::<bool>(), formats()).prop_map(|(url, signed, format)| {
        let secret = (
            "OUTBOX_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let mut pairs = vec![("OUTBOX_WEBHOOK_URL", url)];
        pairs.extend(signed.then_some(secret));
        let mut config = super::settings::tests::read(&pairs).expect("valid");
        config.format = format;
        config
    })
}

fn carried(name: &str, value: &str) -> bool {
    !RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r))
        && HeaderName::from_bytes(name.as_bytes()).is_ok()
        && HeaderValue::from_str(value).is_ok()
}

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_a_signed_request_or_refused_with_its_reason(
        event in arbitrary::event(),
        config in config(),
        timestamp in any::<u64>(),
    ) {
        let formatted = config.format.message(&event, BINDING);
        let url = config.url.for_topic(&event.topic);
        match request(&config, &event, timestamp) {
            Ok(request) => {
                prop_assert!(url.is_ok());
                let formatted = formatted.expect("the format carried it");
                prop_assert_eq!(
                    request.body().and_then(reqwest::Body::as_bytes),
                    Some(formatted.body.as_ref())
                );
                let headers = request.headers();
                let id = event.message_id.to_string();
                prop_assert_eq!(headers.get("webhook-id").map(|v| v.as_bytes()), Some(id.as_bytes()));
                let ts = timestamp.to_string();
                prop_assert_eq!(headers.get("webhook-timestamp").map(|v| v.as_bytes()), Some(ts.as_bytes()));
                prop_assert_eq!(headers.contains_key("webhook-signature"), !config.keys.is_empty());
                let mut count = 3 + usize::from(!config.keys.is_empty());
                for (name, value) in &formatted.headers {
                    if carried(name, value) {
                        let values: Vec<&[u8]> = headers.get_all(*name).iter().map(HeaderValue::as_bytes).collect();
                        prop_assert!(values.contains(&value.as_bytes()), "{:?} is carried", name);
                        count += 1;
                    }
                }
                prop_assert_eq!(headers.len(), count, "nothing else: {:?}", headers);
                let content_type = headers.get("content-type").map(HeaderValue::as_bytes);
                if !config.format.is_raw() {
                    let expected = formatted.content_type.as_deref().unwrap_or_default();
                    prop_assert_eq!(content_type, Some(expected.as_bytes()));
                } else {
                    let last = formatted
                        .headers
                        .iter()
                        .rev()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                        .and_then(|(_, v)| HeaderValue::from_str(v).ok());
                    let expected = last.unwrap_or(HeaderValue::from_static(format::JSON));
                    prop_assert_eq!(content_type, Some(expected.as_bytes()));
                }
            }
            Err(Unencodable::Event(reason)) => {
                let content_type_refused = formatted.as_ref().is_ok_and(|m| {
                    !config.format.is_raw()
                        && m.content_type.as_deref().is_some_and(|c| HeaderValue::from_str(c).is_err())
                });
                prop_assert!(
                    url.is_err() || formatted.is_err() || content_type_refused,
                    "refused for nothing: {}", reason
                );
                prop_assert!(!reason.is_empty());
            }
            Err(Unencodable::WebhookHeader(e)) => prop_assert!(false, "a webhook header: {}", e),
        }
    }
}
