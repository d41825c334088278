//! The bench's own parts: its settings and table, the workload, the raw publishers and limits
//! it measures the relay against, and one module per scenario. Databases, the relay process,
//! metrics and the brokers' consumers come from the tests' harness (`tests/harness`).

pub mod adoption;
pub mod distance;
pub mod drain;
pub mod formats;
pub mod latency;
pub mod limits;
pub mod machine;
pub mod memory;
pub mod otlp_receiver;
pub mod poller;
pub mod raw;
pub mod raw_bullmq;
pub mod raw_http;
pub mod raw_kafka;
pub mod replicas;
pub mod settings;
pub mod soak;
pub mod steady;
pub mod table;
pub mod target;
pub mod traces;
pub mod workload;
