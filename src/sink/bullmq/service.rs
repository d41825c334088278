//! The bullmq sink's service: the connection (BullMQ's own, which reconnects by itself), one
//! `Queue` per queue name, and adding a wave of jobs: at most one per key, up to 64 in flight.

use std::collections::HashMap;
use std::future::IntoFuture;

use async_trait::async_trait;
use bullmq::options::{RedisConnectionOptions, TlsCerts};
use bullmq::redis_connection::RedisConnection;
use bullmq::{Queue, QueueOptions};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::encode::Job;
use super::settings::BullmqConfig;
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::redact::redact;
use crate::sink::redis_tls as tls;
use crate::sink::{Classify, Fault, Ordering, Outcome, Publisher, SinkConfig, SinkError};

/// Adds in flight at once: each holds its encoded script call until Redis answers, and 500 at
/// once took the relay's peak RSS to ~56 MiB in a drain (64: ~27 MiB). As one finishes the next
/// starts, so Redis, which runs them one by one, always has the next ones queued.
const MAX_IN_FLIGHT: usize = 64;

impl SinkConfig for BullmqConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(BullmqSink {
            config: self.clone(),
            connection: None,
            queues: HashMap::new(),
        })
    }
}

pub struct BullmqSink {
    config: BullmqConfig,
    /// `None` until connected, and after an outage (the next publish connects afresh).
    connection: Option<RedisConnection>,
    /// The queues used so far on `connection`: making one writes the queue's meta.
    queues: HashMap<String, Queue>,
}

impl BullmqSink {
    /// The queue `name` on the connection, made at its first use.
    async fn queue(&mut self, name: &str) -> Result<Queue, Fault> {
        if let Some(queue) = self.queues.get(name) {
            return Ok(queue.clone());
        }
        let Some(connection) = &self.connection else {
            return Err(Fault::Outage("Redis is not connected".into()));
        };
        let options = QueueOptions {
            prefix: self.config.prefix.clone(),
            ..QueueOptions::default()
        };
        let queue = Queue::with_connection(name, connection.clone(), options)
            .await
            .map_err(|e| e.classify())?;
        self.queues.insert(name.to_string(), queue.clone());
        Ok(queue)
    }

    /// An outage: what it was, with Redis named, and the connection dropped.
    fn outage(&mut self, reason: &str) -> SinkError {
        self.connection = None;
        self.queues.clear();
        SinkError::Unavailable(format!(
            "adding jobs to BullMQ on Redis at {}: {reason}",
            redact(&self.config.url)
        ))
    }

    /// Adds `jobs` (indices into the wave, each with its job and queue), [`MAX_IN_FLIGHT`] at a
    /// time; the faults, by index, up to the first outage.
    async fn add(&mut self, jobs: Vec<(usize, Job<'_>, Queue)>) -> Vec<(usize, Fault)> {
        let (mut waiting, mut running) = (jobs.iter(), FuturesUnordered::new());
        let mut faults = Vec::new();
        loop {
            while running.len() < MAX_IN_FLIGHT {
                let Some((index, job, queue)) = waiting.next() else {
                    break;
                };
                let add = queue
                    .add(job.name, &job.data)
                    .options(job.options.clone())
                    .into_future();
                running.push(async move { (*index, add.await) });
            }
            match running.next().await {
                Some((index, Err(e))) => {
                    let fault = e.classify();
                    // The wave is added again after an outage: nothing more is started now.
                    let outage = matches!(fault, Fault::Outage(_));
                    faults.push((index, fault));
                    if outage {
                        return faults;
                    }
                }
                Some((_, Ok(_))) => {}
                None => return faults,
            }
        }
    }
}

#[async_trait]
impl Publisher for BullmqSink {
    /// Each add is one script call that Redis may refuse while it takes the next (another queue,
    /// a key it may not access): a key's next job is added once the previous one is.
    fn ordering(&self) -> Ordering {
        Ordering::OneVerdictPerKey
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        self.connection = None;
        self.queues.clear();
        let url = self.config.url.as_str();
        let rediss = url.starts_with("rediss://");
        if rediss {
            // The project's rustls provider; a no-op when one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // One PING first: BullMQ's connection retries a Redis that is down for many seconds
        // before it gives up, and an outage should be known at once.
        let unreachable = |e: &dyn std::fmt::Display| {
            SinkError::Unavailable(format!("cannot connect to Redis at {}: {e}", redact(url)))
        };
        let mut probe = tls::client(url)
            .map_err(|e| unreachable(&e))?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| unreachable(&e))?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(|e| unreachable(&e))?;
        let tls_certs = if rediss {
            Some(TlsCerts {
                root_cert: Some(tls::system_roots_pem().map_err(|e| unreachable(&e))?),
                client_cert: None,
                client_key: None,
            })
        } else {
            None
        };
        let options = RedisConnectionOptions {
            url: url.to_string(),
            tls_certs,
            ..RedisConnectionOptions::default()
        };
        let connection = RedisConnection::new_managed_only(&options)
            .await
            .map_err(|e| unreachable(&e))?;
        self.connection = Some(connection);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        if self.connection.is_none() {
            self.connect().await?;
        }
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        let mut jobs = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let job = match Job::new(&self.config, event) {
                Ok(job) => job,
                Err(reason) => {
                    outcomes[index] = Outcome::Failed(reason);
                    continue;
                }
            };
            match self.queue(&job.queue).await {
                Ok(queue) => jobs.push((index, job, queue)),
                Err(Fault::Outage(reason)) => return Err(self.outage(&reason)),
                Err(fault) => outcomes[index] = fault.outcome()?,
            }
        }
        for (index, fault) in self.add(jobs).await {
            match fault {
                // What was added is held by its job id: the whole wave is added again.
                Fault::Outage(reason) => return Err(self.outage(&reason)),
                fault => outcomes[index] = fault.outcome()?,
            }
        }
        Ok(outcomes)
    }

    /// Forgets the connection: an add still in flight is held by its job id if it lands.
    async fn abandon(&mut self) {
        self.connection = None;
        self.queues.clear();
    }

    /// Nothing is buffered: every add waits for its reply.
    async fn close(&mut self) {
        self.connection = None;
        self.queues.clear();
    }
}
