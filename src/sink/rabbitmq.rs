//! RabbitMQ through lapin: publisher confirms on the channel, `mandatory` so that an unroutable
//! message comes back instead of vanishing, persistent messages, the event's message id.
//! RabbitMQ's `connection.blocked` (a memory or disk alarm) and `unblocked` go to [`SinkHealth`].
//!
//! Message formats ([`crate::format`]) use the RabbitMQ binding: the content type in the
//! `content_type` property, attributes as headers; the key in the header
//! [`format::KEY_HEADER`] (binary CloudEvents: `ce-subject`).
//! `AMQP_EXCHANGE` may hold `{topic}` and `{type}` (MassTransit's exchange per message type); such
//! an exchange is checked once per connection before the first publish to it, so that a missing
//! one fails that event (attempts, then dead letter) instead of closing the channel.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::task::Poll;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::maybe_done;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event as LapinEvent,
    ExchangeKind,
};
use tokio::task::JoinHandle;

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{self, Binding, Format};
use crate::health::SinkHealth;
use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_EXCHANGE: &str = "amq.topic";

pub const KIND: Kind = Kind {
    name: "rabbitmq",
    settings: &["AMQP_URL", "AMQP_EXCHANGE"],
    configure: |settings| Ok(Box::new(RabbitMqConfig::read(settings)?)),
};

#[derive(Clone)]
struct RabbitMqConfig {
    url: String,
    exchange: String,
    format: Format,
}

/// Without the password.
impl std::fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("url", &redact(&self.url))
            .field("exchange", &self.exchange)
            .field("format", &self.format)
            .finish()
    }
}

