//! # outbox-relay
//!
//! Publishes events that applications wrote into the PostgreSQL table `outbox.events` to a broker,
//! and marks them delivered once the broker acknowledged them.
//!
//! # Layout
//! - [`config`]: settings from flags, environment and an optional TOML file; validation.
//! - [`db`]: connecting to PostgreSQL (TLS through rustls), the connection pool, URL redaction.
//! - [`outbox`]: everything that touches the outbox table: migrations, the leader session
//!   (advisory lock, LISTEN, claim and mark), events and their validation, admin queries.
//! - [`order`]: the per-key order rule, one type that every stage asks.
//! - [`format`]: message formats (raw, CloudEvents, MassTransit), per protocol binding, for
//!   every sink.
//! - [`sink`]: the sinks, one module per kind behind the [`sink::Publisher`] trait.
//! - [`route`]: which sink an event's topic goes to.
//! - [`relay`]: the loop: elect a leader, claim a batch, publish, settle, repeat; reconnects.
//! - [`retry`]: exponential backoff with full jitter, for outages and for failed events.
//! - [`telemetry`]: metric names, the Prometheus recorder and the lag sampler.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`health`]: the readiness flags shared by the relay and the HTTP server.
//! - [`shutdown`]: the signal that tells every task to stop at its next safe point.
//! - [`commands`]: the command-line subcommands other than `run`.

pub mod commands;
pub mod config;
pub mod db;
pub mod format;
pub mod health;
pub mod http;
pub mod order;
pub mod outbox;
pub mod relay;
pub mod retry;
pub mod route;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
