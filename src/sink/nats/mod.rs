//! NATS JetStream through async-nats: each event is published to JetStream with the header
//! `Nats-Msg-Id` = its message id (the stream drops a copy inside its duplicate window) and is
//! delivered once the stream's publish acknowledgement arrived. A batch (a wave, see
//! [`Ordering::OneVerdictPerKey`](crate::sink::Ordering::OneVerdictPerKey)) is sent whole, then
//! its acknowledgements are awaited (later, for a batch that is one wave: the next batch, of
//! other keys, may go out meanwhile). A wave holds at most one event per key, so the sink has no
//! per-key rule of its own.
//!
//! A publish that no stream captures comes back as "no responders", and so does every publish
//! while JetStream is disabled or down. On "no responders" the sink asks the JetStream API: no
//! answer is an outage; an answer saying no stream captures the subject is an error about the
//! event; a stream that captures it but did not answer is an outage.
//!
//! - `settings`: the validated settings (`NATS_*`), with a `Debug` without credentials;
//! - `encode`: an event as its NATS message, and which subjects can be published to (no I/O);
//! - `classify`: what JetStream's errors mean ([`crate::sink::Fault`]);
//! - `service`: the connection, and publishing a batch.

mod classify;
mod encode;
#[cfg(test)]
mod properties;
mod service;
mod settings;

use super::Kind;

pub use encode::BINDING;
pub use service::NatsSink;
pub use settings::DEFAULT_SUBJECT_TEMPLATE;

pub const KIND: Kind = Kind {
    name: "nats",
    settings: &["NATS_URL", "NATS_CREDS", "NATS_SUBJECT_TEMPLATE"],
    configure: |settings| Ok(Box::new(settings::NatsConfig::read(settings)?)),
};
