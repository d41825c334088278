//! The relay's own PostgreSQL session. It holds the leader lock, receives notifications, and runs
//! every claim and settle of the active relay: if it dies, the lock is released with it and this
//! replica can no longer mark anything, so two replicas never relay side by side for long.
//!
//! - this file: opening the session (its settings and prepared statements) and its end;
//! - [`notifications`]: the task that drives the connection and passes on its notifications;
//! - [`leadership`]: the leader lock and the lanes' locks, which fence every claim and settle;
//! - [`claim`]: the claim, its cursor and the snapshot it saw;
//! - [`record`]: recording deliveries and failures, parking the rest;
//! - [`listen`]: waiting for work, and which notifications bring news.

mod claim;
mod leadership;
mod listen;
mod notifications;
mod record;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, Statement};

use self::claim::Snapshot;
pub use self::claim::{BatchLimits, Claimed, Cursor, steady_claim_sql};
pub use self::leadership::LaneMap;
pub use self::listen::Wake;
pub use self::record::{Failure, OnDelivery, Recorded};
use super::{LANES_CHANNEL, NOTIFY_CHANNEL, StoreError};
use crate::db::DatabaseUrl;

const CLAIM_SQL: &str = include_str!("../../../sql/queries/claim.sql");
const CLAIM_STEADY_SQL: &str = include_str!("../../../sql/queries/claim_steady.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../../../sql/queries/mark_delivered.sql");
const RECORD_FAILURES_SQL: &str = include_str!("../../../sql/queries/record_failures.sql");
const PARK_SQL: &str = include_str!("../../../sql/queries/park.sql");
const SESSION_SETTINGS_SQL: &str = include_str!("../../../sql/queries/session_settings.sql");

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
    statements: Statements,
    /// The lanes whose locks this session holds, sorted. Claims and settles touch only their
    /// events: the fence. The locks live exactly as long as this session, and only this
    /// session's own statements take or release them, so it knows them without asking
    /// `pg_locks` at every statement (which cost ~1 ms each).
    lanes: Vec<i32>,
    /// Whether the session listens on [`NOTIFY_CHANNEL`]. A relay that claims on a steady
    /// stream stops listening ([`Session::stop_listening`]): every notification would wake it,
    /// and it claims again anyway. Waiting for work listens again first.
    listening: AtomicBool,
    /// The steady claim, prepared while the session plans generically (see `claim.rs`); `None`
    /// while it plans each call afresh, as `sql/queries/session_settings.sql` starts it.
    steady_claim: Mutex<Option<claim::SteadyClaim>>,
}

/// The outbox statements, prepared once per session.
struct Statements {
    claim: Statement,
    mark_delivered: Statement,
    record_failures: Statement,
    park: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, StoreError> {
        let prepare = |sql: &'static str| async move {
            client
                .prepare(sql)
                .await
                .map_err(|e| StoreError::new("preparing the outbox queries", e))
        };
        Ok(Statements {
            claim: prepare(CLAIM_SQL).await?,
            mark_delivered: prepare(MARK_DELIVERED_SQL).await?,
            record_failures: prepare(RECORD_FAILURES_SQL).await?,
            park: prepare(PARK_SQL).await?,
        })
    }
}

impl Session {
    pub async fn open(
        database: &DatabaseUrl,
        on_delivery: OnDelivery,
    ) -> Result<Session, StoreError> {
        let (client, connection) = database
            .connect()
            .await
            .map_err(|e| StoreError::new("connecting to PostgreSQL", e))?;
        let notifications = notifications::spawn(connection);
        set_up(&client).await?;
        let statements = Statements::prepare(&client).await?;
        Ok(Session {
            client,
            on_delivery,
            wakeups: notifications.wakeups,
            wakeups_lost: notifications.wakeups_lost,
            claimed_snapshot: Mutex::new(None),
            lanes_changed: notifications.lanes_changed,
            connection: notifications.connection,
            statements,
            lanes: Vec::new(),
            listening: AtomicBool::new(true),
            steady_claim: Mutex::new(None),
        })
    }

    /// Resolves once the connection has ended, and with it the leader lock: the fence. From then
    /// on another replica may lead, so this one must publish nothing more.
    pub async fn ended(&self) {
        let mut connection = self.connection.clone();
        while connection.changed().await.is_ok() {}
    }
}

/// The session's own settings, and `LISTEN` on new events and on lanes changing hands.
async fn set_up(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute(&format!(
            "{SESSION_SETTINGS_SQL} LISTEN {NOTIFY_CHANNEL}; LISTEN {LANES_CHANNEL}"
        ))
        .await
        .map_err(|e| StoreError::new("setting up the relay session", e))
}
