//! The dispatch-once script (`add.lua`): the arguments of a call and the replies it gives. No I/O.
//!
//! `KEYS` = stream and dedup key per event; `ARGV` = dedup seconds, maxlen, then per event:
//! message id, topic, has key ("1"/"0"), key, payload, headers (JSON), the number n of the
//! format's fields, then n field names and values (between `key` and `payload` in the entry).
//! One reply per event: `+<entry id>` added, `=<entry id>` already added (remembered id),
//! `!<error>` refused (the event's fault), `-` not sent (an earlier event of its key was refused).
//! Any other error ends the script with that error: the whole call is an outage. What was added
//! before it is remembered, so publishing the batch again adds nothing twice.

use redis::{Script, ScriptInvocation};

use super::encode::{Entry, dedup_key};
use super::settings::RedisConfig;
use crate::outbox::event::Event;

pub(super) const SCRIPT: &str = include_str!("add.lua");

/// One call for `chunk` (indices into `events`, each with its entry).
pub(super) fn call<'s>(
    script: &'s Script,
    config: &RedisConfig,
    events: &[&Event],
    chunk: &[(usize, &Entry<'_>)],
) -> ScriptInvocation<'s> {
    let mut call = script.prepare_invoke();
    call.arg(config.dedup_secs).arg(config.maxlen);
    for &(index, entry) in chunk {
        let event = events[index];
        let stream = config.stream_for(&event.topic);
        let message_id = event.message_id.to_string();
        let seen = dedup_key(&stream, &message_id);
        call.key(stream).key(seen);
        call.arg(message_id)
            .arg(&event.topic)
            .arg(if event.key.is_some() { "1" } else { "0" })
            .arg(event.key.as_deref().unwrap_or(""))
            .arg(&entry.payload[..])
            .arg(entry.headers.as_str())
            .arg(entry.fields.len());
        for (name, value) in &entry.fields {
            call.arg(*name).arg(value.as_bytes());
        }
    }
    call
}

/// A call that names only a dedup key and adds nothing: it checks that the user may run the
/// script and access those keys.
pub(super) fn probe<'s>(script: &'s Script, config: &RedisConfig) -> ScriptInvocation<'s> {
    let mut call = script.key(dedup_key("probe", "connect"));
    call.arg(config.dedup_secs).arg(config.maxlen);
    call
}

/// The script's verdict on one event.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// Added now, or found remembered from an earlier publish.
    Added,
    /// Refused by Redis because of the event (its stream key).
    Refused(String),
    /// An earlier event of its key was refused in the same call.
    NotSent,
}

impl Reply {
    pub(super) fn parse(reply: &[u8]) -> Reply {
        match reply.split_first() {
            Some((b'+' | b'=', _)) => Reply::Added,
            Some((b'-', _)) => Reply::NotSent,
            Some((b'!', error)) => Reply::Refused(String::from_utf8_lossy(error).into_owned()),
            // Not written by the script: treat the event as not sent, it is claimed again.
            _ => Reply::NotSent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_map_to_verdicts() {
        assert_eq!(Reply::parse(b"+1-0"), Reply::Added);
        assert_eq!(Reply::parse(b"=1-0"), Reply::Added);
        assert_eq!(Reply::parse(b"-"), Reply::NotSent);
        assert_eq!(
            Reply::parse(b"!WRONGTYPE x"),
            Reply::Refused("WRONGTYPE x".into())
        );
        assert_eq!(Reply::parse(b""), Reply::NotSent);
    }
}
