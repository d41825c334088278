//! The relay loop. One replica per outbox is active: it holds a PostgreSQL advisory lock on its
//! own session, and every claim and settle runs on that session. The others are hot standbys that
//! try the lock every `OUTBOX_LEADER_POLL_MS` and take over when the active session ends.
//!
//! The active relay claims a batch in id order, publishes it in key order ([`waves`]), waits for
//! the broker's acknowledgements and settles it ([`settle`]): delivered events are marked, failed
//! ones use an attempt and are deferred or dead-lettered. While a batch is in flight, the session
//! records the previous batch and claims the next one. Nothing is marked before the broker
//! acknowledged it, and an outage only delays a batch; it never uses an event's attempts.

mod settle;
mod waves;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::RelayConfig;
use crate::db::DatabaseUrl;
use crate::health::Health;
use crate::outbox::StoreError;
use crate::outbox::event::{Event, InvalidEvent};
use crate::outbox::session::{Session, Wake};
use crate::retry::RetryPolicy;
use crate::shutdown::Shutdown;
use crate::sink::{Sink, SinkError};
use crate::telemetry;
use settle::hold_back_after_invalid;
pub use settle::{Settlement, settle};

/// Why leading stopped.
enum Stop {
    Shutdown,
    SessionLost(StoreError),
}

/// Relays until `shutdown`; then finishes the batch in flight, within the shutdown timeout.
pub async fn run(config: RelayConfig, health: Health, shutdown: Shutdown) {
    let timeout = config.shutdown_timeout;
    let relay = relay(config, health, shutdown.clone());
    tokio::pin!(relay);
    tokio::select! {
        () = &mut relay => {}
        () = async { shutdown.wait().await; tokio::time::sleep(timeout).await } => {
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "the batch in flight did not finish within OUTBOX_SHUTDOWN_TIMEOUT_SECS; \
                 its events were not marked delivered and will be relayed again"
            );
        }
    }
}

async fn relay(config: RelayConfig, health: Health, shutdown: Shutdown) {
    let database = config.database.with_application_name(&replica_name());
    let mut sink = Sink::new(&config.sink, config.publish_timeout, &health);
    loop {
        let Some(mut session) = open_session(&database, &config, &health, &shutdown).await else {
            break;
        };
        if !connect_broker(&mut sink, &config.retry, &health, &shutdown).await {
            break;
        }
        match campaign(&mut session, &mut sink, &config, &health, &shutdown).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL session lost while standing by; reconnecting");
                health.set_database(false);
                continue;
            }
        }
        tracing::info!(
            sink = config.sink.name(),
            "this replica is now the active relay"
        );
        health.set_leader(true);
        let stop = lead(&mut session, &mut sink, &config, &health, &shutdown).await;
        health.set_leader(false);
        match stop {
            Stop::Shutdown => break,
            Stop::SessionLost(e) => {
                tracing::warn!(error = %e, "PostgreSQL session lost; gave up leadership, reconnecting");
                health.set_database(false);
            }
        }
    }
    sink.close().await;
    tracing::info!("relay stopped");
}

