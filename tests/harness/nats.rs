//! NATS JetStream: a stream of the test's (or bench scenario's) own capturing `{prefix}.>`,
//! consumers of what it stored (or of what was published, as core NATS subscribers see it), and
//! private `nats-server`s on free ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use super::consumer::{Consumer, Inbox, Received, consumer_with_inbox};
use super::db::unique;
use super::eventually;
use super::relay::{fast_settings, free_port};

/// `TEST_NATS_URL`, default the local NATS server (JetStream on).
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Where the NATS server of `TEST_NATS_URL` listens (a URL without credentials).
pub fn nats_addr() -> std::net::SocketAddr {
    let url = nats_url();
    let host_port = url.trim_start_matches("nats://");
    host_port
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:4222".parse().expect("addr"))
}

/// The relay's settings for the nats sink at `url`, subjects named by `template`.
pub fn nats_settings(url: &str, template: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "nats".into()));
    settings.push(("OUTBOX_NATS_URL", url.into()));
    settings.push(("OUTBOX_NATS_SUBJECT_TEMPLATE", template.into()));
    settings
}

/// A stream of the test's own (file storage, a two-minute duplicate window), capturing
/// `{prefix}.>`.
pub struct NatsStream {
    pub prefix: String,
    pub name: String,
    pub js: jetstream::Context,
}

impl NatsStream {
    pub async fn create(url: &str) -> NatsStream {
        Self::try_create(url)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn try_create(url: &str) -> Result<NatsStream> {
        let client = async_nats::connect(url)
            .await
            .context("connecting to NATS")?;
        Self::try_create_on(client).await
    }

    pub async fn create_on(client: async_nats::Client) -> NatsStream {
        Self::try_create_on(client)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn try_create_on(client: async_nats::Client) -> Result<NatsStream> {
        Self::try_create_capturing(client, None).await
    }

    /// A stream capturing only `{prefix}.{topic}` of each of `topics` (a subject of any other
    /// topic is captured by none).
    pub async fn create_capturing(url: &str, topics: &[&str]) -> NatsStream {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        Self::try_create_capturing(client, Some(topics))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn try_create_capturing(
        client: async_nats::Client,
        topics: Option<&[&str]>,
    ) -> Result<NatsStream> {
        let prefix = unique("outbox");
        let js = jetstream::new(client);
        let name = prefix.to_uppercase();
        let subjects = match topics {
            Some(topics) => topics.iter().map(|t| format!("{prefix}.{t}")).collect(),
            None => vec![format!("{prefix}.>")],
        };
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating a JetStream stream (is JetStream enabled?)")?;
        Ok(NatsStream { prefix, name, js })
    }

    /// The same stream, reached at `url` (after its server restarted).
    pub async fn reconnect(&self, url: &str) -> NatsStream {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        NatsStream {
            prefix: self.prefix.clone(),
            name: self.name.clone(),
            js: jetstream::new(client),
        }
    }

    /// The subject template that sends topic `t` to `{prefix}.t`.
    pub fn template(&self) -> String {
        format!("{}.{{topic}}", self.prefix)
    }

    /// Removes the stream from the server.
    pub async fn delete(&self) {
        let _ = self.js.delete_stream(&self.name).await;
    }

    /// Messages stored in the stream.
    pub async fn try_count(&self) -> Result<u64> {
        let mut stream = self.js.get_stream(&self.name).await?;
        Ok(stream.info().await?.state.messages)
    }

    /// Messages stored in the stream, 0 when it cannot be read.
    pub async fn count(&self) -> u64 {
        self.try_count().await.unwrap_or(0)
    }

    /// A consumer of every message the stream stored, from the first, in stream order.
    pub fn consumer(&self, inbox: Inbox) -> NatsConsumer {
        let task = tokio::spawn(read_stream(
            self.js.clone(),
            self.name.clone(),
            inbox.clone(),
        ));
        NatsConsumer { inbox, task }
    }

    /// Every message in the stream, in stream order.
    pub async fn read_all(&self) -> Vec<Received> {
        let total = self.count().await;
        let consumer = self.consumer(Inbox::keeping());
        eventually(
            &format!("{total} stream messages read"),
            Duration::from_secs(60),
            || async { consumer.inbox().count() >= total },
        )
        .await;
        consumer.received()
    }

    /// A core NATS subscriber of `{prefix}.>`: what was published, as it was published (the
    /// bench's latency; duplicates the stream dropped included).
    pub async fn subscribe(&self, url: &str, inbox: Inbox) -> Result<NatsConsumer> {
        let client = async_nats::connect(url)
            .await
            .context("connecting to NATS")?;
        let mut subscriber = client.subscribe(format!("{}.>", self.prefix)).await?;
        client.flush().await?;
        let sink = inbox.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                sink.arrived(&message.payload, Instant::now(), || received(&message));
            }
        });
        Ok(NatsConsumer { inbox, task })
    }
}

/// What a [`NatsStream`] stored or what was published to it, as it arrives.
pub struct NatsConsumer {
    inbox: Inbox,
    task: tokio::task::JoinHandle<()>,
}

consumer_with_inbox!(NatsConsumer);

impl Drop for NatsConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the stream `name` from its first message with a pull consumer, for as long as it runs.
async fn read_stream(js: jetstream::Context, name: String, inbox: Inbox) {
    let config = consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::None,
        ..Default::default()
    };
    let consumer = loop {
        let created = async {
            let stream = js.get_stream(&name).await?;
            anyhow::Ok(stream.create_consumer(config.clone()).await?)
        };
        match created.await {
            Ok(consumer) => break consumer,
            Err(e) => {
                eprintln!("nats consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    loop {
        let batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                eprintln!("nats consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let Ok(message) = message else { continue };
            inbox.arrived(&message.payload, Instant::now(), || received(&message));
        }
    }
}

/// A NATS message as a [`Received`]: the message id from `Nats-Msg-Id`.
fn received(message: &async_nats::Message) -> Received {
    let mut headers = BTreeMap::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let value = values.first().map(|v| v.as_str().to_string());
            headers.insert(name.to_string(), value.unwrap_or_default());
        }
    }
    Received {
        destination: message.subject.to_string(),
        message_id: headers.get("Nats-Msg-Id").cloned().unwrap_or_default(),
        content_type: headers.get("content-type").cloned(),
        persistent: true,
        headers,
        ..Received::new(message.payload.to_vec())
    }
}

/// A nats-server of the test's own on a free port, killed on drop.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start(args: &[&str]) -> NatsServer {
        let store = std::env::temp_dir().join(unique("nats-store"));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut server = NatsServer {
            port: free_port(),
            store,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.restart(&server.args.clone()).await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and store directory, with `args`.
    pub async fn restart(&mut self, args: &[String]) {
        self.stop();
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (scripts/services.sh installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            "private nats-server listens",
            Duration::from_secs(60),
            || async { tokio::net::TcpStream::connect(&addr).await.is_ok() },
        )
        .await;
    }

    /// Starts it again with the arguments it started with.
    pub async fn start_again(&mut self) {
        let args = self.args.clone();
        self.restart(&args).await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped (SIGSTOP) server must not outlive the test.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn nats_server() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}
