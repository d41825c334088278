//! Background jobs the relay runs beside its loop, each until shutdown.
//!
//! - [`sampler`]: keeps the lag, backlog and dead-letter gauges fresh.
//! - [`purge`]: removes delivered events after the retention time.
//! - [`adoption_guard`]: stops the relay when MassTransit's own delivery service runs beside it.

pub mod adoption_guard;
pub mod purge;
pub mod sampler;
