//! The relay's own PostgreSQL session. It holds the leader lock, receives notifications, and runs
//! every claim and settle of the active relay: if it dies, the lock is released with it and this
//! replica can no longer mark anything, so two replicas never relay side by side for long.

use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Statement};

use super::event::{Event, InvalidEvent};
use super::{LEADER_LOCK_KEY, NOTIFY_CHANNEL, StoreError};
use crate::db::DatabaseUrl;
use crate::telemetry;

const CLAIM_SQL: &str = include_str!("../../sql/queries/claim.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../../sql/queries/mark_delivered.sql");
const RECORD_FAILURES_SQL: &str = include_str!("../../sql/queries/record_failures.sql");

pub struct Session {
    client: Client,
    /// One message per burst of notifications; closed when the connection ends.
    wakeups: mpsc::Receiver<()>,
    claim: Statement,
    mark_delivered: Statement,
    record_failures: Statement,
}

/// Why [`Session::wait_for_work`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Notified,
    Timeout,
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
    pub async fn open(database: &DatabaseUrl) -> Result<Session, StoreError> {
        let (client, mut connection) = database
            .connect()
            .await
            .map_err(|e| StoreError::new("connecting to PostgreSQL", e))?;
        let (tx, wakeups) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        // A full channel already holds a wake-up; that is enough.
                        let _ = tx.try_send(());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %super::describe(&e), "PostgreSQL session lost");
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
        // every claim, 8.8 ms instead of 0.7 ms per batch of 500 on a 1M backlog.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                 SET tcp_keepalives_count = 3; SET max_parallel_workers_per_gather = 0; \
                 LISTEN {NOTIFY_CHANNEL}"
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
        Ok(Session {
            client,
            wakeups,
            claim,
            mark_delivered,
            record_failures,
        })
    }

    /// Takes the leader lock if no other session holds it. Never waits.
    pub async fn try_lead(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("trying the leader lock", e))?;
        Ok(row.get(0))
    }

    /// Waits for a notification or `timeout`; an error means the connection is gone.
    pub async fn wait_for_work(&mut self, timeout: Duration) -> Result<Wake, StoreError> {
        tokio::select! {
            message = self.wakeups.recv() => match message {
                Some(()) => Ok(Wake::Notified),
                None => Err(StoreError::SessionEnded),
            },
            _ = tokio::time::sleep(timeout) => Ok(Wake::Timeout),
        }
    }

    /// Whether a notification arrived since the last wait; drains it.
    pub fn take_wakeup(&mut self) -> bool {
        self.wakeups.try_recv().is_ok()
    }

    /// The next batch of deliverable events; rows that can never be published come back separately.
    /// The next deliverable events, skipping `in_flight` (claimed, not yet recorded).
    pub async fn claim(
        &self,
        limit: u32,
        max_payload_bytes: usize,
        in_flight: &[i64],
    ) -> Result<(Vec<Event>, Vec<InvalidEvent>), StoreError> {
        let started = Instant::now();
        let rows = self
            .client
            .query(&self.claim, &[&i64::from(limit), &in_flight])
            .await
            .map_err(|e| StoreError::new("claiming events", e))?;
        telemetry::observe_query("claim", started);
        let mut events = Vec::with_capacity(rows.len());
        let mut invalid = Vec::new();
        for row in &rows {
            match Event::from_row(row, max_payload_bytes) {
                Ok(event) => events.push(event),
                Err(bad) => invalid.push(bad),
            }
        }
        Ok((events, invalid))
    }

    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.client
            .execute(&self.mark_delivered, &[&ids])
            .await
            .map_err(|e| StoreError::new("marking events delivered", e))?;
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
                &[&ids, &errors, &delays, &permanent, &max_attempts],
            )
            .await
            .map_err(|e| StoreError::new("recording failed events", e))?;
        telemetry::observe_query("record_failures", started);
        Ok(rows
            .iter()
            .map(|row| Recorded {
                id: row.get("id"),
                attempts: row.get("attempts"),
                dead_lettered: row.get("dead_lettered"),
            })
            .collect())
    }
}
