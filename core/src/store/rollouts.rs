//! Fleet rollouts and the clusters they take.

use chrono::{DateTime, Utc};
use meshfleet_model::{
    FailurePolicy, PauseReason, RolloutClusterState, RolloutState, StageState, StatusReport,
};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A stage as stored (its definition and its progress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    pub name: String,
    pub max_concurrency: u32,
    pub soak_seconds: u32,
    pub require_approval: bool,
    pub state: StageState,
    pub approved: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutRow {
    pub id: Uuid,
    pub name: String,
    pub target_version: String,
    pub selector: String,
    pub state: Json<RolloutState>,
    pub pause_reason: Option<Json<PauseReason>>,
    pub failure_policy: Json<FailurePolicy>,
    pub progress_deadline_seconds: i32,
    pub stages: Json<Vec<StageRecord>>,
    pub current_stage: i32,
    pub operation_id: Uuid,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// States are stored as their names; read and written through JSON strings.
const ROLLOUT_COLUMNS: &str = "id, name, target_version, selector, to_jsonb(state) AS state,
    to_jsonb(pause_reason) AS pause_reason, failure_policy, progress_deadline_seconds, stages,
    current_stage, operation_id, active, created_at, updated_at";

fn name_of<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

pub struct NewRollout<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub target_version: &'a str,
    pub selector: &'a str,
    pub failure_policy: &'a FailurePolicy,
    pub progress_deadline_seconds: i32,
    pub stages: &'a [StageRecord],
    pub operation_id: Uuid,
    pub created_by: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn insert_rollout(
    conn: &mut PgConnection,
    tenant: &str,
    r: NewRollout<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rollouts (tenant_id, id, name, target_version, selector, failure_policy,
             progress_deadline_seconds, stages, operation_id, created_by, created_at, updated_at, next_check_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $11)",
    )
    .bind(tenant)
    .bind(r.id)
    .bind(r.name)
    .bind(r.target_version)
    .bind(r.selector)
    .bind(Json(r.failure_policy))
    .bind(r.progress_deadline_seconds)
    .bind(Json(r.stages))
    .bind(r.operation_id)
    .bind(r.created_by)
    .bind(r.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// One cluster a new rollout takes.
pub struct NewRolloutCluster {
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub stage: Option<i32>,
    pub state: RolloutClusterState,
    pub from_version: String,
    pub reason: Option<String>,
}

pub async fn insert_rollout_clusters(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    to_version: &str,
    clusters: &[NewRolloutCluster],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = clusters.iter().map(|c| c.cluster_id).collect();
    let names: Vec<&str> = clusters.iter().map(|c| c.cluster_name.as_str()).collect();
    let stages: Vec<Option<i32>> = clusters.iter().map(|c| c.stage).collect();
    let states: Vec<String> = clusters.iter().map(|c| name_of(&c.state)).collect();
    let froms: Vec<&str> = clusters.iter().map(|c| c.from_version.as_str()).collect();
    let reasons: Vec<Option<&str>> = clusters.iter().map(|c| c.reason.as_deref()).collect();
    sqlx::query(
        "INSERT INTO rollout_clusters (tenant_id, rollout_id, cluster_id, cluster_name, stage, state,
                                       from_version, to_version, reason)
         SELECT $1, $2, u.id, u.name, u.stage, u.state, u.from_version, $3, u.reason
         FROM UNNEST($4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
              AS u(id, name, stage, state, from_version, reason)",
    )
    .bind(tenant)
    .bind(rollout)
    .bind(to_version)
    .bind(&ids)
    .bind(&names)
    .bind(&stages)
    .bind(&states)
    .bind(&froms)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// `ANALYZE rollout_clusters`, in the transaction that inserted a large
/// rollout's members (it counts them). Until autovacuum's next analyze,
/// the statistics would say the new rollout has few members: the member
/// updates of every tick then hashed all of them (12 ms for 100 of 10,000
/// members, against 0.8 ms by key once analyzed). A role that does not own
/// the table gets a warning, not an error.
pub async fn refresh_member_statistics(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("ANALYZE rollout_clusters")
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get_rollout(
    db: impl PgExecutor<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<Option<RolloutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Reads a rollout and locks it until the transaction ends.
pub async fn lock_rollout(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
) -> Result<Option<RolloutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A rollout claimed for one tick.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub tenant_id: String,
    #[sqlx(flatten)]
    pub row: RolloutRow,
    /// When it was due; after `now` when only a hint brought it.
    pub next_check_at: DateTime<Utc>,
}

/// Claims one due rollout for this transaction (`FOR UPDATE SKIP LOCKED`):
/// due by its time, or because a hint named it.
pub async fn claim_due_rollout(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    hinted: &[Uuid],
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, {ROLLOUT_COLUMNS}, next_check_at FROM rollouts
         WHERE active AND (next_check_at <= $1 OR id = ANY($2))
         ORDER BY next_check_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(now)
    .bind(hinted)
    .fetch_optional(conn)
    .await
}

/// Writes a locked rollout's progress.
pub async fn update_rollout(
    conn: &mut PgConnection,
    tenant: &str,
    r: &RolloutRow,
    next_check_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rollouts SET state = $3, pause_reason = $4, stages = $5, current_stage = $6,
             active = $7, next_check_at = $8, updated_at = $9
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(r.id)
    .bind(name_of(&r.state.0))
    .bind(r.pause_reason.as_ref().map(|p| name_of(&p.0)))
    .bind(&r.stages)
    .bind(r.current_stage)
    .bind(r.active)
    .bind(next_check_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutClusterRow {
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub stage: Option<i32>,
    pub state: Json<RolloutClusterState>,
    pub from_version: String,
    pub to_version: String,
    pub reason: Option<String>,
    pub upgraded_generation: Option<i64>,
    pub soak_started_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const RC_COLUMNS: &str = "rc.cluster_id, rc.cluster_name, rc.stage, to_jsonb(rc.state) AS state,
    rc.from_version, rc.to_version, rc.reason, rc.upgraded_generation, rc.soak_started_at,
    rc.started_at, rc.finished_at";

/// Every cluster of a rollout, by stage and name.
pub async fn rollout_clusters(
    db: impl PgExecutor<'_>,
    tenant: &str,
    rollout: Uuid,
) -> Result<Vec<RolloutClusterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RC_COLUMNS} FROM rollout_clusters rc
         WHERE rc.tenant_id = $1 AND rc.rollout_id = $2
         ORDER BY rc.stage NULLS LAST, rc.cluster_name"
    )))
    .bind(tenant)
    .bind(rollout)
    .fetch_all(db)
    .await
}

/// Cluster states per rollout (for list pages): `(rollout, state, count)`.
pub async fn state_counts(
    db: impl PgExecutor<'_>,
    tenant: &str,
    rollouts: &[Uuid],
) -> Result<Vec<(Uuid, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rollout_id, state, count(*) FROM rollout_clusters
         WHERE tenant_id = $1 AND rollout_id = ANY($2) GROUP BY rollout_id, state",
    )
    .bind(tenant)
    .bind(rollouts)
    .fetch_all(db)
    .await
}

/// A page of a tenant's rollouts, newest first, created before the cursor.
pub async fn list_rollouts(
    db: impl PgExecutor<'_>,
    tenant: &str,
    state: Option<RolloutState>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RolloutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts
         WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5"
    )))
    .bind(tenant)
    .bind(state.map(|s| name_of(&s)))
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The rollout (id, name) that holds a cluster's version: one that is
/// running, waiting or paused and took the cluster into a stage, or a
/// cancelled one whose upgrade of the cluster is still in flight.
pub async fn holding_rollout(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_ids: &[Uuid],
) -> Result<Option<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id, r.name, rc.cluster_name FROM rollout_clusters rc
         JOIN rollouts r ON r.tenant_id = rc.tenant_id AND r.id = rc.rollout_id
         WHERE rc.tenant_id = $1 AND rc.cluster_id = ANY($2) AND rc.state <> 'Skipped'
           AND (r.state IN ('Running', 'WaitingForApproval', 'Paused')
                OR (r.active AND rc.state IN ('Upgrading', 'Soaking', 'RollingBack')))
         LIMIT 1",
    )
    .bind(tenant)
    .bind(cluster_ids)
    .fetch_optional(db)
    .await
}

