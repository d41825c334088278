//! Embedded migrations. Each file is idempotent and takes an advisory lock itself, so `migrate` is
//! safe from many pods at once and a DBA can apply the same files with `psql -f`.

use std::collections::HashSet;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::StoreError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox",
        sql: include_str!("../../sql/migrations/0001_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "claim_cursor",
        sql: include_str!("../../sql/migrations/0002_claim_cursor.sql"),
    },
    Migration {
        version: 3,
        name: "roles",
        sql: include_str!("../../sql/migrations/0003_roles.sql"),
    },
    Migration {
        version: 4,
        name: "lanes",
        sql: include_str!("../../sql/migrations/0004_lanes.sql"),
    },
    Migration {
        version: 5,
        name: "lane_index",
        sql: include_str!("../../sql/migrations/0005_lane_index.sql"),
    },
    Migration {
        version: 6,
        name: "notify_txid",
        sql: include_str!("../../sql/migrations/0006_notify_txid.sql"),
    },
];

/// Applies the migrations this database does not have yet; returns the versions applied.
pub async fn migrate(client: &Client) -> Result<Vec<i32>, StoreError> {
    let applied = applied_versions(client).await?;
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        client
            .batch_execute(migration.sql)
            .await
            .map_err(|e| StoreError::new("applying a migration", e))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
        done.push(migration.version);
    }
    Ok(done)
}

/// The group roles of migration 3 that do not exist: the role running `migrate` may not create
/// roles, and a DBA has to (the migration logged how).
pub async fn missing_roles(client: &Client) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(include_str!("../../sql/queries/missing_roles.sql"), &[])
        .await
        .map_err(|e| StoreError::new("looking for the outbox roles", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The newest version the database has, `None` before the first migration.
pub async fn current_version(client: &Client) -> Result<Option<i32>, StoreError> {
    Ok(applied_versions(client).await?.into_iter().max())
}

async fn applied_versions(client: &Client) -> Result<HashSet<i32>, StoreError> {
    match client
        .query("SELECT version FROM outbox.schema_migrations", &[])
        .await
    {
        Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(HashSet::new())
        }
        Err(e) => Err(StoreError::new("reading applied migrations", e)),
    }
}
