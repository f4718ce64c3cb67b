//! Wire types of the meshfleet API, shared by the API server, the fleet agent
//! and clients, so that none of them can disagree about a field.
//!
//! Plain data: serde + OpenAPI schemas, no I/O. Validation that needs the
//! release catalog or the stored cluster lives in the api crate.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub mod agent;
pub mod bundle;
pub mod fleet;
pub mod patterns;
pub mod rollout;

pub use agent::*;
pub use bundle::{
    BundleDocument, BundleImport, BundleImported, BundleOrigin, BundleRef, sorted_keys,
};
pub use fleet::*;
pub use rollout::*;

/// Labels on a cluster, used by label selectors (`env=prod,tier!=db`).
pub type Labels = BTreeMap<String, String>;

/// Body of `PUT /v1/clusters/{name}`: the whole desired state of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInput {
    /// Optional; when present it must equal the name in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels (Kubernetes label syntax) used by selectors and rollouts.
    #[serde(default)]
    pub labels: Labels,
    /// The desired mesh state.
    pub mesh: MeshSpec,
}

/// A registered cluster as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// DNS label, unique per tenant.
    pub name: String,
    pub id: Uuid,
    pub labels: Labels,
    pub mesh: MeshSpec,
    /// Bumped on every change of `mesh`.
    pub generation: i64,
    /// The concrete Istio version the desired state resolves to today
    /// (the pinned version, or the head of the channel).
    pub desired_version: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// While the cluster is being deleted: the operation to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_operation: Option<Uuid>,
    /// As reported by the cluster's agent; `Unknown` until one reports.
    pub status: ClusterStatus,
}

/// One page of clusters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterList {
    pub items: Vec<Cluster>,
    /// Opaque; pass as `cursor` to get the next page. `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The desired mesh state of a cluster (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default)]
    pub mode: MeshMode,
    pub upgrade: UpgradePolicy,
    /// Weekly UTC slots in which automatic upgrades may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Namespaces that get `istio.io/dataplane-mode=ambient`.
    #[serde(default)]
    pub enrolled_namespaces: Vec<String>,
    /// L7 waypoint proxies (Gateway API `Gateway`s of class `istio-waypoint`).
    #[serde(default)]
    pub waypoints: Vec<Waypoint>,
    #[serde(default)]
    pub components: Components,
    /// Allow-listed subset of Istio's `MeshConfig`.
    #[serde(default)]
    pub mesh_config: MeshConfig,
    /// What `mode: disabled` (and so a cluster's deletion) removes beyond
    /// the agent's own objects.
    #[serde(default)]
    pub uninstall: Uninstall,
}

/// Uninstall options (`mesh.uninstall`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Uninstall {
    /// With `mode: disabled`, also delete the CRDs the agent installed —
    /// and with them every custom resource of their kinds in the cluster.
    /// Default `false`: CRDs and the customer's resources stay. The agent
    /// refuses the purge (keeps the CRDs, says which and why in the `crds`
    /// component's `CrdsKept` condition) while the cluster holds custom
    /// resources of those kinds that it did not create, unless `force`.
    #[serde(default)]
    pub purge_crds: bool,
    /// With `purgeCrds`, purge even while the cluster holds custom resources
    /// of those kinds (the customer's AuthorizationPolicies, other
    /// controllers' Gateways): they are deleted with their CRDs. Has no
    /// effect without `purgeCrds`.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshMode {
    #[default]
    Ambient,
    Disabled,
}

/// Version policy: `manual` with a pinned `version`, or `automatic` with a `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradePolicy {
    pub mode: UpgradeMode,
    /// Required with `mode: manual`, forbidden with `automatic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "1.28.2")]
    pub version: Option<String>,
    /// Required with `mode: automatic`, forbidden with `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeMode {
    Manual,
    Automatic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Rapid,
    Regular,
    Stable,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Rapid, Channel::Regular, Channel::Stable];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Rapid => "rapid",
            Channel::Regular => "regular",
            Channel::Stable => "stable",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// At least one slot; slots may not overlap.
    pub slots: Vec<MaintenanceSlot>,
}

/// A weekly slot in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceSlot {
    pub day: Weekday,
    /// `HH:MM`, 24-hour, UTC.
    #[schema(example = "02:00")]
    pub start: String,
    /// 30 to 1440 minutes.
    #[schema(example = 240)]
    pub duration_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    #[default]
    Strict,
    Permissive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Waypoint {
    /// Must be one of `enrolledNamespaces`.
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub traffic_type: TrafficType,
    /// 1 to 10.
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrafficType {
    #[default]
    Service,
    Workload,
    All,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Components {
    #[serde(default)]
    pub istiod: IstiodSpec,
    #[serde(default)]
    pub ztunnel: ZtunnelSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstiodSpec {
    /// 1 to 10; default 2.
    #[serde(default = "two")]
    pub replicas: u32,
}

impl Default for IstiodSpec {
    fn default() -> Self {
        IstiodSpec { replicas: 2 }
    }
}

fn two() -> u32 {
    2
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZtunnelSpec {
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// Resource requests as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "200m")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "512Mi")]
    pub memory: Option<String>,
}

/// The allow-listed part of Istio's `MeshConfig`; any other key is rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// `""` (off) or `/dev/stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AccessLogEncoding {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum OutboundMode {
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}

/// Overall health derived from the components an agent reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Health {
    Healthy,
    Progressing,
    Degraded,
    Unhealthy,
    #[default]
    Unknown,
}

/// Whether the cluster's agent is heard from, by heartbeat age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Connectivity {
    Connected,
    Stale,
    #[default]
    Disconnected,
}

/// What the cluster's agent reported; `health: Unknown` until it reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub health: Health,
    pub connectivity: Connectivity,
    pub observed_generation: Option<i64>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub components: Vec<ComponentStatus>,
    /// Facts about the cluster as last reported.
    pub facts: ClusterFacts,
    /// Cluster-level conditions: those the agent reported (e.g. `Drifted`)
    /// and the service's own (`Progressing=False` with
    /// `ProgressDeadlineExceeded`, `EndOfSupport`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// An automatic upgrade the service has decided on but not started yet.
    #[serde(default)]
    pub pending_upgrade: Option<PendingUpgrade>,
}

