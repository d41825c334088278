//! One JSON line per event on standard output, for demos and debugging. Logs go to stderr.
//! With a message format other than raw, each line is the formatted message: a structured-mode
//! CloudEvent (`application/cloudevents+json`) or a MassTransit envelope.
//!
//! - `settings.rs`: the format, the only setting;
//! - `encode.rs`: an event as one line (pure);
//! - `service.rs`: buffers a batch's lines and writes them to standard output.

mod encode;
#[cfg(test)]
mod properties;
mod service;
mod settings;

pub use encode::BINDING;
pub use service::StdoutSink;

use super::Kind;

pub const KIND: Kind = Kind {
    name: "stdout",
    settings: &[],
    configure: |settings| Ok(Box::new(settings::StdoutConfig::read(settings)?)),
};