impl RabbitMqConfig {
    fn read(settings: &SinkSettings) -> Result<RabbitMqConfig, ConfigError> {
        let url = settings.required(
            "AMQP_URL",
            "an amqp:// or amqps:// URL such as amqp://guest:guest@127.0.0.1:5672/%2f",
        )?;
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(settings.error("AMQP_URL", "must start with amqp:// or amqps://"));
        }
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| settings.error("AMQP_URL", format!("is not a valid AMQP URL: {e}")))?;
        // Set but empty means RabbitMQ's default exchange (""), which routes by queue name.
        let exchange = settings
            .raw("AMQP_EXCHANGE")
            .unwrap_or(DEFAULT_EXCHANGE)
            .to_string();
        let rest = exchange.replace("{topic}", "").replace("{type}", "");
        if rest.contains(['{', '}']) {
            return Err(settings.error(
                "AMQP_EXCHANGE",
                format!(
                    "may contain only the placeholders {{topic}} and {{type}}, got {exchange:?}"
                ),
            ));
        }
        Ok(RabbitMqConfig {
            url: url.to_string(),
            exchange,
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for RabbitMqConfig {
    fn publisher(&self, health: SinkHealth) -> Box<dyn Publisher> {
        Box::new(RabbitMqSink::new(
            self.url.clone(),
            self.exchange.clone(),
            self.format.clone(),
            health,
        ))
    }
}

pub struct RabbitMqSink {
    url: String,
    /// The exchange, or its template when it contains `{topic}` or `{type}`.
    exchange: String,
    templated: bool,
    format: Format,
    /// The open connection and its confirm-mode channel; `None` until connected or after a failure.
    link: Option<Link>,
    health: SinkHealth,
}

struct Link {
    connection: Connection,
    channel: Channel,
    /// Reports the connection's blocked/unblocked notices to `SinkHealth`; ends with the link.
    watcher: JoinHandle<()>,
    /// Exchanges of the template found to exist on this connection.
    exchanges: HashSet<String>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl RabbitMqSink {
    pub fn new(url: String, exchange: String, format: Format, health: SinkHealth) -> Self {
        Self {
            templated: exchange.contains("{topic}") || exchange.contains("{type}"),
            url,
            exchange,
            format,
            link: None,
            health,
        }
    }

    /// The exchange of `event`: the setting, with a template's placeholders filled in.
    fn exchange_for<'a>(&'a self, event: &Event) -> Cow<'a, str> {
        if self.templated {
            Cow::Owned(
                self.exchange
                    .replace("{topic}", &event.topic)
                    .replace("{type}", format::event_type(event)),
            )
        } else {
            Cow::Borrowed(&self.exchange)
        }
    }

    fn lost(&mut self, what: &str, e: lapin::Error) -> SinkError {
        self.link = None;
        SinkError::Unavailable(format!("{what}: {e}"))
    }
}

#[async_trait]
impl Publisher for RabbitMqSink {
    /// One channel's messages reach a queue in publish order, and messages with the same
    /// exchange and routing key are routed alike, so a key's events on one route are pipelined.
    fn ordering(&self) -> Ordering {
        Ordering::PerRoute
    }

    /// The exchange and the routing key (the topic). Not the headers: a headers exchange that
    /// routes a key's events by headers that differ between them may return one and take the
    /// next; the later one is then published again after the returned one.
    fn route<'a>(&'a self, event: &'a Event) -> Cow<'a, str> {
        if self.templated {
            Cow::Owned(format!("{}\n{}", self.exchange_for(event), event.topic))
        } else {
            Cow::Borrowed(&event.topic)
        }
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        self.link = None;
        let unavailable = |what: &str, e: lapin::Error| {
            SinkError::Unavailable(format!("{what} {}: {e}", redact(&self.url)))
        };
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from("outbox-relay"));
        let connection = Connection::connect(&self.url, properties)
            .await
            .map_err(|e| unavailable("cannot connect to RabbitMQ at", e))?;
        let watcher = tokio::spawn(watch_blocked(
            connection.events_listener(),
            self.health.clone(),
        ));
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable("cannot open a channel on", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable("cannot enable publisher confirms on", e))?;
        // The default exchange ("") always exists and cannot be declared; a template's exchanges
        // are checked as events name them.
        if !self.exchange.is_empty() && !self.templated {
            channel
                .exchange_declare(
                    ShortString::from(self.exchange.as_str()),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    SinkError::Unavailable(format!(
                        "exchange {:?} is not usable on RabbitMQ ({e}); declare it or set the sink's AMQP_EXCHANGE setting",
                        self.exchange
                    ))
                })?;
        }
        self.link = Some(Link {
            connection,
            channel,
            watcher,
            exchanges: HashSet::new(),
        });
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|link| {
            link.connection.status().connected() && link.channel.status().connected()
        })
    }

    /// Forgets the connection after a timeout. Its late confirms cannot reach a new batch, which
    /// goes out on a new connection with delivery tags of its own. Dropping it asks lapin to close
    /// it without waiting: a blocked RabbitMQ does not read until the alarm clears.
    async fn abandon(&mut self) {
        self.link = None;
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        if !self.is_connected() {
            self.connect().await?;
        }
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        // Build every message first: a publish borrows its body until it is confirmed. Keys with
        // an event that cannot be built: their later events (pipelined with it) are not sent.
        let mut messages = Vec::with_capacity(events.len());
        let mut stopped = KeyGate::default();
        for (index, event) in events.iter().enumerate() {
            if !stopped.admits(event.id, event.key.as_deref()) {
                outcomes[index] = Outcome::NotSent;
                continue;
            }
            match Message::build(
                event,
                &self.format,
                self.templated.then_some(&self.exchange),
            ) {
                Ok(message) => messages.push((index, message)),
                Err(reason) => {
                    outcomes[index] = Outcome::Failed(reason);
                    stopped.close(event.id, event.key.as_deref());
                }
            }
        }
        if self.templated {
            messages =
                check_exchanges(&mut self.link, &self.exchange, messages, &mut outcomes).await?;
        }
        let Some(Link { channel, .. }) = &self.link else {
            return Err(SinkError::Unavailable("RabbitMQ is not connected".into()));
        };
        let exchange = ShortString::from(self.exchange.as_str());
        // Send the whole batch first, then collect the confirms: one round trip per batch.
        let mut sends = Vec::with_capacity(messages.len());
        for (index, message) in &mut messages {
            let send = channel.basic_publish(
                message.exchange.take().unwrap_or_else(|| exchange.clone()),
                std::mem::take(&mut message.routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                std::mem::take(&mut message.properties),
            );
            sends.push((*index, Box::pin(maybe_done(send))));
        }
        // A publish queues its frames (and takes its delivery tag) on its first poll, then waits
        // for lapin's I/O thread to write them. Polling every publish once, in batch order, before
        // waiting on any lets that thread write the batch in a few writes, instead of one
        // hand-off between threads per message (which dominated a profile of the relay). Order
        // holds because lapin (4.12) takes the delivery tag and queues the frames before its first
        // await; the per-key order tests would catch a lapin that changed this.
        std::future::poll_fn(|cx| {
            for (_, send) in &mut sends {
                let _ = send.as_mut().poll(cx);
            }
            Poll::Ready(())
        })
        .await;
        let mut confirms = Vec::with_capacity(sends.len());
        let mut failed = None;
        for (index, mut send) in sends {
            send.as_mut().await;
            match send.as_mut().take_output() {
                Some(Ok(confirm)) => confirms.push((index, confirm)),
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                // Unreachable: an awaited MaybeDone holds its output until taken.
                None => {
                    return Err(SinkError::Unavailable(
                        "publishing to RabbitMQ returned no result".into(),
                    ));
                }
            }
        }
        if let Some(e) = failed {
            return Err(self.lost("publishing to RabbitMQ failed", e));
        }
        for (index, confirm) in confirms {
            outcomes[index] = match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Outcome::Delivered,
                Ok(Confirmation::Ack(Some(returned))) => Outcome::Failed(format!(
                    "unroutable: RabbitMQ returned the message ({} {}): no queue is bound to exchange {:?} for routing key {:?}",
                    returned.reply_code,
                    returned.reply_text,
                    self.exchange_for(events[index]),
                    events[index].topic
                )),
                Ok(Confirmation::Nack(_)) => Outcome::Deferred(
                    "RabbitMQ refused the message (nack), e.g. a full queue with overflow=reject-publish".into(),
                ),
                Err(e) => return Err(self.lost("waiting for RabbitMQ's confirmation failed", e)),
            };
        }
        // Confirms arrived, so publishing is not blocked (an alarm may have ended while this
        // connection was new and so never told it was blocked).
        self.health.set_blocked(None);
        Ok(outcomes)
    }

    async fn close(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = link
                .connection
                .close(200, ShortString::from("outbox-relay stopping"))
                .await;
        }
    }
}

