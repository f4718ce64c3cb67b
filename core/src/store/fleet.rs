//! The health dashboard's reads: a fleet's figures in a handful of set-based
//! statements (no report JSON read except for failing clusters), and the
//! filtered, sorted cluster list of the portal and the SRE's triage.
//!
//! Health and connectivity are derived in SQL exactly as
//! [`crate::domain::health::derive`] derives them for one cluster: the health
//! stored with the last report, `Progressing` when that was derived against
//! an older generation, `Degraded` past the progress deadline; connectivity
//! from the heartbeat age. So a summary agrees with `GET` of each cluster.
//!
//! [`Scope::Tenant`] puts `tenant_id` in every `WHERE`; [`Scope::Service`]
//! (the `sre` views only) reads across tenants.

use chrono::{DateTime, Utc};
use meshfleet_model::{RolloutState, StatusReport};
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::clusters::{CLUSTER_COLUMNS, CLUSTER_FROM, ClusterRow, push_selector};
use crate::domain::selector::Requirement;
use crate::settings::Settings;

/// Whose clusters a read covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Tenant(&'a str),
    /// Every tenant's (service operators only).
    Service,
}

/// The instants that derived health and connectivity are judged against.
#[derive(Debug, Clone, Copy)]
pub struct Judged {
    /// A generation set at or before this and still progressing is `Degraded`.
    pub deadline_before: DateTime<Utc>,
    /// A heartbeat after this is `Connected`.
    pub stale_before: DateTime<Utc>,
    /// ... after this `Stale`, else `Disconnected`.
    pub disconnected_before: DateTime<Utc>,
}

impl Judged {
    pub fn at(now: DateTime<Utc>, settings: &Settings) -> Judged {
        let back = |d: std::time::Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        Judged {
            deadline_before: back(settings.progress_deadline),
            stale_before: back(settings.stale_after),
            disconnected_before: back(settings.disconnected_after),
        }
    }
}

/// Pushes ` AND <alias>.tenant_id = $n` for a tenant scope.
fn push_scope(q: &mut QueryBuilder<Postgres>, alias: &str, scope: Scope<'_>) {
    if let Scope::Tenant(t) = scope {
        q.push(format_args!(" AND {alias}.tenant_id = "))
            .push_bind(t.to_string());
    }
}

/// The derived health of `clusters c LEFT JOIN cluster_status s`.
fn push_health(q: &mut QueryBuilder<Postgres>, j: &Judged) {
    q.push(
        "(CASE WHEN s.cluster_id IS NULL THEN 'Unknown'
               WHEN s.health = 'Progressing' OR (s.health = 'Healthy' AND s.health_generation < c.generation)
               THEN CASE WHEN c.generation_changed_at <= ",
    )
    .push_bind(j.deadline_before)
    .push(" THEN 'Degraded' ELSE 'Progressing' END ELSE s.health END)");
}

/// Pushes `<health> AS health, <connectivity> AS connectivity FROM clusters
/// c LEFT JOIN cluster_status s WHERE TRUE [AND c.tenant_id = ...]`.
fn push_derived_from(q: &mut QueryBuilder<Postgres>, judged: &Judged, scope: Scope<'_>) {
    push_health(q, judged);
    q.push(" AS health, ");
    push_connectivity(q, judged);
    q.push(format_args!(
        " AS connectivity FROM {JOIN_STATUS} WHERE TRUE"
    ));
    push_scope(q, "c", scope);
}

/// The derived connectivity of `cluster_status s` (none: `Disconnected`).
fn push_connectivity(q: &mut QueryBuilder<Postgres>, j: &Judged) {
    q.push("(CASE WHEN s.last_heartbeat_at > ")
        .push_bind(j.stale_before)
        .push(" THEN 'Connected' WHEN s.last_heartbeat_at > ")
        .push_bind(j.disconnected_before)
        .push(" THEN 'Stale' ELSE 'Disconnected' END)");
}

const JOIN_STATUS: &str =
    "clusters c LEFT JOIN cluster_status s ON s.tenant_id = c.tenant_id AND s.cluster_id = c.id";

/// Clusters alike in every figure the dashboard shows.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Group {
    pub tenant_id: String,
    pub health: String,
    pub connectivity: String,
    pub desired_version: String,
    /// Versions its agent reports (empty: never reported).
    pub observed_versions: Vec<String>,
    /// The agent has not reported the current generation.
    pub lagging: bool,
    pub n: i64,
}

/// A cluster whose agent has not reported its current generation.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LaggingRow {
    pub tenant_id: String,
    pub name: String,
    pub generation: i64,
    pub observed_generation: Option<i64>,
    pub since: DateTime<Utc>,
}

/// A fleet's figures, from one pass over its clusters and their statuses.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Figures {
    pub groups: Json<Vec<Group>>,
    /// The `lagging_shown` longest-lagging, longest first.
    pub lagging: Json<Vec<LaggingRow>>,
}

