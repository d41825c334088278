//! A Kafka-protocol broker: topics of the test's (or bench scenario's) own, a consumer of every
//! partition from the beginning, and a tansu broker of the test's own behind a fault proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{Inbox, Received, consumer_with_inbox};
use super::db::unique;
use super::eventually;
use super::proxy::Proxy;
use super::relay::{fast_settings, free_port};

/// `KAFKA_BROKERS`, default the tansu broker `scripts/services.sh` starts.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The relay's settings for the kafka sink at `brokers` (topic = the event's topic).
pub fn kafka_settings(brokers: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "kafka".into()));
    settings.push(("OUTBOX_KAFKA_BROKERS", brokers.into()));
    settings
}

/// Creates `topic` with `partitions` (an existing one is fine).
pub async fn try_create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        admin.create_topics(&[new], &options),
    )
    .await
    .context("creating a Kafka topic timed out")?
    .with_context(|| {
        format!("create topic {topic} on {brokers} (is the Kafka-protocol broker running? see scripts/services.sh)")
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create Kafka topic {name}: {code}"),
        }
    }
    Ok(())
}

/// [`try_create_topic`], for tests.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    try_create_topic(brokers, topic, partitions)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Reads every partition of a topic from the beginning into its inbox.
pub struct KafkaConsumer {
    inbox: Inbox,
    task: tokio::task::JoinHandle<()>,
}

consumer_with_inbox!(KafkaConsumer);

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KafkaConsumer {
    /// Reads `topic`'s `partitions` into a new keeping inbox (the tests).
    pub fn start(brokers: &str, topic: &str, partitions: i32) -> KafkaConsumer {
        Self::try_start(brokers, &[(topic, partitions)], Inbox::keeping(), None)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Reads every partition of `topics` (name, partitions) into `inbox`; `fetch_wait_ms`: the
    /// consumer's `fetch.wait.max.ms`, else librdkafka's default.
    pub fn try_start(
        brokers: &str,
        topics: &[(&str, i32)],
        inbox: Inbox,
        fetch_wait_ms: Option<&str>,
    ) -> Result<KafkaConsumer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("test_group"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        if let Some(wait) = fetch_wait_ms {
            config.set("fetch.wait.max.ms", wait);
        }
        let consumer: StreamConsumer = config.create().context("creating the Kafka consumer")?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for partition in 0..*partitions {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&assignment).context("assign partitions")?;
        let sink = inbox.clone();
        let task = tokio::spawn(async move {
            let mut stream = consumer.stream();
            while let Some(message) = stream.next().await {
                let Ok(message) = message else { continue };
                let payload = message.payload().unwrap_or_default();
                sink.arrived(payload, Instant::now(), || received(&message));
            }
        });
        Ok(KafkaConsumer { inbox, task })
    }
}

/// A record as a [`Received`]: the message id from the `message-id` header.
fn received(message: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let mut headers = BTreeMap::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            headers.insert(header.key.to_string(), value);
        }
    }
    Received {
        destination: message.topic().to_string(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        message_id: headers.get("message-id").cloned().unwrap_or_default(),
        content_type: headers.get("content-type").cloned(),
        persistent: true,
        partition: Some(message.partition()),
        produced_ms: message.timestamp().to_millis(),
        headers,
        ..Received::new(message.payload().unwrap_or_default().to_vec())
    }
}

/// A tansu broker of the test's own (`TANSU_BIN`), advertising `advertised`.
pub struct OwnBroker {
    child: Child,
}

impl OwnBroker {
    pub fn start(listen: u16, advertised: SocketAddr) -> OwnBroker {
        let binary = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{listen}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {binary} (set TANSU_BIN or run scripts/services.sh kafka): {e}")
            });
        OwnBroker { child }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker of the test's own, reached through a fault proxy: `(proxy, broker)`.
pub async fn own_broker_behind_proxy() -> (Proxy, OwnBroker) {
    let listen = free_port();
    let target: SocketAddr = format!("127.0.0.1:{listen}").parse().expect("addr");
    let proxy = Proxy::start(target).await;
    let broker = OwnBroker::start(listen, proxy.addr);
    eventually("own broker up", Duration::from_secs(90), || async {
        tokio::net::TcpStream::connect(target).await.is_ok()
    })
    .await;
    (proxy, broker)
}
