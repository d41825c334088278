//! `outbox-relay migrate`: creates or upgrades the schema, says which group roles are missing, and
//! with `OUTBOX_ADOPT` installs the capture of the application's outbox table.

use crate::adopt::{self, Adoption, Framework};
use crate::db::DatabaseUrl;
use crate::outbox::migrate;

pub async fn migrate(database: &DatabaseUrl, adoption: Option<&Adoption>) -> Result<(), String> {
    let client = super::connect(database).await?;
    let applied = migrate::migrate(&client).await.map_err(|e| e.to_string())?;
    let version = migrate::current_version(&client)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "outbox schema at version {} ({} migration(s) applied now)",
        version.unwrap_or(0),
        applied.len()
    );
    let missing = migrate::missing_roles(&client)
        .await
        .map_err(|e| e.to_string())?;
    if !missing.is_empty() {
        let creates: Vec<String> = missing
            .iter()
            .map(|role| format!("CREATE ROLE {role} NOLOGIN;"))
            .collect();
        eprintln!(
            "outbox-relay: warning: the group roles {} do not exist (creating them needs CREATEROLE), so nothing was granted to them; as a role with CREATEROLE run `{}`, then apply sql/migrations/0003_roles.sql again with `psql -v ON_ERROR_STOP=1 -f`",
            missing.join(", "),
            creates.join(" ")
        );
    }
    if let Some(adoption) = adoption {
        let done = adopt::install(&client, adoption)
            .await
            .map_err(|e| e.to_string())?;
        println!("adoption ({}): {done}", adoption.framework);
        if adoption.framework == Framework::MassTransit {
            println!(
                "adoption (masstransit): each message's topic is its destination's exchange; on RabbitMQ set OUTBOX_AMQP_EXCHANGE={{topic}}, and disable MassTransit's delivery service (docs/adoption.md)"
            );
        }
    }
    Ok(())
}
