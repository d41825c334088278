//! Background jobs the relay runs beside its loop, each until shutdown.
//!
//! - [`sampler`]: keeps the lag, backlog and dead-letter gauges fresh.
//! - [`purge`]: removes delivered events after the retention time.

pub mod purge;
pub mod sampler;
