//! Fleet rollouts: a staged upgrade of a tenant's clusters to one version,
//! with health-driven pause and rollback. `POST /v1/rollouts`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Body of `POST /v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutInput {
    /// 1 to 63 characters.
    #[schema(example = "q4-upgrade")]
    pub name: String,
    #[schema(example = "1.28.2")]
    pub target_version: String,
    /// Label selector of the clusters it takes (empty: all of the tenant's).
    #[serde(default)]
    #[schema(example = "env=prod")]
    pub selector: String,
    /// 1 to 10 stages, run in order.
    pub stages: Vec<StageInput>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// A cluster that has not succeeded this long after its upgrade started
    /// has failed (60 to 86400; default 900).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: u32,
}

fn default_progress_deadline() -> u32 {
    900
}

/// One stage: among the clusters no earlier stage took, those matching
/// `selector`, or `percent` of them, or (neither) all that remain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageInput {
    #[schema(example = "canary")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "ring=canary")]
    pub selector: Option<String>,
    /// 1 to 100; not with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Clusters upgraded at once in this stage (1 to 1000; default 1).
    #[serde(default = "one")]
    pub max_concurrency: u32,
    /// How long a cluster must stay healthy on the new version (0 to 86400; default 0).
    #[serde(default)]
    pub soak_seconds: u32,
    /// The stage starts only after `POST /v1/rollouts/{id}/approve`.
    #[serde(default)]
    pub require_approval: bool,
}

fn one() -> u32 {
    1
}

/// When a stage's failed clusters exceed the limit, the rollout pauses (and
/// with `rollback`, returns that stage's upgraded clusters to their version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePolicy {
    /// Failed clusters a stage tolerates (default 0); not with `maxFailedPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_clusters: Option<u32>,
    /// Failed share of a stage it tolerates, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_percent: Option<u32>,
    #[serde(default)]
    pub action: FailureAction,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            max_failed_clusters: Some(0),
            max_failed_percent: None,
            action: FailureAction::Pause,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RolloutState {
    Running,
    WaitingForApproval,
    Paused,
    Succeeded,
    RolledBack,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PauseReason {
    User,
    FailureThreshold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum StageState {
    Pending,
    WaitingForApproval,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RolloutClusterState {
    Pending,
    Upgrading,
    Soaking,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
    Skipped,
}

/// A rollout as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: Uuid,
    pub name: String,
    pub target_version: String,
    pub selector: String,
    pub state: RolloutState,
    pub pause_reason: Option<PauseReason>,
    pub failure_policy: FailurePolicy,
    pub progress_deadline_seconds: u32,
    /// Poll `GET /v1/operations/{operationId}` to wait for the end.
    pub operation_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub counts: RolloutCounts,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCounts {
    pub total: u32,
    pub pending: u32,
    /// Upgrading, soaking or rolling back.
    pub in_progress: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rolled_back: u32,
    pub skipped: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub name: String,
    pub state: StageState,
    pub max_concurrency: u32,
    pub soak_seconds: u32,
    pub require_approval: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The clusters of this stage (left out of list pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<RolloutCluster>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCluster {
    pub name: String,
    pub state: RolloutClusterState,
    pub from_version: String,
    pub to_version: String,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    pub items: Vec<Rollout>,
    pub next_cursor: Option<String>,
}