/// An upgrade that waits: for the maintenance window (`notBefore` is when it
/// opens) or for something else (`notBefore` is `null`, `reason` says what).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpgrade {
    #[schema(example = "1.28.2")]
    pub version: String,
    #[schema(example = "waiting for the maintenance window")]
    pub reason: String,
    pub not_before: Option<DateTime<Utc>>,
}

/// Facts an agent reports about its cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "v1.31.4")]
    pub kubernetes_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// e.g. `gke`, `eks`, `aks`, `kind`, `simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One component as the agent sees it in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `crds`, `istiod`, `istio-cni`, `ztunnel`, `waypoints`, `namespaces`, `policies`.
    pub name: String,
    pub desired_version: Option<String>,
    pub observed_version: Option<String>,
    pub ready: bool,
    pub desired_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub message: Option<String>,
}

/// A condition in the Kubernetes shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// RFC 3339 (`T` between date and time).
    #[serde(default, deserialize_with = "rfc3339")]
    pub last_transition_time: Option<DateTime<Utc>>,
}

/// An optional RFC 3339 date-time, strictly (chrono's `FromStr` would also
/// take a space for the `T`, which the OpenAPI `date-time` format does not).
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    use serde::de::Error;
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .filter(|_| matches!(s.as_bytes().get(10), Some(b'T' | b't')))
        .map(|t| Some(t.with_timezone(&Utc)))
        .ok_or_else(|| D::Error::custom(format!("`{s}` is not an RFC 3339 date-time")))
}

/// One Istio release in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    #[schema(example = "1.28.2")]
    pub version: String,
    /// Channels this version is on.
    pub channels: Vec<Channel>,
    pub released_at: NaiveDate,
    pub end_of_support: Option<NaiveDate>,
    /// A retired version cannot be newly selected.
    pub retired: bool,
    pub images: ComponentImages,
    /// The release data agents install for this version; a version without
    /// one cannot be selected until an SRE imports it.
    pub bundle: Option<BundleRef>,
}

/// Body of `PUT /v1/ops/releases/{version}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseInput {
    #[serde(default)]
    pub channels: Vec<Channel>,
    pub released_at: NaiveDate,
    #[serde(default)]
    pub end_of_support: Option<NaiveDate>,
    #[serde(default)]
    pub retired: bool,
    /// Defaults to the upstream images for the version.
    #[serde(default)]
    pub images: Option<ComponentImages>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentImages {
    pub istiod: String,
    pub cni: String,
    pub ztunnel: String,
    pub proxy: String,
}

impl ComponentImages {
    /// The upstream images of an Istio version.
    pub fn upstream(version: &str) -> Self {
        ComponentImages {
            istiod: format!("docker.io/istio/pilot:{version}"),
            cni: format!("docker.io/istio/install-cni:{version}"),
            ztunnel: format!("docker.io/istio/ztunnel:{version}"),
            proxy: format!("docker.io/istio/proxyv2:{version}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseList {
    pub items: Vec<Release>,
}

/// An entry of the append-only audit and activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: i64,
    pub cluster: Option<String>,
    pub cluster_id: Option<Uuid>,
    /// The `sub` of the caller, or the component that acted.
    pub actor: String,
    #[schema(example = "cluster.updated")]
    pub action: String,
    pub generation: Option<i64>,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub items: Vec<Event>,
    pub next_cursor: Option<String>,
}

/// Long-running work (a cluster deletion, a rollout), polled at
/// `GET /v1/operations/{id}` (the `Operation-Location` of a 202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: Uuid,
    /// `cluster.delete` or `rollout`.
    #[schema(example = "cluster.delete")]
    pub kind: String,
    pub status: OperationStatus,
    /// The resource it works on, e.g. `/v1/clusters/prod-eu-1`.
    #[schema(example = "/v1/clusters/prod-eu-1")]
    pub target: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why it failed (a problem object), when `status` is `Failed`.
    pub error: Option<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Running => "Running",
            OperationStatus::Succeeded => "Succeeded",
            OperationStatus::Failed => "Failed",
            OperationStatus::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            OperationStatus::Running,
            OperationStatus::Succeeded,
            OperationStatus::Failed,
            OperationStatus::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// RFC 9457 problem details; every error the API returns has this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request id (`x-request-id`) of the failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Field errors, for 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One invalid field: a JSON pointer into the request body and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "/mesh/upgrade/version")]
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_mesh_spec_gets_its_defaults() {
        let spec: MeshSpec =
            serde_json::from_str(r#"{"upgrade":{"mode":"manual","version":"1.28.2"}}"#).unwrap();
        assert_eq!(spec.mode, MeshMode::Ambient);
        assert_eq!(spec.mtls, MtlsMode::Strict);
        assert_eq!(spec.components.istiod.replicas, 2);
        assert!(spec.enrolled_namespaces.is_empty());
        let again: MeshSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<MeshSpec>(
            r#"{"upgrade":{"mode":"manual","version":"1.28.2"},"colour":"blue"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
