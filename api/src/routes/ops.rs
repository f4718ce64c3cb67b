//! `/v1/ops/...`: the service-wide health dashboard of the `sre` role (in
//! the operator's tenant). Read-only: nothing here changes a tenant's
//! desired state.

use std::time::Duration;

use axum::extract::{Path, State};
use meshfleet_core::domain::health;
use meshfleet_core::ops::fleet as fleet_ops;
use meshfleet_core::store::clusters as cluster_store;
use meshfleet_core::store::events::list_events;
use meshfleet_core::store::fleet::{self as store, After, Judged, Scope, Sort};
use meshfleet_core::store::status::list_status_history;
use meshfleet_model::{
    OpsCluster, OpsClusterDetail, OpsClusterList, OpsFleetSummary, Problem, Sli, StatusHistoryEntry,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::clusters::to_cluster;
use super::fleet::filter;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{CursorField, CursorShape, CursorValue, Query, page_limit, paginate};
use crate::route_stats::MINUTES;
use crate::state::AppState;

/// The whole service at a glance.
///
/// The figures of `GET /v1/fleet/summary` over every tenant (lagging clusters
/// and rollouts carry their `tenant`), and each tenant's clusters by health
/// and connectivity.
#[utoipa::path(
    get, path = "/v1/ops/fleet/summary", tag = "ops",
    responses(
        (status = 200, description = "The summary", body = OpsFleetSummary),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role (in the operator's tenant)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ops_summary(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<OpsFleetSummary>> {
    principal.require_sre()?;
    let (fleet, tenants) = fleet_ops::summary(
        &state.pool,
        Scope::Service,
        state.clock.now(),
        &state.config.settings,
    )
    .await?;
    Ok(axum::Json(OpsFleetSummary { fleet, tenants }))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriageSort {
    /// By tenant, then name.
    #[default]
    Name,
    /// Worst first: Unhealthy, Degraded, Unknown, Progressing, Healthy.
    Health,
    /// Longest without a heartbeat first (never heard from before all).
    HeartbeatAge,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TriageParams {
    /// Only this tenant's clusters.
    pub tenant: Option<String>,
    /// Label selector, as `/v1/clusters`.
    pub label_selector: Option<String>,
    /// Comma-separated healths, e.g. `Degraded,Unhealthy`.
    pub health: Option<String>,
    /// Comma-separated connectivities, e.g. `Stale,Disconnected`.
    pub connectivity: Option<String>,
    /// Desired version.
    pub version: Option<String>,
    /// Only clusters without a heartbeat for this long (or never), e.g. `10m`.
    pub stale_for: Option<String>,
    /// Order; `health` and `heartbeatAge` put the worst first.
    #[param(inline)]
    pub sort: Option<TriageSort>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page (of the same `sort`).
    pub cursor: Option<String>,
}

/// `staleFor`: a whole number (no leading zero, at most 6 digits) of `s`, `m`, `h` or `d`.
pub const STALE_FOR_PATTERN: &str = "^(0|[1-9][0-9]{0,5})(s|m|h|d)$";

/// `window`: as `staleFor`, from 1m to 7d.
pub const WINDOW_PATTERN: &str = "^(([6-9][0-9]|[1-9][0-9]{2,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)s|([1-9][0-9]{0,3}|100[0-7][0-9]|10080)m|([1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h|[1-7]d)$";

/// Reads a duration of [`STALE_FOR_PATTERN`]'s form.
fn duration(param: &str, value: &str) -> ApiResult<Duration> {
    let refused = || {
        ApiError::BadRequest(format!(
            "`{param}`: `{value}` is not a duration like `90s`, `10m`, `1h` or `7d`"
        ))
    };
    let unit = match value.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(refused()),
    };
    let digits = &value[..value.len() - 1];
    if digits.is_empty()
        || digits.len() > 6
        || (digits.len() > 1 && digits.starts_with('0'))
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(refused());
    }
    let n: u64 = digits.parse().map_err(|_| refused())?;
    Ok(Duration::from_secs(n * unit))
}

/// After the cluster with this sort key (0 when sorted by name), tenant and name.
pub const TRIAGE_CURSOR: CursorShape = CursorShape {
    kind: "o2",
    fields: &[CursorField::Int, CursorField::Text, CursorField::Text],
};

/// The SRE's triage list: clusters of every tenant, filtered.
///
/// Health and connectivity are derived as for `GET /v1/clusters/{name}`.
/// `sort=health` or `sort=heartbeatAge` puts the clusters needing attention
/// first.
#[utoipa::path(
    get, path = "/v1/ops/clusters", tag = "ops",
    params(TriageParams),
    responses(
        (status = 200, description = "A page of clusters", body = OpsClusterList),
        (status = 400, description = "Bad filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role (in the operator's tenant)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ops_clusters(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<TriageParams>,
) -> ApiResult<axum::Json<OpsClusterList>> {
    principal.require_sre()?;
    let limit = page_limit(params.limit)?;
    let now = state.clock.now();
    let mut filter = filter(
        params.label_selector.as_deref(),
        params.health.as_deref(),
        params.connectivity.as_deref(),
        params.version.as_deref(),
    )?;
    if let Some(s) = params.stale_for.as_deref() {
        let d = chrono::Duration::from_std(duration("staleFor", s)?)
            .map_err(|_| ApiError::BadRequest("`staleFor` is too long".into()))?;
        filter.quiet_since = Some(now.checked_sub_signed(d).unwrap_or(now));
    }
    let sort = match params.sort.unwrap_or_default() {
        TriageSort::Name => Sort::Name,
        TriageSort::Health => Sort::Health,
        TriageSort::HeartbeatAge => Sort::HeartbeatAge,
    };
    let after = match params
        .cursor
        .as_deref()
        .map(|c| TRIAGE_CURSOR.decode(c))
        .transpose()?
    {
        None => None,
        Some(values) => match values.as_slice() {
            [
                CursorValue::Int(key),
                CursorValue::Text(tenant),
                CursorValue::Text(name),
            ] => Some(After {
                key: *key,
                tenant: tenant.clone(),
                name: name.clone(),
            }),
            _ => return Err(ApiError::Internal("triage cursor shape".into())),
        },
    };
    let scope = match params.tenant.as_deref() {
        Some(t) => Scope::Tenant(t),
        None => Scope::Service,
    };
    let judged = Judged::at(now, &state.config.settings);
    let mut rows = store::list(
        &state.pool,
        scope,
        &judged,
        &filter,
        sort,
        after.as_ref(),
        limit + 1,
    )
    .await?;
    let next_cursor = paginate(&mut rows, limit, |r| {
        TRIAGE_CURSOR.encode(&[
            CursorValue::Int(r.sort_key),
            CursorValue::Text(r.tenant_id.clone()),
            CursorValue::Text(r.row.name.clone()),
        ])
    });
    let items = rows
        .into_iter()
        .map(|r| OpsCluster {
            tenant: r.tenant_id,
            cluster: to_cluster(r.row, now, &state.config.settings),
        })
        .collect();
    Ok(axum::Json(OpsClusterList { items, next_cursor }))
}

/// One cluster of any tenant with its recent past.
///
/// The cluster as its tenant sees it, its newest 20 status changes and its
/// newest 20 events.
#[utoipa::path(
    get, path = "/v1/ops/clusters/{tenant}/{name}", tag = "ops",
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("name" = String, Path, description = "Cluster name"),
    ),
    responses(
        (status = 200, description = "The cluster", body = OpsClusterDetail),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role (in the operator's tenant)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ops_cluster(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<OpsClusterDetail>> {
    principal.require_sre()?;
    let not_found =
        || ApiError::NotFound(format!("tenant `{tenant}` has no cluster named `{name}`"));
    let row = cluster_store::get_cluster(&state.pool, &tenant, &name)
        .await?
        .ok_or_else(not_found)?;
    let history = list_status_history(&state.pool, &tenant, row.id, None, 20)
        .await?
        .into_iter()
        .map(|r| StatusHistoryEntry {
            id: r.id,
            at: r.at,
            health: health::parse_health(&r.health),
            observed_generation: r.observed_generation,
            components: r.report.0.components,
            conditions: r.report.0.conditions,
        })
        .collect();
    let events = list_events(&state.pool, &tenant, Some(&name), None, 20).await?;
    let cluster = to_cluster(row, state.clock.now(), &state.config.settings);
    Ok(axum::Json(OpsClusterDetail {
        tenant,
        cluster,
        history,
        events,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SliParams {
    /// The window of the convergence figures and request rates, 1m to 7d
    /// (default `1h`; request rates look back at most 1h).
    pub window: Option<String>,
}

/// The service level indicators.
///
/// Heartbeat age (p50/p90/p99) over the connected agents; desired → observed
/// convergence time (p50/p90/p99) over the generations that converged within
/// `window`; agent versions in the field; and this api process's request and
/// error rates per route.
#[utoipa::path(
    get, path = "/v1/ops/sli", tag = "ops",
    params(SliParams),
    responses(
        (status = 200, description = "The SLIs", body = Sli),
        (status = 400, description = "Bad window", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role (in the operator's tenant)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn sli(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SliParams>,
) -> ApiResult<axum::Json<Sli>> {
    principal.require_sre()?;
    let window = match params.window.as_deref() {
        None => Duration::from_secs(3600),
        Some(w) => duration("window", w)?,
    };
    if !(60..=7 * 24 * 3600).contains(&window.as_secs()) {
        return Err(ApiError::BadRequest(
            "`window` must be between 1m and 7d".into(),
        ));
    }
    let now = state.clock.now();
    let (heartbeat, convergence, agents) =
        fleet_ops::fleet_slis(&state.pool, now, window, &state.config.settings).await?;
    let minutes = (window.as_secs() / 60).min(MINUTES as u64);
    Ok(axum::Json(Sli {
        window_seconds: window.as_secs(),
        heartbeat_age_seconds: heartbeat,
        convergence_seconds: convergence,
        agent_versions: agents,
        requests: state.route_stats.rates(minutes),
        generated_at: now,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted_window(value: &str) -> bool {
        duration("window", value).is_ok_and(|w| (60..=7 * 24 * 3600).contains(&w.as_secs()))
    }

    #[test]
    fn the_documented_duration_patterns_accept_exactly_what_the_server_reads() {
        let stale = regex::Regex::new(STALE_FOR_PATTERN).unwrap();
        let window = regex::Regex::new(WINDOW_PATTERN).unwrap();
        let numbers = (0..=11_000)
            .chain(599_990..=605_000)
            .map(|n| n.to_string())
            .chain(["00", "01", "0000001", "1234567", "", "-1", "1.5"].map(String::from));
        for n in numbers {
            for unit in ["s", "m", "h", "d", "w", "", "S"] {
                let v = format!("{n}{unit}");
                assert_eq!(
                    stale.is_match(&v),
                    duration("staleFor", &v).is_ok(),
                    "staleFor {v}"
                );
                assert_eq!(window.is_match(&v), accepted_window(&v), "window {v}");
            }
        }
    }
}
