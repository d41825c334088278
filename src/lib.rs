//! # outbox-relay
//!
//! Publishes events that applications wrote into the PostgreSQL table `outbox.events` to a broker,
//! and marks them delivered once the broker acknowledged them.
//!
//! # Layout
//! - [`settings`]: the settings reader: flags, environment, an optional TOML file (a leaf).
//! - [`config`]: what the settings assemble into: sinks, routes, the validated relay config.
//! - [`redact`]: secrets out of URLs and DSNs before they are printed.
//! - [`ownership`]: the lanes the active relay owns and its claim floor, for the jobs.
//! - [`jobs`]: background jobs beside the loop: the metrics sampler, the purge.
//! - [`db`]: connecting to PostgreSQL (TLS through rustls), the connection pool, its errors.
//! - [`outbox`]: everything that touches the outbox table: migrations, the leader session
//!   (advisory lock, LISTEN, claim and mark), events and their validation, admin queries.
//! - [`order`]: the per-key order rule, one type that every stage asks.
//! - [`format`]: message formats (raw, CloudEvents, MassTransit), per protocol binding, for
//!   every sink.
//! - [`sink`]: the sinks, one module per kind behind the [`sink::Publisher`] trait.
//! - [`route`]: which sink an event's topic goes to.
//! - [`relay`]: the loop: elect a leader, claim a batch, publish, settle, repeat; reconnects.
//! - [`retry`]: exponential backoff with full jitter, for outages and for failed events.
//! - [`telemetry`]: metric names, label values and the Prometheus recorder (a leaf).
//! - [`otel`]: OpenTelemetry traces of the publishes (send spans, `traceparent`), off unless an
//!   OTLP endpoint is set.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`health`]: the readiness flags shared by the relay and the HTTP server.
//! - [`shutdown`]: the signal that tells every task to stop at its next safe point.
//! - [`commands`]: the subcommands; `commands::run` is the composition root of `run`.

pub mod commands;
pub mod config;
pub mod db;
pub mod format;
pub mod health;
pub mod http;
pub mod jobs;
pub mod order;
pub mod otel;
pub mod outbox;
pub mod ownership;
pub mod redact;
pub mod relay;
pub mod retry;
pub mod route;
pub mod settings;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
