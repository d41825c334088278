//! `outbox-relay run`: the composition root. Starts the HTTP endpoints, refuses a transaction
//! pool, spawns the background jobs and runs the relay loop until `shutdown`. Tests and benchmarks
//! can call it as the binary does.

use tokio::task::JoinHandle;

use crate::adopt::{self, Conflict};
use crate::config::{ConfigError, RelayConfig};
use crate::health::Health;
use crate::jobs::{adoption_guard, purge, sampler};
use crate::outbox::pooler;
use crate::ownership::Ownership;
use crate::settings::table::{ADOPT, HTTP_ADDR};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::{http, otel, relay, telemetry};

/// Why `run` stopped before it could relay.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot work (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Something outside is not as needed (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Relays until `shutdown`, then finishes the batch in flight.
pub async fn run(config: RelayConfig, shutdown: Shutdown) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| {
            ConfigError::new(
                HTTP_ADDR.env,
                format!("cannot listen on {}: {e}", config.http_addr),
            )
        })?;
    let sink_names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
    let metrics = telemetry::install(&sink_names).map_err(RunError::Failed)?;
    let traces = otel::start().map_err(|otel::OtelError::Setting { setting, problem }| {
        ConfigError::new(setting, problem)
    })?;
    let pool = config.database.pool(2).map_err(RunError::Failed)?;
    let health = Health::new(config.stall_timeout);
    let ownership = Ownership::default();
    health.set_leader(false);
    tokio::spawn(http::serve(
        listener,
        metrics,
        health.clone(),
        ownership.clone(),
        shutdown.clone(),
    ));
    // Before anything else uses PostgreSQL: behind a transaction pool the relay must not start.
    let pinned = pooler::refuse_pooled(&config.database, &config.retry, &shutdown)
        .await
        .map_err(ConfigError::from)?;
    if !pinned {
        return Ok(());
    }
    let (stop, relay_shutdown, guard) = guard_adoption(&pool, &shutdown).await?;
    tokio::spawn(sampler::sample(
        pool.clone(),
        health.clone(),
        ownership.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(purge::purge_delivered(
        pool,
        config.retention,
        ownership.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        sinks = sink_names.join(","),
        database = %config.database,
        http = %config.http_addr,
        "outbox-relay starting"
    );
    // On a worker, not on the caller's thread: `block_on` runs its future outside the worker pool,
    // so every query's reply, woken on a worker, had to wake that thread too. As a task, the relay
    // loop is woken on the worker that read the reply (measured at 1,000 events/s: 25% less CPU).
    let tracer = traces.as_ref().map(otel::Traces::send_tracer);
    let relayed = tokio::spawn(relay::run(
        config,
        health,
        ownership,
        relay_shutdown,
        tracer,
    ))
    .await
    .map_err(|e| RunError::Failed(format!("the relay loop failed: {e}")));
    stop.trigger();
    if let Some(traces) = traces {
        traces.stop().await;
    }
    if let Ok(Some(conflicts)) = guard.await {
        return Err(ConfigError::new(ADOPT.env, adopt::refusal(&conflicts)).into());
    }
    relayed
}

/// Refuses to start while MassTransit's own delivery service evidently runs on adopted tables
/// (two deliverers send every message twice, out of order), then watches for it: the relay stops
/// on `shutdown` or on what the guard finds (its trigger); the guard's task returns that.
async fn guard_adoption(
    pool: &deadpool_postgres::Pool,
    shutdown: &Shutdown,
) -> Result<(ShutdownTrigger, Shutdown, JoinHandle<Option<Vec<Conflict>>>), RunError> {
    refuse_a_second_deliverer(pool).await?;
    let (stop, relay_shutdown) = shutdown.child();
    let guard = tokio::spawn(adoption_guard::guard(
        pool.clone(),
        stop.clone(),
        relay_shutdown.clone(),
    ));
    Ok((stop, relay_shutdown, guard))
}

async fn refuse_a_second_deliverer(pool: &deadpool_postgres::Pool) -> Result<(), RunError> {
    let client = pool
        .get()
        .await
        .map_err(|e| RunError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
    let conflicts = adopt::conflicts(&**client, true)
        .await
        .map_err(|e| RunError::Failed(e.to_string()))?;
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(ConfigError::new(ADOPT.env, adopt::refusal(&conflicts)).into())
}
