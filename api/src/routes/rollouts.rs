//! `/v1/rollouts`: fleet-wide staged upgrades with health-driven pause and
//! rollback. The reconciler drives them; these routes create, show and steer.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use meshfleet_core::domain::rollout::{counts, counts_of};
use meshfleet_core::ops::rollouts::{self as rollout_ops, Action};
use meshfleet_core::store::releases::load_catalog;
use meshfleet_core::store::rollouts::{self as store, RolloutClusterRow, RolloutRow};
use meshfleet_model::{
    Problem, Rollout, RolloutCluster, RolloutCounts, RolloutInput, RolloutList, RolloutState, Stage,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{
    CursorField, CursorShape, CursorValue, JsonBody, Query, page_limit, paginate, with_header,
};
use crate::state::AppState;

/// The API shape of a rollout; with its clusters per stage when given.
fn present(
    row: RolloutRow,
    counts: RolloutCounts,
    members: Option<Vec<RolloutClusterRow>>,
) -> Rollout {
    let mut per_stage: Vec<Vec<RolloutCluster>> = vec![Vec::new(); row.stages.0.len()];
    let with_clusters = members.is_some();
    for m in members.unwrap_or_default() {
        if let Some(list) = m.stage.and_then(|s| per_stage.get_mut(s as usize)) {
            list.push(RolloutCluster {
                name: m.cluster_name,
                state: m.state.0,
                from_version: m.from_version,
                to_version: m.to_version,
                reason: m.reason,
                started_at: m.started_at,
                finished_at: m.finished_at,
            });
        }
    }
    let stages = row
        .stages
        .0
        .into_iter()
        .zip(per_stage)
        .map(|(s, clusters)| Stage {
            name: s.name,
            state: s.state,
            max_concurrency: s.max_concurrency,
            soak_seconds: s.soak_seconds,
            require_approval: s.require_approval,
            started_at: s.started_at,
            finished_at: s.finished_at,
            clusters: with_clusters.then_some(clusters),
        })
        .collect();
    Rollout {
        id: row.id,
        name: row.name,
        target_version: row.target_version,
        selector: row.selector,
        state: row.state.0,
        pause_reason: row.pause_reason.map(|p| p.0),
        failure_policy: row.failure_policy.0,
        progress_deadline_seconds: row.progress_deadline_seconds.max(0) as u32,
        operation_id: row.operation_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        counts,
        stages,
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("rollout `{id}` not found"))
}

/// The whole rollout with its clusters.
async fn load(state: &AppState, tenant: &str, id: &str) -> ApiResult<Rollout> {
    let parsed = Uuid::try_parse(id).map_err(|_| not_found(id))?;
    let row = store::get_rollout(&state.pool, tenant, parsed)
        .await?
        .ok_or_else(|| not_found(id))?;
    let members = store::rollout_clusters(&state.pool, tenant, parsed).await?;
    let c = counts(members.iter().map(|m| (m.state.0, 1)));
    Ok(present(row, c, Some(members)))
}

/// Start a fleet rollout.
///
/// Takes the tenant's clusters matching `selector` into stages and upgrades
/// them to `targetVersion` stage by stage, at most `maxConcurrency` at a time,
/// each one through the same rules as a tenant's change. A cluster has
/// succeeded when its agent reports the new version `Healthy` for
/// `soakSeconds`; it has failed when it turns `Degraded`/`Unhealthy`, misses
/// `progressDeadlineSeconds` or disconnects. Failures beyond `failurePolicy`
/// pause the rollout, and with `action: rollback` return that stage's
/// upgraded clusters to their versions. Poll `Operation-Location` for the end.
#[utoipa::path(
    post, path = "/v1/rollouts", tag = "rollouts",
    request_body = RolloutInput,
    responses(
        (status = 202, description = "Started", body = Rollout,
         headers(("Location" = String, description = "The rollout"), ("Operation-Location" = String, description = "Its operation"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A selected cluster is in another running rollout", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rollout, unknown or retired target, no cluster selected, or a cluster that cannot take the target (one `errors` entry per cluster, pointer `/clusters/<name>`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_rollout(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(input): JsonBody<RolloutInput>,
) -> ApiResult<Response> {
    principal.require_write()?;
    let mut tx = state.pool.begin().await?;
    let catalog = load_catalog(&mut *tx).await?;
    let id = rollout_ops::create(
        &mut tx,
        &principal.tenant,
        &catalog,
        &input,
        &principal.actor(),
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    let rollout = load(&state, &principal.tenant, &id.to_string()).await?;
    let op = super::operations::location(rollout.operation_id);
    let response = (StatusCode::ACCEPTED, axum::Json(rollout)).into_response();
    let response = with_header(response, header::LOCATION, &format!("/v1/rollouts/{id}"));
    Ok(with_header(
        response,
        header::HeaderName::from_static("operation-location"),
        &op,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RolloutListParams {
    /// Only rollouts in this state.
    pub state: Option<RolloutState>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// 4700 BC, in microseconds since the epoch: within PostgreSQL's range.
const EARLIEST_MICROS: i64 = -210_000_000_000_000_000;

/// Before the rollout created at these microseconds since the epoch, with this id.
pub const CURSOR: CursorShape = CursorShape {
    kind: "r2",
    fields: &[CursorField::Int, CursorField::Uuid],
};

/// List rollouts, newest first (without their clusters; read one for those).
#[utoipa::path(
    get, path = "/v1/rollouts", tag = "rollouts",
    params(RolloutListParams),
    responses(
        (status = 200, description = "A page of rollouts", body = RolloutList),
        (status = 400, description = "Bad state, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_rollouts(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<RolloutListParams>,
) -> ApiResult<axum::Json<RolloutList>> {
    principal.require_read()?;
    let limit = page_limit(params.limit)?;
    let before = match params
        .cursor
        .as_deref()
        .map(|c| CURSOR.decode(c))
        .transpose()?
    {
        None => None,
        Some(values) => match values.as_slice() {
            // Clamped to what PostgreSQL can compare (from 4713 BC): a
            // position earlier than that is before every rollout all the same.
            [CursorValue::Int(micros), CursorValue::Uuid(id)] => Some((
                DateTime::<Utc>::from_timestamp_micros((*micros).max(EARLIEST_MICROS))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
                *id,
            )),
            _ => return Err(ApiError::Internal("rollout cursor shape".into())),
        },
    };
    let mut rows = store::list_rollouts(
        &state.pool,
        &principal.tenant,
        params.state,
        before,
        limit + 1,
    )
    .await?;
    let next_cursor = paginate(&mut rows, limit, |r| {
        CURSOR.encode(&[
            CursorValue::Int(r.created_at.timestamp_micros()),
            CursorValue::Uuid(r.id),
        ])
    });
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let tallies = store::state_counts(&state.pool, &principal.tenant, &ids).await?;
    let items = rows
        .into_iter()
        .map(|r| {
            let c = counts_of(&tallies, r.id);
            present(r, c, None)
        })
        .collect();
    Ok(axum::Json(RolloutList { items, next_cursor }))
}

/// Read a rollout with every cluster of every stage.
#[utoipa::path(
    get, path = "/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_rollout(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Rollout>> {
    principal.require_read()?;
    Ok(axum::Json(load(&state, &principal.tenant, &id).await?))
}

/// Pause, resume, cancel or approve a rollout.
///
/// `pause`: nothing new starts (clusters in flight finish). `resume`: after a
/// pause by a user (a rollout the failure policy paused cannot resume: cancel
/// it). `cancel`: nothing new starts, clusters in flight finish, the rollout
/// ends `Cancelled`. `approve`: opens a stage that requires approval.
#[utoipa::path(
    post, path = "/v1/rollouts/{id}/{action}", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id"),
           ("action" = String, Path, description = "`pause`, `resume`, `cancel` or `approve`")),
    responses(
        (status = 200, description = "The rollout after the action", body = Rollout),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout, or no such action", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The action does not fit the rollout's state", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn act_on_rollout(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<axum::Json<Rollout>> {
    principal.require_write()?;
    let action = Action::parse(&action).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no action `{action}` on rollouts; use pause, resume, cancel or approve"
        ))
    })?;
    let parsed = Uuid::try_parse(&id).map_err(|_| not_found(&id))?;
    let mut tx = state.pool.begin().await?;
    rollout_ops::act(
        &mut tx,
        &principal.tenant,
        parsed,
        action,
        &principal.actor(),
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(load(&state, &principal.tenant, &id).await?))
}
