//! The relay's own PostgreSQL session. It holds the leader lock, receives notifications, and runs
//! every claim and settle of the active relay: if it dies, the lock is released with it and this
//! replica can no longer mark anything, so two replicas never relay side by side for long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use futures_util::future::poll_fn;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Statement};

use super::event::{Event, InvalidEvent};
use super::{
    LANE_COUNT, LANE_LOCK_BASE, LANES_CHANNEL, LEADER_LOCK_KEY, MEMBER_LOCK_KEY, NOTIFY_CHANNEL,
    StoreError,
};
use crate::db::DatabaseUrl;
use crate::telemetry;

const CLAIM_SQL: &str = include_str!("../../sql/queries/claim.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../../sql/queries/mark_delivered.sql");
const RECORD_FAILURES_SQL: &str = include_str!("../../sql/queries/record_failures.sql");
const PARK_SQL: &str = include_str!("../../sql/queries/park.sql");
const LANE_MAP_SQL: &str = include_str!("../../sql/queries/lane_map.sql");
/// Notifications held between two looks at them: a few claims' worth at any rate.
const WAKEUPS_QUEUED: usize = 256;

/// Who relays which lane, as the advisory locks of this database say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneMap {
    /// This session's backend pid.
    pub me: i32,
    /// The backend pids of every relay in lanes mode, this one included, in order.
    pub members: Vec<i32>,
    /// The lanes this session owns.
    pub owned: Vec<i32>,
    /// The lanes any session owns.
    pub taken: Vec<i32>,
}

/// What recording a delivery does to the event's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelivery {
    /// Sets `delivered_at`; the purge deletes the row once the retention time has passed.
    Mark,
    /// Deletes the row in the same statement: `OUTBOX_RETENTION_SECS=0` keeps no history.
    Delete,
}

impl OnDelivery {
    pub fn for_retention(retention: Duration) -> OnDelivery {
        if retention.is_zero() {
            OnDelivery::Delete
        } else {
            OnDelivery::Mark
        }
    }

    /// The ids to mark and the ids to delete (the two parameters of the statements that record a
    /// delivery): `delivered` goes in one of them.
    pub fn split(self, delivered: &[i64]) -> (&[i64], &[i64]) {
        match self {
            OnDelivery::Mark => (delivered, &[]),
            OnDelivery::Delete => (&[], delivered),
        }
    }
}

pub struct Session {
    client: Client,
    on_delivery: OnDelivery,
    /// One message per notification: the notifying transaction's id when it names one (see
    /// `sql/migrations/0006_notify_txid.sql`); closed when the connection ends.
    wakeups: mpsc::Receiver<Option<u64>>,
    /// Set when a notification did not fit in `wakeups`: it counts as new.
    wakeups_lost: Arc<AtomicBool>,
    /// The snapshot of the last claim: a notification of a transaction it saw committed brought
    /// nothing that claim did not read.
    claimed_snapshot: Mutex<Option<Snapshot>>,
    /// Set when another relay joined or gave up lanes ([`LANES_CHANNEL`]); taken by
    /// [`Session::lanes_changed`].
    lanes_changed: Arc<AtomicBool>,
    /// Closed when the connection ends: the leader lock is gone with it (see [`Session::ended`]).
    connection: watch::Receiver<()>,
    claim: Statement,
    mark_delivered: Statement,
    record_failures: Statement,
    park: Statement,
    /// The lanes whose locks this session holds, sorted. Claims and settles touch only their
    /// events: the fence. The locks live exactly as long as this session, and only this
    /// session's own statements take or release them, so it knows them without asking
    /// `pg_locks` at every statement (which cost ~1 ms each).
    lanes: Vec<i32>,
    /// Whether the session listens on [`NOTIFY_CHANNEL`]. A relay that claims on a steady
    /// stream stops listening ([`Session::stop_listening`]): every notification would wake it,
    /// and it claims again anyway. Waiting for work listens again first.
    listening: AtomicBool,
}

/// The transactions a claim's snapshot saw in progress or not yet started; every other one had
/// ended when the claim read the outbox.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    xmax: u64,
    /// Sorted.
    in_progress: Vec<u64>,
}