/// A cluster of a rollout's stage with what the engine decides on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StageMember {
    #[sqlx(flatten)]
    pub rc: RolloutClusterRow,
    /// `None` when the cluster was deleted meanwhile.
    pub generation: Option<i64>,
    /// The health stored with the last report.
    pub stored_health: Option<String>,
    pub observed_generation: Option<i64>,
    /// Every component of the last report is on the version this member
    /// moves to (the target, or its old version while rolling back).
    pub on_versions: Option<bool>,
    pub report: Option<Json<StatusReport>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When the agent's report last changed.
    pub report_changed_at: Option<DateTime<Utc>>,
}

// What a stage member adds to its row (see [`StageMember`]), and from where.
const MEMBER_COLUMNS: &str = "c.generation, s.health AS stored_health, s.observed_generation,
    s.observed_versions <@ ARRAY[CASE WHEN rc.state = 'RollingBack'
                                      THEN rc.from_version ELSE rc.to_version END] AS on_versions,
    -- the report itself only to describe a failure
    CASE WHEN s.health IN ('Degraded', 'Unhealthy') THEN
        (SELECT rep.report FROM cluster_reports rep
         WHERE rep.tenant_id = s.tenant_id AND rep.cluster_id = s.cluster_id)
    END AS report,
    s.last_heartbeat_at, s.changed_at AS report_changed_at";
