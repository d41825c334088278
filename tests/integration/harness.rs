//! Test harness: a database per test, the relay as a real child process, a RabbitMQ exchange and
//! queue per test, a fault-injecting TCP proxy, a PgBouncer of its own, and waiting with deadlines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::{Client, NoTls};

pub const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Polls `check` until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A database of the test's own, migrated by the real binary.
pub struct TestDb {
    pub url: String,
    pub client: Client,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let db = Self::create_empty().await;
        let output = Command::new(BIN)
            .arg("migrate")
            .env("OUTBOX_DATABASE_URL", &db.url)
            .output()
            .expect("run outbox-relay migrate");
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        db
    }

    pub async fn create_empty() -> TestDb {
        let name = unique("outbox_test");
        let admin = connect(&admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = match admin_url().rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_DATABASE_URL must end with /database"),
        };
        let client = connect(&url).await;
        TestDb { url, client }
    }

    /// Inserts one event as a writer would and returns its id.
    pub async fn insert(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: &str,
    ) -> i64 {
        self.client
            .query_one(
                "INSERT INTO outbox.events (topic, key, payload, headers) VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id",
                &[&topic, &key, &payload, &headers],
            )
            .await
            .expect("insert event")
            .get(0)
    }

    /// Inserts one event of key `later` due in an hour (never published during a test); its id.
    pub async fn insert_scheduled(&self) -> i64 {
        self.client
            .query_one(
                "INSERT INTO outbox.events (topic, key, payload, available_at)
                 VALUES ('t', 'later', 'later', now() + interval '1 hour') RETURNING id",
                &[],
            )
            .await
            .expect("insert a scheduled event")
            .get(0)
    }

    pub async fn count(&self, condition: &str) -> i64 {
        self.client
            .query_one(
                &format!("SELECT count(*) FROM outbox.events WHERE {condition}"),
                &[],
            )
            .await
            .expect("count events")
            .get(0)
    }

    /// Every event's message id, by event id.
    pub async fn message_ids(&self) -> BTreeMap<i64, String> {
        self.client
            .query("SELECT id, message_id::text FROM outbox.events", &[])
            .await
            .expect("message ids")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    pub async fn undelivered(&self) -> i64 {
        self.count("delivered_at IS NULL AND dead_lettered_at IS NULL")
            .await
    }

    /// The ids of the events marked delivered, in order.
    pub async fn delivered_ids(&self) -> Vec<i64> {
        self.client
            .query(
                "SELECT id FROM outbox.events WHERE delivered_at IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .expect("delivered events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// Settings every test relay gets: fast retries and polls so tests finish quickly.
pub fn fast_settings() -> Vec<(&'static str, String)> {
    vec![
        ("OUTBOX_RETRY_BASE_DELAY_MS", "50".into()),
        ("OUTBOX_RETRY_MAX_DELAY_MS", "500".into()),
        ("OUTBOX_POLL_INTERVAL_MS", "200".into()),
        ("OUTBOX_LEADER_POLL_MS", "200".into()),
        ("OUTBOX_SHUTDOWN_TIMEOUT_SECS", "10".into()),
    ]
}

pub fn rabbitmq_settings(exchange: &str, amqp_url: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "rabbitmq".into()));
    settings.push(("OUTBOX_AMQP_URL", amqp_url.into()));
    settings.push(("OUTBOX_AMQP_EXCHANGE", exchange.into()));
    settings
}

/// A loopback port that nothing listens on, never the same twice in this test process: the
/// operating system may hand a port it just gave out again, before the relay it was for has bound
/// it (seen: two relays of concurrent tests got one port, and one exited "Address already in
/// use").
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// `outbox-relay run` as a child process; stdout and stderr go to files.
pub struct Relay {
    child: Child,
    pub http: SocketAddr,
    dir: PathBuf,
}

impl Relay {
    pub fn start(database_url: &str, settings: &[(&'static str, String)]) -> Relay {
        let dir = std::env::temp_dir().join(unique("relay"));
        std::fs::create_dir_all(&dir).expect("relay dir");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("OUTBOX_DATABASE_URL", database_url)
            .env("OUTBOX_HTTP_ADDR", http.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (name, value) in settings {
            command.env(name, value);
        }
        let child = command.spawn().expect("start outbox-relay run");
        Relay { child, http, dir }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (with a deadline) for the relay to exit on its own.
    pub async fn exited(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait relay") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay still running after {timeout:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (with a deadline) for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.exited(timeout).await
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// `outbox_relay_publish_errors_total{kind="outage"}`, 0 when `/metrics` does not answer.
    pub async fn outages(&self) -> f64 {
        match self.get("/metrics").await {
            Some((_, body)) => labelled_metric_value(
                &body,
                "outbox_relay_publish_errors_total",
                "kind=\"outage\"",
            )
            .unwrap_or(0.0),
            None => 0.0,
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path).await
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        metric_value(&body, name)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The value of an unlabelled sample, or the sum over all label sets of `name`.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let series_name = series.split('{').next().unwrap_or(series);
        if series_name == name {
            let value: f64 = value.parse().ok()?;
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// A minimal HTTP/1.1 GET: enough for /metrics, /healthz and /readyz.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A message as a RabbitMQ consumer received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    pub persistent: bool,
    pub content_type: Option<String>,
}

/// An exchange and a queue of the test's own, and a consumer collecting what arrives.
pub struct Rabbit {
    pub exchange: String,
    received: Arc<Mutex<Vec<Received>>>,
    _connection: Connection,
}

impl Rabbit {
    /// Declares a topic exchange and a queue bound to it with `binding` (e.g. "#").
    pub async fn setup(binding: &str) -> Rabbit {
        Self::setup_at(&amqp_url(), binding).await
    }

    /// As [`Rabbit::setup`], on the RabbitMQ at `url`.
    pub async fn setup_at(url: &str, binding: &str) -> Rabbit {
        Self::declare(url, &unique("test_exchange"), ExchangeKind::Topic, binding).await
    }

    /// Declares the exchange `exchange` of `kind` (auto-delete) and a queue bound to it with
    /// `binding`, on the RabbitMQ at `url`.
    pub async fn declare(url: &str, exchange: &str, kind: ExchangeKind, binding: &str) -> Rabbit {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        let exchange = exchange.to_string();
        let queue = unique("test_queue");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let properties = &delivery.properties;
                let mut headers = BTreeMap::new();
                if let Some(table) = properties.headers() {
                    for (name, value) in table {
                        if let AMQPValue::LongString(text) = value {
                            headers.insert(name.to_string(), text.to_string());
                        }
                    }
                }
                let message = Received {
                    exchange: delivery.exchange.to_string(),
                    routing_key: delivery.routing_key.to_string(),
                    message_id: properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    headers,
                    payload: delivery.data.clone(),
                    persistent: *properties.delivery_mode() == Some(2),
                    content_type: properties.content_type().as_ref().map(|c| c.to_string()),
                };
                let _ = delivery.ack(BasicAckOptions::default()).await;
                if let Ok(mut all) = sink.lock() {
                    all.push(message);
                }
            }
        });
        Rabbit {
            exchange,
            received,
            _connection: connection,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` messages arrived and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(
            &format!("{n} messages in the test queue"),
            timeout,
            || async { self.received().len() >= n },
        )
        .await;
        self.received()
    }
}

/// A TCP proxy that can cut every connection and refuse new ones, or freeze them (a peer that stops
/// answering), then let traffic through again.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    open: bool,
    /// Bumped by `cut`; a connection ends when its generation is no longer current.
    generation: u64,
    /// Connections stay open and new ones are accepted, but nothing is forwarded.
    frozen: bool,
    /// Bytes that clients sent while frozen and that wait to be forwarded.
    held_bytes: usize,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(ProxyState {
            open: true,
            ..ProxyState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (open, generation) = {
                    let s = shared.lock().expect("proxy state");
                    (s.open, s.generation)
                };
                if !open {
                    drop(client);
                    continue;
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = forward(cr, sw, state.clone(), generation, true);
                    let down = forward(sr, cw, state.clone(), generation, false);
                    let cut = async {
                        loop {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if state
                                .lock()
                                .map(|s| s.generation != generation)
                                .unwrap_or(true)
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy { addr, state }
    }

    /// Drops every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.open = false;
        s.generation += 1;
    }

    /// Keeps every connection open and accepts new ones, but forwards nothing until `restore`:
    /// a peer that stops answering. What was sent meanwhile is delivered after `restore`.
    pub fn freeze(&self) {
        self.state.lock().expect("proxy state").frozen = true;
    }

    pub fn restore(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.open = true;
        s.frozen = false;
    }

    /// Bytes that clients sent while frozen and that wait to be forwarded.
    pub fn held_bytes(&self) -> usize {
        self.state.lock().expect("proxy state").held_bytes
    }
}

/// Copies `from` to `to` until the connection's `generation` is cut, holding data back while the
/// proxy is frozen; `from_client` data held back is counted in `held_bytes`.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<Mutex<ProxyState>>,
    generation: u64,
    from_client: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let held = from_client && state.lock().map(|s| s.frozen).unwrap_or(false);
        if held && let Ok(mut s) = state.lock() {
            s.held_bytes += n;
        }
        while state.lock().map(|s| s.frozen).unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if held && let Ok(mut s) = state.lock() {
            s.held_bytes -= n;
        }
        // Cut: nothing read after `cut` returned gets through, even before the connection is
        // closed (a relay can publish within the moment that takes).
        if state
            .lock()
            .map(|s| s.generation != generation)
            .unwrap_or(true)
        {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

pub fn rabbitmq_addr() -> SocketAddr {
    let url = amqp_url();
    let authority = url.split('@').next_back().unwrap_or("127.0.0.1:5672");
    let host_port = authority.split('/').next().unwrap_or("127.0.0.1:5672");
    host_port
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:5672".parse().expect("addr"))
}

pub fn amqp_url_via(proxy: SocketAddr) -> String {
    let url = amqp_url();
    let (credentials, rest) = url
        .split_once('@')
        .unwrap_or(("amqp://guest:guest", "127.0.0.1:5672/%2f"));
    let vhost = rest.split_once('/').map(|(_, v)| v).unwrap_or("%2f");
    format!("{credentials}@{proxy}/{vhost}")
}

// Helpers of the guarantee and fault-injection tests (guarantees.rs, chaos.rs).

/// The database name at the end of a PostgreSQL URL.
pub fn database_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap_or_default()
}

/// Where the test PostgreSQL listens, from `TEST_DATABASE_URL`.
pub fn postgres_addr() -> SocketAddr {
    let url = admin_url();
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:5432".parse().expect("addr"))
}

/// `url` with its host and port replaced by `proxy`: the same database, reached through the proxy.
pub fn database_url_via(url: &str, proxy: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("postgres:// URL");
    let (authority, path) = rest.split_once('/').expect("URL ends with /database");
    match authority.rsplit_once('@') {
        Some((credentials, _)) => format!("{scheme}://{credentials}@{proxy}/{path}"),
        None => format!("{scheme}://{proxy}/{path}"),
    }
}

/// Terminates the relays' own PostgreSQL sessions in `database` (and only there); returns how many.
pub async fn terminate_relay_backends(client: &Client, database: &str) -> i64 {
    client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name LIKE 'outbox-relay%' AND datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .expect("terminate relay backends")
        .iter()
        .filter(|row| row.get::<_, bool>(0))
        .count() as i64
}

/// Runs a short-lived `outbox-relay` command (not `run`) against `database_url`.
pub fn outbox_command(args: &[&str], database_url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_DATABASE_URL", database_url)
        .output()
        .expect("run outbox-relay")
}

/// Binds exchange `destination` to exchange `source` for `routing_key`: from then on, messages
/// published to `source` with a matching routing key also reach the queues of `destination`.
pub async fn bind_exchange(source: &str, destination: &str, routing_key: &str) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_bind(
            destination.into(),
            source.into(),
            routing_key.into(),
            lapin::options::ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind exchange to exchange");
    let _ = connection.close(200, "bound".into()).await;
}

/// Declares a headers exchange (auto-delete) that passes to `destination` the messages whose
/// headers hold every pair of `matching`; returns its name.
pub async fn headers_exchange_to(destination: &str, matching: &[(&str, &str)]) -> String {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let exchange = unique("test_headers");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Headers,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare headers exchange");
    let mut arguments = FieldTable::default();
    arguments.insert("x-match".into(), AMQPValue::LongString("all".into()));
    for (name, value) in matching {
        arguments.insert((*name).into(), AMQPValue::LongString((*value).into()));
    }
    channel
        .exchange_bind(
            destination.into(),
            exchange.as_str().into(),
            "".into(),
            lapin::options::ExchangeBindOptions::default(),
            arguments,
        )
        .await
        .expect("bind exchange to headers exchange");
    let _ = connection.close(200, "declared".into()).await;
    exchange
}

/// The sum of the samples of `name` whose labels include `label` (e.g. `kind="event"`).
pub fn labelled_metric_value(body: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((series_name, labels)) = series.split_once('{') else {
            continue;
        };
        if series_name == name && labels.contains(label) {
            let value: f64 = value.parse().ok()?;
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// How many different payloads arrived (at-least-once: duplicates count once).
pub fn distinct_payloads(received: &[Received]) -> usize {
    received
        .iter()
        .map(|m| m.payload.as_slice())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// For payloads `k{key}:{seq}`: per key, the sequence numbers in the order they first arrived.
/// Later copies of a payload (redeliveries) are skipped: this is what per-key order is about.
pub fn first_arrivals_by_key(received: &[Received]) -> std::collections::HashMap<String, Vec<u64>> {
    let mut seen = std::collections::HashSet::new();
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for message in received {
        if !seen.insert(message.payload.as_slice()) {
            continue;
        }
        let text = String::from_utf8_lossy(&message.payload);
        let (key, seq) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("payload {text:?} is not key:seq"));
        by_key
            .entry(key.to_string())
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    by_key
}

/// Every key `k0..k{keys}` arrived with sequence numbers `0..per_key`, first arrivals in order.
pub fn assert_keys_ordered_and_complete(received: &[Received], keys: usize, per_key: u64) {
    let by_key = first_arrivals_by_key(received);
    assert_eq!(by_key.len(), keys, "every key arrived");
    let expected: Vec<u64> = (0..per_key).collect();
    for (key, seqs) in &by_key {
        assert_eq!(seqs, &expected, "key {key}: events missing or out of order");
    }
}

/// Inserts payloads `k{key}:{seq}` (key `k{key}`) for seq in `from..to`, `per_tx` sequence
/// numbers per transaction.
pub async fn insert_keyed_sequence(
    client: &Client,
    topic: &str,
    keys: usize,
    from: u64,
    to: u64,
    per_tx: u64,
) {
    let mut seq = from;
    while seq < to {
        let end = (seq + per_tx).min(to);
        let mut sql = String::from("BEGIN;");
        for s in seq..end {
            for k in 0..keys {
                sql.push_str(&format!(
                    "INSERT INTO outbox.events (topic, key, payload) VALUES ('{topic}', 'k{k}', 'k{k}:{s}'::bytea);"
                ));
            }
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("insert batch");
        seq = end;
    }
}

/// Waits until `/readyz` answers `status`.
pub async fn wait_ready(relay: &Relay, status: u16, timeout: Duration) {
    eventually(&format!("/readyz {status}"), timeout, || async {
        relay.get("/readyz").await.map(|r| r.0) == Some(status)
    })
    .await;
}

/// A PgBouncer of the test's own (`scripts/services.sh pgbouncer` installs the binary) on a free
/// port, in front of the test PostgreSQL; stopped on drop.
pub struct PgBouncer {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl PgBouncer {
    pub async fn start(pool_mode: &str) -> PgBouncer {
        Self::start_with(pool_mode, "").await
    }

    /// With `extra` lines appended to the `[pgbouncer]` section.
    pub async fn start_with(pool_mode: &str, extra: &str) -> PgBouncer {
        let dir = std::env::temp_dir().join(unique("pgbouncer"));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let admin = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        let postgres = postgres_addr();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        // Clients are trusted; the auth file names the user and holds the password PgBouncer
        // logs in to PostgreSQL with.
        std::fs::write(
            dir.join("users.txt"),
            format!(
                "\"{}\" \"{}\"\n",
                admin.username(),
                admin.password().unwrap_or("")
            ),
        )
        .expect("auth file");
        let ini = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
             pool_mode = {pool_mode}\n{extra}\n",
            postgres.ip(),
            postgres.port(),
            addr.port(),
            dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
        let log = std::fs::File::create(dir.join("log")).expect("log file");
        let mut command = Command::new(pgbouncer_binary());
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // PgBouncer refuses to run as root; the tests often do.
        if let Some((uid, gid)) = unprivileged_user() {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let mut pgbouncer = PgBouncer {
            child: command.spawn().expect("start pgbouncer"),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            let exited = pgbouncer.child.try_wait().expect("wait pgbouncer");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "pgbouncer did not listen on {addr}:\n{}",
                pgbouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pgbouncer
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("pgbouncer is not installed: run scripts/services.sh pgbouncer"))
}

/// When running as root: the uid and gid of the `postgres` user (which the PostgreSQL package
/// creates), to run PgBouncer as.
fn unprivileged_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let fields: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user to run pgbouncer as (PgBouncer refuses root)")
        .split(':')
        .collect();
    Some((
        fields[2].parse().expect("uid"),
        fields[3].parse().expect("gid"),
    ))
}

/// After an outage ended: every event delivered, none used an attempt or was dead-lettered.
pub async fn assert_delivered_without_attempts(db: &TestDb, timeout: Duration) {
    eventually(
        "every event delivered after the outage",
        timeout,
        || async { db.undelivered().await == 0 },
    )
    .await;
    assert_eq!(
        db.count("attempts > 0").await,
        0,
        "the outage used no attempts"
    );
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);
}

/// After a broker outage or block ended: every event delivered without using an attempt or
/// dead-lettering, and `keys` x `per_key` events consumed complete and in key order.
pub async fn assert_recovered_losslessly(
    db: &TestDb,
    rabbit: &Rabbit,
    keys: usize,
    per_key: u64,
    timeout: Duration,
) {
    assert_delivered_without_attempts(db, timeout).await;
    eventually("every event consumed", timeout, || async {
        distinct_payloads(&rabbit.received()) >= keys * per_key as usize
    })
    .await;
    assert_keys_ordered_and_complete(&rabbit.received(), keys, per_key);
}
