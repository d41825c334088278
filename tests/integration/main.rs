//! Integration tests against the real PostgreSQL, RabbitMQ, Redis, NATS and webhook receivers.
//! Every test has its own database, exchange and queue, stream or receiver, so they run in
//! parallel. The harness (`tests/harness`) is shared with the Kafka tests (`tests/kafka`), the
//! test of a RabbitMQ that blocks publishers (`tests/blocked`) and the bench.

mod adopt;
mod bullmq;
mod chaos;
mod claim;
mod cli;
mod failover;
mod formats;
mod guarantees;
#[path = "../harness/mod.rs"]
mod harness;
mod http;
mod lanes;
mod memory;
mod metrics;
mod nats;
mod otel;
mod pooler;
mod rabbitmq;
mod redis;
mod roles;
mod routing;
mod secrets;
mod shutdown;
mod stall;
mod stdout;