macro_rules! member_joins {
    () => {
        "LEFT JOIN clusters c ON c.tenant_id = rc.tenant_id AND c.id = rc.cluster_id
    LEFT JOIN cluster_status s ON s.tenant_id = rc.tenant_id AND s.cluster_id = rc.cluster_id"
    };
}
const MEMBER_FROM: &str = concat!("FROM rollout_clusters rc\n    ", member_joins!());
const MEMBER_JOINS: &str = member_joins!();

/// The clusters of a rollout's stage in `states`, by name (at most `limit`).
/// The members are picked (by `rollout_clusters_by_stage`, in name order)
/// before their clusters and statuses are joined: a pick of the next few
/// pending clusters joins those few, not the stage.
pub async fn stage_members(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    stage: i32,
    states: &[RolloutClusterState],
    limit: i64,
) -> Result<Vec<StageMember>, sqlx::Error> {
    let states: Vec<String> = states.iter().map(name_of).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH rc AS (
             SELECT * FROM rollout_clusters
             WHERE tenant_id = $1 AND rollout_id = $2 AND stage = $3 AND state = ANY($4)
             ORDER BY cluster_name
             LIMIT $5)
         SELECT {RC_COLUMNS}, {MEMBER_COLUMNS} FROM rc {MEMBER_JOINS}
         ORDER BY rc.cluster_name"
    )))
    .bind(tenant)
    .bind(rollout)
    .bind(stage)
    .bind(&states)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// [`stage_members`] among the clusters `ids` only (found by primary key:
/// the cost follows `ids`, not the stage's size), by name.
pub async fn stage_members_among(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    stage: i32,
    states: &[RolloutClusterState],
    ids: &[Uuid],
) -> Result<Vec<StageMember>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let states: Vec<String> = states.iter().map(name_of).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RC_COLUMNS}, {MEMBER_COLUMNS} {MEMBER_FROM}
         WHERE rc.tenant_id = $1 AND rc.rollout_id = $2 AND rc.cluster_id = ANY($5)
           AND rc.stage = $3 AND rc.state = ANY($4)
         ORDER BY rc.cluster_name"
    )))
    .bind(tenant)
    .bind(rollout)
    .bind(stage)
    .bind(&states)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// How many clusters of a rollout's stage are in each state.