impl Snapshot {
    fn read(xmax: &str, in_progress: &[String]) -> Option<Snapshot> {
        let mut in_progress: Vec<u64> = in_progress
            .iter()
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        in_progress.sort_unstable();
        Some(Snapshot {
            xmax: xmax.parse().ok()?,
            in_progress,
        })
    }

    /// Whether a transaction that notified (so committed) had committed before this snapshot.
    fn saw_committed(&self, txid: u64) -> bool {
        txid < self.xmax && self.in_progress.binary_search(&txid).is_err()
    }
}

/// Where the next claim reads from (see `sql/queries/claim.sql`). Only the active relay's loop
/// holds one; a new leader starts from [`Cursor::start`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    /// Undelivered events from this id on are read as fresh.
    floor: i64,
    /// Transactions that the last claim saw in progress: their events below the floor are read
    /// as late commits.
    watched_in_progress: Vec<String>,
    /// The last claim's snapshot's xmax: transactions from it on are watched too (a snapshot
    /// lists only in-progress transactions below its xmax). `None` before the first claim.
    watched_from: Option<String>,
}

impl Cursor {
    /// From the first id: reads every undelivered event once, then only what is new.
    pub fn start() -> Cursor {
        Cursor::default()
    }

    /// The same cursor reading from the first id again, for the periodic rescan that finds
    /// events put back below the floor by hand (e.g. `UPDATE ... SET delivered_at = NULL`).
    pub fn rescan(&self) -> Cursor {
        Cursor {
            floor: 0,
            ..self.clone()
        }
    }

    /// Undelivered events from this id on are read as fresh.
    pub fn floor(&self) -> i64 {
        self.floor
    }
}

/// How much one claim may take.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub events: u32,
    /// Payload bytes; the first event is taken whatever its size (up to `max_payload_bytes`).
    pub bytes: usize,
    /// A larger payload is not read: the event is dead-lettered with its size.
    pub max_payload_bytes: usize,
}

/// One claim: the events to publish, rows that can never be published, and the cursor after it.
#[derive(Debug, Default)]
pub struct Claimed {
    pub events: Vec<Event>,
    pub invalid: Vec<InvalidEvent>,
    /// The cursor this claim started from; going back to it claims the same events again.
    pub from: Cursor,
    pub next: Cursor,
    /// When the claim was sent.
    pub started: Option<Instant>,
}

impl Claimed {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.invalid.is_empty()
    }

    /// Payload bytes held by the claimed events.
    pub fn payload_bytes(&self) -> usize {
        self.events.iter().map(|e| e.payload.len()).sum()
    }

    /// Whether the claim took as many events as it could.
    pub fn is_full(&self, limits: BatchLimits) -> bool {
        self.events.len() + self.invalid.len() >= limits.events as usize
            || self.payload_bytes() >= limits.bytes
    }

    /// Every claimed id, so that the next claim does not take them again before they are recorded.
    pub fn ids(&self) -> Vec<i64> {
        let events = self.events.iter().map(|e| e.id);
        events.chain(self.invalid.iter().map(|e| e.id)).collect()
    }
}

/// Why [`Session::wait_for_work`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Notified,
    Timeout,
    /// The session had stopped listening and listens again: look for events once more.
    Listening,
}

/// A failed event to record: one attempt used, deferred by `retry_in` or dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: i64,
    pub error: String,
    pub retry_in: Duration,
    /// Retrying cannot help (e.g. the row is malformed): dead-letter now.
    pub permanent: bool,
}

/// What happened to one recorded failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub id: i64,
    pub attempts: i32,
    pub dead_lettered: bool,
}

