//! Webhooks: one HTTP `POST` per event, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`), through reqwest with rustls (ring).
//! A key's events go one request at a time (the relay sends waves, which hold at most one event
//! per key, so the sink has no per-key rule of its own); different keys go together, at most
//! `WEBHOOK_CONCURRENCY` requests in flight.
//!
//! 2xx is delivered; 408, 429, 5xx, a timeout or a connection that fails is an outage (the batch
//! fails, no attempt is used, `Retry-After` is honoured); any other status is an error about the
//! event, with the status and the start of the response body.
//!
//! Message formats follow the CloudEvents HTTP protocol binding (`ce-*` headers, percent-encoded,
//! and `Content-Type` in binary mode; an `application/cloudevents+json` body in structured mode);
//! the webhook headers are on every request and the signature covers the body actually sent.
//!
//! - `settings`: the validated settings (`WEBHOOK_*`), with a `Debug` without secrets;
//! - `url_template`: `WEBHOOK_URL` as a template, with the topic percent-encoded into it;
//! - `signing`: the secrets and the Standard Webhooks signature;
//! - `encode`: an event as its request (no I/O);
//! - `client`: the HTTP client and its TLS roots;
//! - `answer`: the receiver's answer, and what it or a failed request means (a `Fault`);
//! - `service`: the client's connection, and sending a batch.

mod answer;
mod client;
mod encode;
#[cfg(test)]
mod properties;
mod service;
mod settings;
mod signing;
mod url_template;

use super::Kind;

pub use encode::BINDING;
pub use service::HttpSink;
pub use settings::{DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_MS};

pub const KIND: Kind = Kind {
    name: "http",
    settings: &[
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_TIMEOUT_MS",
        "WEBHOOK_CONCURRENCY",
        "WEBHOOK_CA_FILE",
    ],
    configure: |settings| Ok(Box::new(settings::HttpConfig::read(settings)?)),
};
