//! The relay loop. One replica per outbox is active: it holds a PostgreSQL advisory lock on its
//! own session, and every claim and settle runs on that session. The others are hot standbys that
//! try the lock every `OUTBOX_LEADER_POLL_MS` and take over when the active session ends.
//!
//! The active relay claims a batch in id order, publishes it in key order ([`waves`]), waits for
//! the broker's acknowledgements and settles it ([`settle`]): delivered events are marked, failed
//! ones use an attempt and are deferred or dead-lettered. While a batch is in flight, the session
//! records the previous batch and claims the next one (on Kafka it sends that one at once: two
//! batches in flight at most, see [`plan::send_early`]). Nothing is marked before the broker
//! acknowledged it, and an outage only delays a batch; it never uses an event's attempts.

mod batch;
mod follow;
mod lanes;
mod pipeline;
mod plan;
mod record;
mod settle;
mod sinks;
mod waves;

use std::time::{Duration, Instant};

use crate::config::{RelayConfig, ReplicaMode};
use crate::db::DatabaseUrl;
use crate::health::Health;
use crate::otel::SendTracer;
use crate::outbox::StoreError;
use crate::outbox::session::{OnDelivery, Session, Wake};
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;
use crate::telemetry;
use pipeline::Pipeline;
use sinks::Sinks;

/// Why leading stopped.
enum Stop {
    Shutdown,
    SessionLost(StoreError),
}

/// Relays until `shutdown`; then finishes the batch in flight, within the shutdown timeout.
/// `tracer` starts the send spans while traces are on.
pub async fn run(
    config: RelayConfig,
    health: Health,
    ownership: Ownership,
    shutdown: Shutdown,
    tracer: Option<SendTracer>,
) {
    let timeout = config.shutdown_timeout;
    let relay = relay(config, health, ownership, shutdown.clone(), tracer);
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

async fn relay(
    config: RelayConfig,
    health: Health,
    ownership: Ownership,
    shutdown: Shutdown,
    tracer: Option<SendTracer>,
) {
    let database = config.database.with_application_name(&replica_name());
    let mut sinks = Sinks::new(&config, &health, tracer);
    let mut lost = config.retry.backoff();
    loop {
        let Some(mut session) = open_session(&database, &config, &health, &shutdown).await else {
            break;
        };
        if !connect_sinks(&mut sinks, &shutdown).await {
            break;
        }
        let joined = match config.replica_mode {
            ReplicaMode::Single => campaign(&mut session, &mut sinks, &config, &shutdown).await,
            ReplicaMode::Lanes => session.join_lanes().await.map(|()| true),
        };
        match joined {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL session lost while standing by; reconnecting");
                health.set_database(false);
                continue;
            }
        }
        let names: Vec<&str> = sinks.names().collect();
        tracing::info!(
            sinks = names.join(","),
            mode = ?config.replica_mode,
            "relaying"
        );
        let led_since = Instant::now();
        let pipeline = Pipeline::new(
            &mut session,
            &mut sinks,
            &config,
            &health,
            &ownership,
            &shutdown,
        );
        let stop = pipeline.run().await;
        health.set_leader(false);
        ownership.set_lanes(&[]);
        // Known again only at the next check: a disconnected replica must not keep an alert on.
        metrics::gauge!(telemetry::LANES_UNOWNED).set(0.0);
        match stop {
            Stop::Shutdown => {
                // The batch in flight is recorded: hand the lanes over now rather than when the
                // session closes, which the others would notice only at their next poll.
                if let Err(e) = session.leave_lanes().await {
                    tracing::warn!(error = %e, "could not give up the lanes before stopping; the others take them at their next check");
                }
                break;
            }
            Stop::SessionLost(e) => {
                // A query that keeps failing (e.g. a drifted schema) must not spin: back off,
                // afresh when this leadership lasted a while.
                if led_since.elapsed() > Duration::from_secs(30) {
                    lost = config.retry.backoff();
                }
                let delay = lost.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "PostgreSQL session lost; gave up leadership, reconnecting");
                health.set_database(false);
                if !pause(delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    sinks.close().await;
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
        match Session::open(database, OnDelivery::for_retention(config.retention)).await {
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

/// Connects the sinks, each retrying with its own backoff, until at least one is connected;
/// `false` on shutdown. A sink that stays down holds back only its own events.
async fn connect_sinks(sinks: &mut Sinks, shutdown: &Shutdown) -> bool {
    while !sinks.connect_due().await {
        let wait = sinks.next_retry().map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        if !pause(wait, shutdown).await {
            return false;
        }
    }
    !shutdown.is_triggered()
}

/// Waits until this replica holds the leader lock: `Ok(true)`, or `Ok(false)` on shutdown.
async fn campaign(
    session: &mut Session,
    sinks: &mut Sinks,
    config: &RelayConfig,
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
        // A standby stays connected to the brokers too, so that it is ready to take over.
        if !connect_sinks(sinks, shutdown).await {
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
