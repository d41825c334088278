//! The broker side of the redis, nats and http sinks: a Redis stream, a JetStream stream and a
//! webhook receiver of the bench's own, what arrived there, and the raw limits of each service
//! (pipelined XADD, JetStream publish with acks, POSTs with the relay's default concurrency).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;

use outbox_relay::format::Binding;

use super::{CloudEventsAttributes, Received, TOPIC, keys, payload, unique};

/// Whether the server of `url` (the first of a comma-separated list) answers within 1 s: a Redis
/// answers `PING` (with `+PONG`, or an error when it wants a password), a NATS server greets with
/// `INFO`. Decides the default `BENCH_SINKS`.
pub fn answers(url: &str, default_port: u16) -> bool {
    let first = url.split(',').next().unwrap_or_default().trim();
    let Ok(parsed) = url::Url::parse(first) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let port = parsed.port().unwrap_or(default_port);
    let Some(addr) = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let probe = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let redis = parsed.scheme().starts_with("redis");
        if redis {
            stream.write_all(b"PING\r\n")?;
        }
        let mut buf = [0u8; 16];
        let got = stream.read(&mut buf)?;
        let reply = &buf[..got];
        Ok(if redis {
            reply.starts_with(b"+PONG") || reply.starts_with(b"-")
        } else {
            reply.starts_with(b"INFO")
        })
    };
    probe().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A stream `{prefix}.bench` of this run's own (the relay's `OUTBOX_REDIS_STREAM_TEMPLATE` is
/// `{prefix}.{topic}`); deleted by `teardown`, with the relay's dedup keys of it.
pub struct RedisStream {
    client: redis::Client,
    pub prefix: String,
    pub stream: String,
    consumer: Option<tokio::task::JoinHandle<()>>,
}

impl RedisStream {
    /// `consume`: a reader (`XREAD BLOCK`) noting every entry's payload, for the latency.
    pub async fn setup(url: &str, consume: bool) -> Result<(RedisStream, Option<Received>)> {
        let client = redis::Client::open(url).context("BENCH_REDIS_URL")?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis")?;
        let prefix = unique("outbox_bench");
        let stream = format!("{prefix}.{TOPIC}");
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .context("Redis PING")?;
        let (consumer, received) = if consume {
            let received = Received::default();
            let task = tokio::spawn(read_stream(
                client.clone(),
                stream.clone(),
                received.clone(),
            ));
            (Some(task), Some(received))
        } else {
            (None, None)
        };
        Ok((
            RedisStream {
                client,
                prefix,
                stream,
                consumer,
            },
            received,
        ))
    }

    pub async fn xlen(&self) -> Result<u64> {
        let mut con = self.client.get_multiplexed_async_connection().await?;
        Ok(redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut con)
            .await?)
    }

    pub async fn teardown(self) {
        if let Some(task) = self.consumer {
            task.abort();
        }
        delete_stream(&self.client, &self.stream).await;
    }
}

