//! `outbox-relay check`: the configuration is valid, PostgreSQL answers and has the outbox schema,
//! and every sink's broker accepts a connection.

use crate::adopt;
use crate::config::{ConfigError, RelayConfig};
use crate::health::Health;
use crate::outbox::migrate::{self, MIGRATIONS};
use crate::outbox::pooler::{self, Verdict};
use crate::outbox::session::{OnDelivery, Session};
use crate::sink::Sink;

/// Why `check` failed.
#[derive(Debug)]
pub enum CheckError {
    /// `OUTBOX_DATABASE_URL` leads through a transaction pool: a configuration error.
    Pooled(ConfigError),
    /// Anything else that is not as needed.
    Failed(String),
}

impl From<String> for CheckError {
    fn from(e: String) -> Self {
        CheckError::Failed(e)
    }
}

/// Prints one line per check; `Err` names the first thing that is wrong.
pub async fn check(config: &RelayConfig) -> Result<(), CheckError> {
    let sinks: Vec<String> = config
        .sinks
        .iter()
        .map(|s| format!("{} ({})", s.name, s.kind))
        .collect();
    println!("configuration: ok (sinks: {})", sinks.join(", "));
    let client = super::connect(&config.database).await?;
    println!("postgresql: connected to {}", config.database);
    match pooler::probe(&config.database).await? {
        Verdict::Pinned => println!("postgresql session: pinned (no transaction pool)"),
        Verdict::Pooled(evidence) => {
            return Err(CheckError::Pooled(pooler::Pooled { evidence }.into()));
        }
    }
    check_schema(config, &client).await?;
    check_adoption(&client).await?;
    let health = Health::default();
    for spec in &config.sinks {
        let mut sink = Sink::new(
            &spec.name,
            spec.config.as_ref(),
            config.publish_timeout,
            health.sink(&spec.name),
        );
        sink.connect()
            .await
            .map_err(|e| CheckError::Failed(format!("sink {}: {e}", spec.name)))?;
        println!("broker: connected (sink {}, {})", spec.name, spec.kind);
        sink.close().await;
    }
    Ok(())
}

/// The outbox schema is migrated and is what this relay's statements expect.
async fn check_schema(
    config: &RelayConfig,
    client: &tokio_postgres::Client,
) -> Result<(), CheckError> {
    let latest = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    match migrate::current_version(client)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(version) if version >= latest => println!("outbox schema: version {version}"),
        Some(version) => {
            return Err(format!(
                "outbox schema is at version {version}, this relay needs {latest}: run `outbox-relay migrate`"
            )
            .into());
        }
        None => {
            return Err(
                String::from("the outbox schema is missing: run `outbox-relay migrate`").into(),
            );
        }
    }
    // The relay's own statements, prepared as `run` prepares them: a column renamed or dropped by
    // hand is not in the version number, and `run` would only retry.
    Session::open(&config.database, OnDelivery::Mark)
        .await
        .map_err(|e| {
            format!(
                "outbox.events does not match what this relay expects ({e}): restore the schema \
                 the migrations made (see docs/schema.md)"
            )
        })?;
    println!("outbox queries: prepared");
    Ok(())
}

/// Each adopted table's capture, and no second deliverer beside the relay.
async fn check_adoption(client: &tokio_postgres::Client) -> Result<(), CheckError> {
    // An adopted table whose capture a DBA disabled is relayed no more: say so, but it is not
    // the relay's failure.
    for table in adopt::installed(client).await.map_err(|e| e.to_string())? {
        let state = if table.enabled {
            "captured into outbox.events"
        } else {
            "WARNING: capture trigger disabled, its rows are not relayed"
        };
        println!(
            "adopted table: {} ({}): {state}",
            table.table, table.framework
        );
    }
    // MassTransit's own delivery service beside the relay: `run` would refuse to start.
    let conflicts = adopt::conflicts(client, true)
        .await
        .map_err(|e| e.to_string())?;
    if !conflicts.is_empty() {
        return Err(adopt::refusal(&conflicts).into());
    }
    Ok(())
}
