//! The outbox table, as the relay sees it.
//!
//! - [`migrate`]: the embedded migrations from `sql/migrations`.
//! - [`session`]: the relay's own connection: leader lock, LISTEN, claim and settle.
//! - [`event`]: an event read from a row, validated.
//! - [`retention`]: removes delivered events after the retention time.
//! - [`admin`]: status and dead-letter queries for the command line and the metrics sampler.
//! - [`pooler`]: refuses a transaction-pooling proxy (PgBouncer), which breaks the relay's session.

pub mod admin;
pub mod event;
pub mod migrate;
pub mod pooler;
pub mod retention;
pub mod session;

/// Advisory lock key held by the active relay. Advisory locks are scoped to one database, so there
/// is one active relay per outbox.
pub const LEADER_LOCK_KEY: i64 = 7_340_010_000;

/// The number of lanes (`outbox.lane_count()` in migration 0004): fixed with the outbox.
pub const LANE_COUNT: i32 = 64;

/// Lane `n` is owned by the session holding the advisory lock `LANE_LOCK_BASE + n`.
pub const LANE_LOCK_BASE: i64 = 7_340_020_000;

/// Every relay in lanes mode holds this advisory lock shared, so the relays can count each other.
pub const MEMBER_LOCK_KEY: i64 = 7_340_020_100;

/// The channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "outbox_events";

/// The channel on which relays tell each other that one joined or gave up lanes.
pub const LANES_CHANNEL: &str = "outbox_relay_lanes";

/// A failed database call, with what the relay was doing and PostgreSQL's own explanation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {}", describe(source))]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the PostgreSQL session ended")]
    SessionEnded,
    /// A query's result is not shaped as this version expects: the schema drifted.
    #[error(
        "{0}; run `outbox-relay migrate` with this version, or check for manual schema changes"
    )]
    Schema(String),
}

impl StoreError {
    pub fn new(context: &'static str, source: tokio_postgres::Error) -> Self {
        Self::Query { context, source }
    }
}

/// PostgreSQL's message with its detail and hint, or the client error with its causes;
/// `tokio_postgres::Error`'s own `Display` says only "db error".
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        if *db.code() == tokio_postgres::error::SqlState::UNDEFINED_TABLE
            || *db.code() == tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
            || *db.code() == tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME
        {
            text.push_str("; the outbox schema is missing or outdated: run `outbox-relay migrate`");
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
