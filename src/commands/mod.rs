//! Subcommands other than `run`: each takes validated settings and prints for a person (or JSON).

pub mod check;
pub mod dead_letters;
pub mod status;

use crate::db::DatabaseUrl;
use crate::outbox::describe;

/// One connection for a command, driven in the background.
pub async fn connect(database: &DatabaseUrl) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = database.connect().await.map_err(|e| {
        format!(
            "cannot connect to PostgreSQL at {database}: {}",
            describe(&e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}
