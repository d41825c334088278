//! Adopting the outbox table an application already has (`OUTBOX_ADOPT`): Debezium's outbox
//! table or MassTransit's EF Core outbox. `migrate` installs a capture trigger on the
//! application's table that copies each row into `outbox.events` in the application's
//! transaction, so the relay's core (claim, lanes, order, dead letters, metrics) is unchanged:
//! it never learns that a row was adopted. docs/adoption.md explains the design and its limits.
//!
//! - [`settings`]: `OUTBOX_ADOPT`, `OUTBOX_ADOPT_TABLE`, `OUTBOX_ADOPT_TOPIC_TEMPLATE`;
//! - [`install`]: the capture `migrate` installs (sql/adopt/), and what a database has installed;
//! - [`guard`]: the evidence that MassTransit's own delivery service still runs beside the relay.

mod guard;
mod install;
mod settings;

pub use self::guard::{Conflict, conflicts, refusal};
pub use self::install::{Installed, install, installed};
pub use self::settings::{Adoption, Framework};

/// Installing or reading the capture failed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// PostgreSQL refused: the message names the table, the setting or the grant that is missing.
    #[error("adopting {table} ({framework}): {message}")]
    Install {
        framework: Framework,
        table: String,
        message: String,
    },
    #[error("reading the adopted tables: {0}")]
    Read(String),
    /// The guard's evidence cannot be read (e.g. the relay's role lacks the grant migrate gives).
    #[error("reading the evidence of a second deliverer (outbox.masstransit_conflicts): {0}")]
    Guard(String),
}

/// A PostgreSQL error as a person reads it: message, then hint.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            // The SQL names itself for psql users; here the caller's message already does.
            let message = db.message().trim_start_matches("outbox-relay: ");
            match db.hint() {
                Some(hint) => format!("{message} ({hint})"),
                None => message.to_string(),
            }
        }
        None => e.to_string(),
    }
}
