//! RabbitMQ: an exchange and a queue of the test's (or bench scenario's) own, a consumer of the
//! queue, and the settings that point a relay at the exchange.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use super::consumer::{Inbox, Received, consumer_with_inbox};
use super::db::unique;
use super::relay::fast_settings;

/// `TEST_AMQP_URL`, default the local RabbitMQ as guest.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The relay's settings for the rabbitmq sink publishing to `exchange` at `amqp_url`.
pub fn rabbitmq_settings(exchange: &str, amqp_url: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "rabbitmq".into()));
    settings.push(("OUTBOX_AMQP_URL", amqp_url.into()));
    settings.push(("OUTBOX_AMQP_EXCHANGE", exchange.into()));
    settings
}

/// Where the RabbitMQ of `TEST_AMQP_URL` listens.
pub fn rabbitmq_addr() -> SocketAddr {
    let url = amqp_url();
    let authority = url.split('@').next_back().unwrap_or("127.0.0.1:5672");
    let host_port = authority.split('/').next().unwrap_or("127.0.0.1:5672");
    host_port
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:5672".parse().expect("addr"))
}

/// `TEST_AMQP_URL` reached through `proxy`.
pub fn amqp_url_via(proxy: SocketAddr) -> String {
    let url = amqp_url();
    let (credentials, rest) = url
        .split_once('@')
        .unwrap_or(("amqp://guest:guest", "127.0.0.1:5672/%2f"));
    let vhost = rest.split_once('/').map(|(_, v)| v).unwrap_or("%2f");
    format!("{credentials}@{proxy}/{vhost}")
}

/// What [`Rabbit::open`] declares.
pub struct Declare<'a> {
    pub exchange: &'a str,
    pub kind: ExchangeKind,
    /// The queue's binding to the exchange, e.g. `#`.
    pub binding: &'a str,
    /// A durable queue and an exchange that stay until [`Rabbit::teardown`] (the bench: as a
    /// production queue costs the broker); else an exclusive queue and an exchange that go
    /// with the test's connection.
    pub lasting: bool,
}

/// An exchange and a queue of the test's own, and a consumer (auto-ack) putting what arrives in
/// its inbox.
pub struct Rabbit {
    pub exchange: String,
    pub queue: String,
    inbox: Inbox,
    connection: Connection,
}

consumer_with_inbox!(Rabbit);

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
        let declare = Declare {
            exchange,
            kind,
            binding,
            lasting: false,
        };
        Self::open(url, declare, Some(Inbox::keeping()))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Declares what `declare` says; consumes the queue into `inbox` when there is one (without,
    /// messages stay queued until [`Rabbit::teardown`] deletes the queue).
    pub async fn open(url: &str, declare: Declare<'_>, inbox: Option<Inbox>) -> Result<Rabbit> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        let queue = unique("test_queue");
        let exchange_options = ExchangeDeclareOptions {
            auto_delete: !declare.lasting,
            ..Default::default()
        };
        let queue_options = QueueDeclareOptions {
            durable: declare.lasting,
            exclusive: !declare.lasting,
            auto_delete: !declare.lasting,
            ..Default::default()
        };
        channel
            .exchange_declare(
                declare.exchange.into(),
                declare.kind,
                exchange_options,
                FieldTable::default(),
            )
            .await
            .context("declare exchange")?;
        channel
            .queue_declare(queue.as_str().into(), queue_options, FieldTable::default())
            .await
            .context("declare queue")?;
        channel
            .queue_bind(
                queue.as_str().into(),
                declare.exchange.into(),
                declare.binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("bind queue")?;
        let consuming = inbox.is_some();
        let inbox = inbox.unwrap_or_else(Inbox::counting);
        if consuming {
            consume(&channel, &queue, inbox.clone()).await?;
        }
        Ok(Rabbit {
            exchange: declare.exchange.to_string(),
            queue,
            inbox,
            connection,
        })
    }

    /// Binds the queue to the exchange for `routing_key` too.
    pub async fn bind(&self, routing_key: &str) {
        let channel = self.connection.create_channel().await.expect("channel");
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
    }

    /// Deletes the queue and the exchange, and closes the connection.
    pub async fn teardown(self) {
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Consumes `queue` (auto-ack) into `inbox`, on a task of its own.
async fn consume(channel: &lapin::Channel, queue: &str, inbox: Inbox) -> Result<()> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .context("consume")?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            inbox.arrived(&delivery.data, Instant::now(), || received(&delivery));
        }
    });
    Ok(())
}

/// A delivery as a [`Received`]: the key from the `outbox-key` header.
fn received(delivery: &lapin::message::Delivery) -> Received {
    let properties = &delivery.properties;
    let mut headers = BTreeMap::new();
    if let Some(table) = properties.headers() {
        for (name, value) in table {
            if let AMQPValue::LongString(text) = value {
                headers.insert(name.to_string(), text.to_string());
            }
        }
    }
    Received {
        exchange: delivery.exchange.to_string(),
        destination: delivery.routing_key.to_string(),
        key: headers.get("outbox-key").cloned(),
        message_id: properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        headers,
        persistent: *properties.delivery_mode() == Some(2),
        content_type: properties.content_type().as_ref().map(|c| c.to_string()),
        ..Received::new(delivery.data.clone())
    }
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
            ExchangeBindOptions::default(),
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
            ExchangeBindOptions::default(),
            arguments,
        )
        .await
        .expect("bind exchange to headers exchange");
    let _ = connection.close(200, "declared".into()).await;
    exchange
}
