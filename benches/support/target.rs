//! A sink's broker side for one scenario, from the harness: where the relay publishes (an
//! exchange, topic, stream or receiver of the scenario's own), the relay's settings for it, and a
//! consumer counting what arrived.

use anyhow::{Context, Result};
use lapin::ExchangeKind;

use super::raw_bullmq::waiting_jobs;
use super::raw_http::{HOOK_PATH, WEBHOOK_SECRET, receiver};
use super::raw_kafka;
use super::settings::{Settings, SinkKind};
use super::workload::TOPIC;
use crate::harness::{
    BullmqWorker, Declare, Inbox, KafkaConsumer, NatsConsumer, NatsStream, Rabbit, Receiver,
    RedisConsumer, Relay, RelayStdout, delete_streams, read_stdout_lines, try_create_topic,
    try_redis_client, unique,
};

/// The broker side of one scenario.
pub struct Target {
    /// The relay's settings for this sink.
    pub env: Vec<(&'static str, String)>,
    /// What a consumer got: always for RabbitMQ (so its queue stays short) and HTTP; for the
    /// others when asked (`consume`); never for stdout (its lines are the relay's output).
    pub received: Option<Inbox>,
    side: Side,
}

enum Side {
    Stdout,
    RabbitMq(Rabbit),
    Kafka(Option<KafkaConsumer>),
    /// The stream `{prefix}.bench`, its Redis, and its consumer.
    Redis {
        url: String,
        prefix: String,
        consumer: Option<RedisConsumer>,
    },
    Nats(NatsStream, Option<NatsConsumer>),
    Http(Receiver),
    /// The queue `{prefix}:bench` on its Redis, and a BullMQ worker of it when consumed.
    Bullmq {
        url: String,
        prefix: String,
        worker: Option<BullmqWorker>,
    },
}

impl Target {
    /// The broker side of `sink`; `consume`: whether Kafka, Redis and NATS get a consumer.
    pub async fn open(s: &Settings, sink: SinkKind, consume: bool) -> Result<Target> {
        match sink {
            SinkKind::Stdout => Ok(Target {
                env: vec![("OUTBOX_SINK", "stdout".into())],
                received: None,
                side: Side::Stdout,
            }),
            SinkKind::RabbitMq => Self::rabbitmq(s).await,
            SinkKind::Kafka => Self::kafka(s, consume).await,
            SinkKind::Redis => Self::redis(s, consume).await,
            SinkKind::Nats => Self::nats(s, consume).await,
            SinkKind::Bullmq => Self::bullmq(s, consume).await,
            SinkKind::Http => {
                let receiver = receiver().await?;
                Ok(Target {
                    env: vec![
                        ("OUTBOX_SINK", "http".into()),
                        ("OUTBOX_WEBHOOK_URL", receiver.url(HOOK_PATH)),
                        ("OUTBOX_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
                    ],
                    received: Some(receiver.inbox().clone()),
                    side: Side::Http(receiver),
                })
            }
        }
    }

    /// A topic exchange and a durable queue bound to it with `#`, consumed (auto-ack).
    async fn rabbitmq(s: &Settings) -> Result<Target> {
        let declare = Declare {
            exchange: &unique("outbox_bench"),
            kind: ExchangeKind::Topic,
            binding: "#",
            lasting: true,
        };
        let rabbit = Rabbit::open(&s.amqp_url, declare, Some(Inbox::counting())).await?;
        Ok(Target {
            env: vec![
                ("OUTBOX_SINK", "rabbitmq".into()),
                ("OUTBOX_AMQP_URL", s.amqp_url.clone()),
                ("OUTBOX_AMQP_EXCHANGE", rabbit.exchange.clone()),
            ],
            received: Some(rabbit.inbox().clone()),
            side: Side::RabbitMq(rabbit),
        })
    }

    /// The one-partition topic `{prefix}.bench`.
    async fn kafka(s: &Settings, consume: bool) -> Result<Target> {
        let brokers = s.kafka_brokers.clone().context("KAFKA_BROKERS")?;
        let prefix = unique("outbox_bench");
        let topic = format!("{prefix}.{TOPIC}");
        try_create_topic(&brokers, &topic, 1).await?;
        let consumer = match consume {
            true => Some(raw_kafka::consume(&brokers, &topic)?),
            false => None,
        };
        let mut env = vec![
            ("OUTBOX_SINK", "kafka".into()),
            ("OUTBOX_KAFKA_BROKERS", brokers),
            ("OUTBOX_KAFKA_TOPIC_TEMPLATE", format!("{prefix}.{{topic}}")),
        ];
        if let Some(properties) = raw_kafka::properties() {
            env.push(("OUTBOX_KAFKA_PROPERTIES", properties));
        }
        Ok(Target {
            env,
            received: consumer.as_ref().map(|c| c.inbox().clone()),
            side: Side::Kafka(consumer),
        })
    }

    /// The stream `{prefix}.bench`, followed with `XREAD` when consumed.
    async fn redis(s: &Settings, consume: bool) -> Result<Target> {
        let mut con = try_redis_client(&s.redis_url).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .context("Redis PING")?;
        let prefix = unique("outbox_bench");
        let stream = format!("{prefix}.{TOPIC}");
        let consumer = match consume {
            true => Some(RedisConsumer::start(
                &s.redis_url,
                vec![stream],
                Inbox::counting(),
            )?),
            false => None,
        };
        Ok(Target {
            env: vec![
                ("OUTBOX_SINK", "redis".into()),
                ("OUTBOX_REDIS_URL", s.redis_url.clone()),
                (
                    "OUTBOX_REDIS_STREAM_TEMPLATE",
                    format!("{prefix}.{{topic}}"),
                ),
                // The dedup keys cost the same whatever their expiry; this one bounds what a
                // run leaves in a shared Redis if it is killed before deleting them.
                ("OUTBOX_REDIS_DEDUP_SECS", "3600".into()),
            ],
            received: consumer.as_ref().map(|c| c.inbox().clone()),
            side: Side::Redis {
                url: s.redis_url.clone(),
                prefix,
                consumer,
            },
        })
    }

    /// A JetStream stream capturing `{prefix}.>`; a core subscriber of it when consumed.
    async fn nats(s: &Settings, consume: bool) -> Result<Target> {
        let stream = NatsStream::try_create(&s.nats_url).await?;
        let consumer = match consume {
            true => Some(stream.subscribe(&s.nats_url, Inbox::counting()).await?),
            false => None,
        };
        Ok(Target {
            env: vec![
                ("OUTBOX_SINK", "nats".into()),
                ("OUTBOX_NATS_URL", s.nats_url.clone()),
                ("OUTBOX_NATS_SUBJECT_TEMPLATE", stream.template()),
            ],
            received: consumer.as_ref().map(|c| c.inbox().clone()),
            side: Side::Nats(stream, consumer),
        })
    }

    /// The queue `bench` under a prefix of its own (the sink's default queue template), processed
    /// by a real BullMQ worker (Node.js) when consumed.
    async fn bullmq(s: &Settings, consume: bool) -> Result<Target> {
        let mut con = try_redis_client(&s.redis_url).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .context("Redis PING")?;
        let prefix = unique("outbox_bench");
        let worker = match consume {
            true => Some(BullmqWorker::start(&s.redis_url, &prefix, &[TOPIC]).await?),
            false => None,
        };
        Ok(Target {
            env: vec![
                ("OUTBOX_SINK", "bullmq".into()),
                ("OUTBOX_BULLMQ_URL", s.redis_url.clone()),
                ("OUTBOX_BULLMQ_PREFIX", prefix.clone()),
            ],
            received: worker.as_ref().map(|w| w.inbox().clone()),
            side: Side::Bullmq {
                url: s.redis_url.clone(),
                prefix,
                worker,
            },
        })
    }

    /// Whether this is the stdout sink (whose consumer reads the relay's output).
    /// Starts a relay with `env` (which holds this target's settings) and returns what its
    /// consumer receives: the target's consumer, or the stdout sink's lines read one by one;
    /// `None` when nothing consumes this sink.
    pub fn spawn_relay(
        &self,
        url: &str,
        env: &[(&'static str, String)],
    ) -> Result<(Relay, Option<Inbox>)> {
        let stdout = match matches!(self.side, Side::Stdout) {
            true => RelayStdout::Piped,
            false => RelayStdout::Null,
        };
        let (relay, out) = Relay::spawn(url, env, stdout)?;
        let received = match (&self.received, out) {
            (Some(inbox), _) => Some(inbox.clone()),
            (None, Some(out)) => {
                let inbox = Inbox::counting();
                read_stdout_lines(out, inbox.clone());
                Some(inbox)
            }
            (None, None) => None,
        };
        Ok((relay, received))
    }

    /// What the service holds after `n` events were delivered, when it is not `n`: the stream's
    /// length (XLEN), the JetStream stream's message count, the receiver's distinct webhook-ids,
    /// the BullMQ queue's waiting jobs (without a worker: each event's job, added once).
    pub async fn check_delivered(&self, n: u64) -> Option<String> {
        match &self.side {
            Side::Stdout | Side::RabbitMq(_) | Side::Kafka(_) => None,
            Side::Bullmq {
                worker: Some(_), ..
            } => None,
            Side::Bullmq { url, prefix, .. } => match waiting_jobs(url, prefix).await {
                Ok(waiting) if waiting == n => None,
                Ok(waiting) => Some(format!(
                    "the BullMQ queue holds {waiting} waiting jobs for {n} events"
                )),
                Err(e) => Some(format!("counting BullMQ jobs failed: {e:#}")),
            },
            Side::Redis { url, prefix, .. } => {
                let stream = format!("{prefix}.{TOPIC}");
                let len = async {
                    let mut con = try_redis_client(url).await?;
                    anyhow::Ok(
                        redis::cmd("XLEN")
                            .arg(&stream)
                            .query_async::<u64>(&mut con)
                            .await?,
                    )
                };
                match len.await {
                    Ok(len) if len == n => None,
                    Ok(len) => Some(format!("XLEN {stream} is {len} for {n} events")),
                    Err(e) => Some(format!("XLEN failed: {e:#}")),
                }
            }
            Side::Nats(stream, _) => match stream.try_count().await {
                Ok(count) if count == n => None,
                Ok(count) => Some(format!("the stream holds {count} messages for {n} events")),
                Err(e) => Some(format!("stream info failed: {e:#}")),
            },
            Side::Http(receiver) => {
                let ids = receiver.distinct_ids();
                (ids != n).then(|| {
                    format!(
                        "the receiver got {ids} distinct webhook-ids ({} requests) for {n} events",
                        receiver.post_count()
                    )
                })
            }
        }
    }

    /// Removes what the scenario made: the queue and exchange, the stream (and the relay's dedup
    /// keys of it), the receiver, the BullMQ queue's keys.
    pub async fn close(self) {
        match self.side {
            Side::Stdout => {}
            // The topic stays, as Kafka's do.
            Side::Kafka(consumer) => drop(consumer),
            Side::RabbitMq(rabbit) => rabbit.teardown().await,
            Side::Redis {
                url,
                prefix,
                consumer,
            } => {
                drop(consumer);
                if let Ok(mut con) = try_redis_client(&url).await {
                    delete_streams(&mut con, &prefix).await;
                }
            }
            Side::Nats(stream, consumer) => {
                drop(consumer);
                stream.delete().await;
            }
            Side::Http(receiver) => receiver.stop(),
            Side::Bullmq {
                url,
                prefix,
                worker,
            } => {
                drop(worker);
                if let Ok(mut con) = try_redis_client(&url).await {
                    delete_streams(&mut con, &prefix).await;
                }
            }
        }
    }
}
