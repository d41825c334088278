//! BullMQ's raw limit: jobs added the way the bullmq sink adds them (bullmq-official's `Queue`,
//! the job id and deduplication id = a message id, the relay's default deduplication window, the
//! topic as job name, the JSON payload as data), without PostgreSQL; and the jobs a queue holds.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bullmq::options::RedisConnectionOptions;
use bullmq::redis_connection::RedisConnection;
use bullmq::{DeduplicationOptions, JobOptions, Queue, QueueOptions};
use outbox_relay::sink::bullmq::DEFAULT_DEDUP_SECS;

use super::workload::{TOPIC, json_payload};
use crate::harness::{delete_streams, try_redis_client, unique};

/// The options the sink gives an event's job by default: `message_id` as job id and as
/// deduplication id, held for `OUTBOX_BULLMQ_DEDUP_SECS`.
pub fn job_options(message_id: &str) -> JobOptions {
    JobOptions {
        job_id: Some(message_id.to_string()),
        deduplication: Some(DeduplicationOptions {
            id: message_id.to_string(),
            ttl: Some(DEFAULT_DEDUP_SECS * 1000),
            ..DeduplicationOptions::default()
        }),
        ..JobOptions::default()
    }
}

/// The queue `{prefix}:bench` on its own connection, as the sink makes it (which writes its meta).
async fn bench_queue(url: &str, prefix: &str) -> Result<Queue> {
    let options = RedisConnectionOptions {
        url: url.to_string(),
        ..RedisConnectionOptions::default()
    };
    let connection = RedisConnection::new_managed_only(&options)
        .await
        .context("connecting BullMQ to Redis")?;
    let options = QueueOptions {
        prefix: prefix.to_string(),
        ..QueueOptions::default()
    };
    Queue::with_connection(TOPIC, connection, options)
        .await
        .context("BullMQ queue")
}

/// How many jobs wait in the queue `{prefix}:bench` (nobody processes them in a drain).
pub async fn waiting_jobs(url: &str, prefix: &str) -> Result<u64> {
    let queue = bench_queue(url, prefix).await?;
    let waiting = queue
        .get_waiting_count()
        .await
        .context("BullMQ waiting count")?;
    queue.close().await;
    Ok(waiting)
}

/// `count` jobs added like the sink's, `batch` at a time all in flight together (the relay's wave
/// of one batch over distinct keys), each batch awaited before the next. Returns the time until
/// the last add's reply; checks the queue's waiting count and deletes the queue's keys.
pub async fn bullmq_raw_add(url: &str, count: u64, batch: u64) -> Result<Duration> {
    let prefix = unique("outbox_bench_raw");
    let result = async {
        let queue = bench_queue(url, &prefix).await?;
        let started = Instant::now();
        let mut seq = 0;
        while seq < count {
            let end = (seq + batch).min(count);
            let adds = (seq..end).map(|s| {
                let data: serde_json::Value = serde_json::from_slice(&json_payload(s))?;
                let add = queue
                    .add(TOPIC, data)
                    .options(job_options(&uuid::Uuid::new_v4().to_string()))
                    .into_future();
                anyhow::Ok(add)
            });
            let adds = adds.collect::<Result<Vec<_>>>()?;
            for added in futures_util::future::join_all(adds).await {
                added.context("BullMQ add")?;
            }
            seq = end;
        }
        let took = started.elapsed();
        let waiting = queue.get_waiting_count().await?;
        queue.close().await;
        if waiting != count {
            bail!("the raw queue holds {waiting} waiting jobs, expected {count}");
        }
        Ok(took)
    }
    .await;
    if let Ok(mut con) = try_redis_client(url).await {
        delete_streams(&mut con, &prefix).await;
    }
    result
}
