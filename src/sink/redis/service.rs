//! The Redis sink's service: the connection, publishing a batch through the script in calls of at
//! most [`CHUNK_BYTES`], and what Redis's errors mean ([`classify`]).

use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use super::encode::{DEDUP_PREFIX, Entry};
use super::script::{self, Reply, SCRIPT};
use super::settings::RedisConfig;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::sink::{Ordering, Outcome, Publisher, SinkConfig, SinkError};

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

/// The in-wave per-key rule, where the script does not apply it itself (across calls, and
/// between the one-by-one calls after NOPERM): an event of a key whose earlier event was not
/// delivered is not sent, and an event that is not delivered closes its key.
#[derive(Default)]
struct KeyRule {
    /// Keys with an event that was not delivered, from that event on.
    closed: KeyGate,
}

impl KeyRule {
    /// Whether `event` may be sent; when not, its outcome is [`Outcome::NotSent`].
    fn admits(&self, event: &Event) -> bool {
        self.closed.admits(event.id, event.key.as_deref())
    }

    /// The verdict on `event`: when it was not delivered, its key is closed.
    fn record(&mut self, event: &Event, delivered: bool) {
        if !delivered {
            self.closed.close(event.id, event.key.as_deref());
        }
    }
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

/// What the error of a script call means (`url` names Redis in the message).
fn classify(error: &redis::RedisError, url: &str) -> AddError {
    // ACL: the user may not access a key the call names (checked before the script runs, so
    // nothing was added). Not a missing command permission: that is the setup's.
    if error.code() == Some("NOPERM") && error.detail().is_some_and(|d| d.contains("key")) {
        let detail = error.detail().unwrap_or_default();
        return AddError::NoPerm(format!("NOPERM {detail}"));
    }
    let unavailable = unavailable("publishing to", url, error);
    if error.is_io_error() || error.is_connection_dropped() {
        return AddError::Dropped(unavailable);
    }
    if matches!(
        error.code(),
        Some("MOVED" | "ASK" | "CROSSSLOT" | "CLUSTERDOWN")
    ) {
        return AddError::Outage(SinkError::Unavailable(format!(
            "{unavailable}; Redis Cluster is not supported: point the sink's REDIS_URL at a standalone Redis"
        )));
    }
    AddError::Outage(unavailable)
}

fn unavailable(what: &str, url: &str, error: &redis::RedisError) -> SinkError {
    SinkError::Unavailable(format!("{what} Redis at {}: {error}", redact(url)))
}

/// The outcome of an event the script answered `reply` for.
fn outcome(reply: Reply, stream: impl FnOnce() -> String) -> Outcome {
    match reply {
        Reply::Added => Outcome::Delivered,
        Reply::NotSent => Outcome::NotSent,
        Reply::Refused(error) => Outcome::Failed(refusal(&stream(), &error)),
    }
}

/// `last_error` of an event Redis refused: what happened and what to do.
fn refusal(stream: &str, error: &str) -> String {
    let hint = if error.starts_with("WRONGTYPE") {
        "the key holds another type than a stream: delete or rename it, or change the sink's REDIS_STREAM_TEMPLATE"
    } else if error.starts_with("NOPERM") {
        "the Redis user may not access this key: add it to the user's key patterns (ACL SETUSER ... ~pattern) or change the sink's REDIS_STREAM_TEMPLATE"
    } else {
        "see the Redis error"
    };
    format!("Redis refused to add the event to stream {stream:?}: {error}; {hint}")
}

/// Each event's entry; an event the format cannot carry has none, fails and closes its key.
fn encode<'a>(
    format: &'a Format,
    events: &[&'a Event],
    outcomes: &mut [Outcome],
    keys: &mut KeyRule,
) -> Vec<Option<Entry<'a>>> {
    let mut entries = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        match Entry::new(format, event) {
            Ok(entry) => entries.push(Some(entry)),
            Err(reason) => {
                outcomes[index] = Outcome::Failed(reason);
                keys.record(event, false);
                entries.push(None);
            }
        }
    }
    entries
}

