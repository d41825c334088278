//! Any event through the AMQP encoder: a message carrying the format's headers, body and content
//! type, or a refusal that names why (a name over AMQP's 255 bytes, or the format's reason).

use lapin::types::{AMQPValue, LongString, ShortString};
use proptest::prelude::*;

use super::encode::{BINDING, Message, fill};
use crate::outbox::arbitrary;
use crate::sink::properties::formats;

/// An exchange template, or none: fixed text and the placeholders, or any text.
fn template() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("{type}".to_string()),
        Just("{topic}.events".to_string()),
        arbitrary::text(),
    ])
}

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_an_amqp_message_or_refused_with_its_reason(
        event in arbitrary::event(),
        format in formats(),
        template in template(),
    ) {
        let exchange = template.as_deref().map(|t| fill(t, &event));
        let formatted = format.message(&event, BINDING);
        let too_long = event.topic.len() > 255
            || exchange.as_ref().is_some_and(|e| e.len() > 255)
            || formatted.as_ref().is_ok_and(|m| {
                m.headers.iter().any(|(n, _)| n.len() > 255)
                    || m.content_type.as_ref().is_some_and(|c| c.len() > 255)
            });
        match Message::build(&event, &format, template.as_deref()) {
            Ok(message) => {
                prop_assert!(!too_long);
                let formatted = formatted.expect("the format carried it");
                prop_assert_eq!(message.routing_key.as_str(), event.topic.as_str());
                prop_assert_eq!(message.exchange_name(), exchange.as_deref());
                prop_assert_eq!(message.body.as_ref(), formatted.body.as_ref());
                let properties = &message.properties;
                let id = event.message_id.to_string();
                prop_assert_eq!(
                    properties.message_id().as_ref().map(ShortString::as_str),
                    Some(id.as_str())
                );
                prop_assert_eq!(
                    properties.content_type().as_ref().map(ShortString::as_str),
                    formatted.content_type.as_deref()
                );
                // Every header of the format, each once, as it is.
                let table = properties.headers().clone().unwrap_or_default();
                prop_assert_eq!(table.inner().len(), formatted.headers.len());
                for (name, value) in &formatted.headers {
                    let expected = AMQPValue::LongString(LongString::from(value.as_bytes()));
                    prop_assert_eq!(table.inner().get(*name), Some(&expected), "{}", name);
                }
            }
            Err(reason) => match formatted {
                Ok(_) => {
                    prop_assert!(too_long, "{}", reason);
                    prop_assert!(reason.contains("AMQP allows at most 255"), "{}", reason);
                }
                Err(refused) => prop_assert!(too_long || reason == refused, "{}", reason),
            },
        }
    }
}