/// Makes sure every exchange a template named exists, asking RabbitMQ once per connection
/// (on a channel of its own: a missing exchange closes the channel that asked). The events
/// of a missing exchange fail; the others are returned.
async fn check_exchanges<'a>(
    link: &mut Option<Link>,
    template: &str,
    messages: Vec<(usize, Message<'a>)>,
    outcomes: &mut [Outcome],
) -> Result<Vec<(usize, Message<'a>)>, SinkError> {
    let mut missing: HashSet<String> = HashSet::new();
    for (_, message) in &messages {
        let Some(name) = message.exchange_name() else {
            continue;
        };
        let known = link
            .as_ref()
            .is_some_and(|link| link.exchanges.contains(name));
        if known || missing.contains(name) {
            continue;
        }
        let Some(open) = link.as_mut() else {
            return Err(SinkError::Unavailable("RabbitMQ is not connected".into()));
        };
        let probe = match open.connection.create_channel().await {
            Ok(probe) => probe,
            Err(e) => {
                *link = None;
                return Err(SinkError::Unavailable(format!(
                    "cannot open a channel on RabbitMQ: {e}"
                )));
            }
        };
        let declared = probe
            .exchange_declare(
                ShortString::from(name),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                open.exchanges.insert(name.to_string());
                let _ = probe.close(200, ShortString::from("checked")).await;
            }
            Err(e) if is_not_found(&e) => {
                missing.insert(name.to_string());
            }
            Err(e) => {
                *link = None;
                return Err(SinkError::Unavailable(format!(
                    "cannot check exchange {name:?} on RabbitMQ: {e}"
                )));
            }
        }
    }
    if missing.is_empty() {
        return Ok(messages);
    }
    let mut kept = Vec::with_capacity(messages.len());
    for (index, message) in messages {
        match message.exchange_name() {
            Some(name) if missing.contains(name) => {
                outcomes[index] = Outcome::Failed(format!(
                    "exchange {name:?} (from the sink's AMQP_EXCHANGE template {:?}) does not exist on RabbitMQ; declare it (a MassTransit consumer of this message type declares it when it starts), then retry the dead letter",
                    template
                ));
            }
            _ => kept.push((index, message)),
        }
    }
    Ok(kept)
}

