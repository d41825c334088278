//! Removes delivered events after `OUTBOX_RETENTION_SECS`, in small batches, so that the table and
//! its indexes stay small under sustained load. Only the active replica purges.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::health::Health;
use crate::shutdown::Shutdown;

const PURGE_SQL: &str = include_str!("../../sql/queries/purge_delivered.sql");

/// Rows deleted per statement: small enough to hold locks only briefly.
pub const PURGE_BATCH: i64 = 1_000;

/// How long to rest when there is nothing (more) to purge.
const IDLE: Duration = Duration::from_secs(5);

pub async fn purge_delivered(pool: Pool, retention: Duration, health: Health, shutdown: Shutdown) {
    let retention_secs = retention.as_secs_f64();
    loop {
        let mut deleted = 0;
        if health.leader() {
            match purge_batch(&pool, retention_secs).await {
                Ok(n) => deleted = n,
                Err(e) => {
                    tracing::debug!(error = %e, "purging delivered events failed; will retry")
                }
            }
        }
        // A full batch means more are due: go on at once, but still yield to shutdown.
        let rest = if deleted >= PURGE_BATCH as u64 {
            Duration::ZERO
        } else {
            IDLE
        };
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(rest) => {}
        }
    }
}

async fn purge_batch(pool: &Pool, retention_secs: f64) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute(PURGE_SQL, &[&retention_secs, &PURGE_BATCH])
        .await
        .map_err(|e| super::describe(&e))
}