/// Deletes `stream` and the relay's dedup keys of it (`outbox-relay:dedup:{<stream>}:*`).
async fn delete_stream(client: &redis::Client, stream: &str) {
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let _ = redis::cmd("DEL")
        .arg(stream)
        .query_async::<()>(&mut con)
        .await;
    let pattern = format!("outbox-relay:dedup:{{{stream}}}:*");
    let mut cursor = 0u64;
    loop {
        let Ok((next, found)) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async::<(u64, Vec<String>)>(&mut con)
            .await
        else {
            return;
        };
        if !found.is_empty() {
            let _ = redis::cmd("UNLINK")
                .arg(&found)
                .query_async::<()>(&mut con)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Reads `stream` from its start with `XREAD BLOCK`, noting each entry's `payload` field.
async fn read_stream(client: redis::Client, stream: String, received: Received) {
    let mut con = loop {
        match client.get_multiplexed_async_connection().await {
            Ok(con) => break con,
            Err(e) => {
                eprintln!("bench: redis consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut last = "0-0".to_string();
    loop {
        let reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async::<redis::Value>(&mut con)
            .await;
        let at = Instant::now();
        match reply {
            Ok(value) => {
                for (id, fields) in stream_entries(&value) {
                    let mut pairs = fields.chunks(2);
                    if let Some(data) = pairs.find_map(|p| match p {
                        [k, v] if k.as_slice() == b"payload" => Some(v),
                        _ => None,
                    }) {
                        received.note(data, at);
                    }
                    last = id;
                }
            }
            Err(e) => {
                eprintln!("bench: redis consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn bytes_of(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// The entries (id, flat field list) of an `XREAD` reply on one stream, RESP2 or RESP3.
fn stream_entries(value: &redis::Value) -> Vec<(String, Vec<Vec<u8>>)> {
    let per_stream: Vec<&redis::Value> = match value {
        redis::Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                redis::Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
                _ => None,
            })
            .collect(),
        redis::Value::Map(streams) => streams.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in per_stream {
        let redis::Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let redis::Value::Array(parts) = entry else {
                continue;
            };
            let (Some(id), Some(redis::Value::Array(fields))) =
                (parts.first().and_then(bytes_of), parts.get(1))
            else {
                continue;
            };
            out.push((
                String::from_utf8_lossy(&id).into_owned(),
                fields.iter().filter_map(bytes_of).collect(),
            ));
        }
    }
    out
}

/// `count` entries added like the relay's (fields message_id, topic, key, payload, headers), in
/// pipelines of `batch` XADDs, each awaited before the next. Returns the time until the last
/// reply; checks the stream's length and deletes it. With `cloudevents_fields`, each entry also
/// holds the fields binary CloudEvents add ([`CloudEventsAttributes`]; after `key`, as the relay
/// writes them).
pub async fn redis_raw_xadd(
    url: &str,
    count: u64,
    batch: u64,
    cloudevents_fields: bool,
) -> Result<Duration> {
    let client = redis::Client::open(url).context("BENCH_REDIS_URL")?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let stream = format!("{}.{TOPIC}", unique("outbox_bench_raw"));
    let mut cloudevents = cloudevents_fields.then(CloudEventsAttributes::new);
    let result = async {
        let started = Instant::now();
        let mut seq = 0;
        while seq < count {
            let end = (seq + batch).min(count);
            let mut pipe = redis::pipe();
            for s in seq..end {
                let id = uuid::Uuid::new_v4();
                let key = (s % keys()).to_string();
                let xadd = pipe
                    .cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("message_id")
                    .arg(id.to_string())
                    .arg("topic")
                    .arg(TOPIC)
                    .arg("key")
                    .arg(&key);
                if let Some(attributes) = &mut cloudevents {
                    for (name, value) in attributes.of(Binding::Redis, id, &key)? {
                        xadd.arg(name).arg(value.as_ref());
                    }
                }
                xadd.arg("payload")
                    .arg(payload(s))
                    .arg("headers")
                    .arg("{}")
                    .ignore();
            }
            pipe.query_async::<()>(&mut con)
                .await
                .context("pipelined XADD")?;
            seq = end;
        }
        let took = started.elapsed();
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut con)
            .await?;
        if len != count {
            bail!("the raw stream holds {len} entries, expected {count}");
        }
        Ok(took)
    }
    .await;
    delete_stream(&client, &stream).await;
    result
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream

/// A JetStream stream of this run's own (file storage, the default duplicate window) capturing
/// `{prefix}.>`; the relay's `OUTBOX_NATS_SUBJECT_TEMPLATE` is `{prefix}.{topic}`. Deleted by
/// `teardown`.
pub struct NatsStream {
    js: async_nats::jetstream::Context,
    pub prefix: String,
    name: String,
    consumer: Option<tokio::task::JoinHandle<()>>,
}

async fn create_stream(url: &str, what: &str) -> Result<(async_nats::Client, String, String)> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    let prefix = unique(what);
    let name = prefix.to_uppercase();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("creating a JetStream stream (is JetStream enabled?)")?;
    Ok((client, prefix, name))
}

impl NatsStream {
    /// `consume`: a core NATS subscriber on `{prefix}.>` noting every payload, for the latency.
    pub async fn setup(url: &str, consume: bool) -> Result<(NatsStream, Option<Received>)> {
        let (client, prefix, name) = create_stream(url, "outbox_bench").await?;
        let (consumer, received) = if consume {
            let mut subscriber = client.subscribe(format!("{prefix}.>")).await?;
            client.flush().await?;
            let received = Received::default();
            let sink = received.clone();
            let task = tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    sink.note(&message.payload, Instant::now());
                }
            });
            (Some(task), Some(received))
        } else {
            (None, None)
        };
        Ok((
            NatsStream {
                js: async_nats::jetstream::new(client),
                prefix,
                name,
                consumer,
            },
            received,
        ))
    }

    /// Messages in the stream.
    pub async fn count(&self) -> Result<u64> {
        let mut stream = self.js.get_stream(&self.name).await?;
        Ok(stream.info().await?.state.messages)
    }

    pub async fn teardown(self) {
        if let Some(task) = self.consumer {
            task.abort();
        }
        let _ = self.js.delete_stream(&self.name).await;
    }
}

/// `count` messages published like the relay's (a `Nats-Msg-Id` each) to a stream of their own:
/// `batch` publishes, then all their acknowledgements. Returns the time until the last ack;
/// checks the stream's count and deletes it.
pub async fn nats_raw_publish(url: &str, count: u64, batch: u64) -> Result<Duration> {
    let (client, prefix, name) = create_stream(url, "outbox_bench_raw").await?;
    let js = async_nats::jetstream::new(client);
    let subject = format!("{prefix}.{TOPIC}");
    let result = async {
        let started = Instant::now();
        let mut seq = 0;
        while seq < count {
            let end = (seq + batch).min(count);
            let mut acks = Vec::with_capacity((end - seq) as usize);
            for s in seq..end {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    uuid::Uuid::new_v4().to_string().as_str(),
                );
                acks.push(
                    js.publish_with_headers(subject.clone(), headers, payload(s).into())
                        .await
                        .context("JetStream publish")?,
                );
            }
            for ack in acks {
                ack.await.context("JetStream publish ack")?;
            }
            seq = end;
        }
        let took = started.elapsed();
        let stored = js.get_stream(&name).await?.info().await?.state.messages;
        if stored != count {
            bail!("the raw stream holds {stored} messages, expected {count}");
        }
        Ok(took)
    }
    .await;
    let _ = js.delete_stream(&name).await;
    result
}

// ---------------------------------------------------------------------------------------------
// HTTP webhooks

/// The signing secret the relay gets (`OUTBOX_WEBHOOK_SECRET`), so signing is measured.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The relay's default `OUTBOX_WEBHOOK_CONCURRENCY`.
pub const WEBHOOK_CONCURRENCY: usize = 32;

#[derive(Default)]
struct Hooks {
    requests: AtomicU64,
    ids: Mutex<HashSet<u128>>,
    received: Received,
}

/// A webhook receiver on a free loopback port: answers every `POST /hook` with 204, counting the
/// requests and their distinct `webhook-id`s and noting each payload.
pub struct HookReceiver {
    pub addr: SocketAddr,
    hooks: Arc<Hooks>,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(
    axum::extract::State(hooks): axum::extract::State<Arc<Hooks>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let at = Instant::now();
    hooks.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        && let Ok(mut ids) = hooks.ids.lock()
    {
        ids.insert(id.as_u128());
    }
    hooks.received.note(&body, at);
    axum::http::StatusCode::NO_CONTENT
}

impl HookReceiver {
    pub async fn start() -> Result<HookReceiver> {
        let hooks = Arc::new(Hooks::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: webhook receiver: {e}");
            }
        });
        Ok(HookReceiver { addr, hooks, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Received {
        self.hooks.received.clone()
    }

    pub fn requests(&self) -> u64 {
        self.hooks.requests.load(Ordering::Relaxed)
    }

    pub fn distinct_ids(&self) -> u64 {
        self.hooks.ids.lock().map_or(0, |ids| ids.len() as u64)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Set in the environment of a copy of the bench that only serves [`HookReceiver`].
pub const RECEIVER_ONLY: &str = "BENCH_RECEIVER_ONLY";

/// The receiver-only copy: prints its URL, serves until its stdin closes, then prints the
/// number of distinct `webhook-id`s it got. Its exit code.
pub fn serve_receiver_until_stdin_closes() -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench receiver: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let receiver = match HookReceiver::start().await {
            Ok(receiver) => receiver,
            Err(e) => {
                eprintln!("bench receiver: {e:#}");
                return 1;
            }
        };
        println!("{}", receiver.url());
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
        println!("{}", receiver.distinct_ids());
        receiver.stop();
        0
    })
}

/// The raw HTTP client's own CPU per 1M POSTs: [`http_raw_post`] against a receiver in a copy
/// of this process, so that only the client runs here.
pub async fn http_raw_client_cpu(count: u64) -> Result<f64> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(RECEIVER_ONLY, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the receiver process")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the receiver process has no stdin or stdout");
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = lines
        .next_line()
        .await?
        .context("the receiver process printed no URL")?;
    let cpu = super::own_cpu_secs();
    http_raw_post(&url, count, WEBHOOK_CONCURRENCY, false).await?;
    let cpu = super::cpu_per_million_since(cpu, count);
    // Closing its stdin tells the receiver to print its count and stop.
    drop(stdin);
    let ids = lines
        .next_line()
        .await?
        .context("the receiver process printed no count")?;
    let _ = child.wait().await;
    if ids.trim() != count.to_string() {
        bail!(
            "the receiver got {} distinct webhook-ids for {count} requests",
            ids.trim()
        );
    }
    Ok(cpu)
}

/// `count` POSTs of the bench's payload (with a `webhook-id`, unsigned) to `url`, `in_flight` at
/// once on one pooled client. Returns the time until the last answer; every answer must be 2xx.
/// With `cloudevents_headers`, each request also carries the headers binary CloudEvents add
/// ([`CloudEventsAttributes`]).
pub async fn http_raw_post(
    url: &str,
    count: u64,
    in_flight: usize,
    cloudevents_headers: bool,
) -> Result<Duration> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .context("creating the HTTP client")?;
    let started = Instant::now();
    let mut cloudevents = cloudevents_headers.then(CloudEventsAttributes::new);
    let mut answers = futures_util::stream::iter(0..count)
        .map(|seq| {
            let id = uuid::Uuid::new_v4();
            let request = client
                .post(url)
                .header("webhook-id", id.to_string())
                .body(payload(seq));
            let request = match &mut cloudevents {
                None => Ok(request.header("content-type", "application/json")),
                Some(attributes) => attributes
                    .of(Binding::Http, id, &(seq % keys()).to_string())
                    .map(|headers| {
                        headers
                            .iter()
                            .fold(request, |r, (name, value)| r.header(*name, value.as_ref()))
                    }),
            };
            async move { Ok::<_, anyhow::Error>(request?.send().await?) }
        })
        .buffer_unordered(in_flight);
    while let Some(answer) = answers.next().await {
        let response = answer.context("POST")?;
        if !response.status().is_success() {
            bail!("the receiver answered {}", response.status());
        }
    }
    Ok(started.elapsed())
}
