//! The one harness of the tests (`tests/integration`, `tests/kafka`, `tests/blocked`) and the
//! bench (`benches/relay.rs`): a database per test or scenario ([`db`]), the relay as a real
//! child process and its metrics ([`relay`], [`metrics`]), a fault-injecting TCP proxy, a
//! PgBouncer of its own, and per broker a consumer behind one trait, [`Consumer`]: what arrived,
//! with message id, key, headers and payload. On top of these, [`conformance`]: the scenarios
//! every sink must pass, written once. Each crate includes it with
//! `#[path = ".../harness/mod.rs"] mod harness;` and uses the part it needs.

#![allow(dead_code)]

mod adoption;
mod bullmq;
mod checks;
pub mod conformance;
mod consumer;
mod db;
pub mod faults;
mod formats;
mod kafka;
mod metrics;
mod nats;
mod otlp;
mod pgbouncer;
mod procfs;
mod proxy;
mod rabbitmq;
mod redis;
mod relay;
pub mod sdk;
mod stdout;
mod webhook;

// Every crate uses part of it.
#[allow(unused_imports)]
pub use self::{
    adoption::*, bullmq::*, checks::*, consumer::*, db::*, formats::*, kafka::*, metrics::*,
    nats::*, otlp::*, pgbouncer::*, procfs::*, proxy::*, rabbitmq::*, redis::*, relay::*, sdk::*,
    stdout::*, webhook::*,
};

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