/// Opens the relay session, retrying with backoff; `None` on shutdown.
async fn open_session(
    database: &DatabaseUrl,
    config: &RelayConfig,
    health: &Health,
    shutdown: &Shutdown,
) -> Option<Session> {
    let mut backoff = config.retry.backoff();
    loop {
        if shutdown.is_triggered() {
            return None;
        }
        match Session::open(database).await {
            Ok(session) => {
                health.set_database(true);
                return Some(session);
            }
            Err(e) => {
                health.set_database(false);
                metrics::counter!(telemetry::RECONNECTS, "target" => "database").increment(1);
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, database = %database, retry_in_ms = delay.as_millis() as u64, "cannot open the PostgreSQL session");
                if !pause(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Connects the sink, retrying with backoff; `false` on shutdown.
async fn connect_broker(
    sink: &mut Sink,
    retry: &RetryPolicy,
    health: &Health,
    shutdown: &Shutdown,
) -> bool {
    let mut backoff = retry.backoff();
    while !sink.is_connected() {
        if shutdown.is_triggered() {
            return false;
        }
        match sink.connect().await {
            Ok(()) => break,
            Err(e) => {
                health.set_broker(false);
                metrics::counter!(telemetry::RECONNECTS, "target" => "broker").increment(1);
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to the broker");
                if !pause(delay, shutdown).await {
                    return false;
                }
            }
        }
    }
    health.set_broker(true);
    !shutdown.is_triggered()
}

/// Waits until this replica holds the leader lock: `Ok(true)`, or `Ok(false)` on shutdown.
async fn campaign(
    session: &mut Session,
    sink: &mut Sink,
    config: &RelayConfig,
    health: &Health,
    shutdown: &Shutdown,
) -> Result<bool, StoreError> {
    let mut announced = false;
    loop {
        if shutdown.is_triggered() {
            return Ok(false);
        }
        if session.try_lead().await? {
            return Ok(true);
        }
        if !announced {
            tracing::info!("another replica is the active relay; standing by");
            announced = true;
        }
        // A standby stays connected to the broker too, so that it is ready to take over.
        if !sink.is_connected() && !connect_broker(sink, &config.retry, health, shutdown).await {
            return Ok(false);
        }
        let deadline = Instant::now() + config.leader_poll;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                () = shutdown.wait() => return Ok(false),
                wake = session.wait_for_work(left) => {
                    // Notifications are for the active relay; a standby only needs to notice a dead session.
                    if wake? == Wake::Timeout {
                        break;
                    }
                }
            }
        }
    }
}

/// A batch that was published and settled but not yet recorded. It is written while the next
/// batch is in flight, so that marking does not wait for the broker nor the broker for marking.
struct Unrecorded {
    events: Vec<Event>,
    invalid: Vec<InvalidEvent>,
    settlement: Settlement,
}

impl Unrecorded {
    /// Every id of the batch: the next claim must not take them again before they are recorded.
    fn ids(&self) -> Vec<i64> {
        let events = self.events.iter().map(|e| e.id);
        events.chain(self.invalid.iter().map(|e| e.id)).collect()
    }

    /// Keys with an event that was not delivered: their later events must wait until it is
    /// recorded (retried, deferred or dead-lettered), as the claim then holds them back itself.
    fn unsettled_keys(&self) -> HashSet<String> {
        let delivered: HashSet<i64> = self.settlement.delivered.iter().copied().collect();
        let events = self
            .events
            .iter()
            .filter(|e| !delivered.contains(&e.id))
            .filter_map(|e| e.key.clone());
        events
            .chain(self.invalid.iter().filter_map(|e| e.key.clone()))
            .collect()
    }
}

/// Records `batch`, if any.
async fn record(
    session: &Session,
    batch: Option<Unrecorded>,
    max_attempts: u32,
) -> Result<(), StoreError> {
    match batch {
        Some(b) => apply(session, &b.settlement, &b.events, max_attempts).await,
        None => Ok(()),
    }
}

/// Relays batches while this replica leads. While a batch is in flight, the session records the
/// previous one and then claims the next (skipping the ids in flight), so the broker and the
/// database work at the same time.
async fn lead(
    session: &mut Session,
    sink: &mut Sink,
    config: &RelayConfig,
    health: &Health,
    shutdown: &Shutdown,
) -> Stop {
    let mut pressure = config.retry.backoff();
    let mut unrecorded: Option<Unrecorded> = None;
    // Claimed while the previous batch was in flight; valid only while `unrecorded` is that batch.
    let mut prefetched: Option<(Vec<Event>, Vec<InvalidEvent>)> = None;
    loop {
        health.progressed();
        if shutdown.is_triggered() {
            return match record(session, unrecorded.take(), config.max_attempts).await {
                Ok(()) => Stop::Shutdown,
                Err(e) => Stop::SessionLost(e),
            };
        }
        let was_prefetched = prefetched.is_some();
        let (events, invalid) = match prefetched.take() {
            Some(claimed) => claimed,
            None => {
                // Notifications that arrived before this claim are covered by it.
                session.take_wakeup();
                let in_flight = unrecorded.as_ref().map(Unrecorded::ids).unwrap_or_default();
                match session
                    .claim(config.batch_size, config.max_payload_bytes, &in_flight)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => return Stop::SessionLost(e),
                }
            }
        };
        if events.is_empty() && invalid.is_empty() {
            if unrecorded.is_some() || was_prefetched {
                // Record and look again: the recorded batch's undelivered events become
                // claimable, and events committed since the early claim show up.
                if let Err(e) = record(session, unrecorded.take(), config.max_attempts).await {
                    return Stop::SessionLost(e);
                }
                continue;
            }
            tokio::select! {
                () = shutdown.wait() => return Stop::Shutdown,
                wake = session.wait_for_work(config.poll_interval) => {
                    if let Err(e) = wake {
                        return Stop::SessionLost(e);
                    }
                }
            }
            continue;
        }
        let mut events = hold_back_after_invalid(events, &invalid);
        if let Some(previous) = &unrecorded {
            let waiting = previous.unsettled_keys();
            events.retain(|e| e.key.as_ref().is_none_or(|k| !waiting.contains(k)));
        }
        let publishing = async {
            if events.is_empty() {
                return Ok::<_, SinkError>(Vec::new());
            }
            let started = Instant::now();
            let outcomes = waves::publish_in_key_order(sink, &events).await?;
            metrics::histogram!(telemetry::PUBLISH_DURATION)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!(telemetry::BATCH_SIZE).record(events.len() as f64);
            Ok(outcomes)
        };
        let in_flight: Vec<i64> = events
            .iter()
            .map(|e| e.id)
            .chain(invalid.iter().map(|e| e.id))
            .collect();
        let previous = unrecorded.take();
        let session_work = async {
            record(session, previous, config.max_attempts).await?;
            session.take_wakeup();
            session
                .claim(config.batch_size, config.max_payload_bytes, &in_flight)
                .await
        };
        let (published, next) = tokio::join!(publishing, session_work);
        match next {
            Ok(claimed) => prefetched = Some(claimed),
            Err(e) => return Stop::SessionLost(e),
        }
        let outcomes = match published {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // The early claim skipped this batch, which is to be published again first.
                prefetched = None;
                metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "outage").increment(1);
                health.set_broker(false);
                tracing::warn!(error = %e, batch = events.len(), "broker unavailable; the batch will be published again");
                if !connect_broker(sink, &config.retry, health, shutdown).await {
                    return Stop::Shutdown;
                }
                continue;
            }
        };
        let settlement = settle(&events, &outcomes, &invalid, &config.retry);
        let deferred = settlement.deferred.len();
        let reason = settlement.deferred.first().map(|d| d.1.clone());
        unrecorded = Some(Unrecorded {
            events,
            invalid,
            settlement,
        });
        if let Some(reason) = reason {
            // Back-pressure: record now (so the early claim no longer applies), then give the
            // broker a moment.
            prefetched = None;
            if let Err(e) = record(session, unrecorded.take(), config.max_attempts).await {
                return Stop::SessionLost(e);
            }
            let delay = pressure.next_delay();
            tracing::warn!(events = deferred, reason = %reason, retry_in_ms = delay.as_millis() as u64, "broker refused events for now");
            if !pause(delay, shutdown).await {
                return Stop::Shutdown;
            }
        } else {
            pressure = config.retry.backoff();
        }
    }
}