/// The figures of a fleet: one pass over `clusters` (an index-only scan of
/// `clusters_summary`) and the narrow `cluster_status`, grouped once.
pub async fn figures(
    db: impl PgExecutor<'_>,
    scope: Scope<'_>,
    judged: &Judged,
    lagging_shown: i64,
) -> Result<Figures, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "WITH f AS MATERIALIZED (
            SELECT c.tenant_id, c.name, c.generation, c.generation_changed_at, c.desired_version,
                   s.observed_generation, coalesce(s.observed_versions, '{}') AS observed_versions,
                   s.observed_generation IS NULL OR s.observed_generation < c.generation AS lagging, ",
    );
    push_derived_from(&mut q, judged, scope);
    q.push(
        ")
        SELECT
          (SELECT coalesce(jsonb_agg(g), '[]') FROM (
               SELECT tenant_id, health, connectivity, desired_version, observed_versions, lagging,
                      count(*) AS n
               FROM f GROUP BY 1, 2, 3, 4, 5, 6) g) AS groups,
          (SELECT coalesce(jsonb_agg(x), '[]') FROM (
               SELECT tenant_id, name, generation, observed_generation, generation_changed_at AS since
               FROM f WHERE lagging ORDER BY generation_changed_at, tenant_id, name LIMIT ",
    );
    q.push_bind(lagging_shown).push(") x) AS lagging");
    q.build_query_as().fetch_one(db).await
}

/// The reports of `Degraded`/`Unhealthy` clusters, most recently changed
/// first (at most `limit`).
pub async fn failing_reports(
    db: impl PgExecutor<'_>,
    scope: Scope<'_>,
    limit: i64,
) -> Result<Vec<Json<StatusReport>>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT rep.report FROM cluster_status s
         JOIN cluster_reports rep ON rep.tenant_id = s.tenant_id AND rep.cluster_id = s.cluster_id
         WHERE s.health IN ('Degraded', 'Unhealthy')",
    );
    push_scope(&mut q, "s", scope);
    q.push(" ORDER BY s.changed_at DESC LIMIT ")
        .push_bind(limit);
    q.build_query_scalar().fetch_all(db).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutBrief {
    pub tenant_id: String,
    pub id: Uuid,
    pub name: String,
    pub target_version: String,
    pub state: Json<RolloutState>,
}

/// Active rollouts, then the newest finished ones (`limit` in all).
pub async fn recent_rollouts(
    db: impl PgExecutor<'_>,
    scope: Scope<'_>,
    limit: i64,
) -> Result<Vec<RolloutBrief>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT r.tenant_id, r.id, r.name, r.target_version, to_jsonb(r.state) AS state
         FROM rollouts r WHERE TRUE",
    );
    push_scope(&mut q, "r", scope);
    q.push(" ORDER BY r.active DESC, r.created_at DESC, r.id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as().fetch_all(db).await
}

/// Cluster states of the given rollouts: `(rollout, state, count)`.
pub async fn rollout_state_counts(
    db: impl PgExecutor<'_>,
    rollouts: &[(String, Uuid)],
) -> Result<Vec<(Uuid, String, i64)>, sqlx::Error> {
    let tenants: Vec<&str> = rollouts.iter().map(|r| r.0.as_str()).collect();
    let ids: Vec<Uuid> = rollouts.iter().map(|r| r.1).collect();
    sqlx::query_as(
        "SELECT rc.rollout_id, rc.state, count(*)
         FROM rollout_clusters rc
         JOIN unnest($1::text[], $2::uuid[]) AS k(tenant_id, rollout_id)
           ON rc.tenant_id = k.tenant_id AND rc.rollout_id = k.rollout_id
         GROUP BY 1, 2",
    )
    .bind(tenants)
    .bind(ids)
    .fetch_all(db)
    .await
}

/// How a cluster list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By tenant, then name.
    Name,
    /// Worst health first (Unhealthy, Degraded, Unknown, Progressing, Healthy).
    Health,
    /// Longest without a heartbeat first (never heard from before all).
    HeartbeatAge,
}

/// Where a page starts: after this row of the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// The sort key ([`Sort::Name`]: 0).
    pub key: i64,
    pub tenant: String,
    pub name: String,
}

/// What a cluster list keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub selector: Vec<Requirement>,
    /// Any of these derived healths (empty: any).
    pub health: Vec<String>,
    /// Any of these derived connectivities (empty: any).
    pub connectivity: Vec<String>,
    /// This desired version.
    pub version: Option<String>,
    /// No heartbeat since (or never heard from).
    pub quiet_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedCluster {
    pub tenant_id: String,
    pub sort_key: i64,
    #[sqlx(flatten)]
    pub row: ClusterRow,
}

