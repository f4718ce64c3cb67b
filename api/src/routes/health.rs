//! Probes and metrics for the SREs.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshfleet_core::store::gauges;
use meshfleet_model::Problem;

use crate::error::problem_response;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the database to answer.
const PING_LIMIT: Duration = Duration::from_secs(2);

/// Readiness: the database, the LISTEN connection and (in `up`) the reconciler are up.
///
/// The LISTEN connection wakes long-polling agents; more conditions are
/// registered by the binary. Not ready: 503 naming what is down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = String, content_type = "text/plain"),
              (status = 503, description = "Not ready: the detail names what is down (the database, the LISTEN connection, the reconciler)", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u32, description = "Seconds to wait before asking again")))))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut down = Vec::new();
    match tokio::time::timeout(PING_LIMIT, meshfleet_core::store::ping(&state.pool)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            down.push("the database does not answer".to_string());
        }
        Err(_) => down.push(format!(
            "the database did not answer within {}s",
            PING_LIMIT.as_secs()
        )),
    }
    if !state.hub.listening() {
        down.push(
            "the LISTEN connection is down (changes do not wake waiting agents until it is back)"
                .to_string(),
        );
    }
    down.extend(state.readiness.iter().filter_map(|check| check()));
    if down.is_empty() {
        return "ready\n".into_response();
    }
    problem_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}", down.join("; ")),
        None,
    )
}

/// Label values of the fleet gauges (closed sets; anything else is not exported).
const HEALTH: [&str; 5] = ["Healthy", "Progressing", "Degraded", "Unhealthy", "Unknown"];
const CONNECTIVITY: [&str; 3] = ["Connected", "Stale", "Disconnected"];
const ROLLOUT_STATES: [&str; 6] = [
    "Running",
    "WaitingForApproval",
    "Paused",
    "Succeeded",
    "RolledBack",
    "Cancelled",
];
const ROLLOUT_CLUSTER_STATES: [&str; 8] = [
    "Pending",
    "Upgrading",
    "Soaking",
    "Succeeded",
    "Failed",
    "RollingBack",
    "RolledBack",
    "Skipped",
];
/// The fleet gauges are read from the database at most this often.
const FLEET_GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets the fleet gauges from the database (at most every
/// [`FLEET_GAUGES_EVERY`]; a failed read keeps the last values).
async fn refresh_fleet_gauges(state: &AppState) {
    let mut last = state.fleet_gauges_read.lock().await;
    if last.is_some_and(|at| at.elapsed() < FLEET_GAUGES_EVERY) {
        return;
    }
    let figures =
        match gauges::fleet_gauges(&state.pool, state.clock.now(), &state.config.settings).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "reading the fleet gauges");
                return;
            }
        };
    *last = Some(std::time::Instant::now());
    // Summed as integers: a float sum of nothing is -0, which Prometheus shows.
    let count = |rows: &[(String, i64)], value: &str| {
        rows.iter()
            .filter(|(v, _)| v == value)
            .map(|(_, n)| *n)
            .sum::<i64>() as f64
    };
    for health in HEALTH {
        for connectivity in CONNECTIVITY {
            let n = figures
                .clusters
                .iter()
                .filter(|(h, c, _)| h == health && c == connectivity)
                .map(|(_, _, n)| *n)
                .sum::<i64>() as f64;
            metrics::gauge!("meshfleet_fleet_clusters", "health" => health, "connectivity" => connectivity)
                .set(n);
        }
    }
    for s in ROLLOUT_STATES {
        metrics::gauge!("meshfleet_rollouts", "state" => s).set(count(&figures.rollouts, s));
    }
    for s in ROLLOUT_CLUSTER_STATES {
        metrics::gauge!("meshfleet_rollout_clusters", "state" => s)
            .set(count(&figures.rollout_clusters, s));
    }
    metrics::gauge!("meshfleet_reconcile_due_clusters").set(figures.reconcile_due as f64);
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = &state.pool;
    metrics::gauge!("meshfleet_db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("meshfleet_db_pool_idle_connections").set(pool.num_idle() as f64);
    metrics::gauge!("meshfleet_db_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
    metrics::gauge!("meshfleet_long_poll_waiting_clusters")
        .set(state.hub.waiting_clusters() as f64);
    refresh_fleet_gauges(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