/// The next call's events from `*next` on: those with an entry that the key rule admits, up to
/// [`CHUNK_BYTES`] (at least one). Moves `*next` past them.
fn next_chunk<'e, 'a>(
    events: &[&Event],
    entries: &'e [Option<Entry<'a>>],
    keys: &KeyRule,
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
        if !keys.admits(event) {
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
                let error = classify(&e, &self.config.url);
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

    /// [`Self::add`], and what to do when it added nothing: after NOPERM, the events one by one;
    /// after a dropped connection, the call again on a new one, once per publish (`reconnected`).
    async fn add_chunk(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
        reconnected: &mut bool,
    ) -> Result<Vec<Reply>, SinkError> {
        loop {
            match self.add(events, chunk).await {
                Ok(replies) => return Ok(replies),
                Err(AddError::Outage(e)) => return Err(e),
                Err(AddError::NoPerm(_)) => return self.add_one_by_one(events, chunk).await,
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
    ) -> Result<Vec<Reply>, SinkError> {
        let mut replies = Vec::with_capacity(chunk.len());
        let mut keys = KeyRule::default();
        for &(index, entry) in chunk {
            let event = events[index];
            if !keys.admits(event) {
                replies.push(Reply::NotSent);
                continue;
            }
            let reply = match self.add(events, &[(index, entry)]).await {
                Ok(mut reply) => reply.pop().unwrap_or(Reply::NotSent),
                Err(AddError::NoPerm(error)) => Reply::Refused(error),
                Err(AddError::Outage(e) | AddError::Dropped(e)) => return Err(e),
            };
            keys.record(event, reply == Reply::Added);
            replies.push(reply);
        }
        Ok(replies)
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
        let client = super::tls::client(self.config.url.as_str())
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
        let mut outcomes = vec![Outcome::NotSent; events.len()];
        // Keys with an event that was not delivered: their later events are not sent in later
        // calls (within a call, the script holds them back itself).
        let mut keys = KeyRule::default();
        let format = Arc::clone(&self.format);
        let entries = encode(&format, events, &mut outcomes, &mut keys);
        let mut reconnected = false;
        let mut next = 0;
        while next < events.len() {
            let chunk = next_chunk(events, &entries, &keys, &mut next);
            if chunk.is_empty() {
                break;
            }
            let replies = self.add_chunk(events, &chunk, &mut reconnected).await?;
            for (&(index, _), reply) in chunk.iter().zip(replies) {
                let event = events[index];
                let outcome = outcome(reply, || self.config.stream_for(&event.topic));
                keys.record(event, outcome == Outcome::Delivered);
                outcomes[index] = outcome;
            }
        }
        Ok(outcomes)
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
    fn a_refusal_says_what_to_do() {
        let wrong = refusal(
            "orders",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        assert!(
            wrong.contains("\"orders\"") && wrong.contains("REDIS_STREAM_TEMPLATE"),
            "{wrong}"
        );
        assert!(refusal("orders", "NOPERM no").contains("ACL SETUSER"));
    }

    #[test]
    fn errors_are_classified() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let server = |kind, detail: &str| {
            RedisError::from((ErrorKind::Server(kind), "", detail.to_string()))
        };
        let url = "redis://relay:s3cret@redis:6379";
        let key = server(
            ServerErrorKind::NoPerm,
            "no permissions to access one of the keys",
        );
        assert!(matches!(classify(&key, url), AddError::NoPerm(e) if e.starts_with("NOPERM")));
        let command = server(
            ServerErrorKind::NoPerm,
            "no permissions to run the 'xadd' command",
        );
        assert!(matches!(classify(&command, url), AddError::Outage(_)));
        let moved = server(ServerErrorKind::Moved, "3999 127.0.0.1:6381");
        let AddError::Outage(error) = classify(&moved, url) else {
            panic!("MOVED is an outage");
        };
        let error = error.to_string();
        assert!(
            error.contains("Redis Cluster") && !error.contains("s3cret"),
            "{error}"
        );
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(classify(&dropped, url), AddError::Dropped(_)));
    }
}
