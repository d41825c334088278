//! The RabbitMQ connection: a confirm-mode channel, publishing a batch and collecting its
//! confirms, and the connection's blocked/unblocked notices.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::task::Poll;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::maybe_done;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{
    Channel, Confirmation, Connection, ConnectionProperties, Event as LapinEvent, ExchangeKind,
    PublisherConfirm,
};

use super::classify::Problem;
use super::encode::{Message, fill};
use super::exchanges;
use super::link::Link;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::sink::{Answer, Classify, Fault, Ordering, Outcome, Publisher, SinkError, Verdicts};

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
            Cow::Owned(fill(&self.exchange, event))
        } else {
            Cow::Borrowed(&self.exchange)
        }
    }

    fn lost(&mut self, what: &str, e: lapin::Error) -> SinkError {
        self.link = None;
        SinkError::Unavailable(format!("{what}: {e}"))
    }

    /// Checks that the configured exchange exists (not a template's: their exchanges are checked
    /// as events name them; not the default exchange "", which always exists and cannot be
    /// declared).
    async fn check_exchange(&self, channel: &Channel) -> Result<(), SinkError> {
        if self.exchange.is_empty() || self.templated {
            return Ok(());
        }
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
            })
    }
}

/// Awaits each confirm in batch order and adds RabbitMQ's verdicts to `outcomes` (those known
/// before sending). It owns what it awaits, so the next batch may go out on the channel meanwhile.
async fn confirmed(
    confirms: Vec<(usize, PublisherConfirm)>,
    mut outcomes: Vec<Outcome>,
    health: SinkHealth,
) -> Result<Vec<Outcome>, SinkError> {
    for (index, confirm) in confirms {
        let problem = match confirm.await {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                outcomes[index] = Outcome::Delivered;
                continue;
            }
            Ok(Confirmation::Ack(Some(returned))) => Problem::Returned {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.as_str(),
                exchange: returned.delivery.exchange.as_str(),
                routing_key: returned.delivery.routing_key.as_str(),
            }
            .classify(),
            Ok(Confirmation::Nack(_)) => Problem::Nacked.classify(),
            // The channel is gone: the relay marks the sink down and it connects afresh.
            Err(e) => {
                return Err(SinkError::Unavailable(format!(
                    "waiting for RabbitMQ's confirmation failed: {e}"
                )));
            }
        };
        outcomes[index] = problem.outcome()?;
    }
    // Confirms arrived, so publishing is not blocked (an alarm may have ended while this
    // connection was new and so never told it was blocked).
    health.set_blocked(None);
    Ok(outcomes)
}

/// Builds every admitted event's message; an event that cannot be built holds back its key's
/// later events (pipelined with it).
fn encode_all<'a>(
    events: &[&'a Event],
    format: &'a Format,
    template: Option<&str>,
    verdicts: &mut Verdicts<'_>,
) -> Result<Vec<(usize, Message<'a>)>, SinkError> {
    let mut messages = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if !verdicts.admits(index) {
            continue;
        }
        match Message::build(event, format, template) {
            Ok(message) => messages.push((index, message)),
            Err(reason) => verdicts.refuse(index, Fault::Event(reason))?,
        }
    }
    Ok(messages)
}

/// Why a batch did not go out.
enum SendFailed {
    /// The connection or channel failed.
    Lost(lapin::Error),
    /// A publish future ended without a result (cannot happen with `maybe_done`).
    NoResult,
}

/// Sends the whole batch, then returns the pending confirms: one round trip per batch.
async fn send_all(
    channel: &Channel,
    exchange: &str,
    messages: &mut [(usize, Message<'_>)],
) -> Result<Vec<(usize, PublisherConfirm)>, SendFailed> {
    let exchange = ShortString::from(exchange);
    let mut sends = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter_mut() {
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
    for (index, mut send) in sends {
        send.as_mut().await;
        match send.as_mut().take_output() {
            Some(result) => confirms.push((index, result.map_err(SendFailed::Lost)?)),
            // Unreachable: an awaited MaybeDone holds its output until taken.
            None => return Err(SendFailed::NoResult),
        }
    }
    Ok(confirms)
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
        self.check_exchange(&channel).await?;
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
        match self.send(events).await? {
            Answer::Now(outcomes) => Ok(outcomes),
            Answer::Later(verdicts) => verdicts.await,
        }
    }

    /// Publishes the batch and returns the wait for its confirms, which holds nothing of the
    /// sink: the next batch may follow it on the same channel, in order behind it.
    async fn send(&mut self, events: &[&Event]) -> Result<Answer, SinkError> {
        if !self.is_connected() {
            self.connect().await?;
        }
        let mut verdicts = Verdicts::new(events);
        // Build every message first: a publish borrows its body until its frames are written.
        let template = self.templated.then_some(self.exchange.as_str());
        let mut messages = encode_all(events, &self.format, template, &mut verdicts)?;
        if self.templated {
            messages =
                exchanges::check(&mut self.link, &self.exchange, messages, &mut verdicts).await?;
        }
        let Some(Link { channel, .. }) = &self.link else {
            return Err(SinkError::Unavailable("RabbitMQ is not connected".into()));
        };
        let confirms = match send_all(channel, &self.exchange, &mut messages).await {
            Ok(confirms) => confirms,
            Err(SendFailed::Lost(e)) => return Err(self.lost("publishing to RabbitMQ failed", e)),
            Err(SendFailed::NoResult) => {
                return Err(SinkError::Unavailable(
                    "publishing to RabbitMQ returned no result".into(),
                ));
            }
        };
        Ok(Answer::Later(Box::pin(confirmed(
            confirms,
            verdicts.into_outcomes(),
            self.health.clone(),
        ))))
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
