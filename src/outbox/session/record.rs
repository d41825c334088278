//! Settling claimed events: deliveries marked (or deleted), failures counted against their
//! attempts, and events neither delivered nor failed parked for later.

use std::time::{Duration, Instant};

use super::Session;
use crate::outbox::StoreError;
use crate::telemetry;

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

/// A delay as the milliseconds the statements take.
fn millis(delay: Duration) -> i64 {
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

impl Session {
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
            .chain(waiting.iter().map(|w| millis(w.1)))
            .collect();
        self.client
            .execute(&self.statements.park, &[&ids, &delays_ms, &self.fence()])
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
            .execute(
                &self.statements.mark_delivered,
                &[&marked, &self.fence(), &deleted],
            )
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
        let delays: Vec<i64> = failures.iter().map(|f| millis(f.retry_in)).collect();
        let permanent: Vec<bool> = failures.iter().map(|f| f.permanent).collect();
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let rows = self
            .client
            .query(
                &self.statements.record_failures,
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
