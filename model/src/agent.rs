//! The fleet agent's protocol: bootstrap, registration, the effective desired
//! state, and status reports. The agent and the API both use these types.
//!
//! Credentials travel as `Authorization: Bearer <token>`:
//! bootstrap tokens start with [`BOOTSTRAP_TOKEN_PREFIX`], agent credentials
//! with [`AGENT_CREDENTIAL_PREFIX`]; both are opaque to the agent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{BundleRef, MeshConfig, Resources, TrafficType};
use crate::{
    ClusterFacts, ComponentImages, ComponentStatus, Condition, Health, LogLevel, MeshMode, MtlsMode,
};

pub const BOOTSTRAP_TOKEN_PREFIX: &str = "mfbt";
pub const AGENT_CREDENTIAL_PREFIX: &str = "mfac";

/// Field manager of every server-side apply the agent makes.
pub const FIELD_MANAGER: &str = "meshfleet-agent";
/// Label on every object the agent owns (value: the cluster id).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "meshfleet-agent";
/// Label naming the component an owned object belongs to.
pub const COMPONENT_LABEL: &str = "meshfleet.dev/component";
/// Namespace of the agent and its Secrets.
pub const AGENT_NAMESPACE: &str = "meshfleet-system";
/// Secret with the bootstrap token (`token`) and the service URL (`url`).
pub const BOOTSTRAP_SECRET: &str = "meshfleet-bootstrap";
/// Secret in which the agent keeps its credential (`credential`, `expiresAt`).
pub const CREDENTIAL_SECRET: &str = "meshfleet-agent-credential";
/// The agent's long poll for its desired state (it gets a longer time limit).
pub const LONG_POLL_PATH: &str = "/v1/agent/desired-state";
/// Upper bound of `waitSeconds` on the long poll.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Response header of a desired-state answer (200) that delivers a change
/// whose writer was traced: the W3C `traceparent` of the delivery, in the
/// writer's trace. The agent's reconcile pass continues it, so one trace
/// shows a tenant's change reaching the cluster.
pub const CHANGE_TRACEPARENT_HEADER: &str = "meshfleet-change-traceparent";

/// `201` of `POST /v1/clusters/{name}/bootstrap-tokens`: shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST /v1/agent/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    pub bootstrap_token: String,
    #[serde(default)]
    pub facts: ClusterFacts,
}

/// The per-cluster agent credential (`register` and `credential/rotate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredential {
    pub cluster_name: String,
    pub cluster_id: Uuid,
    /// Send as `Authorization: Bearer <credential>` on the agent routes.
    pub credential: String,
    pub expires_at: DateTime<Utc>,
}

/// A waypoint to run, as the agent receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredWaypoint {
    pub namespace: String,
    pub name: String,
    pub traffic_type: TrafficType,
    pub replicas: u32,
}

/// What the agent must make true in its cluster: the spec with its version
/// resolved to a concrete release and its images. `GET /v1/agent/desired-state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    pub cluster_name: String,
    pub cluster_id: Uuid,
    /// The cluster's generation; report it back as `observedGeneration`.
    pub generation: i64,
    pub mode: MeshMode,
    /// The concrete Istio version to run, e.g. `1.28.2`.
    pub version: String,
    /// The istiod revision name for `version`, e.g. `1-28-2`.
    pub revision: String,
    pub images: ComponentImages,
    pub mtls: MtlsMode,
    pub enrolled_namespaces: Vec<String>,
    pub waypoints: Vec<DesiredWaypoint>,
    pub istiod_replicas: u32,
    pub ztunnel_log_level: LogLevel,
    pub ztunnel_resources: Resources,
    pub mesh_config: MeshConfig,
    /// The release data of `version` (CRDs, injection templates): a
    /// `development` bundle is rendered by the agent itself, an `imported`
    /// one is fetched from `url` once and verified against `digest`.
    #[serde(default)]
    pub bundle: Option<BundleRef>,
    /// With `mode: disabled`, also delete the CRDs the agent installed
    /// (`mesh.uninstall.purgeCrds`), unless custom resources of their kinds
    /// that the agent did not create exist.
    #[serde(default)]
    pub purge_crds: bool,
    /// Purge the CRDs even while such custom resources exist
    /// (`mesh.uninstall.purgeCrds` and `mesh.uninstall.force`).
    #[serde(default)]
    pub force_purge_crds: bool,
}

/// The istiod revision name of a version: dots become dashes (`1.28.2` → `1-28-2`).
pub fn revision_of(version: &str) -> String {
    version.replace('.', "-")
}

/// Body of `PUT /v1/agent/status`; every call is also a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusReport {
    /// The generation of the desired state the agent last finished applying.
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub components: Vec<ComponentStatus>,
    #[serde(default)]
    pub facts: ClusterFacts,
    /// Cluster-level conditions, e.g. `Drifted`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One entry of `GET /v1/clusters/{name}/status/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusHistoryEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub health: Health,
    pub observed_generation: Option<i64>,
    pub components: Vec<ComponentStatus>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusHistoryList {
    pub items: Vec<StatusHistoryEntry>,
    pub next_cursor: Option<String>,
}
