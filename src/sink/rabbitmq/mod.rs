//! RabbitMQ through lapin: publisher confirms on the channel, `mandatory` so that an unroutable
//! message comes back instead of vanishing, persistent messages, the event's message id.
//! RabbitMQ's `connection.blocked` (a memory or disk alarm) and `unblocked` go to
//! [`crate::health::SinkHealth`].
//!
//! Message formats ([`crate::format`]) use the RabbitMQ binding ([`BINDING`]): the content type
//! in the `content_type` property, attributes as headers; the key in the header [`KEY_HEADER`]
//! (binary CloudEvents: `ce-subject`).
//! `AMQP_EXCHANGE` may hold `{topic}` and `{type}` (MassTransit's exchange per message type); such
//! an exchange is checked once per connection before the first publish to it, so that a missing
//! one fails that event (attempts, then dead letter) instead of closing the channel.
//!
//! - `settings.rs`: `AMQP_URL` and `AMQP_EXCHANGE`, validated;
//! - `encode.rs`: an event as an AMQP message (pure);
//! - `classify.rs`: what RabbitMQ's refusals mean for an event;
//! - `exchanges.rs`: the check that a template's exchanges exist;
//! - `link.rs`: one open connection and its confirm-mode channel;
//! - `service.rs`: the connection, publishing a batch and collecting its confirms.

mod classify;
mod encode;
mod exchanges;
mod link;
#[cfg(test)]
mod properties;
mod service;
mod settings;

pub use encode::{BINDING, KEY_HEADER};
pub use service::RabbitMqSink;
pub use settings::DEFAULT_EXCHANGE;

use super::Kind;

pub const KIND: Kind = Kind {
    name: "rabbitmq",
    settings: &["AMQP_URL", "AMQP_EXCHANGE"],
    configure: |settings| Ok(Box::new(settings::RabbitMqConfig::read(settings)?)),
};
