//! Creating fleet rollouts and the tenant's actions on them (pause, resume,
//! cancel, approve). The reconciler drives them (`meshfleet-reconciler`).

use chrono::{DateTime, Utc};
use meshfleet_model::{
    FieldError, PauseReason, RolloutClusterState, RolloutInput, RolloutState, StageState,
    UpgradeMode,
};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::Actor;
use crate::domain::rollout::{assign_stages, validate};
use crate::domain::version::{Catalog, Version, check_version_change};
use crate::error::{Error, Result};
use crate::store::clusters;
use crate::store::events::{self, NewEvent};
use crate::store::operations;
use crate::store::rollouts::{self, NewRollout, NewRolloutCluster, RolloutRow, StageRecord};

fn invalid(pointer: &str, detail: impl Into<String>) -> Error {
    Error::Invalid(vec![FieldError::new(pointer, detail)])
}

async fn rollout_event(
    conn: &mut PgConnection,
    tenant: &str,
    actor: &Actor,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: None,
            cluster_id: None,
            actor: &actor.name(),
            action,
            generation: None,
            detail,
        },
    )
    .await?;
    Ok(())
}

/// A rollout with this many members refreshes the planner's statistics of
/// `rollout_clusters` as it is created (see
/// [`rollouts::refresh_member_statistics`]).
const ANALYZE_MEMBERS_AT: usize = 1000;

/// Creates a rollout: validates it, takes the matching clusters into stages
/// (locking them, so a cluster is never in two running rollouts), and
/// records it with its operation. Returns its id.
pub async fn create(
    conn: &mut PgConnection,
    tenant: &str,
    catalog: &Catalog,
    input: &RolloutInput,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let plan = validate(input).map_err(Error::Invalid)?;
    let target = Version::parse(&input.target_version).ok_or_else(|| {
        invalid(
            "/targetVersion",
            format!("`{}` is not a version like `1.28.2`", input.target_version),
        )
    })?;
    match catalog.get(target) {
        None => {
            return Err(invalid(
                "/targetVersion",
                format!("{target} is not in the release catalog"),
            ));
        }
        Some(e) => {
            if let Some(why) = e.unselectable() {
                return Err(invalid("/targetVersion", why));
            }
        }
    }
    let candidates = clusters::lock_matching(conn, tenant, &plan.selector).await?;
    if candidates.is_empty() {
        return Err(invalid(
            "/selector",
            format!(
                "`{}` matches none of this tenant's clusters",
                input.selector
            ),
        ));
    }
    let labels: Vec<&meshfleet_model::Labels> = candidates.iter().map(|c| &c.labels.0).collect();
    let stage_of = assign_stages(&plan, &labels);

    let mut members = Vec::with_capacity(candidates.len());
    let mut errors = Vec::new();
    for (c, stage) in candidates.iter().zip(stage_of) {
        let skipped = |reason: String| NewRolloutCluster {
            cluster_id: c.id,
            cluster_name: c.name.clone(),
            stage: stage.map(|s| s as i32),
            state: RolloutClusterState::Skipped,
            from_version: c.desired_version.clone(),
            reason: Some(reason),
        };
        let member = if stage.is_none() {
            skipped("no stage takes it".into())
        } else if c.deletion_operation.is_some() {
            skipped("it is being deleted".into())
        } else if c.mesh.0.upgrade.mode == UpgradeMode::Automatic {
            skipped(format!(
                "it follows the {} channel",
                c.mesh.0.upgrade.channel.map_or("", |ch| ch.as_str())
            ))
        } else if c.desired_version == target.to_string() {
            skipped(format!("it is on {target} already"))
        } else {
            let from = Version::parse(&c.desired_version).ok_or_else(|| {
                Error::Internal(format!("stored version of `{}` does not parse", c.name))
            })?;
            if let Err(why) = check_version_change(from, &c.version_history, target) {
                errors.push(FieldError::new(format!("/clusters/{}", c.name), why));
            }
            NewRolloutCluster {
                cluster_id: c.id,
                cluster_name: c.name.clone(),
                stage: stage.map(|s| s as i32),
                state: RolloutClusterState::Pending,
                from_version: c.desired_version.clone(),
                reason: None,
            }
        };
        members.push(member);
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let taken: Vec<Uuid> = members
        .iter()
        .filter(|m| m.state != RolloutClusterState::Skipped)
        .map(|m| m.cluster_id)
        .collect();
    if let Some((other, name, cluster)) =
        rollouts::holding_rollout(&mut *conn, tenant, &taken).await?
    {
        return Err(Error::Conflict(format!(
            "cluster `{cluster}` is already in rollout `{name}` ({other}); wait for it to finish or cancel it"
        )));
    }

    let id = Uuid::now_v7();
    let operation = operations::insert_operation(
        conn,
        tenant,
        "rollout",
        &format!("/v1/rollouts/{id}"),
        &actor.name(),
        now,
    )
    .await?;
    let stages: Vec<StageRecord> = input
        .stages
        .iter()
        .map(|s| StageRecord {
            name: s.name.clone(),
            max_concurrency: s.max_concurrency,
            soak_seconds: s.soak_seconds,
            require_approval: s.require_approval,
            state: StageState::Pending,
            approved: false,
            started_at: None,
            finished_at: None,
        })
        .collect();
    rollouts::insert_rollout(
        conn,
        tenant,
        NewRollout {
            id,
            name: &input.name,
            target_version: &target.to_string(),
            selector: &input.selector,
            failure_policy: &input.failure_policy,
            progress_deadline_seconds: input.progress_deadline_seconds as i32,
            stages: &stages,
            operation_id: operation,
            created_by: &actor.name(),
            now,
        },
    )
    .await?;
    rollouts::insert_rollout_clusters(conn, tenant, id, &target.to_string(), &members).await?;
    if members.len() >= ANALYZE_MEMBERS_AT {
        rollouts::refresh_member_statistics(conn).await?;
    }
    rollout_event(
        conn,
        tenant,
        actor,
        "rollout.created",
        json!({ "rollout": id, "name": input.name, "targetVersion": target.to_string(),
                "clusters": taken.len(), "skipped": members.len() - taken.len() }),
    )
    .await?;
    Ok(id)
}

/// A tenant's action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
    Approve,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "cancel" => Some(Action::Cancel),
            "approve" => Some(Action::Approve),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Approve => "approve",
        }
    }
}

