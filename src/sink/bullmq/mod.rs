//! BullMQ jobs on Redis, dispatch-once, through BullMQ's official Rust client (`bullmq-official`,
//! the same add scripts as the Node.js and Python clients, so workers wake at once and dashboards
//! show the jobs). Each event becomes one job: id = the event's message id, name = its `type`
//! header or else its topic, data = its JSON payload, in the queue that `BULLMQ_QUEUE_TEMPLATE`
//! names under `BULLMQ_PREFIX`, with the options of `BULLMQ_JOB_OPTIONS`.
//!
//! Dispatch-once: BullMQ ignores an add whose job id exists, and the job carries BullMQ's
//! deduplication with the message id for `BULLMQ_DEDUP_SECS`, which holds the id also after the
//! job was removed on completion. Delivered = Redis replied to the add (new or already there).
//!
//! Order: BullMQ takes one add and refuses the next on its own (each add is one script call), so
//! a key's next event is added only after the verdict on the previous one
//! ([`Ordering::OneVerdictPerKey`](crate::sink::Ordering::OneVerdictPerKey)); the adds of one
//! wave (one per key) go out together on the multiplexed connection.
//!
//! - `settings`: the validated settings (`BULLMQ_*`), with a `Debug` without the password;
//! - `encode`: an event as its job (queue, name, data, options), no I/O;
//! - `classify`: what the client's errors mean;
//! - `service`: the connection, the queues, and adding a wave of jobs.

mod classify;
mod encode;
#[cfg(test)]
mod properties;
mod service;
mod settings;

use super::Kind;

pub use service::BullmqSink;
pub use settings::{DEFAULT_DEDUP_SECS, DEFAULT_PREFIX, DEFAULT_QUEUE_TEMPLATE};

pub const KIND: Kind = Kind {
    name: "bullmq",
    settings: &[
        "BULLMQ_URL",
        "BULLMQ_PREFIX",
        "BULLMQ_QUEUE_TEMPLATE",
        "BULLMQ_JOB_OPTIONS",
        "BULLMQ_DEDUP_SECS",
    ],
    configure: |settings| Ok(Box::new(settings::BullmqConfig::read(settings)?)),
};
