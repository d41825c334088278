//! `/metrics` (Prometheus text), `/healthz` (alive, not stalled) and `/readyz` (connected to
//! PostgreSQL and every sink, and no broker blocks publishing). See `health`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Health,
    ownership: Ownership,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
    ownership: Ownership,
    shutdown: Shutdown,
) {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics,
            health,
            ownership,
        });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.run_upkeep();
    state.metrics.render()
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let health = &state.health;
    let (Some(idle), Some(timeout)) = (health.stalled(), health.stall_timeout()) else {
        return (StatusCode::OK, "ok\n".into());
    };
    let why = format!(
        "the active relay has made no progress for {} s (OUTBOX_STALL_TIMEOUT_SECS={}) although it is connected to PostgreSQL and the broker; restart it",
        idle.as_secs(),
        timeout.as_secs()
    );
    tracing::error!(idle_secs = idle.as_secs(), "stalled: {why}");
    (StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {why}\n"))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let health = &state.health;
    let role = if health.leader() { "active" } else { "standby" };
    let connected = |up: bool| if up { "connected" } else { "disconnected" };
    let mut body = format!("database: {}\n", connected(health.database()));
    for (name, sink) in health.sinks() {
        let line = match sink.blocked {
            Some(reason) => format!("blocked: the broker blocks publishing ({reason})"),
            None => connected(sink.connected).to_string(),
        };
        body.push_str(&format!("sink {name}: {line}\n"));
    }
    body.push_str(&format!(
        "role: {role}\nlanes: {}\n",
        state.ownership.lanes().len()
    ));
    if health.ready() {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}
