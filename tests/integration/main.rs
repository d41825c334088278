//! Integration tests against the real PostgreSQL and RabbitMQ. Every test has its own database,
//! exchange and queue, so they run in parallel. The Kafka tests are a target of their own
//! (`tests/kafka`, which shares `harness` and `faults`).

mod chaos;
mod cli;
mod faults;
mod guarantees;
mod harness;
mod pooler;
mod rabbitmq;
mod stdout;