/// Records a settled batch in the outbox and reports it in logs and metrics.
async fn apply(
    session: &Session,
    settlement: &Settlement,
    events: &[Event],
    max_attempts: u32,
) -> Result<(), StoreError> {
    session.mark_delivered(&settlement.delivered).await?;
    if !settlement.delivered.is_empty() {
        metrics::counter!(telemetry::DELIVERED).increment(settlement.delivered.len() as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!(telemetry::LAST_DELIVERY).set(now.as_secs_f64());
    }
    if settlement.failures.is_empty() {
        return Ok(());
    }
    metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "event")
        .increment(settlement.failures.len() as u64);
    let recorded = session
        .record_failures(&settlement.failures, max_attempts)
        .await?;
    let topics: HashMap<i64, &str> = events.iter().map(|e| (e.id, e.topic.as_str())).collect();
    for (failure, outcome) in settlement.failures.iter().zip(&recorded) {
        let topic = topics.get(&failure.id).copied().unwrap_or("");
        if outcome.dead_lettered {
            metrics::counter!(telemetry::DEAD_LETTERED).increment(1);
            tracing::error!(event_id = failure.id, topic, attempts = outcome.attempts, error = %failure.error, "event dead-lettered; later events of its key continue");
        } else {
            tracing::warn!(event_id = failure.id, topic, attempts = outcome.attempts, retry_in_ms = failure.retry_in.as_millis() as u64, error = %failure.error, "event failed; it and later events of its key will be retried");
        }
    }
    Ok(())
}

/// Sleeps for `delay`; `false` if shutdown came first.
async fn pause(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = shutdown.wait() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// How this replica names itself to PostgreSQL (shown by `outbox-relay status`).
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    let name = format!("outbox-relay {host} pid {}", std::process::id());
    // application_name holds at most 63 bytes.
    name.chars().take(63).collect()
}
