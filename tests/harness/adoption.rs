//! The frameworks' tables that the relay adopts, created and written as the frameworks do: one
//! copy for the adoption tests and the adoption bench.

/// Debezium's outbox table, as its outbox event router documents it.
pub const DEBEZIUM_TABLE: &str = include_str!("adopt/debezium.sql");
/// MassTransit's EF Core inbox and outbox tables, as its migration creates them.
pub const MASSTRANSIT_TABLES: &str = include_str!("adopt/masstransit.sql");
/// The content type of MassTransit's JSON envelope.
pub const MASSTRANSIT_ENVELOPE: &str = "application/vnd.masstransit+json";
/// A bus outbox's `OutboxState` row (see the file for its parameters).
pub const INSERT_OUTBOX_STATE: &str = include_str!("adopt/outbox_state.sql");
/// One `OutboxMessage` with every column EF Core writes (see the file for its parameters).
pub const INSERT_OUTBOX_MESSAGE: &str = include_str!("adopt/outbox_message.sql");
