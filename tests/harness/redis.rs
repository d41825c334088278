//! Redis Streams: reading streams back (XRANGE, or a consumer following them with XREAD),
//! removing what a test or bench wrote, and private `redis-server`s on free ports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::consumer::{Inbox, Received, consumer_with_inbox};
use super::db::unique;
use super::relay::{fast_settings, free_port};

/// `TEST_REDIS_URL`, default the local Redis.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The relay's settings for the redis sink at `url`, streams named by `template`.
pub fn redis_settings(url: &str, template: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "redis".into()));
    settings.push(("OUTBOX_REDIS_URL", url.into()));
    settings.push(("OUTBOX_REDIS_STREAM_TEMPLATE", template.into()));
    settings
}

/// A connection to the Redis at `url`.
pub async fn try_redis_client(url: &str) -> Result<MultiplexedConnection> {
    // Reading a stream of thousands of entries takes longer than redis-rs's default 500 ms.
    let options =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(20)));
    redis::Client::open(url)
        .context("a Redis URL")?
        .get_multiplexed_async_connection_with_config(&options)
        .await
        .with_context(|| format!("connecting to Redis at {}", super::db::redact(url)))
}

/// [`try_redis_client`], for tests.
pub async fn redis_client(url: &str) -> MultiplexedConnection {
    try_redis_client(url)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `cmd`; panics on an error.
pub async fn redis_query<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> T {
    cmd.query_async(con).await.expect("Redis command")
}

/// A stream entry: its id and fields in the order they were written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn text(&self, name: &str) -> String {
        String::from_utf8_lossy(self.get(name).unwrap_or_else(|| panic!("field {name}")))
            .into_owned()
    }

    /// As a consumer of `stream` got it: the event's headers (the `headers` field's JSON) and
    /// every other field but `payload` as headers.
    pub fn received(&self, stream: &str) -> Received {
        let mut headers = BTreeMap::new();
        for (name, value) in &self.fields {
            match name.as_str() {
                "payload" => {}
                "headers" => {
                    let event: BTreeMap<String, serde_json::Value> =
                        serde_json::from_slice(value).unwrap_or_default();
                    for (name, value) in event {
                        let text = value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_string);
                        headers.insert(name, text);
                    }
                }
                _ => {
                    headers.insert(name.clone(), String::from_utf8_lossy(value).into_owned());
                }
            }
        }
        Received {
            destination: stream.to_string(),
            key: self
                .get("key")
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            message_id: self
                .get("message_id")
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default(),
            content_type: headers.get("content-type").cloned(),
            persistent: true,
            headers,
            ..Received::new(self.get("payload").unwrap_or_default().to_vec())
        }
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// The entries of an XRANGE reply.
fn parse_entries(entries: &Value) -> Vec<Entry> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else {
            continue;
        };
        let (Some(id), Some(Value::Array(flat))) = (parts.first().and_then(bytes_of), parts.get(1))
        else {
            continue;
        };
        let fields = flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [name, value] => Some((
                    String::from_utf8_lossy(&bytes_of(name)?).into_owned(),
                    bytes_of(value)?,
                )),
                _ => None,
            })
            .collect();
        out.push(Entry {
            id: String::from_utf8_lossy(&id).into_owned(),
            fields,
        });
    }
    out
}

/// The entries per stream of an XREAD reply, RESP2 or RESP3.
fn parse_xread(value: &Value) -> Vec<(String, Vec<Entry>)> {
    let per_stream: Vec<(&Value, &Value)> = match value {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    per_stream
        .into_iter()
        .filter_map(|(name, entries)| {
            let name = String::from_utf8_lossy(&bytes_of(name)?).into_owned();
            Some((name, parse_entries(entries)))
        })
        .collect()
}

/// Every entry of `stream`, oldest first.
pub async fn entries(con: &mut MultiplexedConnection, stream: &str) -> Vec<Entry> {
    let reply: Value = redis_query(con, redis::cmd("XRANGE").arg(stream).arg("-").arg("+")).await;
    assert!(
        matches!(reply, Value::Array(_)),
        "XRANGE answered {reply:?}"
    );
    parse_entries(&reply)
}

pub async fn xlen(con: &mut MultiplexedConnection, stream: &str) -> u64 {
    redis_query(con, redis::cmd("XLEN").arg(stream)).await
}

/// Deletes the keys named `{prefix}*` (streams) and the relay's dedup keys of those streams
/// (`outbox-relay:dedup:{<stream>}:*`).
pub async fn delete_streams(con: &mut MultiplexedConnection, prefix: &str) {
    for pattern in [
        format!("{prefix}*"),
        format!("outbox-relay:dedup:{{{prefix}*"),
    ] {
        let mut cursor = 0u64;
        loop {
            let Ok((next, found)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async::<(u64, Vec<String>)>(con)
                .await
            else {
                break;
            };
            if !found.is_empty() {
                let _ = redis::cmd("UNLINK")
                    .arg(&found)
                    .query_async::<()>(con)
                    .await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// Follows `streams` from their start with `XREAD BLOCK`, putting each entry in its inbox.
pub struct RedisConsumer {
    inbox: Inbox,
    task: tokio::task::JoinHandle<()>,
}

consumer_with_inbox!(RedisConsumer);

impl RedisConsumer {
    pub fn start(url: &str, streams: Vec<String>, inbox: Inbox) -> Result<RedisConsumer> {
        let client = redis::Client::open(url).context("a Redis URL")?;
        let task = tokio::spawn(follow(client, streams, inbox.clone()));
        Ok(RedisConsumer { inbox, task })
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(client: redis::Client, streams: Vec<String>, inbox: Inbox) {
    let mut con = loop {
        match client.get_multiplexed_async_connection().await {
            Ok(con) => break con,
            Err(e) => {
                eprintln!("redis consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut last: Vec<String> = vec!["0-0".to_string(); streams.len()];
    loop {
        let reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(&streams)
            .arg(&last)
            .query_async::<Value>(&mut con)
            .await;
        let at = Instant::now();
        match reply {
            Ok(value) => {
                for (stream, entries) in parse_xread(&value) {
                    let Some(i) = streams.iter().position(|s| *s == stream) else {
                        continue;
                    };
                    for entry in entries {
                        let payload = entry.get("payload").unwrap_or_default();
                        inbox.arrived(payload, at, || entry.received(&stream));
                        last[i] = entry.id;
                    }
                }
            }
            Err(e) => {
                eprintln!("redis consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A `redis-server` of the test's own on a free port, killed on drop; `restart` brings it back
/// on the same port with the same arguments (and, with persistence, the same data).
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl PrivateRedis {
    pub async fn start(extra: &[&str]) -> PrivateRedis {
        let dir = std::env::temp_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(
            command
                .spawn()
                .expect("start redis-server (scripts/services.sh redis installs it)"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ping = async {
                let mut con = redis::Client::open(self.url())
                    .ok()?
                    .get_multiplexed_async_connection()
                    .await
                    .ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .ok()
            };
            if ping.await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no last save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
