//! Subcommands other than `run`: each takes validated settings and prints for a person (or JSON).

pub mod check;
pub mod dead_letters;
pub mod status;

use crate::db::DatabaseUrl;

/// One connection for a command, driven in the background.
pub async fn connect(database: &DatabaseUrl) -> Result<tokio_postgres::Client, String> {
    database.connect_client().await
}
