//! Redis Streams through redis-rs, dispatch-once: one stream entry per event, added by a Lua script
//! that also remembers the event's message id (for `REDIS_DEDUP_SECS`), so an event relayed again
//! after a crash or a lost reply finds its id and adds no second entry.
//!
//! A batch is one script call (one round trip): the script adds the events in batch order and,
//! after an event Redis refused (e.g. WRONGTYPE: its stream key holds another type), adds no later
//! event of that key. A batch larger than [`CHUNK_BYTES`] goes out as several calls, one after the
//! other, and a key refused in one call is held back from the next ones.
//!
//! Message formats: Redis has no CloudEvents binding, so binary mode writes the attributes as
//! fields named like the Kafka binding's headers (`ce_id`, ..., `content-type`); structured mode
//! and MassTransit put the document in `payload` and its type in `content-type`. The contract's
//! fields stay; `headers` holds the event's headers the format passes on.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{Binding, Format, Message};
use crate::health::SinkHealth;
use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_STREAM_TEMPLATE: &str = "{topic}";
pub const DEFAULT_DEDUP_SECS: u64 = 86_400;

/// Payload bytes per script call: a batch of large events is split so that no call comes near
/// Redis's 512 MB argument and 1 GB query buffer limits, nor blocks Redis for long.
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Where the remembered message ids live: `outbox-relay:dedup:{<hash tag>}:<message id>`.
const DEDUP_PREFIX: &str = "outbox-relay:dedup:";

