//! The raw publishers of RabbitMQ, Redis and NATS: each broker's limit without the relay,
//! publishing as the relay does (message ids, confirms or acks, batches of `OUTBOX_BATCH_SIZE`).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use outbox_relay::format::{Binding, DEFAULT_CLOUDEVENTS_SOURCE, Format, Mode};
use outbox_relay::outbox::event::Event;

use super::workload::{TOPIC, keys, payload};
use crate::harness::{NatsStream, delete_streams, try_redis_client, unique};

/// The headers (Redis: fields) binary CloudEvents add to a bench message, named and filled by the
/// relay's own format code ([`Format::message`]), so that a raw reference publisher carries
/// exactly what the relay would.
pub struct CloudEventsAttributes {
    format: Format,
    event: Event,
}

impl CloudEventsAttributes {
    pub fn new() -> CloudEventsAttributes {
        CloudEventsAttributes {
            format: Format::CloudEvents {
                source: DEFAULT_CLOUDEVENTS_SOURCE.to_string(),
                mode: Mode::Binary,
            },
            event: Event {
                id: 0,
                topic: TOPIC.to_string(),
                key: None,
                payload: Vec::new(),
                headers: Vec::new(),
                message_id: uuid::Uuid::nil(),
                created_at: chrono::Utc::now(),
                attempts: 0,
            },
        }
    }

    /// The attributes of the message `id` of `key`, created now, as `binding` carries them.
    pub fn of(
        &mut self,
        binding: Binding,
        id: uuid::Uuid,
        key: &str,
    ) -> Result<Vec<(&str, Cow<'_, str>)>> {
        self.event.message_id = id;
        self.event.key = Some(key.to_string());
        self.event.created_at = chrono::Utc::now();
        let message = self
            .format
            .message(&self.event, binding)
            .map_err(|e| anyhow!("formatting a bench message: {e}"))?;
        Ok(message.headers)
    }
}

/// Publishes `count` events straight to RabbitMQ like the relay does (persistent, mandatory, a
/// message id, confirms): `batch` publishes, then their confirms. Returns the time until the last
/// confirm.
pub async fn rabbit_raw_publish(
    url: &str,
    exchange: &str,
    count: u64,
    batch: u64,
) -> Result<Duration> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = ShortString::from(exchange);
    let started = Instant::now();
    let mut seq = 0;
    while seq < count {
        let end = (seq + batch).min(count);
        let data: Vec<Vec<u8>> = (seq..end).map(payload).collect();
        let mut sends = Vec::with_capacity(data.len());
        for body in &data {
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()))
                .with_delivery_mode(2)
                .with_timestamp(0)
                .with_app_id(ShortString::from("outbox-relay-bench"))
                .with_headers(FieldTable::default());
            let send = channel.basic_publish(
                exchange.clone(),
                TOPIC.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            );
            sends.push(Box::pin(futures_util::future::maybe_done(send)));
        }
        // As the relay does: queue every message of the batch before waiting on any, so lapin's
        // I/O thread writes them together (the fastest way lapin publishes).
        std::future::poll_fn(|cx| {
            for send in &mut sends {
                let _ = std::future::Future::poll(send.as_mut(), cx);
            }
            std::task::Poll::Ready(())
        })
        .await;
        let mut confirms = Vec::with_capacity(sends.len());
        for mut send in sends {
            send.as_mut().await;
            match send.as_mut().take_output() {
                Some(confirm) => confirms.push(confirm?),
                None => bail!("basic.publish returned no result"),
            }
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                other => bail!("RabbitMQ did not accept a message: {other:?}"),
            }
        }
        seq = end;
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "bench done".into()).await;
    Ok(elapsed)
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
    let mut con = try_redis_client(url).await?;
    let prefix = unique("outbox_bench_raw");
    let stream = format!("{prefix}.{TOPIC}");
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
                    for (name, value) in
                        attributes.of(outbox_relay::sink::redis::BINDING, id, &key)?
                    {
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
    delete_streams(&mut con, &prefix).await;
    result
}

/// `count` messages published like the relay's (a `Nats-Msg-Id` each) to a stream of their own:
/// `batch` publishes, then all their acknowledgements. Returns the time until the last ack;
/// checks the stream's count and deletes it.
pub async fn nats_raw_publish(url: &str, count: u64, batch: u64) -> Result<Duration> {
    let stream = NatsStream::try_create(url).await?;
    let subject = format!("{}.{TOPIC}", stream.prefix);
    let js = &stream.js;
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
        let stored = stream.try_count().await?;
        if stored != count {
            bail!("the raw stream holds {stored} messages, expected {count}");
        }
        Ok(took)
    }
    .await;
    stream.delete().await;
    result
}