pub async fn stage_counts(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    stage: i32,
) -> Result<Vec<(RolloutClusterState, i64)>, sqlx::Error> {
    let rows: Vec<(Json<RolloutClusterState>, i64)> = sqlx::query_as(
        "SELECT to_jsonb(state), count(*) FROM rollout_clusters
         WHERE tenant_id = $1 AND rollout_id = $2 AND stage = $3 GROUP BY state",
    )
    .bind(tenant)
    .bind(rollout)
    .bind(stage)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(s, n)| (s.0, n)).collect())
}

/// Pushes a rollout's next look to `at` (after a failed tick).
pub async fn defer(
    db: impl PgExecutor<'_>,
    tenant: &str,
    rollout: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rollouts SET next_check_at = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(rollout)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// Writes the progress of many clusters of a rollout in one statement.
pub async fn update_members(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    rows: &[RolloutClusterRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.cluster_id).collect();
    let states: Vec<String> = rows.iter().map(|r| name_of(&r.state.0)).collect();
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.reason.as_deref()).collect();
    let generations: Vec<Option<i64>> = rows.iter().map(|r| r.upgraded_generation).collect();
    let soaks: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.soak_started_at).collect();
    let starts: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.started_at).collect();
    let ends: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.finished_at).collect();
    sqlx::query(
        "UPDATE rollout_clusters rc SET state = u.state, reason = u.reason,
             upgraded_generation = u.generation, soak_started_at = u.soak,
             started_at = u.started, finished_at = u.finished
         FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[],
                     $8::timestamptz[], $9::timestamptz[])
              AS u(id, state, reason, generation, soak, started, finished)
         WHERE rc.tenant_id = $1 AND rc.rollout_id = $2 AND rc.cluster_id = u.id",
    )
    .bind(tenant)
    .bind(rollout)
    .bind(&ids)
    .bind(&states)
    .bind(&reasons)
    .bind(&generations)
    .bind(&soaks)
    .bind(&starts)
    .bind(&ends)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every pending cluster of a rollout skipped (cancel).
pub async fn skip_pending(
    conn: &mut PgConnection,
    tenant: &str,
    rollout: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE rollout_clusters SET state = 'Skipped', reason = $3, finished_at = $4
         WHERE tenant_id = $1 AND rollout_id = $2 AND state = 'Pending'",
    )
    .bind(tenant)
    .bind(rollout)
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The active rollouts (a hint woke the engine: one of them may have a
/// cluster in flight that reported).
pub async fn active_ids(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM rollouts WHERE active")
        .fetch_all(db)
        .await
}

/// The rollouts that have any of these clusters in flight:
/// `(tenant, rollout, cluster)` for each (by the clusters' index, so the cost
/// follows the number of clusters asked about).
pub async fn in_flight_among(
    db: impl PgExecutor<'_>,
    clusters: &[(String, Uuid)],
) -> Result<Vec<(String, Uuid, Uuid)>, sqlx::Error> {
    let tenants: Vec<&str> = clusters.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<Uuid> = clusters.iter().map(|(_, id)| *id).collect();
    sqlx::query_as(
        "SELECT rc.tenant_id, rc.rollout_id, rc.cluster_id
         FROM UNNEST($1::text[], $2::uuid[]) AS u(tenant_id, cluster_id), rollout_clusters rc
         WHERE rc.tenant_id = u.tenant_id AND rc.cluster_id = u.cluster_id
           AND rc.state IN ('Upgrading', 'Soaking', 'RollingBack')",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(db)
    .await
}
