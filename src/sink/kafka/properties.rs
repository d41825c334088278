//! Any event through the Kafka encoder: a record carrying the format's message, the event's key
//! as the record key and its message id as the last `message-id` header, or the format's refusal.

use proptest::prelude::*;
use rdkafka::message::Headers;

use super::encode::{BINDING, MESSAGE_ID_HEADER, Record};
use crate::outbox::arbitrary;
use crate::sink::properties::formats;

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_a_record_or_the_formats_refusal(
        event in arbitrary::event(),
        format in formats(),
        template in prop::option::of(arbitrary::text()),
    ) {
        let message = format.message(&event, BINDING);
        match (Record::new(&event, &format, template.as_deref()), message) {
            (Ok(record), Ok(message)) => {
                let topic = match &template {
                    Some(template) => template.replace("{topic}", &event.topic),
                    None => event.topic.clone(),
                };
                prop_assert_eq!(&record.topic, &topic);
                prop_assert_eq!(record.key, event.key.as_deref());
                prop_assert_eq!(record.body.as_ref(), message.body.as_ref());
                let headers: Vec<(String, Vec<u8>)> = record
                    .headers
                    .as_ref()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                // The event's own `message-id` header gives way to the relay's (docs/sinks/kafka.md).
                // rdkafka reads names back up to a NUL, which PostgreSQL's jsonb never holds.
                let mut expected: Vec<(String, Vec<u8>)> = message
                    .headers
                    .iter()
                    .filter(|(n, _)| *n != MESSAGE_ID_HEADER)
                    .map(|(n, v)| (n.split('\0').next().unwrap_or_default().to_string(), v.as_bytes().to_vec()))
                    .collect();
                expected.push((MESSAGE_ID_HEADER.into(), event.message_id.to_string().into_bytes()));
                prop_assert_eq!(headers, expected);
            }
            (Err(reason), Err(refused)) => prop_assert_eq!(reason, refused),
            (record, message) => prop_assert!(
                false,
                "the record {:?} and the format {:?} disagree",
                record.err(),
                message.err()
            ),
        }
    }
}
