//! `/healthz` (the process is alive), `/readyz` (it holds a credential and
//! has talked to the service) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::agent::AgentState;

#[derive(Clone)]
struct HealthState {
    agent: Arc<AgentState>,
    metrics: Option<PrometheusHandle>,
}

/// The health router.
pub fn router(agent: Arc<AgentState>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(HealthState { agent, metrics })
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    if s.agent.is_ready() {
        (StatusCode::OK, "ready")
    } else if s.agent.has_credential() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not yet talked to the meshfleet service",
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no credential yet")
    }
}

async fn render_metrics(State(s): State<HealthState>) -> impl IntoResponse {
    let body = s
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Serves the health router on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    agent: Arc<AgentState>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "health endpoints listening");
    axum::serve(listener, router(agent, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}
