//! The health dashboard: a tenant's fleet summary (`GET /v1/fleet/summary`)
//! and the service-wide views of the `sre` role (`/v1/ops/...`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::rollout::{RolloutCounts, RolloutState};
use crate::{Cluster, Event, StatusHistoryEntry};

/// Clusters per health (every key present, zero included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthCounts {
    #[serde(rename = "Healthy")]
    pub healthy: u64,
    #[serde(rename = "Progressing")]
    pub progressing: u64,
    #[serde(rename = "Degraded")]
    pub degraded: u64,
    #[serde(rename = "Unhealthy")]
    pub unhealthy: u64,
    #[serde(rename = "Unknown")]
    pub unknown: u64,
}

/// Clusters per connectivity (every key present, zero included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectivityCounts {
    #[serde(rename = "Connected")]
    pub connected: u64,
    #[serde(rename = "Stale")]
    pub stale: u64,
    #[serde(rename = "Disconnected")]
    pub disconnected: u64,
}

/// How many clusters want a version, and how many run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    #[schema(example = "1.28.2")]
    pub version: String,
    /// Clusters whose desired version it is.
    pub desired: u64,
    /// Clusters whose agent reports a component on it.
    pub observed: u64,
}

/// Clusters on a version at or near its end of support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndOfSupportCount {
    pub version: String,
    pub end_of_support: NaiveDate,
    /// Whether the date has passed.
    pub past: bool,
    pub clusters: u64,
}

/// A cluster whose agent has not caught up with its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaggingCluster {
    /// Set in the service-wide view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub name: String,
    pub generation: i64,
    pub observed_generation: Option<i64>,
    /// When the generation it has not reached was set.
    pub since: DateTime<Utc>,
}

/// A message and how many failing clusters report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageCount {
    pub message: String,
    pub count: u64,
}

/// A component that fails in some clusters, with what they say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingComponent {
    #[schema(example = "ztunnel")]
    pub component: String,
    pub clusters: u64,
    /// The most frequent messages, most frequent first (at most 5).
    pub top_messages: Vec<MessageCount>,
}

/// A rollout as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// Set in the service-wide view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub id: Uuid,
    pub name: String,
    pub target_version: String,
    pub state: RolloutState,
    pub counts: RolloutCounts,
}

/// `GET /v1/fleet/summary`: the tenant's fleet at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub clusters: u64,
    pub by_health: HealthCounts,
    pub by_connectivity: ConnectivityCounts,
    /// Every version desired or observed, newest first.
    pub versions: Vec<VersionCount>,
    /// Desired versions past or within the warning period of their end of support.
    pub end_of_support: Vec<EndOfSupportCount>,
    /// The longest-lagging clusters (at most 20), longest first.
    pub lagging: Vec<LaggingCluster>,
    /// How many clusters lag in all.
    pub lagging_total: u64,
    /// Components failing in `Degraded`/`Unhealthy` clusters, most clusters first.
    pub failing_components: Vec<FailingComponent>,
    /// Active rollouts, then the most recent finished ones (at most 10 in all).
    pub rollouts: Vec<RolloutSummary>,
    /// When the figures were computed.
    pub generated_at: DateTime<Utc>,
}

/// One tenant's share of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub tenant: String,
    pub clusters: u64,
    pub by_health: HealthCounts,
    pub by_connectivity: ConnectivityCounts,
}

/// `GET /v1/ops/fleet/summary`: the whole service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsFleetSummary {
    #[serde(flatten)]
    pub fleet: FleetSummary,
    /// Every tenant with clusters, most clusters first.
    pub tenants: Vec<TenantSummary>,
}

/// A cluster in the service-wide triage list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsCluster {
    pub tenant: String,
    #[serde(flatten)]
    pub cluster: Cluster,
}

/// A page of the triage list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsClusterList {
    pub items: Vec<OpsCluster>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/ops/clusters/{tenant}/{name}`: a cluster with its recent past.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsClusterDetail {
    pub tenant: String,
    pub cluster: Cluster,
    /// The newest status changes, newest first.
    pub history: Vec<StatusHistoryEntry>,
    /// The newest events, newest first.
    pub events: Vec<Event>,
}

/// p50/p90/p99 of a set of durations, in seconds (`null` when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    /// How many samples.
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Agents in the field per agent version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentVersionCount {
    /// `unknown` for agents that do not report one.
    pub version: String,
    pub clusters: u64,
}

/// Requests to one route, from this api process's own counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRate {
    pub method: String,
    /// The route template, e.g. `/v1/clusters/{name}`.
    pub route: String,
    /// Requests in the window.
    pub requests: u64,
    /// Of which answered 4xx.
    pub client_errors: u64,
    /// Of which answered 5xx.
    pub server_errors: u64,
    pub requests_per_second: f64,
    /// 5xx / requests (0 when there were none).
    pub server_error_rate: f64,
}

/// `GET /v1/ops/sli`: the service level indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sli {
    /// The window of the convergence figures and of the request rates, in seconds.
    pub window_seconds: u64,
    /// Age of the last heartbeat over the connected clusters.
    pub heartbeat_age_seconds: Percentiles,
    /// From a generation being set to the agent reporting it `Healthy`, over
    /// the generations that converged within the window.
    pub convergence_seconds: Percentiles,
    pub agent_versions: Vec<AgentVersionCount>,
    /// Per route, busiest first (this api process; since it started when
    /// that is shorter than the window).
    pub requests: Vec<RouteRate>,
    pub generated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_summary_has_every_key() {
        let v = serde_json::to_value(FleetSummary::default()).unwrap();
        for key in [
            "clusters",
            "byHealth",
            "byConnectivity",
            "versions",
            "endOfSupport",
            "lagging",
            "failingComponents",
            "rollouts",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        for key in ["Healthy", "Progressing", "Degraded", "Unhealthy", "Unknown"] {
            assert_eq!(v["byHealth"][key], 0);
        }
        for key in ["Connected", "Stale", "Disconnected"] {
            assert_eq!(v["byConnectivity"][key], 0);
        }
    }
}
