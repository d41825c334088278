//! The capture `migrate` installs (sql/adopt/), and what a database has installed. Each file takes
//! the migrations' advisory lock and is idempotent, so many pods may run `migrate` at once.

use tokio_postgres::Client;

use super::{AdoptError, Adoption, Framework, describe};

/// Functions every layout's capture uses.
const COMMON: &str = include_str!("../../sql/adopt/common.sql");

/// The layout's functions, and the call that installs its capture on a table.
fn layout(framework: Framework) -> (&'static str, &'static str) {
    match framework {
        Framework::Debezium => (
            include_str!("../../sql/adopt/debezium.sql"),
            include_str!("../../sql/adopt/install_debezium.sql"),
        ),
        Framework::MassTransit => (
            include_str!("../../sql/adopt/masstransit.sql"),
            include_str!("../../sql/adopt/install_masstransit.sql"),
        ),
    }
}

/// Installs the capture of `adoption`'s table (after the core migrations); returns what was done,
/// e.g. `capture trigger installed on outboxevent (topic outbox.event.{aggregatetype})`.
pub async fn install(client: &Client, adoption: &Adoption) -> Result<String, AdoptError> {
    let failed = |e: tokio_postgres::Error| AdoptError::Install {
        framework: adoption.framework,
        table: adoption.table.clone(),
        message: describe(&e),
    };
    let (functions, call) = layout(adoption.framework);
    client.batch_execute(COMMON).await.map_err(failed)?;
    client.batch_execute(functions).await.map_err(failed)?;
    let row = match adoption.framework {
        Framework::Debezium => {
            client
                .query_one(call, &[&adoption.table, &adoption.topic_template])
                .await
        }
        Framework::MassTransit => client.query_one(call, &[&adoption.table]).await,
    }
    .map_err(failed)?;
    row.try_get(0).map_err(failed)
}

/// One adopted table, as `status` and `check` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    pub table: String,
    /// `debezium` or `masstransit`.
    pub framework: String,
    /// False when a DBA disabled the capture trigger: the application's rows are not relayed.
    pub enabled: bool,
}

/// The tables whose capture is installed in this database.
pub async fn installed(client: &Client) -> Result<Vec<Installed>, AdoptError> {
    let read = |e: tokio_postgres::Error| AdoptError::Read(describe(&e));
    let rows = client
        .query(include_str!("../../sql/adopt/installed.sql"), &[])
        .await
        .map_err(read)?;
    rows.iter()
        .map(|row| {
            Ok(Installed {
                table: row.try_get("table_name").map_err(read)?,
                framework: row.try_get("framework").map_err(read)?,
                enabled: row.try_get("enabled").map_err(read)?,
            })
        })
        .collect()
}
