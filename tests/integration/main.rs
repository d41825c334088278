//! Integration tests against the real PostgreSQL and RabbitMQ (and the Kafka-protocol broker when
//! present). Every test has its own database, exchange and queue, so they run in parallel.

mod cli;
mod harness;
mod rabbitmq;
mod stdout;
