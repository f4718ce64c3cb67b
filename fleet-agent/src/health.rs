//! `/healthz` (the process is alive), `/readyz` (it holds a credential and
//! has talked to the service) and `/metrics` (Prometheus text).

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
    if let Some(why) = s.agent.stopped() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
    } else if s.agent.is_ready() {
        (StatusCode::OK, "ready".to_string())
    } else if s.agent.has_credential() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not yet talked to the meshfleet service".to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no credential yet".to_string(),
        )
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

/// Serves the health router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: Arc<AgentState>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "health endpoints listening");
    axum::serve(listener, router(agent, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Agent, AgentConfig, SimCluster};

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("meshfleet_agent_reconciles_total", "result" => "converged")
                .increment(3);
        });
        let agent = Agent::new(AgentConfig::default(), SimCluster::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, agent.state(), Some(handle), async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        let get = |path: &'static str| {
            let http = http.clone();
            let base = base.clone();
            async move { http.get(format!("{base}{path}")).send().await.unwrap() }
        };
        assert_eq!(get("/healthz").await.status(), 200);
        let ready = get("/readyz").await;
        assert_eq!(ready.status(), 503);
        assert_eq!(ready.text().await.unwrap(), "no credential yet");
        let metrics = get("/metrics").await.text().await.unwrap();
        assert!(
            metrics.contains("meshfleet_agent_reconciles_total{result=\"converged\"} 3"),
            "{metrics}"
        );
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
