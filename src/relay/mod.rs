//! The relay loop. One replica per outbox is active: it holds a PostgreSQL advisory lock on its
//! own session, and every claim and settle runs on that session. The others are hot standbys that
//! try the lock every `OUTBOX_LEADER_POLL_MS` and take over when the active session ends.
//!
//! The active relay claims a batch in id order, publishes it in key order ([`waves`]), waits for
//! the broker's acknowledgements and settles it ([`settle`]): delivered events are marked, failed
//! ones use an attempt and are deferred or dead-lettered. While a batch is in flight, the session
//! records the previous batch and claims the next one. Nothing is marked before the broker
//! acknowledged it, and an outage only delays a batch; it never uses an event's attempts.

mod lanes;
mod settle;
mod sinks;
mod waves;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::config::{RelayConfig, ReplicaMode};
use crate::db::DatabaseUrl;
use crate::health::Health;
use crate::outbox::StoreError;
use crate::outbox::event::Event;
use crate::outbox::session::{BatchLimits, Claimed, Cursor, OnDelivery, Recorded, Session, Wake};
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;
use crate::telemetry;
use lanes::Lanes;
use settle::{Settlement, settle};
use sinks::Sinks;

/// Why leading stopped.
enum Stop {
    Shutdown,
    SessionLost(StoreError),
}

