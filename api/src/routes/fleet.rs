//! `/v1/fleet/summary`: a tenant's fleet at a glance; and the cluster-list
//! filters shared by `/v1/clusters` and the SRE's `/v1/ops/clusters`.

use axum::extract::State;
use meshfleet_core::domain::selector;
use meshfleet_core::ops::fleet as fleet_ops;
use meshfleet_core::store::fleet::{Filter, Scope};
use meshfleet_model::{FleetSummary, Problem};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const HEALTHS: [&str; 5] = ["Healthy", "Progressing", "Degraded", "Unhealthy", "Unknown"];
pub const CONNECTIVITIES: [&str; 3] = ["Connected", "Stale", "Disconnected"];

/// A comma-separated list of names from `allowed` (`None`/empty: any).
pub fn one_of(param: &str, value: Option<&str>, allowed: &[&str]) -> ApiResult<Vec<String>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(vec![]);
    };
    value
        .split(',')
        .map(|v| {
            let v = v.trim_matches(' ');
            allowed
                .iter()
                .find(|a| **a == v)
                .map(|a| (*a).to_string())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`{param}`: `{v}` is not one of {}",
                        allowed.join(", ")
                    ))
                })
        })
        .collect()
}

/// The filter of a cluster list from its query parameters.
pub fn filter(
    label_selector: Option<&str>,
    health: Option<&str>,
    connectivity: Option<&str>,
    version: Option<&str>,
) -> ApiResult<Filter> {
    Ok(Filter {
        selector: selector::parse(label_selector.unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?,
        health: one_of("health", health, &HEALTHS)?,
        connectivity: one_of("connectivity", connectivity, &CONNECTIVITIES)?,
        version: version.filter(|v| !v.is_empty()).map(str::to_string),
        quiet_since: None,
    })
}

/// The tenant's fleet at a glance.
///
/// Clusters by health and connectivity (derived as `GET` of each cluster
/// derives them), desired and observed versions, versions at or near their
/// end of support, the clusters whose agents lag behind their desired state,
/// the components failing and what they say, and recent rollouts. Every key
/// is present, zero included.
#[utoipa::path(
    get, path = "/v1/fleet/summary", tag = "fleet",
    responses(
        (status = 200, description = "The summary", body = FleetSummary),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn fleet_summary(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<FleetSummary>> {
    principal.require_read()?;
    let (summary, _) = fleet_ops::summary(
        &state.pool,
        Scope::Tenant(&principal.tenant),
        state.clock.now(),
        &state.config.settings,
    )
    .await?;
    Ok(axum::Json(summary))
}
