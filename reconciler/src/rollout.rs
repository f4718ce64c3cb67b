//! Driving one fleet rollout: a tick claims the rollout's row (`FOR UPDATE
//! SKIP LOCKED`, so no stage is ever driven by two replicas at once), looks
//! at the current stage's clusters in flight, applies the failure policy,
//! starts clusters up to `maxConcurrency`, and opens the next stage. Every
//! decision of a tick commits together (cluster versions, cluster states,
//! rollout state, events), so a replica killed mid-tick leaves nothing half
//! done and no cluster is upgraded twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use meshfleet_core::domain::health;
use meshfleet_core::domain::rollout::threshold_exceeded;
use meshfleet_core::domain::version::Version;
use meshfleet_core::ops::Actor;
use meshfleet_core::ops::spec::change_versions;
use meshfleet_core::store::clusters;
use meshfleet_core::store::events::{self, NewEvent};
use meshfleet_core::store::operations;
use meshfleet_core::store::rollouts::{self, RolloutRow, StageMember};
use meshfleet_model::{
    Connectivity, FailureAction, Health, OperationStatus, PauseReason, Problem,
    RolloutClusterState as C, RolloutState as R, StageState,
};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::context::Context;
use crate::error::Result;

/// How often a rollout with clusters in flight is looked at without a hint.
const IN_FLIGHT_POLL: i64 = 2;

/// After a failed tick, the rollout is looked at again this much later.
const RETRY_AFTER: i64 = 5;

/// Why a rollout is looked at before it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// These of its clusters in flight reported: a tick looks at them only.
    Reported(Vec<Uuid>),
    /// Anything may have changed (notifications may have been missed): a
    /// tick looks at all its clusters in flight.
    Anything,
}