/// A page of clusters (`limit` of them) matching `filter`, in `sort` order.
pub async fn list(
    db: impl PgExecutor<'_>,
    scope: Scope<'_>,
    judged: &Judged,
    filter: &Filter,
    sort: Sort,
    after: Option<&After>,
    limit: i64,
) -> Result<Vec<ListedCluster>, sqlx::Error> {
    // The page's keys first, over `clusters` and the narrow `cluster_status`
    // only; then the full rows (with their reports) of just those.
    let mut q = QueryBuilder::<Postgres>::new("SELECT k.tenant_id, k.sort_key, ");
    q.push(format_args!(
        "{CLUSTER_COLUMNS} FROM (SELECT * FROM (SELECT c.tenant_id, c.name, "
    ));
    match sort {
        Sort::Name => {
            q.push("0::bigint");
        }
        Sort::Health => {
            q.push("CASE ");
            push_health(&mut q, judged);
            q.push(
                " WHEN 'Unhealthy' THEN 0 WHEN 'Degraded' THEN 1 WHEN 'Unknown' THEN 2
                  WHEN 'Progressing' THEN 3 ELSE 4 END::bigint",
            );
        }
        Sort::HeartbeatAge => {
            q.push("coalesce((extract(epoch FROM s.last_heartbeat_at) * 1000000)::bigint, 0)");
        }
    }
    q.push(" AS sort_key, ");
    push_derived_from(&mut q, judged, scope);
    push_selector(&mut q, &filter.selector);
    if let Some(v) = &filter.version {
        q.push(" AND c.desired_version = ").push_bind(v.clone());
    }
    if let Some(quiet) = filter.quiet_since {
        q.push(" AND coalesce(s.last_heartbeat_at, '-infinity') < ")
            .push_bind(quiet);
    }
    if let (Sort::Name, Some(a)) = (sort, after) {
        // Keyset on the primary key's order, so the index serves the page.
        q.push(" AND (c.tenant_id, c.name) > (")
            .push_bind(a.tenant.clone())
            .push(", ")
            .push_bind(a.name.clone())
            .push(")");
    }
    q.push(") t WHERE TRUE");
    if !filter.health.is_empty() {
        q.push(" AND t.health = ANY(")
            .push_bind(filter.health.clone())
            .push(")");
    }
    if !filter.connectivity.is_empty() {
        q.push(" AND t.connectivity = ANY(")
            .push_bind(filter.connectivity.clone())
            .push(")");
    }
    if let (Sort::Health | Sort::HeartbeatAge, Some(a)) = (sort, after) {
        q.push(" AND (t.sort_key, t.tenant_id, t.name) > (")
            .push_bind(a.key)
            .push(", ")
            .push_bind(a.tenant.clone())
            .push(", ")
            .push_bind(a.name.clone())
            .push(")");
    }
    let order = match sort {
        Sort::Name => "tenant_id, name",
        _ => "sort_key, tenant_id, name",
    };
    q.push(format_args!(" ORDER BY {order} LIMIT "))
        .push_bind(limit);
    q.push(format_args!(
        ") k, {CLUSTER_FROM} WHERE c.tenant_id = k.tenant_id AND c.name = k.name ORDER BY k.{}",
        order.replace(", ", ", k.")
    ));
    q.build_query_as().fetch_all(db).await
}

/// The age of the last heartbeat of every connected agent, p50/p90/p99 in
/// seconds, and how many: `(count, p50, p90, p99)`.
pub async fn heartbeat_age_percentiles(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<(i64, Option<f64>, Option<f64>, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY a),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY a),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY a)
         FROM (SELECT extract(epoch FROM ($1 - s.last_heartbeat_at))::float8 AS a
               FROM cluster_status s WHERE s.last_heartbeat_at > $2) x",
    )
    .bind(now)
    .bind(stale_before)
    .fetch_one(db)
    .await
}

/// Seconds from a generation being set to its first `Healthy` report, over
/// the generations that converged after `since`: `(count, p50, p90, p99)`.
pub async fn convergence_percentiles(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<(i64, Option<f64>, Option<f64>, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY d),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY d)
         FROM (SELECT greatest(extract(epoch FROM (converged_at - set_at)), 0)::float8 AS d
               FROM cluster_convergence WHERE converged_at > $1) x",
    )
    .bind(since)
    .fetch_one(db)
    .await
}

/// Agents per reported agent version (`None`: not reported).
pub async fn agent_versions(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT agent_version, count(*) FROM cluster_status GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .fetch_all(db)
    .await
}

/// Forgets convergences older than `before` (at most `limit` rows a call).
pub async fn prune_convergence(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM cluster_convergence WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM cluster_convergence WHERE converged_at < $1 LIMIT $2))",
    )
    .bind(before)
    .bind(limit)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}