/// Relays until `shutdown`; then finishes the batch in flight, within the shutdown timeout.
pub async fn run(config: RelayConfig, health: Health, ownership: Ownership, shutdown: Shutdown) {
    let timeout = config.shutdown_timeout;
    let relay = relay(config, health, ownership, shutdown.clone());
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

async fn relay(config: RelayConfig, health: Health, ownership: Ownership, shutdown: Shutdown) {
    let database = config.database.with_application_name(&replica_name());
    let mut sinks = Sinks::new(
        &config.sinks,
        config.routes.clone(),
        config.publish_timeout,
        config.retry,
        &health,
    );
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
        let stop = lead(
            &mut session,
            &mut sinks,
            &config,
            &health,
            &ownership,
            &shutdown,
        )
        .await;
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

/// How often the claim reads again from the first id, to find events put back below its floor
/// by hand (`UPDATE ... SET delivered_at = NULL`, a dead letter repaired without `available_at`).
/// It is the one claim that walks the delivered history, once per interval.
const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// A batch that was published and settled but not yet recorded. It is written while the next
/// batch is in flight, so that marking does not wait for the broker nor the broker for marking.
/// It keeps ids and the settlement, not the events' payloads.
struct Unrecorded {
    /// The topic and sink of each failed event, for its log line and metrics.
    failed: HashMap<i64, (String, String)>,
    /// Delivered events per sink, for the metrics.
    delivered_per_sink: BTreeMap<String, u64>,
    settlement: Settlement,
}

impl Unrecorded {
    fn new(claimed: &Claimed, settlement: Settlement, sinks: &Sinks) -> Unrecorded {
        let by_id: HashMap<i64, &Event> = claimed.events.iter().map(|e| (e.id, e)).collect();
        let sink_of = |id: &i64| {
            by_id
                .get(id)
                .and_then(|e| sinks.sink_for(&e.topic))
                .unwrap_or("none")
        };
        // Counted by borrowed name: one allocation per sink, not per event.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for id in &settlement.delivered {
            *counts.entry(sink_of(id)).or_default() += 1;
        }
        let delivered_per_sink = counts
            .into_iter()
            .map(|(sink, n)| (sink.to_string(), n))
            .collect();
        let failed = settlement
            .failures
            .iter()
            .map(|f| {
                let topic = by_id.get(&f.id).map_or("", |e| e.topic.as_str());
                (f.id, (topic.to_string(), sink_of(&f.id).to_string()))
            })
            .collect();
        Unrecorded {
            failed,
            delivered_per_sink,
            settlement,
        }
    }
}

/// Records `batch`, if any.
async fn record(
    session: &Session,
    batch: Option<Unrecorded>,
    max_attempts: u32,
) -> Result<(), StoreError> {
    match batch {
        Some(b) => apply(session, &b, max_attempts).await,
        None => Ok(()),
    }
}

/// Records `previous`, if any, and claims the next batch from `from`, skipping `in_flight`. A
/// batch that was delivered whole is marked by the claim itself: one round trip, not two. One
/// with failures or parked events is recorded first, so that the claim sees them.
async fn record_and_claim(
    session: &Session,
    previous: Option<Unrecorded>,
    limits: BatchLimits,
    from: &Cursor,
    in_flight: &[i64],
    max_attempts: u32,
) -> Result<Claimed, StoreError> {
    match previous {
        Some(batch) if batch.settlement.is_all_delivered() => {
            let delivered = &batch.settlement.delivered;
            let claimed = session.claim(limits, from, in_flight, delivered).await?;
            report_delivered(&batch);
            Ok(claimed)
        }
        previous => {
            record(session, previous, max_attempts).await?;
            session.claim(limits, from, in_flight, &[]).await
        }
    }
}

/// Where the next claim reads from, and when it last read from the first id.
struct Reader {
    cursor: Cursor,
    last_rescan: Instant,
}

impl Reader {
    /// The cursor for the next claim: the current one, or once per [`RESCAN_INTERVAL`] the same
    /// reading from the first id.
    fn next(&mut self) -> Cursor {
        if self.last_rescan.elapsed() >= RESCAN_INTERVAL {
            self.last_rescan = Instant::now();
            return self.cursor.rescan();
        }
        self.cursor.clone()
    }
}

/// Relays batches while this replica leads: claim -> publish -> settle -> record. While a batch
/// is in flight, the session records the previous one and then claims the next (skipping the ids
/// in flight), so the broker and the database work at the same time.
async fn lead(
    session: &mut Session,
    sinks: &mut Sinks,
    config: &RelayConfig,
    health: &Health,
    ownership: &Ownership,
    shutdown: &Shutdown,
) -> Stop {
    let mut pressure = config.retry.backoff();
    let limits = BatchLimits {
        events: config.batch_size,
        bytes: config.batch_max_bytes,
        max_payload_bytes: config.max_payload_bytes,
    };
    let mut reader = Reader {
        cursor: Cursor::start(),
        last_rescan: Instant::now(),
    };
    let mut unrecorded: Option<Unrecorded> = None;
    // Claimed while the previous batch was in flight; valid only while `unrecorded` is that batch.
    let mut prefetched: Option<Claimed> = None;
    let mut lanes = Lanes::new(config.replica_mode, config.leader_poll);
    // Whether the last wait ended with a notification (or with listening again): NOTIFY works
    // (see `idle` below).
    let mut notified = false;
    loop {
        health.progressed();
        if shutdown.is_triggered() {
            return match record(session, unrecorded.take(), config.max_attempts).await {
                Ok(()) => Stop::Shutdown,
                Err(e) => Stop::SessionLost(e),
            };
        }
        if session.lanes_changed() {
            lanes.check_now();
        }
        // Lanes change hands only with nothing in flight: no early claim is made while a check
        // is due, and the last batch is recorded first.
        if lanes.due() && prefetched.is_none() {
            if let Err(e) = record(session, unrecorded.take(), config.max_attempts).await {
                return Stop::SessionLost(e);
            }
            match lanes.rebalance(session).await {
                // New lanes' undelivered events may lie below the floor: read from the first id.
                Ok(true) => reader.cursor = reader.cursor.rescan(),
                Ok(false) => {}
                Err(e) => return Stop::SessionLost(e),
            }
            ownership.set_lanes(lanes.owned());
            health.set_leader(!lanes.owned().is_empty());
        }
        if lanes.owned().is_empty() {
            // Standing by: every lane has an owner (or, in single mode, another replica leads).
            tokio::select! {
                () = shutdown.wait() => return Stop::Shutdown,
                wake = session.wait_for_work(lanes.until_due()) => match wake {
                    Ok(wake) => notified = wake != Wake::Timeout,
                    Err(e) => return Stop::SessionLost(e),
                },
            }
            continue;
        }
        let was_prefetched = prefetched.is_some();
        let claimed = match prefetched.take() {
            Some(claimed) => claimed,
            None => {
                // Notifications that arrived before this claim are covered by it.
                session.take_wakeup();
                let from = reader.next();
                let previous = unrecorded.take();
                match record_and_claim(session, previous, limits, &from, &[], config.max_attempts)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => return Stop::SessionLost(e),
                }
            }
        };
        reader.cursor = claimed.next.clone();
        // The sampler counts the backlog from here: this batch stays pending until it is marked.
        ownership.set_claim_floor(claimed.from.floor());
        if claimed.is_empty() {
            // A notification came after the early claim was sent: look again at once (recording
            // the previous batch in the same statement). Without one, nothing was committed since
            // (or NOTIFY is off, and the poll interval applies as anywhere): record and wait. An
            // isolated event costs two claims and a mark, not three claims.
            if was_prefetched && session.take_wakeup() {
                continue;
            }
            let wait = config.poll_interval.min(lanes.until_due());
            match record_and_wait(session, &mut unrecorded, config, wait, shutdown).await {
                Ok(wake) => notified = wake != Wake::Timeout,
                Err(stop) => return stop,
            }
            continue;
        }
        // The per-key rule across batches: keys not settled in the previous batch, and keys of
        // rows that cannot be published, hold back their later events in this one.
        let mut gate = unrecorded
            .as_ref()
            .map(|u| u.settlement.unsettled.clone())
            .unwrap_or_default();
        for bad in &claimed.invalid {
            gate.close(bad.id, bad.key.as_deref());
        }
        let (sent, held): (Vec<&Event>, Vec<&Event>) = claimed
            .events
            .iter()
            .partition(|e| gate.admits(e.id, e.key.as_deref()));
        // More events are on their way when the batch was full, when a notification came since
        // it was claimed, when the claim did not follow a notification (NOTIFY may be off:
        // then the relay reads on while it finds events), or when the session does not listen
        // (see below). Otherwise an early claim would come back empty: the batch is recorded on
        // its own and the next claim waits for a notification. An isolated event costs one
        // claim and one mark.
        let watching = !claimed.is_full(limits) && notified && session.is_listening();
        let notified_since = watching && session.take_wakeup();
        let idle = watching && !notified_since;
        // A steady stream (several events per batch, and more notified since the claim) while
        // claims linger: the relay claims again after each batch anyway, so it stops listening
        // until a claim comes back empty; each notification would wake it and its backend.
        let stop_listening =
            notified_since && !config.batch_linger.is_zero() && claimed.events.len() > 1;
        let publishing = sinks.publish(&sent);
        let in_flight = claimed.ids();
        let previous = unrecorded.take();
        // With large payloads, no early claim: one batch's payloads in memory, not two. Nor when
        // the lanes are due for a check, which needs nothing in flight.
        let next_from = (!idle && claimed.payload_bytes() <= limits.bytes / 2 && !lanes.due())
            .then(|| reader.next());
        // After a batch that was not full, more events come slowly: the early claim waits a
        // little for them, so that fewer, larger batches go out (a full one means a backlog:
        // read on at once).
        let linger_until = claimed
            .started
            .filter(|_| !config.batch_linger.is_zero() && !claimed.is_full(limits))
            .map(|started| started + config.batch_linger);
        // Notifications so far are covered by the early claim.
        session.take_wakeup();
        let session_work = async {
            match &next_from {
                Some(from) => {
                    if stop_listening {
                        session.stop_listening().await?;
                    }
                    if let Some(until) = linger_until {
                        tokio::time::sleep_until(until.into()).await;
                    }
                    record_and_claim(
                        session,
                        previous,
                        limits,
                        from,
                        &in_flight,
                        config.max_attempts,
                    )
                    .await
                    .map(Some)
                }
                None => record(session, previous, config.max_attempts)
                    .await
                    .map(|()| None),
            }
        };
        // The fence: once the session (and the leader lock) is gone, another replica may lead;
        // the batch in flight is abandoned, unmarked, and the early claim dropped.
        let (published, next) = tokio::select! {
            both = async { tokio::join!(publishing, session_work) } => both,
            () = session.ended() => {
                tracing::warn!(batch = sent.len(), "PostgreSQL session lost while publishing: leadership is gone, the batch in flight is abandoned (another replica publishes it again)");
                sinks.abandon().await;
                return Stop::SessionLost(StoreError::SessionEnded);
            }
        };
        match next {
            Ok(next) => prefetched = next,
            Err(e) => return Stop::SessionLost(e),
        }
        if published.all_down {
            // No sink of this batch is up: nothing of it is recorded; read it again, before the
            // early claim, once a sink is due for another try.
            prefetched = None;
            reader.cursor = claimed.from.clone();
            tracing::warn!(
                batch = sent.len(),
                "the batch's sinks are unavailable; it will be published again"
            );
            if !connect_sinks(sinks, shutdown).await {
                return Stop::Shutdown;
            }
            continue;
        }
        let settlement = settle(
            &sent,
            &published.outcomes,
            &held,
            &claimed.invalid,
            &config.retry,
        );
        let back_pressure = settlement.back_pressure.clone();
        unrecorded = Some(Unrecorded::new(&claimed, settlement, sinks));
        if let Some((events, reason)) = back_pressure {
            // Record now (the refused events are parked, due at once) and drop the early claim,
            // which held back their keys; then give the broker a moment.
            if let Some(early) = prefetched.take() {
                reader.cursor = early.from;
            }
            if let Err(e) = record(session, unrecorded.take(), config.max_attempts).await {
                return Stop::SessionLost(e);
            }
            let delay = pressure.next_delay();
            tracing::warn!(events, reason = %reason, retry_in_ms = delay.as_millis() as u64, "broker refused events for now");
            if !pause(delay, shutdown).await {
                return Stop::Shutdown;
            }
        } else {
            pressure = config.retry.backoff();
            if idle {
                let wait = config.poll_interval.min(lanes.until_due());
                match record_and_wait(session, &mut unrecorded, config, wait, shutdown).await {
                    Ok(wake) => notified = wake != Wake::Timeout,
                    Err(stop) => return stop,
                }
                // The linger holds here too: a notification soon after the claim brings one
                // event, and more may follow it.
                if let Some(until) = linger_until {
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
    }
}

/// How long a batch delivered whole may wait to be marked by the next claim, which marks it in
/// the same statement. At a steady slow rate the next notification comes well within it, and
/// each round costs one statement instead of two; a quiet outbox gets its mark after it.
const MARK_WITH_NEXT_CLAIM_WITHIN: Duration = Duration::from_millis(50);

/// Records `unrecorded` and waits for a notification, at most `wait`. A batch delivered whole
/// is left for the next claim to mark when a notification comes within
/// [`MARK_WITH_NEXT_CLAIM_WITHIN`]; any other batch (failures to record, parked events) is
/// recorded at once, so that the next claim sees it.
async fn record_and_wait(
    session: &mut Session,
    unrecorded: &mut Option<Unrecorded>,
    config: &RelayConfig,
    wait: Duration,
    shutdown: &Shutdown,
) -> Result<Wake, Stop> {
    let mut left = wait;
    if unrecorded
        .as_ref()
        .is_some_and(|b| b.settlement.is_all_delivered())
    {
        let first = MARK_WITH_NEXT_CLAIM_WITHIN.min(wait);
        let wake = tokio::select! {
            // Recorded below, before stopping.
            () = shutdown.wait() => None,
            wake = session.wait_for_work(first) => Some(wake.map_err(Stop::SessionLost)?),
        };
        match wake {
            Some(Wake::Timeout) => left = wait.saturating_sub(first),
            Some(wake) => return Ok(wake),
            None => {}
        }
    }
    record(session, unrecorded.take(), config.max_attempts)
        .await
        .map_err(Stop::SessionLost)?;
    tokio::select! {
        () = shutdown.wait() => Err(Stop::Shutdown),
        wake = session.wait_for_work(left) => wake.map_err(Stop::SessionLost),
    }
}

/// Records a settled batch in the outbox and reports it in logs and metrics.
async fn apply(session: &Session, batch: &Unrecorded, max_attempts: u32) -> Result<(), StoreError> {
    let settlement = &batch.settlement;
    session.record_delivered(&settlement.delivered).await?;
    report_delivered(batch);
    if !settlement.failures.is_empty() {
        let recorded = session
            .record_failures(&settlement.failures, max_attempts)
            .await?;
        let recorded: HashMap<i64, &Recorded> = recorded.iter().map(|r| (r.id, r)).collect();
        for failure in &settlement.failures {
            let (topic, sink) = batch
                .failed
                .get(&failure.id)
                .map_or(("", "none"), |(t, s)| (t.as_str(), s.as_str()));
            metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => "event", "sink" => sink.to_string())
                .increment(1);
            // Not returned: delivered or dead-lettered meanwhile (e.g. by hand); nothing to say.
            let Some(outcome) = recorded.get(&failure.id) else {
                continue;
            };
            if outcome.dead_lettered {
                metrics::counter!(telemetry::DEAD_LETTERED, "sink" => sink.to_string())
                    .increment(1);
                tracing::error!(event_id = failure.id, topic, sink, attempts = outcome.attempts, error = %failure.error, "event dead-lettered; later events of its key continue");
            } else {
                tracing::warn!(event_id = failure.id, topic, sink, attempts = outcome.attempts, retry_in_ms = failure.retry_in.as_millis() as u64, error = %failure.error, "event failed; it and later events of its key will be retried");
            }
        }
    }
    // After the failures: a parked event waits for its key's earlier event's new time.
    session.park(&settlement.parked, &settlement.waiting).await
}

/// Counts a recorded batch's delivered events.
fn report_delivered(batch: &Unrecorded) {
    for (sink, delivered) in &batch.delivered_per_sink {
        metrics::counter!(telemetry::DELIVERED, "sink" => sink.clone()).increment(*delivered);
    }
    if !batch.settlement.delivered.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!(telemetry::LAST_DELIVERY).set(now.as_secs_f64());
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
