//! `outbox-relay check`: the configuration is valid, PostgreSQL answers and has the outbox schema,
//! and the broker accepts a connection.

use crate::config::RelayConfig;
use crate::health::Health;
use crate::outbox::migrate::{self, MIGRATIONS};
use crate::sink::Sink;

/// Prints one line per check; `Err` names the first thing that is wrong.
pub async fn check(config: &RelayConfig) -> Result<(), String> {
    println!("configuration: ok (sink {})", config.sink.name());
    let client = super::connect(&config.database).await?;
    println!("postgresql: connected to {}", config.database);
    let latest = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    match migrate::current_version(&client)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(version) if version >= latest => println!("outbox schema: version {version}"),
        Some(version) => {
            return Err(format!(
                "outbox schema is at version {version}, this relay needs {latest}: run `outbox-relay migrate`"
            ));
        }
        None => return Err("the outbox schema is missing: run `outbox-relay migrate`".into()),
    }
    let mut sink = Sink::new(&config.sink, config.publish_timeout, &Health::default());
    sink.connect().await.map_err(|e| e.to_string())?;
    println!("broker: connected ({})", config.sink.name());
    sink.close().await;
    Ok(())
}
