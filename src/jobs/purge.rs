//! Removes delivered events after `OUTBOX_RETENTION_SECS`, in small batches, so that the table and
//! its indexes stay small under sustained load. One replica purges: the owner of lane 0 (in single
//! mode, the active replica, which owns every lane).

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::ownership::Ownership;
use crate::shutdown::Shutdown;

const PURGE_SQL: &str = include_str!("../../sql/queries/purge_delivered.sql");

/// Ids per purge statement: few enough to hold locks only briefly.
pub const PURGE_WINDOW: i64 = 1_000;

/// How long to rest when there is nothing (more) to purge.
const IDLE: Duration = Duration::from_secs(5);

pub async fn purge_delivered(
    pool: Pool,
    retention: Duration,
    ownership: Ownership,
    shutdown: Shutdown,
) {
    let retention_secs = retention.as_secs_f64();
    // The window's first id. 0 starts a pass over the whole table; a pass ends at the newest
    // id, and events delivered later below the window (retries) go in the next pass.
    let mut window = 0;
    loop {
        let mut rest = IDLE;
        if ownership.lanes().contains(&0) {
            match purge_window(&pool, retention_secs, window).await {
                Ok(Purged::Done { next }) => {
                    window = next;
                    rest = Duration::ZERO;
                }
                Ok(Purged::TooRecent { at }) => window = at,
                Ok(Purged::PassEnded) => window = 0,
                Err(e) => {
                    tracing::debug!(error = %e, "purging delivered events failed; will retry")
                }
            }
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(rest) => {}
        }
    }
}

enum Purged {
    /// The window is purged; go on with the next one at once.
    Done { next: i64 },
    /// The window starting `at` holds events delivered too recently: wait for them.
    TooRecent { at: i64 },
    /// Past the newest event: start the next pass after a rest.
    PassEnded,
}

async fn purge_window(pool: &Pool, retention_secs: f64, window: i64) -> Result<Purged, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    // A new pass starts at the oldest id rather than walking empty windows up to it.
    let start = if window == 0 {
        let row = client
            .query_one("SELECT coalesce(min(id), 0) FROM outbox.events", &[])
            .await
            .map_err(|e| crate::db::describe(&e))?;
        row.try_get::<_, i64>(0).map_err(|e| e.to_string())?
    } else {
        window
    };
    let row = client
        .query_one(PURGE_SQL, &[&retention_secs, &start, &PURGE_WINDOW])
        .await
        .map_err(|e| crate::db::describe(&e))?;
    let too_recent: bool = row.try_get("too_recent").map_err(|e| e.to_string())?;
    let last_id: i64 = row.try_get("last_id").map_err(|e| e.to_string())?;
    Ok(if too_recent {
        Purged::TooRecent { at: start }
    } else if start + PURGE_WINDOW > last_id {
        Purged::PassEnded
    } else {
        Purged::Done {
            next: start + PURGE_WINDOW,
        }
    })
}
