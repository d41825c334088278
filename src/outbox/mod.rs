//! The outbox table, as the relay sees it.
//!
//! - [`migrate`]: the embedded migrations from `sql/migrations`.
//! - [`session`]: the relay's own connection: leader lock, LISTEN, claim and settle.
//! - [`event`]: an event read from a row, validated.
//! - [`admin`]: status and dead-letter queries for the command line and the metrics sampler.
//! - [`pooler`]: refuses a transaction-pooling proxy (PgBouncer), which breaks the relay's session.

pub mod admin;
#[cfg(test)]
pub(crate) mod arbitrary;
pub mod event;
pub mod migrate;
pub mod pooler;
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
    #[error("{context}: {}", crate::db::describe(source))]
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