/// `KEYS` = stream and dedup key per event; `ARGV` = dedup seconds, maxlen, then per event:
/// message id, topic, has key ("1"/"0"), key, payload, headers (JSON), the number n of the
/// format's fields, then n field names and values (between `key` and `payload` in the entry).
/// One reply per event: `+<entry id>` added, `=<entry id>` already added (remembered id),
/// `!<error>` refused (the event's fault), `-` not sent (an earlier event of its key was refused).
/// Any other error ends the script with that error: the whole call is an outage. What was added
/// before it is remembered, so publishing the batch again adds nothing twice.
const SCRIPT: &str = r#"
local ttl = ARGV[1]
local maxlen = tonumber(ARGV[2])
local closed = {}
local replies = {}
local a = 2
for i = 1, #KEYS / 2 do
  local stream, seen = KEYS[2 * i - 1], KEYS[2 * i]
  local id, topic, haskey, key = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local payload, headers = ARGV[a + 5], ARGV[a + 6]
  local extra_from, extra_to = a + 8, a + 7 + 2 * tonumber(ARGV[a + 7])
  a = extra_to
  if haskey == '1' and closed[key] then
    replies[i] = '-'
  else
    local existing = redis.call('GET', seen)
    if existing then
      replies[i] = '=' .. existing
    else
      local fields = {'message_id', id, 'topic', topic}
      if haskey == '1' then
        fields[#fields + 1] = 'key'
        fields[#fields + 1] = key
      end
      for j = extra_from, extra_to do
        fields[#fields + 1] = ARGV[j]
      end
      fields[#fields + 1] = 'payload'
      fields[#fields + 1] = payload
      fields[#fields + 1] = 'headers'
      fields[#fields + 1] = headers
      local entry
      if maxlen > 0 then
        entry = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
      else
        entry = redis.pcall('XADD', stream, '*', unpack(fields))
      end
      if type(entry) == 'table' and entry.err then
        local err = entry.err
        if string.sub(err, 1, 9) == 'WRONGTYPE' or string.sub(err, 1, 6) == 'NOPERM' then
          replies[i] = '!' .. err
          if haskey == '1' then closed[key] = true end
        else
          return redis.error_reply(err)
        end
      else
        redis.call('SET', seen, entry, 'EX', ttl)
        replies[i] = '+' .. entry
      end
    end
  end
end
return replies
"#;

pub const KIND: Kind = Kind {
    name: "redis",
    settings: &[
        "REDIS_URL",
        "REDIS_STREAM_TEMPLATE",
        "REDIS_DEDUP_SECS",
        "REDIS_MAXLEN",
    ],
    configure: |settings| Ok(Box::new(RedisConfig::read(settings)?)),
};

#[derive(Clone)]
struct RedisConfig {
    /// `redis://` or `rediss://`, maybe with user and password.
    url: String,
    /// The stream key; `{topic}` is replaced by the event's topic.
    stream_template: String,
    /// How long a delivered message id is remembered.
    dedup_secs: u64,
    /// `MAXLEN ~` of each stream; 0 never trims.
    maxlen: u64,
    /// Message format, with fields named like the Kafka binding's headers.
    format: Format,
}

/// Without the password.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("stream_template", &self.stream_template)
            .field("dedup_secs", &self.dedup_secs)
            .field("maxlen", &self.maxlen)
            .field("format", &self.format)
            .finish()
    }
}

impl RedisConfig {
    fn read(settings: &SinkSettings) -> Result<RedisConfig, ConfigError> {
        let url = settings.required(
            "REDIS_URL",
            "a redis:// or rediss:// URL such as redis://user:password@127.0.0.1:6379/0",
        )?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(settings.error("REDIS_URL", "must start with redis:// or rediss://"));
        }
        // redis-rs's own message would not say which part is wrong; it never shows the password.
        Client::open(url).map_err(|e| {
            settings.error(
                "REDIS_URL",
                format!("is not a valid Redis URL ({e}); expected redis[s]://[user:password@]host[:port][/db]"),
            )
        })?;
        let stream_template = settings
            .get("REDIS_STREAM_TEMPLATE")
            .unwrap_or(DEFAULT_STREAM_TEMPLATE)
            .to_string();
        let dedup_secs: u64 = settings.parsed(
            "REDIS_DEDUP_SECS",
            DEFAULT_DEDUP_SECS,
            "a number of seconds",
        )?;
        if dedup_secs == 0 {
            return Err(settings.error(
                "REDIS_DEDUP_SECS",
                "must be at least 1: message ids are remembered for that long",
            ));
        }
        let maxlen: u64 = settings.parsed("REDIS_MAXLEN", 0, "a number of entries (0: no trim)")?;
        Ok(RedisConfig {
            url: url.to_string(),
            stream_template,
            dedup_secs,
            maxlen,
            format: Format::read(settings)?,
        })
    }
}

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

impl RedisSink {
    fn stream_for(&self, topic: &str) -> String {
        self.config.stream_template.replace("{topic}", topic)
    }

    fn unavailable(&self, what: &str, e: &redis::RedisError) -> SinkError {
        SinkError::Unavailable(format!("{what} Redis at {}: {e}", redact(&self.config.url)))
    }

    /// One script call for `chunk` (indices into `events`, each with its entry); one reply per
    /// event.
    async fn add(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
    ) -> Result<Vec<Reply>, AddError> {
        let mut call = self.script.prepare_invoke();
        call.arg(self.config.dedup_secs).arg(self.config.maxlen);
        for &(index, entry) in chunk {
            let event = events[index];
            let stream = self.stream_for(&event.topic);
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
        let Some(connection) = self.connection.as_mut() else {
            return Err(AddError::Outage(SinkError::Unavailable(
                "Redis is not connected".into(),
            )));
        };
        let replies: Result<Vec<Vec<u8>>, _> = call.invoke_async(connection).await;
        let replies = match replies {
            Ok(replies) => replies,
            // ACL: the user may not access a key the call names (checked before the script
            // runs, so nothing was added). Not a missing command permission: that is the setup's.
            Err(e)
                if e.code() == Some("NOPERM") && e.detail().is_some_and(|d| d.contains("key")) =>
            {
                let detail = e.detail().unwrap_or_default();
                return Err(AddError::NoPerm(format!("NOPERM {detail}")));
            }
            Err(e) => {
                self.connection = None;
                let mut error = self.unavailable("publishing to", &e);
                if e.is_io_error() || e.is_connection_dropped() {
                    return Err(AddError::Dropped(error));
                }
                if matches!(
                    e.code(),
                    Some("MOVED" | "ASK" | "CROSSSLOT" | "CLUSTERDOWN")
                ) {
                    error = SinkError::Unavailable(format!(
                        "{error}; Redis Cluster is not supported: point the sink's REDIS_URL at a standalone Redis"
                    ));
                }
                return Err(AddError::Outage(error));
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

    /// After a call was refused with NOPERM: one call per event of `chunk`, in order, to find the
    /// events whose stream key the user may not access (the rest are added as usual).
    async fn add_one_by_one(
        &mut self,
        events: &[&Event],
        chunk: &[(usize, &Entry<'_>)],
    ) -> Result<Vec<Reply>, SinkError> {
        let mut replies = Vec::with_capacity(chunk.len());
        let mut refused = KeyGate::default();
        for &(index, entry) in chunk {
            let event = events[index];
            if !refused.admits(event.id, event.key.as_deref()) {
                replies.push(Reply::NotSent);
                continue;
            }
            let reply = match self.add(events, &[(index, entry)]).await {
                Ok(mut reply) => reply.pop().unwrap_or(Reply::NotSent),
                Err(AddError::NoPerm(error)) => Reply::Refused(error),
                Err(AddError::Outage(e) | AddError::Dropped(e)) => return Err(e),
            };
            if reply != Reply::Added {
                refused.close(event.id, event.key.as_deref());
            }
            replies.push(reply);
        }
        Ok(replies)
    }
}

/// Why a script call added nothing.
enum AddError {
    /// The user may not access a key of the call: the fault of an event (its stream key).
    NoPerm(String),
    /// Redis answered an error that is not about one event.
    Outage(SinkError),
    /// The connection broke (or had been closed, e.g. by Redis's idle `timeout`).
    Dropped(SinkError),
}

/// The script's verdict on one event.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Added now, or found remembered from an earlier publish.
    Added,
    /// Refused by Redis because of the event (its stream key).
    Refused(String),
    /// An earlier event of its key was refused in the same call.
    NotSent,
}

impl Reply {
    fn parse(reply: &[u8]) -> Reply {
        match reply.split_first() {
            Some((b'+' | b'=', _)) => Reply::Added,
            Some((b'-', _)) => Reply::NotSent,
            Some((b'!', error)) => Reply::Refused(String::from_utf8_lossy(error).into_owned()),
            // Not written by the script: treat the event as not sent, it is claimed again.
            _ => Reply::NotSent,
        }
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

/// The dedup key of a message id for `stream`: it carries the stream key's hash tag (the part
/// Redis Cluster hashes), so that the script's two keys always hash to the same slot.
fn dedup_key(stream: &str, message_id: &str) -> String {
    format!("{DEDUP_PREFIX}{{{}}}:{message_id}", hash_tag(stream))
}

/// What Redis Cluster hashes of `key`: the text inside its first `{...}` when not empty, else
/// the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// An event as its stream entry carries it in the sink's format (the contract's `message_id`,
/// `topic` and `key` come from the event itself).
#[derive(Debug)]
struct Entry<'a> {
    /// The format's fields: binary CloudEvents' attributes and `content-type`, or the
    /// document's `content-type`; none in raw.
    fields: Vec<(&'a str, Cow<'a, str>)>,
    /// The `payload` field: the payload itself, or the document that wraps it.
    payload: Cow<'a, [u8]>,
    /// The `headers` field: the event's headers the format passes on, as a JSON object.
    headers: String,
}

impl<'a> Entry<'a> {
    /// `Err` is an event the format cannot carry (the event's fault).
    fn new(format: &'a Format, event: &'a Event) -> Result<Entry<'a>, String> {
        let Message { headers, body, .. } = format.message(event, Binding::Redis)?;
        // The format module names its own headers as the Kafka binding does and passes on no
        // event header that could be taken for one of them.
        let (fields, passed): (Vec<_>, Vec<_>) = headers
            .into_iter()
            .partition(|(name, _)| !format.is_raw() && is_format_field(name));
        let headers: serde_json::Map<String, serde_json::Value> = passed
            .into_iter()
            .map(|(name, value)| (name.to_string(), serde_json::Value::String(value.into())))
            .collect();
        Ok(Entry {
            fields,
            payload: body,
            headers: serde_json::Value::Object(headers).to_string(),
        })
    }

    /// The bytes the entry adds to a script call, roughly.
    fn size(&self, event: &Event) -> usize {
        self.payload.len()
            + self.headers.len()
            + event.topic.len()
            + event.key.as_ref().map_or(0, String::len)
            + self
                .fields
                .iter()
                .map(|(n, v)| n.len() + v.len() + 6)
                .sum::<usize>()
            + 64
    }
}

/// A field of the format's: a Kafka binding attribute header (`ce_*`) or `content-type`.
fn is_format_field(name: &str) -> bool {
    name == crate::format::CONTENT_TYPE_HEADER || name.starts_with("ce_")
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
        let client = Client::open(self.config.url.as_str())
            .map_err(|e| self.unavailable("cannot use the URL of", &e))?;
        // No timeouts of redis-rs's own (500 ms per reply by default, too short for a large
        // batch): `Sink` ends every wait after OUTBOX_PUBLISH_TIMEOUT_MS.
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&options)
            .await
            .map_err(|e| self.unavailable("cannot connect to", &e))?;
        // Loading the script checks that the user may run scripts, and caches it. A call that
        // names only a dedup key (and adds nothing) checks that the user may access those keys:
        // otherwise every event would look refused because of itself.
        let loaded = self.script.load_async(&mut connection).await;
        let probe = match loaded {
            Ok(_) => self
                .script
                .key(dedup_key("probe", "connect"))
                .arg(self.config.dedup_secs)
                .arg(self.config.maxlen)
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
        // Keys with a refused event: their later events are not sent in later calls.
        let mut refused = KeyGate::default();
        let format = Arc::clone(&self.format);
        let mut entries = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            match Entry::new(&format, event) {
                Ok(entry) => entries.push(Some(entry)),
                Err(reason) => {
                    outcomes[index] = Outcome::Failed(reason);
                    refused.close(event.id, event.key.as_deref());
                    entries.push(None);
                }
            }
        }
        let mut reconnected = false;
        let mut next = 0;
        while next < events.len() {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while next < events.len() {
                let event = events[next];
                let Some(entry) = entries[next].as_ref() else {
                    next += 1;
                    continue;
                };
                if !refused.admits(event.id, event.key.as_deref()) {
                    next += 1;
                    continue;
                }
                let size = entry.size(event);
                if !chunk.is_empty() && bytes + size > CHUNK_BYTES {
                    break;
                }
                bytes += size;
                chunk.push((next, entry));
                next += 1;
            }
            if chunk.is_empty() {
                break;
            }
            let replies = loop {
                match self.add(events, &chunk).await {
                    Ok(replies) => break replies,
                    Err(AddError::Outage(e)) => return Err(e),
                    Err(AddError::NoPerm(_)) => break self.add_one_by_one(events, &chunk).await?,
                    // A connection closed while idle (Redis's `timeout`, a proxy or load
                    // balancer) is found by the next call: connect again and repeat the call
                    // once, which is safe because what the call added is remembered. If Redis is
                    // really down, the connect fails and the batch waits for the backoff.
                    Err(AddError::Dropped(_)) if !reconnected => {
                        reconnected = true;
                        self.connect().await?;
                    }
                    Err(AddError::Dropped(e)) => return Err(e),
                }
            };
            for (&(index, _), reply) in chunk.iter().zip(replies) {
                let event = events[index];
                outcomes[index] = match reply {
                    Reply::Added => Outcome::Delivered,
                    Reply::NotSent => {
                        refused.close(event.id, event.key.as_deref());
                        Outcome::NotSent
                    }
                    Reply::Refused(error) => {
                        refused.close(event.id, event.key.as_deref());
                        Outcome::Failed(refusal(&self.stream_for(&event.topic), &error))
                    }
                };
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
    use crate::settings::Settings;

    fn read(pairs: &[(&str, &str)]) -> Result<RedisConfig, ConfigError> {
        let settings = Settings::from_pairs(pairs);
        RedisConfig::read(&settings.default_sink())
    }

    #[test]
    fn settings_have_the_contracts_defaults_and_are_checked() {
        let config = read(&[("OUTBOX_REDIS_URL", "redis://127.0.0.1:6379")]).expect("valid");
        assert_eq!(config.stream_template, "{topic}");
        assert_eq!(config.dedup_secs, 86_400);
        assert_eq!(config.maxlen, 0);
        let error = read(&[("OUTBOX_REDIS_URL", "http://127.0.0.1")]).unwrap_err();
        assert!(error.to_string().contains("OUTBOX_REDIS_URL"), "{error}");
        let error = read(&[
            ("OUTBOX_REDIS_URL", "redis://127.0.0.1"),
            ("OUTBOX_REDIS_DEDUP_SECS", "0"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("OUTBOX_REDIS_DEDUP_SECS"),
            "{error}"
        );
        assert!(
            read(&[
                ("OUTBOX_REDIS_URL", "redis://127.0.0.1"),
                ("OUTBOX_REDIS_MAXLEN", "-1"),
            ])
            .is_err()
        );
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config =
            read(&[("OUTBOX_REDIS_URL", "rediss://relay:s3cret@redis:6380/0")]).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

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
    fn the_dedup_key_hashes_to_the_stream_keys_slot() {
        assert_eq!(hash_tag("orders"), "orders");
        assert_eq!(hash_tag("events:{orders}:paid"), "orders");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        assert_eq!(hash_tag("{{orders}}"), "{orders");
        assert_eq!(dedup_key("orders", "m1"), "outbox-relay:dedup:{orders}:m1");
        assert_eq!(
            dedup_key("events:{orders}:paid", "m1"),
            "outbox-relay:dedup:{orders}:m1"
        );
        for stream in ["orders", "events:{orders}:paid", "{{orders}}", "x{y"] {
            assert_eq!(
                hash_tag(&dedup_key(stream, "m1")),
                hash_tag(stream),
                "{stream}"
            );
        }
    }

    fn format(pairs: &[(&str, &str)]) -> Format {
        let mut all = vec![("OUTBOX_REDIS_URL", "redis://127.0.0.1")];
        all.extend_from_slice(pairs);
        read(&all).expect("valid").format
    }

    fn event(headers: &[(&str, &str)], payload: &[u8]) -> Event {
        crate::outbox::event::test_event_with(Some("k"), headers, payload)
    }

    fn field_names<'a>(entry: &'a Entry<'a>) -> Vec<&'a str> {
        entry.fields.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn raw_entries_keep_every_header_and_add_no_field() {
        let e = event(&[("content-type", "text/plain"), ("ce_id", "x")], b"hi");
        let raw = format(&[]);
        let entry = Entry::new(&raw, &e).expect("raw");
        assert!(entry.fields.is_empty());
        assert_eq!(entry.payload.as_ref(), b"hi");
        assert!(matches!(entry.payload, Cow::Borrowed(_)), "no copy");
        assert_eq!(
            entry.headers,
            r#"{"ce_id":"x","content-type":"text/plain"}"#
        );
    }

    #[test]
    fn cloudevents_fields_are_named_like_kafkas_headers() {
        let e = event(
            &[
                ("type", "shop.note"),
                ("content-type", "text/plain"),
                ("tenant", "t1"),
                ("ce_source", "forged"),
            ],
            b"hi",
        );
        let binary = format(&[("OUTBOX_FORMAT", "cloudevents")]);
        let entry = Entry::new(&binary, &e).expect("binary");
        assert_eq!(
            field_names(&entry),
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "content-type"
            ]
        );
        assert!(
            entry
                .fields
                .contains(&("ce_source", "/outbox-relay".into()))
        );
        assert!(
            entry
                .fields
                .contains(&("content-type", "text/plain".into()))
        );
        assert_eq!(entry.payload.as_ref(), b"hi");
        assert_eq!(entry.headers, r#"{"tenant":"t1"}"#, "forged ce_ left out");

        let structured = format(&[
            ("OUTBOX_FORMAT", "cloudevents"),
            ("OUTBOX_CLOUDEVENTS_MODE", "structured"),
        ]);
        let entry = Entry::new(&structured, &e).expect("structured");
        assert_eq!(
            entry.fields,
            [("content-type", crate::format::CLOUDEVENTS_JSON.into())]
        );
        let doc: serde_json::Value = serde_json::from_slice(&entry.payload).expect("JSON");
        assert_eq!(doc["data"], "hi");
        assert_eq!(entry.headers, r#"{"tenant":"t1"}"#);
    }

    #[test]
    fn masstransit_entries_hold_the_envelope_and_refuse_a_payload_that_is_not_json() {
        let masstransit = format(&[("OUTBOX_FORMAT", "masstransit")]);
        let e = event(&[("tenant", "t1")], b"{\"n\":1}");
        let entry = Entry::new(&masstransit, &e).expect("JSON payload");
        assert_eq!(
            entry.fields,
            [("content-type", crate::format::MASSTRANSIT_JSON.into())]
        );
        let envelope: serde_json::Value = serde_json::from_slice(&entry.payload).expect("JSON");
        assert_eq!(envelope["message"], serde_json::json!({"n": 1}));
        assert_eq!(envelope["headers"], serde_json::json!({"tenant": "t1"}));
        assert_eq!(
            entry.headers, "{}",
            "the headers travel inside the envelope"
        );
        let err = Entry::new(&masstransit, &event(&[], b"not json")).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

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
