//! The adoption guard: while the relay runs, looks every [`GUARD_INTERVAL`] for evidence that
//! MassTransit's own delivery service was switched on beside it (see [`crate::adopt::conflicts`]),
//! and stops the relay when it finds some.

use std::time::Duration;

use crate::adopt::{self, Conflict};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// How often the guard looks. One indexless read of a table that is empty while all is well.
pub const GUARD_INTERVAL: Duration = Duration::from_secs(2);

/// Looks until `shutdown`; on evidence, pulls `stop` (the relay finishes its batch in flight) and
/// returns it.
pub async fn guard(
    pool: deadpool_postgres::Pool,
    stop: ShutdownTrigger,
    shutdown: Shutdown,
) -> Option<Vec<Conflict>> {
    let mut tick = tokio::time::interval(GUARD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            _ = tick.tick() => {}
        }
        let client = match pool.get().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "adoption guard cannot reach PostgreSQL");
                continue;
            }
        };
        match adopt::conflicts(&**client, false).await {
            Ok(conflicts) if conflicts.is_empty() => {}
            Ok(conflicts) => {
                tracing::error!("{}", adopt::refusal(&conflicts));
                stop.trigger();
                return Some(conflicts);
            }
            Err(e) => tracing::debug!(error = %e, "adoption guard query failed"),
        }
    }
}
