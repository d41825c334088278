//! Redis Streams through redis-rs, dispatch-once: one stream entry per event, added by a Lua script
//! that also remembers the event's message id (for `REDIS_DEDUP_SECS`), so an event relayed again
//! after a crash or a lost reply finds its id and adds no second entry.
//!
//! A batch is one script call (one round trip): the script adds the events in batch order and,
//! after an event Redis refused (e.g. WRONGTYPE: its stream key holds another type), adds no later
//! event of that key. A batch larger than the chunk size goes out as several calls, one after the
//! other, and a key refused in one call is held back from the next ones.
//!
//! Message formats: Redis has no CloudEvents binding, so binary mode writes the attributes as
//! fields named like the Kafka binding's headers (`ce_id`, ..., `content-type`); structured mode
//! and MassTransit put the document in `payload` and its type in `content-type`. The contract's
//! fields stay; `headers` holds the event's headers the format passes on.
//!
//! - `settings`: the validated settings (`REDIS_*`), with a `Debug` without the password;
//! - `encode`: an event as its stream entry, and the keys it goes to (no I/O);
//! - `script`: the dispatch-once script, its arguments and its replies;
//! - `classify`: what Redis's errors mean ([`crate::sink::Fault`]);
//! - `service`: the connection, and publishing a batch;

mod classify;
mod encode;
#[cfg(test)]
mod properties;
mod script;
mod service;
mod settings;

use super::Kind;

pub use encode::BINDING;
pub use service::RedisSink;
pub use settings::{DEFAULT_DEDUP_SECS, DEFAULT_STREAM_TEMPLATE};

pub const KIND: Kind = Kind {
    name: "redis",
    settings: &[
        "REDIS_URL",
        "REDIS_STREAM_TEMPLATE",
        "REDIS_DEDUP_SECS",
        "REDIS_MAXLEN",
    ],
    configure: |settings| Ok(Box::new(settings::RedisConfig::read(settings)?)),
};
