//! Any event through the NATS encoder: a message carrying every header of the format and the
//! message id in `Nats-Msg-Id`, or a refusal that names why (the subject, a header NATS cannot
//! carry or reserves, or the format's reason). Nothing is left out silently.

use async_nats::header::NATS_MESSAGE_ID;
use proptest::prelude::*;

use super::encode::{BINDING, check_subject, message};
use crate::outbox::arbitrary;
use crate::sink::properties::formats;

/// The subject of the event's topic under a template, or any text.
fn subject(topic: &str) -> impl Strategy<Value = String> + use<> {
    let topic = topic.to_string();
    prop_oneof![
        Just(topic.clone()),
        Just(format!("outbox.{topic}")),
        arbitrary::text(),
    ]
}

/// Whether NATS can carry a header as the encoder sends it, and the relay leaves it to the event.
fn carried(name: &str, value: &str) -> bool {
    !name
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
        && !name.contains(|c: char| !c.is_ascii_graphic() || c == ':')
        && !value.contains(['\r', '\n'])
}

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_a_nats_message_or_refused_with_its_reason(
        (event, subject) in arbitrary::event().prop_flat_map(|e| {
            let subject = subject(&e.topic);
            (Just(e), subject)
        }),
        format in formats(),
    ) {
        let formatted = format.message(&event, BINDING);
        match message(&event, &subject, &format) {
            Ok(published) => {
                let published = published.outbound_message(subject.clone());
                prop_assert!(check_subject(&subject).is_ok());
                let formatted = formatted.expect("the format carried it");
                prop_assert_eq!(published.payload.as_ref(), formatted.body.as_ref());
                let headers = published.headers.expect("headers");
                for (name, value) in &formatted.headers {
                    prop_assert!(carried(name, value), "{:?}: {:?} went out", name, value);
                    let values: Vec<&str> = headers
                        .get_all(*name)
                        .map(|v| v.as_str())
                        .collect();
                    prop_assert!(values.contains(&value.as_ref()), "{:?} is carried", name);
                }
                prop_assert_eq!(
                    headers.get(NATS_MESSAGE_ID).map(|v| v.as_str().to_string()),
                    Some(event.message_id.to_string())
                );
            }
            Err(reason) => {
                let refused = check_subject(&subject).is_err()
                    || formatted.as_ref().is_err()
                    || formatted
                        .as_ref()
                        .is_ok_and(|m| m.headers.iter().any(|(n, v)| !carried(n, v)));
                prop_assert!(refused, "refused for nothing: {}", reason);
                prop_assert!(!reason.is_empty());
            }
        }
    }
}
