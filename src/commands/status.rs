//! `outbox-relay status`: backlog, lag, dead letters and the active replica.

use serde::Serialize;

use crate::db::DatabaseUrl;
use crate::outbox::admin::{self, ActiveRelay, Stats};

#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    stats: Stats,
    active_relay: Option<ActiveRelay>,
}

pub async fn status(database: &DatabaseUrl, json: bool) -> Result<(), String> {
    let client = super::connect(database).await?;
    let stats = admin::stats(&client).await.map_err(|e| e.to_string())?;
    let active_relay = admin::active_relay(&client)
        .await
        .map_err(|e| e.to_string())?;
    let status = Status {
        stats,
        active_relay,
    };
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    let active = match &status.active_relay {
        Some(ActiveRelay {
            application_name,
            client: Some(client),
            backend_pid,
            since: Some(since),
        }) => format!(
            "{application_name} (from {client}, backend pid {backend_pid}, since {})",
            since.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        // PostgreSQL hides the address and start of another role's session.
        Some(relay) => format!(
            "{} (backend pid {}; address and start hidden from this role: GRANT pg_read_all_stats, or run status as the relay's role, to see them)",
            relay.application_name, relay.backend_pid
        ),
        None => "none: no relay holds the leader lock".into(),
    };
    println!("pending events   {}", status.stats.pending);
    println!("lag              {:.3} s", status.stats.lag_seconds);
    println!("dead letters     {}", status.stats.dead_letters);
    println!("active relay     {active}");
    Ok(())
}
