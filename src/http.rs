//! `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (connected to PostgreSQL and the
//! broker).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::shutdown::Shutdown;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Health,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
    shutdown: Shutdown,
) {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
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

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let health = &state.health;
    let role = if health.leader() { "active" } else { "standby" };
    let line = format!(
        "database: {}\nbroker: {}\nrole: {role}\n",
        if health.database() {
            "connected"
        } else {
            "disconnected"
        },
        if health.broker() {
            "connected"
        } else {
            "disconnected"
        },
    );
    if health.ready() {
        (StatusCode::OK, line)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, line)
    }
}
