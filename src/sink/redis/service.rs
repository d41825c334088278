//! The Redis sink's service: the connection, publishing a batch through the script in calls of at
//! most [`CHUNK_BYTES`], each event's verdict kept under the in-wave per-key rule ([`Verdicts`]).

use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use super::classify::{CallError, refusal, unavailable};
use super::encode::{DEDUP_PREFIX, Entry};
use super::script::{self, Reply, SCRIPT};
use super::settings::RedisConfig;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::sink::{Classify, Fault, Ordering, Outcome, Publisher, SinkConfig, SinkError, Verdicts};

/// Payload bytes per script call: a batch of large events is split so that no call comes near
/// Redis's 512 MB argument and 1 GB query buffer limits, nor blocks Redis for long.
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

impl SinkConfig for RedisConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(RedisSink {
            config: self.clone(),
            format: Arc::new(self.format.clone()),
            script: Script::new(SCRIPT),
            connection: None,
        })
    }
}

pub struct RedisSink {
    config: RedisConfig,
    /// The config's format, shared with the entries of a batch while `self` is borrowed mutably.
    format: Arc<Format>,
    /// The dispatch-once script; redis-rs sends EVALSHA and loads it again on NOSCRIPT.
    script: Script,
    /// `None` until connected, and after any failed call (the next publish connects afresh).
    connection: Option<MultiplexedConnection>,
}

/// Why a script call added nothing.
#[derive(Debug)]
enum AddError {
    /// The user may not access a key of the call: the fault of an event (its stream key).
    NoPerm(String),
    /// Redis answered an error that is not about one event.
    Outage(SinkError),
    /// The connection broke (or had been closed, e.g. by Redis's idle `timeout`).
    Dropped(SinkError),
}

impl AddError {
    /// What the error of a script call means (`url` names Redis in the message).
    fn of(error: &redis::RedisError, url: &str) -> AddError {
        let call = CallError { error, url };
        match call.classify() {
            Fault::Event(reason) => AddError::NoPerm(reason),
            Fault::BackPressure(reason) | Fault::Outage(reason) if call.is_dropped() => {
                AddError::Dropped(SinkError::Unavailable(reason))
            }
            Fault::BackPressure(reason) | Fault::Outage(reason) => {
                AddError::Outage(SinkError::Unavailable(reason))
            }
        }
    }
}

/// Records the script's `reply` on event `index`, which went to `stream`.
fn record(
    verdicts: &mut Verdicts<'_>,
    index: usize,
    reply: Reply,
    stream: impl FnOnce() -> String,
) -> Result<(), SinkError> {
    match reply {
        Reply::Added => verdicts.settle(index, Outcome::Delivered),
        // The script skipped it after refusing an earlier event of its key.
        Reply::NotSent => verdicts.hold_back(index),
        Reply::Refused(error) => {
            verdicts.refuse(index, Fault::Event(refusal(&stream(), &error)))?
        }
    }
    Ok(())
}

/// Each event's entry; an event the format cannot carry has none, fails and closes its key.
fn encode<'a>(
    format: &'a Format,
    events: &[&'a Event],
    verdicts: &mut Verdicts<'_>,
) -> Result<Vec<Option<Entry<'a>>>, SinkError> {
    let mut entries = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        match Entry::new(format, event) {
            Ok(entry) => entries.push(Some(entry)),
            Err(reason) => {
                verdicts.refuse(index, Fault::Event(reason))?;
                entries.push(None);
            }
        }
    }
    Ok(entries)
}

/// The next call's events from `*next` on: those with an entry that the key rule admits, up to
/// [`CHUNK_BYTES`] (at least one). Moves `*next` past them.
fn next_chunk<'e, 'a>(
    events: &[&Event],
    entries: &'e [Option<Entry<'a>>],
    verdicts: &mut Verdicts<'_>,
    next: &mut usize,
) -> Vec<(usize, &'e Entry<'a>)> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    while *next < events.len() {
        let event = events[*next];
        let Some(entry) = entries[*next].as_ref() else {
            *next += 1;
            continue;
        };
        if !verdicts.admits(*next) {
            *next += 1;
            continue;
        }
        let size = entry.size(event);
        if !chunk.is_empty() && bytes + size > CHUNK_BYTES {
            break;
        }
        bytes += size;
        chunk.push((*next, entry));
        *next += 1;
    }
    chunk
}

impl RedisSink {
    /// One script call for `chunk` (indices into `events`, each with its entry); one reply per
    /// event.
    async fn add(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
    ) -> Result<Vec<Reply>, AddError> {
        let call = script::call(&self.script, &self.config, events, chunk);
        let Some(connection) = self.connection.as_mut() else {
            return Err(AddError::Outage(SinkError::Unavailable(
                "Redis is not connected".into(),
            )));
        };
        let replies: Vec<Vec<u8>> = match call.invoke_async(connection).await {
            Ok(replies) => replies,
            Err(e) => {
                let error = AddError::of(&e, &self.config.url);
                if !matches!(error, AddError::NoPerm(_)) {
                    self.connection = None;
                }
                return Err(error);
            }
        };
        if replies.len() != chunk.len() {
            self.connection = None;
            return Err(AddError::Outage(SinkError::Unavailable(format!(
                "the Redis script answered {} replies for {} events; the batch will be published again",
                replies.len(),
                chunk.len()
            ))));
        }
        Ok(replies.iter().map(|r| Reply::parse(r)).collect())
    }