impl Session {
    pub async fn open(
        database: &DatabaseUrl,
        on_delivery: OnDelivery,
    ) -> Result<Session, StoreError> {
        let (client, mut connection) = database
            .connect()
            .await
            .map_err(|e| StoreError::new("connecting to PostgreSQL", e))?;
        // Room for the notifications of a few claims; more than that count as new (see
        // `wakeups_lost`).
        let (tx, wakeups) = mpsc::channel(WAKEUPS_QUEUED);
        let wakeups_lost = Arc::new(AtomicBool::new(false));
        let lost = wakeups_lost.clone();
        let (alive, connection_rx) = watch::channel(());
        let lanes_changed = Arc::new(AtomicBool::new(false));
        let lanes_flag = lanes_changed.clone();
        tokio::spawn(async move {
            // Dropped when this task ends, which tells `Session::ended`.
            let _alive = alive;
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if n.channel() == LANES_CHANNEL {
                            lanes_flag.store(true, Ordering::Relaxed);
                        }
                        // Lanes' notifications and those without a transaction id always
                        // count as new.
                        let txid = (n.channel() == NOTIFY_CHANNEL)
                            .then(|| n.payload().parse().ok())
                            .flatten();
                        if tx.try_send(txid).is_err() {
                            lost.store(true, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %crate::db::describe(&e), "PostgreSQL session lost");
                        break;
                    }
                    None => break,
                }
            }
            // Dropping `tx` tells the session that the connection is gone.
        });
        // Server-side keepalives, so PostgreSQL frees the leader lock within seconds when this
        // host vanishes without closing the connection. No parallel query: the planner
        // misjudges the (nearly always empty) deferred-events index and started two workers for
        // every claim, 8.8 ms instead of 0.7 ms per batch of 500 on a 1M backlog. Custom plans
        // only: a generic plan is made once, for the table as it was (often young and small, so
        // a sequential scan looks cheap), and kept as the table grows; a custom plan sees the
        // table's size at each claim and the actual floor and transaction ids. No JIT: the
        // claim's estimated cost can pass `jit_above_cost` on a large outbox, and compiling it
        // took ~70-130 ms per claim, against ~5 ms to run it. No wait for the WAL flush at each
        // commit: the session writes only the relay's own records (marks, attempts, dead
        // letters); a PostgreSQL crash may lose its last ~0.6 s of them, and those events are
        // published again, as after any crash (at-least-once). At 1,000 events/s with a 2 ms
        // linger it took the claim from 1.96 to 1.35 ms and a mark from 0.86 to 0.26 ms.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                 SET tcp_keepalives_count = 3; SET max_parallel_workers_per_gather = 0; \
                 SET plan_cache_mode = force_custom_plan; SET jit = off; SET synchronous_commit = off; \
                 LISTEN {NOTIFY_CHANNEL}; LISTEN {LANES_CHANNEL}"
            ))
            .await
            .map_err(|e| StoreError::new("setting up the relay session", e))?;
        let prepare = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .prepare(sql)
                    .await
                    .map_err(|e| StoreError::new("preparing the outbox queries", e))
            }
        };
        let claim = prepare(CLAIM_SQL).await?;
        let mark_delivered = prepare(MARK_DELIVERED_SQL).await?;
        let record_failures = prepare(RECORD_FAILURES_SQL).await?;
        let park = prepare(PARK_SQL).await?;
        Ok(Session {
            client,
            on_delivery,
            wakeups,
            wakeups_lost,
            claimed_snapshot: Mutex::new(None),
            lanes_changed,
            connection: connection_rx,
            claim,
            mark_delivered,
            record_failures,
            park,
            lanes: Vec::new(),
            listening: AtomicBool::new(true),
        })
    }

    /// Resolves once the connection has ended, and with it the leader lock: the fence. From then
    /// on another replica may lead, so this one must publish nothing more.
    pub async fn ended(&self) {
        let mut connection = self.connection.clone();
        while connection.changed().await.is_ok() {}
    }

    /// Takes the leader lock if no other session holds it. Never waits.
    pub async fn try_lead(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("trying the leader lock", e))?;
        row.try_get(0)
            .map_err(|e| StoreError::new("reading the leader lock", e))
    }

    /// Joins the relays that share the lanes (a shared lock that lives as long as the session), so
    /// that the others count this one when they compute their share.
    pub async fn join_lanes(&self) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&MEMBER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("joining the relays that share the lanes", e))?;
        self.announce_lanes_changed().await
    }

    /// Tells the other relays to check their share now rather than at their next periodic check:
    /// a relay joined (they give up lanes for it) or lanes were given up (they take them).
    async fn announce_lanes_changed(&self) -> Result<(), StoreError> {
        self.client
            .batch_execute(&format!("NOTIFY {LANES_CHANNEL}"))
            .await
            .map_err(|e| StoreError::new("telling the other relays that lanes changed", e))
    }

    /// Whether another relay joined or gave up lanes since the last call (its own announcements
    /// included: they only cause one more check).
    pub fn lanes_changed(&self) -> bool {
        self.lanes_changed.swap(false, Ordering::Relaxed)
    }

    /// Who relays which lane (see `sql/queries/lane_map.sql`).
    pub async fn lane_map(&mut self) -> Result<LaneMap, StoreError> {
        let read = |e: tokio_postgres::Error| StoreError::new("reading the lane map", e);
        let row = self
            .client
            .query_one(LANE_MAP_SQL, &[])
            .await
            .map_err(read)?;
        let map = LaneMap {
            me: row.try_get("me").map_err(read)?,
            members: row.try_get("members").map_err(read)?,
            owned: row.try_get("owned").map_err(read)?,
            taken: row.try_get("taken").map_err(read)?,
        };
        self.lanes.clone_from(&map.owned);
        Ok(map)
    }

    /// Takes the lane locks of `lanes` that no other session holds; returns those taken.
    pub async fn take_lanes(&mut self, lanes: &[i32]) -> Result<Vec<i32>, StoreError> {
        let read = |e: tokio_postgres::Error| StoreError::new("taking lanes", e);
        let rows = self
            .client
            .query(
                "SELECT lane FROM unnest($1::integer[]) AS lane \
                 WHERE pg_try_advisory_lock($2::bigint + lane)",
                &[&lanes, &LANE_LOCK_BASE],
            )
            .await
            .map_err(read)?;
        let taken: Vec<i32> = rows
            .iter()
            .map(|r| r.try_get(0).map_err(read))
            .collect::<Result<_, _>>()?;
        self.lanes.extend(&taken);
        self.lanes.sort_unstable();
        self.lanes.dedup();
        Ok(taken)
    }

    /// Gives up the lane locks of `lanes`. Only between batches: nothing of them is in flight.
    pub async fn release_lanes(&mut self, lanes: &[i32]) -> Result<(), StoreError> {
        self.client
            .execute(
                "SELECT pg_advisory_unlock($2::bigint + lane) FROM unnest($1::integer[]) AS lane",
                &[&lanes, &LANE_LOCK_BASE],
            )
            .await
            .map_err(|e| StoreError::new("releasing lanes", e))?;
        self.lanes.retain(|lane| !lanes.contains(lane));
        self.announce_lanes_changed().await
    }

    /// Leaves the relays that share the lanes (a graceful stop): first no longer counted as a
    /// member, then every lane given up with the notification, so that the others, checking at
    /// once, count one relay less and take the lanes.
    pub async fn leave_lanes(&mut self) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_advisory_unlock_shared($1)", &[&MEMBER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("leaving the relays that share the lanes", e))?;
        if self.lanes.is_empty() {
            return Ok(());
        }
        let lanes = std::mem::take(&mut self.lanes);
        self.release_lanes(&lanes).await
    }

    /// The fence parameter of the claim and settle statements: the lanes held, or `None` when
    /// every lane is held (no filter needed, so a single replica reads no lane at all).
    fn fence(&self) -> Option<&[i32]> {
        (self.lanes.len() != LANE_COUNT as usize).then_some(self.lanes.as_slice())
    }

    /// Waits for a notification or `timeout`; an error means the connection is gone. A session
    /// that stopped listening listens again and returns at once: events committed while it did
    /// not listen raised no notification, so the caller claims once more before it waits (a
    /// transaction that commits after `LISTEN` notifies it; one that committed before is seen by
    /// that claim).
    pub async fn wait_for_work(&mut self, timeout: Duration) -> Result<Wake, StoreError> {
        if !self.is_listening() {
            self.set_listening(true).await?;
            return Ok(Wake::Listening);
        }
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self.wakeups_lost.swap(false, Ordering::Relaxed) {
                return Ok(Wake::Notified);
            }
            tokio::select! {
                message = self.wakeups.recv() => match message {
                    Some(txid) if self.brings_news(txid) => return Ok(Wake::Notified),
                    Some(_) => {}
                    None => return Err(StoreError::SessionEnded),
                },
                _ = tokio::time::sleep_until(until) => return Ok(Wake::Timeout),
            }
        }
    }

    /// Whether a notification may announce events the last claim did not read: it names no
    /// transaction, or one that claim's snapshot did not see committed.
    fn brings_news(&self, txid: Option<u64>) -> bool {
        let snapshot = self.claimed_snapshot();
        match (txid, snapshot.as_ref()) {
            (Some(txid), Some(snapshot)) => !snapshot.saw_committed(txid),
            _ => true,
        }
    }

    /// The last claim's snapshot (a panic elsewhere while it was held leaves a whole value).
    fn claimed_snapshot(&self) -> MutexGuard<'_, Option<Snapshot>> {
        self.claimed_snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the session listens for new events' notifications.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Stops the notifications of new events while the relay claims on a steady stream: it
    /// claims again after each batch anyway, and each notification cost a wake-up of the relay
    /// and of its backend. [`Session::wait_for_work`] listens again.
    pub async fn stop_listening(&self) -> Result<(), StoreError> {
        self.set_listening(false).await
    }

    /// `LISTEN` or `UNLISTEN` on [`NOTIFY_CHANNEL`], timed as the query `listen` / `unlisten`.
    async fn set_listening(&self, on: bool) -> Result<(), StoreError> {
        let (statement, query, doing) = if on {
            ("LISTEN", "listen", "listening for new events again")
        } else {
            (
                "UNLISTEN",
                "unlisten",
                "pausing the notifications of new events",
            )
        };
        let started = Instant::now();
        self.client
            .batch_execute(&format!("{statement} {NOTIFY_CHANNEL}"))
            .await
            .map_err(|e| StoreError::new(doing, e))?;
        telemetry::observe_query(query, started);
        self.listening.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a notification that may announce new events (see [`Session::brings_news`])
    /// arrived since the last call; drains them all.
    pub fn take_wakeup(&mut self) -> bool {
        let mut news = self.wakeups_lost.swap(false, Ordering::Relaxed);
        while let Ok(txid) = self.wakeups.try_recv() {
            news |= self.brings_news(txid);
        }
        news
    }

    /// The next events to publish after `cursor`, skipping `in_flight` (claimed, not yet
    /// recorded); rows that can never be published come back separately. Events held back behind
    /// an earlier deferred event of their key are parked by the same statement, and `delivered`
    /// (acknowledged by the broker) are marked by it: one round trip per batch.
    pub async fn claim(
        &self,
        limits: BatchLimits,
        cursor: &Cursor,
        in_flight: &[i64],
        delivered: &[i64],
    ) -> Result<Claimed, StoreError> {
        let started = Instant::now();
        let skipped: Vec<i64> = in_flight.iter().chain(delivered).copied().collect();
        let events = i64::from(limits.events);
        let bytes = i64::try_from(limits.bytes).unwrap_or(i64::MAX);
        let max_payload = i64::try_from(limits.max_payload_bytes).unwrap_or(i64::MAX);
        let fence = self.fence();
        let (marked, deleted) = self.on_delivery.split(delivered);
        let params: [&(dyn ToSql + Sync); 10] = [
            &events,
            &cursor.floor,
            &cursor.watched_in_progress,
            &skipped,
            &bytes,
            &max_payload,
            &fence,
            &cursor.watched_from,
            &marked,
            &deleted,
        ];
        let query = |e: tokio_postgres::Error| StoreError::new("claiming events", e);
        let read = |e: tokio_postgres::Error| StoreError::new("reading the claim's cursor", e);
        // Row by row, so that a batch's payloads are held once, as events, not also as rows.
        let rows = self
            .client
            .query_raw(&self.claim, params)
            .await
            .map_err(query)?;
        let mut rows = std::pin::pin!(rows);
        let mut claimed = Claimed {
            from: cursor.clone(),
            next: cursor.clone(),
            started: Some(started),
            ..Claimed::default()
        };
        let mut first = true;
        while let Some(row) = rows.try_next().await.map_err(query)? {
            if first {
                first = false;
                let snapshot = Snapshot::read(
                    &row.try_get::<_, String>("next_xmax").map_err(read)?,
                    &row.try_get::<_, Vec<String>>("next_xip").map_err(read)?,
                );
                *self.claimed_snapshot() = snapshot;
                // Otherwise late commits filled the batch: read on from the same place.
                if row.try_get::<_, bool>("advanced").map_err(read)? {
                    claimed.next = Cursor {
                        floor: row.try_get("next_floor").map_err(read)?,
                        watched_in_progress: row.try_get("next_xip").map_err(read)?,
                        watched_from: row.try_get("next_xmax").map_err(read)?,
                    };
                }
            }
            // The one row of an empty claim has no event.
            if row.try_get::<_, Option<i64>>("id").map_err(read)?.is_none() {
                continue;
            }
            match Event::from_row(&row, limits.max_payload_bytes)? {
                Ok(event) => claimed.events.push(event),
                Err(bad) => claimed.invalid.push(bad),
            }
        }
        if first {
            return Err(StoreError::Schema(
                "the claim returned no cursor row".into(),
            ));
        }
        telemetry::observe_query("claim", started);
        Ok(claimed)
    }

    /// Defers claimed events that were neither delivered nor failed (see `sql/queries/park.sql`):
    /// `due` ones at once (behind their key's earlier deferred event), `waiting` ones after
    /// their delay (their sink is down).
    pub async fn park(&self, due: &[i64], waiting: &[(i64, Duration)]) -> Result<(), StoreError> {
        if due.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let ids: Vec<i64> = due
            .iter()
            .copied()
            .chain(waiting.iter().map(|w| w.0))
            .collect();
        let delays_ms: Vec<i64> = std::iter::repeat_n(0, due.len())
            .chain(
                waiting
                    .iter()
                    .map(|w| i64::try_from(w.1.as_millis()).unwrap_or(i64::MAX)),
            )
            .collect();
        self.client
            .execute(&self.park, &[&ids, &delays_ms, &self.fence()])
            .await
            .map_err(|e| StoreError::new("parking held-back events", e))?;
        telemetry::observe_query("park", started);
        Ok(())
    }

    /// Records the delivery of `ids` (marked or deleted, see [`OnDelivery`]).
    pub async fn record_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (marked, deleted) = self.on_delivery.split(ids);
        self.client
            .execute(&self.mark_delivered, &[&marked, &self.fence(), &deleted])
            .await
            .map_err(|e| StoreError::new("recording deliveries", e))?;
        telemetry::observe_query("mark", started);
        Ok(())
    }

    pub async fn record_failures(
        &self,
        failures: &[Failure],
        max_attempts: u32,
    ) -> Result<Vec<Recorded>, StoreError> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
        let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
        let delays: Vec<i64> = failures
            .iter()
            .map(|f| i64::try_from(f.retry_in.as_millis()).unwrap_or(i64::MAX))
            .collect();
        let permanent: Vec<bool> = failures.iter().map(|f| f.permanent).collect();
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let rows = self
            .client
            .query(
                &self.record_failures,
                &[
                    &ids,
                    &errors,
                    &delays,
                    &permanent,
                    &max_attempts,
                    &self.fence(),
                ],
            )
            .await
            .map_err(|e| StoreError::new("recording failed events", e))?;
        telemetry::observe_query("record_failures", started);
        let read = |e: tokio_postgres::Error| StoreError::new("reading recorded failures", e);
        rows.iter()
            .map(|row| {
                Ok(Recorded {
                    id: row.try_get("id").map_err(read)?,
                    attempts: row.try_get("attempts").map_err(read)?,
                    dead_lettered: row.try_get("dead_lettered").map_err(read)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    fn snapshot(xmax: &str, in_progress: &[&str]) -> Snapshot {
        let in_progress: Vec<String> = in_progress.iter().map(|t| t.to_string()).collect();
        Snapshot::read(xmax, &in_progress).expect("a snapshot")
    }

    #[test]
    fn a_snapshot_saw_committed_what_ended_below_its_xmax() {
        let seen = snapshot("105", &["103", "101"]);
        assert!(seen.saw_committed(100), "ended before the snapshot");
        assert!(seen.saw_committed(102), "ended between two in progress");
        assert!(!seen.saw_committed(101), "in progress at the snapshot");
        assert!(!seen.saw_committed(103), "in progress at the snapshot");
        assert!(!seen.saw_committed(105), "not started before the snapshot");
        assert!(!seen.saw_committed(200), "not started before the snapshot");
    }

    #[test]
    fn a_snapshot_that_does_not_parse_is_none() {
        assert_eq!(Snapshot::read("x", &[]), None);
        assert_eq!(Snapshot::read("5", &["1".into(), "y".into()]), None);
    }
}
