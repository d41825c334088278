//! # outbox-relay
//!
//! Publishes events that applications wrote into the PostgreSQL table `outbox.events` to a broker,
//! and marks them delivered once the broker acknowledged them.
//!
//! # Layout
//! From the bottom up; a module uses only those above it in this list (no cycles).
//!
//! Leaves, knowing nothing of the relay:
//! - [`settings`]: the settings reader: one table of core settings from which the flags, the
//!   environment variables and the TOML file keys follow; a sink's view of its own settings.
//! - [`telemetry`]: metric names, label values and the Prometheus recorder.
//! - [`redact`]: secrets out of what is printed: URLs and DSNs the relay prints itself, and every
//!   secret of the configuration masked in each log line (the client libraries' own included).
//! - [`retry`], [`order`], [`route`], [`shutdown`]: backoff with jitter, the per-key order rule,
//!   which sink a topic goes to, the stop signal.
//!
//! The parts:
//! - [`health`]: what `/readyz` and `/healthz` report; [`ownership`]: the lanes the active relay
//!   owns and its claim floor, for the background jobs.
//! - [`db`]: connecting to PostgreSQL (TLS through rustls), the pool, PostgreSQL's errors in words.
//! - [`outbox`]: the outbox table: migrations, the relay's session (leader and lane locks,
//!   LISTEN, claim, record), events and their validation, admin queries, the pooler probe.
//! - [`adopt`]: adopting an application's own outbox table (Debezium's, MassTransit's): the
//!   capture trigger `migrate` installs, which copies its rows into `outbox.events`, and the
//!   evidence of a second deliverer (MassTransit's own delivery service) that `run` refuses.
//! - [`format`]: message formats (raw, CloudEvents, MassTransit); each sink declares its protocol
//!   binding, so no format knows a sink by name.
//! - [`sink`]: one folder per kind (settings, a pure encoder, the service that owns the client),
//!   a registry ([`sink::KINDS`]), and the rules every sink shares: [`sink::Fault`] for what an
//!   error means, [`sink::Verdicts`] for a key's events within one batch.
//! - [`jobs`]: background jobs beside the loop: the metrics sampler, the purge, the adoption guard.
//! - [`config`]: what the settings assemble into: sinks, routes, the validated relay config.
//! - [`relay`]: the loop as a pipeline (`relay/pipeline.rs`) of transitions (claim, gate, publish and
//!   prefetch, settle, record, idle), its decisions in `relay/plan.rs` without I/O; reconnects.
//! - [`otel`]: OpenTelemetry traces of the publishes (send spans, `traceparent`), off unless an
//!   OTLP endpoint is set.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`commands`]: the subcommands; [`commands::run`] is the composition root of `run`, which
//!   `main.rs` (arguments, logging, exit codes) calls.

pub mod adopt;
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
