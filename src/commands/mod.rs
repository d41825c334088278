//! The subcommands: each takes validated settings; all but `run` print for a person (or JSON).

pub mod check;
pub mod dead_letters;
pub mod migrate;
pub mod run;
pub mod status;

use crate::db::DatabaseUrl;

/// One connection for a command, driven in the background.
pub async fn connect(database: &DatabaseUrl) -> Result<tokio_postgres::Client, String> {
    database.connect_client().await
}
