//! An event as an AMQP message: exchange (a template filled in), routing key, properties and
//! body. Pure: no connection.

use std::borrow::Cow;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::format::{self, Binding, Format};
use crate::outbox::event::Event;

/// The header that carries the key (absent when the key is null), except in binary CloudEvents,
/// where `ce-subject` is the key.
pub const KEY_HEADER: &str = "outbox-key";

/// The RabbitMQ protocol binding (knative-extensions/eventing-rabbitmq): `ce-*` headers, the
/// `content_type` property (also for raw, chosen from the payload), the key in [`KEY_HEADER`].
pub const BINDING: Binding = Binding::dashed()
    .content_type_property()
    .key_header(KEY_HEADER)
    .raw_names_content_type();

/// The exchange a template names for `event`: `{topic}` and `{type}` filled in.
pub(super) fn fill(template: &str, event: &Event) -> String {
    template
        .replace("{topic}", &event.topic)
        .replace("{type}", format::event_type(event))
}

/// The AMQP side of an event: exchange, routing key, properties and body.
pub(super) struct Message<'a> {
    /// `None`: the configured exchange (no template).
    pub exchange: Option<ShortString>,
    pub routing_key: ShortString,
    pub properties: BasicProperties,
    pub body: Cow<'a, [u8]>,
}

impl<'a> Message<'a> {
    /// Fails for events AMQP cannot carry (names longer than 255 bytes) and events the format
    /// cannot carry. `template`: the exchange template to fill in, if there is one.
    pub fn build(
        event: &'a Event,
        format: &'a Format,
        template: Option<&str>,
    ) -> Result<Message<'a>, String> {
        let routing_key = ShortString::try_new(event.topic.as_str())
            .map_err(|_| too_long("topic (the routing key)", &event.topic))?;
        let exchange = match template {
            Some(template) => {
                let name = fill(template, event);
                Some(ShortString::try_new(name.as_str()).map_err(|_| too_long("exchange", &name))?)
            }
            None => None,
        };
        let message = format.message(event, BINDING)?;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            let name = ShortString::try_new(*name).map_err(|_| too_long("header name", name))?;
            headers.insert(
                name,
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
        let timestamp = u64::try_from(event.created_at.timestamp()).unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.message_id.to_string()))
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_app_id(ShortString::from("outbox-relay"))
            .with_headers(headers);
        if let Some(content_type) = &message.content_type {
            let content_type = ShortString::try_new(content_type.as_ref())
                .map_err(|_| too_long("content type", content_type))?;
            properties = properties.with_content_type(content_type);
        }
        Ok(Message {
            exchange,
            routing_key,
            properties,
            body: message.body,
        })
    }

    /// The exchange as a string, for checks and messages.
    pub fn exchange_name(&self) -> Option<&str> {
        self.exchange.as_ref().map(ShortString::as_str)
    }
}

fn too_long(what: &str, name: &str) -> String {
    format!(
        "{what} {name:?} is {} bytes; AMQP allows at most 255",
        name.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str) -> Event {
        Event {
            id: 7,
            topic: topic.into(),
            key: Some("42".into()),
            payload: b"{\"a\":1}".to_vec(),
            headers: vec![("type".into(), "Contracts:OrderCreated".into())],
            message_id: uuid::Uuid::nil(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            attempts: 0,
        }
    }

    #[test]
    fn a_message_carries_the_id_the_key_header_and_a_json_content_type() {
        let event = event("orders");
        let message = Message::build(&event, &Format::Raw, None).expect("builds");
        assert_eq!(message.exchange_name(), None);
        assert_eq!(message.routing_key.as_str(), "orders");
        assert_eq!(message.body.as_ref(), b"{\"a\":1}");
        let properties = &message.properties;
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(uuid::Uuid::nil().to_string().as_str())
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some(format::JSON)
        );
        let headers = properties.headers().as_ref().expect("headers");
        assert!(headers.contains_key(KEY_HEADER), "{headers:?}");
    }

    /// Found by the format properties: an event header named `outbox-key` replaced the key
    /// (with a key) or stood for one (without), in every format but binary CloudEvents.
    #[test]
    fn an_event_header_named_like_the_key_header_is_never_taken_for_the_key() {
        let masstransit = Format::read(
            &crate::settings::Settings::from_pairs(&[("OUTBOX_FORMAT", "masstransit")])
                .default_sink(),
        )
        .expect("masstransit");
        let structured = Format::CloudEvents {
            source: "/relay".into(),
            mode: format::Mode::Structured,
        };
        for format in [Format::Raw, structured, masstransit] {
            for key in [Some("42"), None] {
                let mut event = event("orders");
                event.key = key.map(str::to_string);
                event.headers.push((KEY_HEADER.into(), "forged".into()));
                let message = Message::build(&event, &format, None).expect("builds");
                let headers = message.properties.headers().clone().unwrap_or_default();
                let value = headers.inner().get(KEY_HEADER).map(|v| format!("{v:?}"));
                let expected = key.map(|k| format!("{:?}", AMQPValue::LongString(k.into())));
                assert_eq!(value, expected, "{format:?}, key {key:?}");
            }
        }
    }

    #[test]
    fn a_template_names_the_exchange_and_long_names_are_the_events_fault() {
        let event = event("orders");
        let message = Message::build(&event, &Format::Raw, Some("{type}.{topic}")).expect("builds");
        assert_eq!(
            message.exchange_name(),
            Some("Contracts:OrderCreated.orders")
        );
        let long = self::event(&"t".repeat(256));
        let err = Message::build(&long, &Format::Raw, None)
            .err()
            .expect("too long");
        assert!(err.contains("at most 255"), "{err}");
    }
}
