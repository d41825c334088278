//! An event as a Kafka record: the topic (after the template), the event's key as the record
//! key, the format's headers plus `message-id`, and the body. Pure: no producer.

use std::borrow::Cow;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::format::{Binding, Format};
use crate::outbox::event::Event;

/// The Kafka protocol binding: `ce_*` headers, a `content-type` header.
pub const BINDING: Binding = Binding::underscored();

/// The header holding the event's message id, last so that it wins over an event header of the
/// same name (which is dropped).
pub const MESSAGE_ID_HEADER: &str = "message-id";

/// What is produced for one event.
pub(super) struct Record<'a> {
    pub topic: String,
    pub key: Option<&'a str>,
    /// Taken by [`Record::producer_record`]: the producer owns a record's headers.
    pub headers: Option<OwnedHeaders>,
    pub body: Cow<'a, [u8]>,
}

impl<'a> Record<'a> {
    /// `Err`: the format cannot carry the event, its own fault.
    pub fn new(
        event: &'a Event,
        format: &'a Format,
        topic_template: Option<&str>,
    ) -> Result<Record<'a>, String> {
        let message = format.message(event, BINDING)?;
        let message_id = event.message_id.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
        for (name, value) in &message.headers {
            if *name != MESSAGE_ID_HEADER {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_ref()),
                });
            }
        }
        headers = headers.insert(Header {
            key: MESSAGE_ID_HEADER,
            value: Some(&message_id),
        });
        Ok(Record {
            topic: topic_for(topic_template, &event.topic),
            key: event.key.as_deref(),
            headers: Some(headers),
            body: message.body,
        })
    }

    /// The record for the producer, borrowing this one and taking its headers.
    pub fn producer_record(&mut self) -> FutureRecord<'_, str, [u8]> {
        let mut record = FutureRecord::to(&self.topic).payload(self.body.as_ref());
        if let Some(headers) = self.headers.take() {
            record = record.headers(headers);
        }
        match self.key {
            Some(key) => record.key(key),
            None => record,
        }
    }
}

/// The Kafka topic of an event's topic: `KAFKA_TOPIC_TEMPLATE` with `{topic}` filled in.
fn topic_for(template: Option<&str>, topic: &str) -> String {
    match template {
        Some(template) => template.replace("{topic}", topic),
        None => topic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn event() -> Event {
        Event {
            id: 7,
            topic: "orders".into(),
            key: Some("42".into()),
            payload: b"{\"a\":1}".to_vec(),
            headers: vec![
                ("trace".into(), "abc".into()),
                ("message-id".into(), "forged".into()),
            ],
            message_id: uuid::Uuid::nil(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            attempts: 0,
        }
    }

    fn headers(record: &Record<'_>) -> Vec<(String, String)> {
        record
            .headers
            .as_ref()
            .expect("not taken")
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                (h.key.to_string(), value.into_owned())
            })
            .collect()
    }

    #[test]
    fn the_message_id_header_is_the_events_and_the_key_is_the_record_key() {
        let event = event();
        let record = Record::new(&event, &Format::Raw, None).expect("encodes");
        assert_eq!(record.topic, "orders");
        assert_eq!(record.key, Some("42"));
        assert_eq!(record.body.as_ref(), b"{\"a\":1}");
        assert_eq!(
            headers(&record),
            [
                ("trace".to_string(), "abc".to_string()),
                (MESSAGE_ID_HEADER.to_string(), uuid::Uuid::nil().to_string()),
            ]
        );
    }

    #[test]
    fn the_topic_template_names_the_kafka_topic() {
        let event = event();
        let record = Record::new(&event, &Format::Raw, Some("prod.{topic}")).expect("encodes");
        assert_eq!(record.topic, "prod.orders");
    }

    #[test]
    fn cloudevents_attributes_use_underscores() {
        let event = event();
        let format = Format::CloudEvents {
            source: "/relay".into(),
            mode: crate::format::Mode::Binary,
        };
        let record = Record::new(&event, &format, None).expect("encodes");
        let names: Vec<String> = headers(&record).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"ce_id".to_string()), "{names:?}");
        assert!(names.contains(&"content-type".to_string()), "{names:?}");
    }
}