/// Claims and drives one due (or hinted) rollout; its id, `None` when none
/// was due. A tick that fails is rolled back whole and retried later (the
/// error policy); it never blocks the other rollouts.
///
/// A tick brought by its due time looks at every cluster in flight of the
/// current stage (deadlines, soak ends, agents gone quiet, clusters
/// deleted); one brought early by a report looks at the clusters that
/// reported only, and leaves the due time (at most [`IN_FLIGHT_POLL`] after
/// the last full look) as it was.
pub async fn tick(ctx: &Context, hinted: &HashMap<Uuid, Hint>) -> Result<Option<Uuid>> {
    let now = ctx.clock.now();
    let mut tx = ctx.pool.begin().await?;
    let ids: Vec<Uuid> = hinted.keys().copied().collect();
    let Some(claimed) = rollouts::claim_due_rollout(&mut tx, now, &ids).await? else {
        tx.commit().await?;
        return Ok(None);
    };
    let (tenant, mut r, due_at) = (claimed.tenant_id, claimed.row, claimed.next_check_at);
    let id = r.id;
    let only = match hinted.get(&id) {
        Some(Hint::Reported(clusters)) if due_at > now => Some(clusters.as_slice()),
        _ => None,
    };
    let span = tracing::info_span!(
        "rollout.tick",
        %tenant,
        rollout = %id,
        rollout_name = %r.name,
        stage = r.current_stage,
        looked_at = only.map_or(-1, |c| c.len() as i64),
        state = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    meshfleet_telemetry::record_trace_id(&span);
    let driven = tracing::Instrument::instrument(
        async {
            let driven = drive(&mut tx, &tenant, &mut r, ctx, now, only).await;
            tracing::Span::current().record("state", tracing::field::debug(r.state.0));
            driven
        },
        span,
    )
    .await;
    match driven {
        Ok(next) => {
            // a look at some clusters only keeps the full look when it was due
            let next = if only.is_some() {
                next.min(due_at)
            } else {
                next
            };
            // never due again at once: a hint, not a busy loop, brings it back early
            let next = next.max(now + chrono::Duration::seconds(1));
            rollouts::update_rollout(&mut tx, &tenant, &r, next, now).await?;
            tx.commit().await?;
        }
        Err(e) => {
            drop(tx);
            metrics::counter!("meshfleet_rollout_tick_failures_total").increment(1);
            tracing::warn!(%tenant, rollout = %id, error = %e, "rollout tick failed; retrying later");
            rollouts::defer(
                &ctx.pool,
                &tenant,
                id,
                now + chrono::Duration::seconds(RETRY_AFTER),
            )
            .await?;
        }
    }
    Ok(Some(id))
}

/// Where a cluster in flight stands now.
fn evaluate(
    m: &StageMember,
    r: &RolloutRow,
    soak_seconds: u32,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Option<(C, Option<String>)> {
    let rc = &m.rc;
    let state = rc.state.0;
    let Some(generation) = m.generation else {
        return Some((C::Skipped, Some("the cluster was deleted".into())));
    };
    let started = rc.started_at.unwrap_or(now);
    let since = rc.upgraded_generation.unwrap_or(generation);
    let report = m.report.as_ref().map(|r| &r.0);
    // The health stored with the report was derived for the generation of
    // its time; for a newer one only "Healthy" can change (failures do not
    // depend on the generation): it is Progressing until the agent observes
    // the new generation.
    let health = match (report, &m.stored_health) {
        (Some(r), _) => health::health(r, generation),
        (None, Some(stored)) => match health::parse_health(stored) {
            Health::Healthy if m.observed_generation.is_none_or(|g| g < generation) => {
                Health::Progressing
            }
            h => h,
        },
        _ => Health::Unknown,
    };
    let connectivity = health::connectivity(m.last_heartbeat_at, now, &ctx.config.settings);
    let reported_since_start = m.report_changed_at.is_some_and(|t| t >= started);
    let on_target = health == Health::Healthy
        && m.observed_generation.is_some_and(|g| g >= since)
        && m.on_versions == Some(true);
    let deadline = started + chrono::Duration::seconds(i64::from(r.progress_deadline_seconds));

    if state == C::RollingBack {
        return if on_target {
            Some((C::RolledBack, Some(format!("back on {}", rc.from_version))))
        } else if connectivity == Connectivity::Disconnected {
            Some((
                C::Failed,
                Some("rollback not confirmed: the agent is disconnected".into()),
            ))
        } else if now >= deadline {
            Some((
                C::Failed,
                Some(format!(
                    "rollback not confirmed: not back on {} within {}s",
                    rc.from_version, r.progress_deadline_seconds
                )),
            ))
        } else {
            None
        };
    }
    if connectivity == Connectivity::Disconnected {
        return Some((C::Failed, Some("the agent is disconnected".into())));
    }
    if reported_since_start && matches!(health, Health::Degraded | Health::Unhealthy) {
        let failing: Vec<String> = report
            .map(|r| {
                r.components
                    .iter()
                    .filter(|c| health::failed(c))
                    .map(|c| match &c.message {
                        Some(m) => format!("{}: {m}", c.name),
                        None => c.name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Some((
            C::Failed,
            Some(format!(
                "{health:?} after the upgrade: {}",
                failing.join("; ")
            )),
        ));
    }
    match state {
        C::Upgrading if on_target => {
            if soak_seconds == 0 {
                Some((C::Succeeded, None))
            } else {
                Some((C::Soaking, None))
            }
        }
        C::Upgrading if now >= deadline => Some((
            C::Failed,
            Some(format!(
                "not converged on {} within {}s",
                rc.to_version, r.progress_deadline_seconds
            )),
        )),
        // a soak is held without a break: off target, it starts over once healthy
        C::Soaking if !on_target => Some((
            C::Upgrading,
            Some("left the target during its soak; the soak starts over".into()),
        )),
        C::Soaking => {
            let soaked = rc.soak_started_at.unwrap_or(now)
                + chrono::Duration::seconds(i64::from(soak_seconds));
            (now >= soaked).then_some((C::Succeeded, None))
        }
        _ => None,
    }
}

async fn event(
    conn: &mut PgConnection,
    tenant: &str,
    r: &RolloutRow,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let mut detail = detail;
    detail["rollout"] = json!(r.id);
    detail["name"] = json!(r.name);
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: None,
            cluster_id: None,
            actor: &Actor::Rollout(r.id).name(),
            action,
            generation: None,
            detail,
        },
    )
    .await?;
    Ok(())
}

/// Moves members' clusters (`from` → `to` each) through the one change
/// function, all in a few statements; per member, in order, the generation
/// it was written at or why it cannot move.
#[tracing::instrument(name = "rollout.move_clusters", skip_all, fields(
    clusters = moves.len(), reason = reason,
))]
async fn move_clusters(
    conn: &mut PgConnection,
    tenant: &str,
    r: &RolloutRow,
    moves: &[(&StageMember, &str, &str)],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<std::result::Result<i64, String>>> {
    let ids: Vec<Uuid> = moves.iter().map(|(m, _, _)| m.rc.cluster_id).collect();
    let mut rows = clusters::lock_clusters_by_ids(conn, tenant, &ids).await?;
    let mut out: Vec<Option<std::result::Result<i64, String>>> = Vec::with_capacity(moves.len());
    let mut movable = Vec::new();
    let mut slots = Vec::new();
    for (m, from, to) in moves {
        let Some(at) = rows.iter().position(|row| row.id == m.rc.cluster_id) else {
            out.push(Some(Err("the cluster was deleted".into())));
            continue;
        };
        let row = rows.swap_remove(at);
        let why = if row.deletion_operation.is_some() {
            Some("the cluster is being deleted".to_string())
        } else if row.desired_version != *from {
            Some(format!(
                "its version changed to {} outside the rollout",
                row.desired_version
            ))
        } else {
            None
        };
        match (why, Version::parse(to)) {
            (Some(why), _) => out.push(Some(Err(why))),
            (None, None) => out.push(Some(Err(format!("`{to}` is not a version")))),
            (None, Some(to)) => {
                slots.push(out.len());
                out.push(None);
                movable.push((row, to));
            }
        }
    }
    let written =
        change_versions(conn, tenant, movable, &Actor::Rollout(r.id), reason, now).await?;
    for (slot, result) in slots.into_iter().zip(written) {
        out[slot] = Some(match result {
            Ok(row) => Ok(row.generation),
            Err(meshfleet_core::Error::Invalid(errors)) => Err(errors
                .into_iter()
                .map(|e| e.detail)
                .collect::<Vec<_>>()
                .join("; ")),
            Err(meshfleet_core::Error::Conflict(why)) => Err(why),
            Err(e) => return Err(e.into()),
        });
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("not moved".into())))
        .collect())
}