    /// [`Self::add`] with the replies recorded, and what to do when it added nothing: after
    /// NOPERM, the events one by one; after a dropped connection, the call again on a new one,
    /// once per publish (`reconnected`).
    async fn add_chunk(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
        reconnected: &mut bool,
        verdicts: &mut Verdicts<'_>,
    ) -> Result<(), SinkError> {
        loop {
            match self.add(events, chunk).await {
                Ok(replies) => {
                    for (&(index, _), reply) in chunk.iter().zip(replies) {
                        let stream = || self.config.stream_for(&events[index].topic);
                        record(verdicts, index, reply, stream)?;
                    }
                    return Ok(());
                }
                Err(AddError::Outage(e)) => return Err(e),
                Err(AddError::NoPerm(_)) => {
                    return self.add_one_by_one(events, chunk, verdicts).await;
                }
                // A connection closed while idle (Redis's `timeout`, a proxy or load balancer)
                // is found by the next call: connect again and repeat the call once, which is
                // safe because what the call added is remembered. If Redis is really down, the
                // connect fails and the batch waits for the backoff.
                Err(AddError::Dropped(_)) if !*reconnected => {
                    *reconnected = true;
                    self.connect().await?;
                }
                Err(AddError::Dropped(e)) => return Err(e),
            }
        }
    }

    /// After a call was refused with NOPERM: one call per event of `chunk`, in order, to find the
    /// events whose stream key the user may not access (the rest are added as usual).
    async fn add_one_by_one(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
        verdicts: &mut Verdicts<'_>,
    ) -> Result<(), SinkError> {
        for &(index, entry) in chunk {
            // An event refused in this loop holds back its key's later events of the chunk.
            if !verdicts.admits(index) {
                continue;
            }
            let reply = match self.add(events, &[(index, entry)]).await {
                Ok(mut reply) => reply.pop().unwrap_or(Reply::NotSent),
                Err(AddError::NoPerm(error)) => Reply::Refused(error),
                Err(AddError::Outage(e) | AddError::Dropped(e)) => return Err(e),
            };
            let stream = || self.config.stream_for(&events[index].topic);
            record(verdicts, index, reply, stream)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for RedisSink {
    /// One script call adds a whole batch in order and, after a refused event, skips the later
    /// events of its key itself (the refusal is known inside the call, before the next XADD), so
    /// no waves are needed: a busy key costs no extra round trips.
    fn ordering(&self) -> Ordering {
        Ordering::Pipelined
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        self.connection = None;
        if self.config.url.starts_with("rediss://") {
            // The project's rustls provider; a no-op when one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = crate::sink::redis_tls::client(self.config.url.as_str())
            .map_err(|e| unavailable("cannot use the URL of", &self.config.url, &e))?;
        // No timeouts of redis-rs's own (500 ms per reply by default, too short for a large
        // batch): `Sink` ends every wait after OUTBOX_PUBLISH_TIMEOUT_MS.
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&options)
            .await
            .map_err(|e| unavailable("cannot connect to", &self.config.url, &e))?;
        // Loading the script checks that the user may run scripts, and caches it. A call that
        // names only a dedup key (and adds nothing) checks that the user may access those keys:
        // otherwise every event would look refused because of itself.
        let loaded = self.script.load_async(&mut connection).await;
        let probe = match loaded {
            Ok(_) => script::probe(&self.script, &self.config)
                .invoke_async::<Vec<Vec<u8>>>(&mut connection)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        probe.map_err(|e| {
            SinkError::Unavailable(format!(
                "cannot run the relay's script on Redis at {} ({e}); the user needs the commands +script|load +evalsha +xadd +get +set and the keys {DEDUP_PREFIX}* and of the streams",
                redact(&self.config.url)
            ))
        })?;
        self.connection = Some(connection);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        if self.connection.is_none() {
            self.connect().await?;
        }
        // A key with an event that was not delivered is closed: its later events are not sent in
        // later calls (within a call, the script holds them back itself).
        let mut verdicts = Verdicts::new(events);
        let format = Arc::clone(&self.format);
        let entries = encode(&format, events, &mut verdicts)?;
        let mut reconnected = false;
        let mut next = 0;
        while next < events.len() {
            let chunk = next_chunk(events, &entries, &mut verdicts, &mut next);
            if chunk.is_empty() {
                break;
            }
            self.add_chunk(events, &chunk, &mut reconnected, &mut verdicts)
                .await?;
        }
        Ok(verdicts.into_outcomes())
    }

    /// Forgets the connection; a late reply of the abandoned call cannot reach a new one, which
    /// goes out on a new connection. What that call added is remembered, so nothing is added twice.
    async fn abandon(&mut self) {
        self.connection = None;
    }

    /// Nothing is buffered: every call waits for its reply.
    async fn close(&mut self) {
        self.connection = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_calls_error_says_what_to_do_next() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let server = |kind, detail: &str| {
            RedisError::from((ErrorKind::Server(kind), "", detail.to_string()))
        };
        let url = "redis://relay:s3cret@redis:6379";
        let key = server(
            ServerErrorKind::NoPerm,
            "no permissions to access one of the keys",
        );
        assert!(matches!(AddError::of(&key, url), AddError::NoPerm(e) if e.starts_with("NOPERM")));
        let command = server(
            ServerErrorKind::NoPerm,
            "no permissions to run the 'xadd' command",
        );
        assert!(matches!(AddError::of(&command, url), AddError::Outage(_)));
        let moved = server(ServerErrorKind::Moved, "3999 127.0.0.1:6381");
        let AddError::Outage(error) = AddError::of(&moved, url) else {
            panic!("MOVED is an outage");
        };
        let error = error.to_string();
        assert!(
            error.contains("Redis Cluster") && !error.contains("s3cret"),
            "{error}"
        );
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(AddError::of(&dropped, url), AddError::Dropped(_)));
    }
}
