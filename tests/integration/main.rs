//! Integration tests against the real PostgreSQL and RabbitMQ. Every test has its own database,
//! exchange and queue, so they run in parallel. The Kafka tests are a target of their own
//! (`tests/kafka`, which shares `harness` and `faults`), and so is the test of a RabbitMQ that blocks
//! publishers (`tests/blocked`).

mod chaos;
mod claim;
mod cli;
mod faults;
mod formats;
mod guarantees;
mod harness;
mod http;
mod lanes;
mod metrics;
mod nats;
mod pooler;
mod rabbitmq;
mod redis;
mod roles;
mod routing;
mod sdk;
mod stall;
mod stdout;