fn state_name(r: &RolloutRow) -> String {
    let state = serde_json::to_value(r.state.0)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    match &r.pause_reason {
        Some(Json(PauseReason::FailureThreshold)) => format!("{state} (failure threshold)"),
        _ => state,
    }
}

/// Applies a tenant's action to a rollout (locked); 409 when it does not fit.
pub async fn act(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
    action: Action,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut r = rollouts::lock_rollout(conn, tenant, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("rollout `{id}` not found")))?;
    let conflict = |r: &RolloutRow| {
        Error::Conflict(format!(
            "cannot {} rollout `{}`: it is {}",
            action.name(),
            r.name,
            state_name(r)
        ))
    };
    use RolloutState as S;
    match (action, r.state.0) {
        (Action::Pause, S::Running | S::WaitingForApproval) => {
            r.state = Json(S::Paused);
            r.pause_reason = Some(Json(PauseReason::User));
        }
        (Action::Resume, S::Paused) if matches!(r.pause_reason, Some(Json(PauseReason::User))) => {
            r.state = Json(S::Running);
            r.pause_reason = None;
        }
        (Action::Cancel, S::Running | S::WaitingForApproval | S::Paused) => {
            r.state = Json(S::Cancelled);
            rollouts::skip_pending(conn, tenant, id, "the rollout was cancelled", now).await?;
            for stage in r.stages.0.iter_mut() {
                if matches!(
                    stage.state,
                    StageState::Pending | StageState::WaitingForApproval
                ) {
                    stage.state = StageState::Cancelled;
                }
            }
        }
        (Action::Approve, S::WaitingForApproval) => {
            if let Some(stage) = r.stages.0.get_mut(r.current_stage as usize) {
                stage.approved = true;
            }
            r.state = Json(S::Running);
        }
        _ => return Err(conflict(&r)),
    }
    rollouts::update_rollout(conn, tenant, &r, now, now).await?;
    rollout_event(
        conn,
        tenant,
        actor,
        &format!("rollout.{}", action.name()),
        json!({ "rollout": id, "name": r.name }),
    )
    .await?;
    Ok(())
}