async fn finish(
    conn: &mut PgConnection,
    tenant: &str,
    r: &mut RolloutRow,
    state: R,
    error: Option<Problem>,
    now: DateTime<Utc>,
) -> Result<()> {
    r.state = Json(state);
    r.active = false;
    let status = match state {
        R::Succeeded => OperationStatus::Succeeded,
        R::Cancelled => OperationStatus::Cancelled,
        _ => OperationStatus::Failed,
    };
    operations::finish_operation(conn, tenant, r.operation_id, status, error.as_ref(), now).await?;
    let action = match state {
        R::Succeeded => "rollout.succeeded",
        R::Cancelled => "rollout.cancelled",
        _ => "rollout.rolled_back",
    };
    event(conn, tenant, r, action, json!({})).await
}

fn tally(counts: &[(C, i64)], states: &[C]) -> usize {
    counts
        .iter()
        .filter(|(s, _)| states.contains(s))
        .map(|(_, n)| *n as usize)
        .sum()
}

const IN_FLIGHT: [C; 3] = [C::Upgrading, C::Soaking, C::RollingBack];

/// One tick of a claimed rollout; returns when to look again. It reads only
/// the current stage's clusters in flight (of them, those in `only` when
/// given), its counts, and as many pending clusters as it may start.
async fn drive(
    conn: &mut PgConnection,
    tenant: &str,
    r: &mut RolloutRow,
    ctx: &Context,
    now: DateTime<Utc>,
    only: Option<&[Uuid]>,
) -> Result<DateTime<Utc>> {
    let idle = now
        + chrono::Duration::from_std(ctx.config.max_interval).unwrap_or(chrono::Duration::hours(1));
    let poll = now + chrono::Duration::seconds(IN_FLIGHT_POLL);
    loop {
        let idx = r.current_stage as usize;
        let Some(stage) = r.stages.0.get(idx).cloned() else {
            let end = if r.state.0 == R::Cancelled {
                R::Cancelled
            } else {
                R::Succeeded
            };
            finish(conn, tenant, r, end, None, now).await?;
            return Ok(idle);
        };
        let stage_no = idx as i32;
        let mut next = idle;
        let soak = chrono::Duration::seconds(i64::from(stage.soak_seconds));

        // 1. clusters in flight
        let in_flight = match only {
            Some(ids) => {
                rollouts::stage_members_among(conn, tenant, r.id, stage_no, &IN_FLIGHT, ids).await?
            }
            None => {
                rollouts::stage_members(conn, tenant, r.id, stage_no, &IN_FLIGHT, i64::MAX).await?
            }
        };
        let mut changed = Vec::new();
        for mut m in in_flight {
            let state = m.rc.state.0;
            match evaluate(&m, r, stage.soak_seconds, ctx, now) {
                Some((to, reason)) => {
                    m.rc.state = Json(to);
                    if reason.is_some() {
                        m.rc.reason = reason;
                    }
                    match to {
                        C::Soaking => {
                            m.rc.soak_started_at = Some(now);
                            next = next.min(now + soak);
                        }
                        C::Upgrading => m.rc.soak_started_at = None,
                        _ => m.rc.finished_at = Some(now),
                    }
                    changed.push(m.rc);
                }
                None => {
                    if state == C::Soaking
                        && let Some(t) = m.rc.soak_started_at
                    {
                        next = next.min(t + soak);
                    }
                }
            }
        }
        rollouts::update_members(conn, tenant, r.id, &changed).await?;
        let counts = rollouts::stage_counts(conn, tenant, r.id, stage_no).await?;
        let size = (tally(
            &counts,
            &[
                C::Pending,
                C::Upgrading,
                C::Soaking,
                C::Succeeded,
                C::Failed,
                C::RollingBack,
                C::RolledBack,
            ],
        )) as u32;
        let failed = tally(&counts, &[C::Failed]) as u32;

        // 2. the failure policy
        let policy = r.failure_policy.0.clone();
        let threshold_paused = matches!(r.pause_reason, Some(Json(PauseReason::FailureThreshold)));
        let mut rolling_back = tally(&counts, &[C::RollingBack]);
        if !threshold_paused
            && r.state.0 != R::Cancelled
            && threshold_exceeded(&policy, failed, size)
        {
            r.state = Json(R::Paused);
            r.pause_reason = Some(Json(PauseReason::FailureThreshold));
            let stage_rec = &mut r.stages.0[idx];
            stage_rec.state = StageState::Failed;
            stage_rec.finished_at = Some(now);
            event(
                conn,
                tenant,
                r,
                "rollout.paused",
                json!({ "reason": "FailureThreshold", "stage": stage.name, "failed": failed, "of": size }),
            )
            .await?;
            tracing::warn!(%tenant, rollout = %r.id, stage = %stage.name, failed, "rollout paused: failure threshold");
            if policy.action == FailureAction::Rollback {
                let reason = format!(
                    "rollout {} rolls back: {failed} of {size} clusters of stage `{}` failed",
                    r.name, stage.name
                );
                let upgraded = [C::Upgrading, C::Soaking, C::Succeeded, C::Failed];
                let members =
                    rollouts::stage_members(conn, tenant, r.id, stage_no, &upgraded, i64::MAX)
                        .await?;
                let moves: Vec<_> = members
                    .iter()
                    .map(|m| (m, m.rc.to_version.as_str(), m.rc.from_version.as_str()))
                    .collect();
                let moved = move_clusters(conn, tenant, r, &moves, &reason, now).await?;
                let mut changed = Vec::new();
                for (mut m, result) in members.into_iter().zip(moved) {
                    match result {
                        Ok(generation) => {
                            m.rc.state = Json(C::RollingBack);
                            m.rc.upgraded_generation = Some(generation);
                            m.rc.started_at = Some(now);
                            m.rc.soak_started_at = None;
                            m.rc.finished_at = None;
                            rolling_back += 1;
                        }
                        Err(why) => {
                            m.rc.reason = Some(format!("not rolled back: {why}"));
                        }
                    }
                    changed.push(m.rc);
                }
                rollouts::update_members(conn, tenant, r.id, &changed).await?;
            }
        }
        let in_flight_now = tally(&counts, &[C::Upgrading, C::Soaking]) + rolling_back;
        if in_flight_now > 0 {
            next = next.min(poll);
        }

        // 3. a rollback completes when its clusters are back (or given up on)
        if matches!(r.pause_reason, Some(Json(PauseReason::FailureThreshold)))
            && policy.action == FailureAction::Rollback
        {
            if rolling_back == 0 {
                r.stages.0[idx].state = StageState::RolledBack;
                let problem = Problem {
                    type_: "https://meshfleet.dev/problems/rollout-rolled-back".into(),
                    title: "Rollout rolled back".into(),
                    status: 409,
                    detail: format!(
                        "{failed} of {size} clusters of stage `{}` failed, more than the failure policy allows; the stage's upgraded clusters were returned to their versions",
                        stage.name
                    ),
                    instance: None,
                    errors: None,
                };
                finish(conn, tenant, r, R::RolledBack, Some(problem), now).await?;
                return Ok(idle);
            }
            return Ok(next);
        }
        match r.state.0 {
            R::Paused => return Ok(next),
            R::Cancelled => {
                if in_flight_now == 0 {
                    finish(conn, tenant, r, R::Cancelled, None, now).await?;
                    return Ok(idle);
                }
                return Ok(next);
            }
            _ => {}
        }

        // 4. open the stage (or wait for its approval)
        let stage_rec = &mut r.stages.0[idx];
        if matches!(
            stage_rec.state,
            StageState::Pending | StageState::WaitingForApproval
        ) {
            if stage_rec.require_approval && !stage_rec.approved {
                r.state = Json(R::WaitingForApproval);
                if stage_rec.state != StageState::WaitingForApproval {
                    stage_rec.state = StageState::WaitingForApproval;
                    event(
                        conn,
                        tenant,
                        r,
                        "rollout.waiting_for_approval",
                        json!({ "stage": stage.name }),
                    )
                    .await?;
                }
                return Ok(next);
            }
            stage_rec.state = StageState::Running;
            stage_rec.started_at = Some(now);
            r.state = Json(R::Running);
            event(
                conn,
                tenant,
                r,
                "rollout.stage_started",
                json!({ "stage": stage.name }),
            )
            .await?;
        }

        // 5. start clusters up to maxConcurrency
        let capacity = (stage.max_concurrency as usize).saturating_sub(in_flight_now);
        let mut pending_left = tally(&counts, &[C::Pending]);
        let mut started = 0;
        if capacity > 0 && pending_left > 0 {
            let reason = format!("rollout {} stage `{}`", r.name, stage.name);
            let mut changed = Vec::new();
            let pending = rollouts::stage_members(
                conn,
                tenant,
                r.id,
                stage_no,
                &[C::Pending],
                capacity as i64,
            )
            .await?;
            let moves: Vec<_> = pending
                .iter()
                .map(|m| (m, m.rc.from_version.as_str(), m.rc.to_version.as_str()))
                .collect();
            let moved = move_clusters(conn, tenant, r, &moves, &reason, now).await?;
            for (mut m, result) in pending.into_iter().zip(moved) {
                match result {
                    Ok(generation) => {
                        m.rc.state = Json(C::Upgrading);
                        m.rc.upgraded_generation = Some(generation);
                        m.rc.started_at = Some(now);
                        next = next.min(poll);
                        started += 1;
                    }
                    Err(why) => {
                        m.rc.state = Json(C::Skipped);
                        m.rc.reason = Some(why);
                        m.rc.finished_at = Some(now);
                    }
                }
                pending_left -= 1;
                changed.push(m.rc);
            }
            rollouts::update_members(conn, tenant, r.id, &changed).await?;
            if pending_left > 0 {
                // skipped clusters may have left room: look again soon
                next = next.min(poll);
            }
        }

        // 6. the stage is done when nothing is pending or in flight
        if pending_left > 0 || in_flight_now + started > 0 {
            return Ok(next);
        }
        let stage_rec = &mut r.stages.0[idx];
        stage_rec.state = StageState::Succeeded;
        stage_rec.finished_at = Some(now);
        event(
            conn,
            tenant,
            r,
            "rollout.stage_succeeded",
            json!({ "stage": stage.name, "failed": failed }),
        )
        .await?;
        r.current_stage += 1;
    }
}