/// RabbitMQ's 404 NOT_FOUND: a passive declare of an exchange that does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
}

/// Passes the connection's blocked/unblocked notices on to `health` until the connection ends.
async fn watch_blocked(
    events: impl futures_util::Stream<Item = LapinEvent> + Send + 'static,
    health: SinkHealth,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            LapinEvent::ConnectionBlocked(reason) => {
                health.set_blocked(Some(format!("RabbitMQ: {reason}")));
            }
            LapinEvent::ConnectionUnblocked => health.set_blocked(None),
            _ => {}
        }
    }
}

/// The AMQP side of an event: exchange, routing key, properties and body.
struct Message<'a> {
    /// `None`: the configured exchange (no template).
    exchange: Option<ShortString>,
    routing_key: ShortString,
    properties: BasicProperties,
    body: Cow<'a, [u8]>,
}

impl<'a> Message<'a> {
    /// Fails for events AMQP cannot carry (names longer than 255 bytes) and events the format
    /// cannot carry. `template`: the exchange template to fill in, if there is one.
    fn build(
        event: &'a Event,
        format: &'a Format,
        template: Option<&String>,
    ) -> Result<Message<'a>, String> {
        let too_long = |what: &str, name: &str| {
            format!(
                "{what} {name:?} is {} bytes; AMQP allows at most 255",
                name.len()
            )
        };
        let routing_key = ShortString::try_new(event.topic.as_str())
            .map_err(|_| too_long("topic (the routing key)", &event.topic))?;
        let exchange = match template {
            Some(template) => {
                let name = template
                    .replace("{topic}", &event.topic)
                    .replace("{type}", format::event_type(event));
                Some(ShortString::try_new(name.as_str()).map_err(|_| too_long("exchange", &name))?)
            }
            None => None,
        };
        let message = format.message(event, Binding::RabbitMq)?;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            let name = ShortString::try_new(*name).map_err(|_| too_long("header name", name))?;
            headers.insert(
                name,
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
        let timestamp = u64::try_from(event.created_at.timestamp()).unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.message_id.to_string()))
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_app_id(ShortString::from("outbox-relay"))
            .with_headers(headers);
        if let Some(content_type) = &message.content_type {
            let content_type = ShortString::try_new(content_type.as_ref())
                .map_err(|_| too_long("content type", content_type))?;
            properties = properties.with_content_type(content_type);
        }
        Ok(Message {
            exchange,
            routing_key,
            properties,
            body: message.body,
        })
    }

    /// The exchange as a string, for checks and messages.
    fn exchange_name(&self) -> Option<&str> {
        self.exchange.as_ref().map(ShortString::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn exchange_of(pairs: &[(&str, &str)]) -> String {
        let settings = Settings::from_pairs(pairs);
        let config = RabbitMqConfig::read(&settings.default_sink()).expect("valid");
        config.exchange
    }

    #[test]
    fn an_empty_amqp_exchange_means_the_default_exchange() {
        let base = [("OUTBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")];
        assert_eq!(exchange_of(&base), DEFAULT_EXCHANGE);
        let mut empty = base.to_vec();
        empty.push(("OUTBOX_AMQP_EXCHANGE", ""));
        assert_eq!(exchange_of(&empty), "");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let settings =
            Settings::from_pairs(&[("OUTBOX_AMQP_URL", "amqp://user:s3cret@mq:5672/%2f")]);
        let config = RabbitMqConfig::read(&settings.default_sink()).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
