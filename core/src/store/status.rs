//! Reported status: the last report per cluster and its bounded history.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One heartbeat of a batch.
#[derive(Debug, Clone)]
pub struct Beat {
    pub tenant: String,
    pub cluster_id: Uuid,
    pub report_hash: Vec<u8>,
    pub at: DateTime<Utc>,
}

/// The cheap heartbeat, for many reports in one statement: only when a
/// report is unchanged and the health stored with it was derived against the
/// cluster's current generation, and only while the agent is recorded as
/// Connected (the first heartbeat after a gap takes the full path, which
/// records its return). Returns the (tenant, cluster, report hash) of those
/// recorded; the others need the full write. Rows are locked in key order, so two batches (two api
/// replicas) cannot deadlock; the reconciler's sweep skips locked rows.
pub async fn heartbeats_if_unchanged(
    db: impl PgExecutor<'_>,
    beats: &[Beat],
) -> Result<Vec<(String, Uuid, Vec<u8>)>, sqlx::Error> {
    let tenants: Vec<&str> = beats.iter().map(|b| b.tenant.as_str()).collect();
    let ids: Vec<Uuid> = beats.iter().map(|b| b.cluster_id).collect();
    let hashes: Vec<&[u8]> = beats.iter().map(|b| b.report_hash.as_slice()).collect();
    let ats: Vec<DateTime<Utc>> = beats.iter().map(|b| b.at).collect();
    sqlx::query_as(
        "WITH b AS (
             SELECT DISTINCT ON (tenant_id, cluster_id) *
             FROM unnest($1::text[], $2::uuid[], $3::bytea[], $4::timestamptz[])
                  AS b(tenant_id, cluster_id, report_hash, at)
             ORDER BY tenant_id, cluster_id, at DESC),
         due AS (
             SELECT s.tenant_id, s.cluster_id, b.at
             FROM cluster_status s
             JOIN b ON b.tenant_id = s.tenant_id AND b.cluster_id = s.cluster_id
                   AND b.report_hash = s.report_hash
             JOIN clusters c ON c.tenant_id = s.tenant_id AND c.id = s.cluster_id
                   AND c.generation = s.health_generation
             WHERE s.connectivity = 'Connected'
             ORDER BY s.tenant_id, s.cluster_id
             FOR UPDATE OF s)
         UPDATE cluster_status s SET last_heartbeat_at = GREATEST(s.last_heartbeat_at, due.at)
         FROM due
         WHERE s.tenant_id = due.tenant_id AND s.cluster_id = due.cluster_id
           AND s.connectivity = 'Connected'
         RETURNING s.tenant_id, s.cluster_id, s.report_hash",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&hashes)
    .bind(&ats)
    .fetch_all(db)
    .await
}

/// Heartbeats answered from an api replica's memory (the report was known
/// to be unchanged), written once per flush: each moves its cluster's
/// `last_heartbeat_at` forward, only while the agent is recorded as Connected
/// (a cluster marked Stale or Disconnected meanwhile comes back through the
/// full write). Rows are locked in key order like [`heartbeats_if_unchanged`].
/// Returns how many clusters were written.
pub async fn flush_heartbeats(
    db: impl PgExecutor<'_>,
    tenants: &[String],
    cluster_ids: &[Uuid],
    ats: &[DateTime<Utc>],
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "WITH b AS (
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[])
                  AS b(tenant_id, cluster_id, at)),
         due AS (
             SELECT s.tenant_id, s.cluster_id, b.at
             FROM cluster_status s
             JOIN b ON b.tenant_id = s.tenant_id AND b.cluster_id = s.cluster_id
             WHERE s.connectivity = 'Connected' AND s.last_heartbeat_at < b.at
             ORDER BY s.tenant_id, s.cluster_id
             FOR UPDATE OF s)
         UPDATE cluster_status s SET last_heartbeat_at = GREATEST(s.last_heartbeat_at, due.at)
         FROM due
         WHERE s.tenant_id = due.tenant_id AND s.cluster_id = due.cluster_id
           AND s.connectivity = 'Connected'",
    )
    .bind(tenants)
    .bind(cluster_ids)
    .bind(ats)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// What a status write needs to know of the cluster, read under its lock.
#[derive(Debug)]
pub struct StatusLock {
    pub generation: i64,
    /// When `generation` was set.
    pub generation_changed_at: DateTime<Utc>,
}

/// Locks the cluster for a status write (every writer of a changed report
/// holds it, so the status the write then reads is what the previous holder
/// committed).
pub async fn lock_for_status(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<StatusLock>, sqlx::Error> {
    let generation: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT generation, generation_changed_at FROM clusters
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(
        generation.map(|(generation, generation_changed_at)| StatusLock {
            generation,
            generation_changed_at,
        }),
    )
}

/// The status a changed report replaced (each `None`: never reported).
#[derive(Debug, sqlx::FromRow)]
pub struct PreviousStatus {
    pub health: Option<String>,
    pub connectivity: Option<String>,
}

pub struct StatusWrite<'a> {
    pub report: &'a serde_json::Value,
    pub report_hash: &'a [u8],
    pub health: &'a str,
    pub health_generation: i64,
    pub observed_generation: Option<i64>,
    /// Distinct observed versions of the components with a desired version.
    pub observed_versions: &'a [String],
    pub agent_version: Option<&'a str>,
    /// `Some(when the generation was set)`: this is the first `Healthy`
    /// report of `health_generation`, which converged (the SLI).
    pub converged_since: Option<DateTime<Utc>>,
}

/// Everything a changed report writes, in one statement (one round trip;
/// the report path's statements were most of the database's work in a fleet
/// rollout):
/// - the report (`cluster_reports`) and its summary (`cluster_status`);
/// - its history entry, keeping the newest `keep`;
/// - the generation's convergence, when `converged_since` says it converged
///   (later reports of the same generation change nothing);
/// - the reconciler's next look at the cluster, now, when a report can
///   change what it decides: a deletion waiting for the uninstall, or a
///   channel follower waiting for convergence before its next minor
///   (rollouts are woken by their own hint; deadlines are scheduled by time);
/// - a hint to reconcilers that the agent reported (`meshfleet_rollout`,
///   delivered at commit; payload `tenant/cluster-id`, see
///   [`crate::notify::parse_cluster_payload`]): cheaper than finding out here
///   whether the cluster is in flight in a rollout; the engine looks hinted
///   clusters up in batches and a rollout's tick looks at those only.
///
/// The parts of one statement share its snapshot: the history trim does not
/// see the row inserted beside it, so it keeps `keep - 1` older ones.
pub async fn write_changed_report(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
    w: StatusWrite<'_>,
    keep: i64,
    now: DateTime<Utc>,
) -> Result<PreviousStatus, sqlx::Error> {
    // $5 is the observed generation and $6 the health generation: the column
    // order of the table, not of the struct. Every part of the statement
    // sees the rows as they were when it started: `previous` reads the
    // status the write replaces (under the cluster's lock, taken by the
    // statement before).
    sqlx::query_as(
        "WITH previous AS (
             SELECT health, connectivity FROM cluster_status
             WHERE tenant_id = $1 AND cluster_id = $2
         ), status AS (
             INSERT INTO cluster_status (tenant_id, cluster_id, report_hash, health, health_generation,
                                         observed_generation, last_heartbeat_at, changed_at, connectivity,
                                         observed_versions, agent_version)
             VALUES ($1, $2, $3, $4, $6, $5, $7, $7, 'Connected', $8, $9)
             ON CONFLICT (tenant_id, cluster_id) DO UPDATE SET
                observed_versions = EXCLUDED.observed_versions, agent_version = EXCLUDED.agent_version,
                report_hash = EXCLUDED.report_hash, health = EXCLUDED.health,
                health_generation = EXCLUDED.health_generation,
                observed_generation = EXCLUDED.observed_generation,
                last_heartbeat_at = $7, changed_at = $7, connectivity = 'Connected'
         ), report AS (
             INSERT INTO cluster_reports (tenant_id, cluster_id, report) VALUES ($1, $2, $10)
             ON CONFLICT (tenant_id, cluster_id) DO UPDATE SET report = EXCLUDED.report
         ), history AS (
             INSERT INTO cluster_status_history (tenant_id, cluster_id, health, observed_generation, report, at)
             VALUES ($1, $2, $4, $5, $10, $7)
         ), trimmed AS (
             DELETE FROM cluster_status_history
             WHERE tenant_id = $1 AND cluster_id = $2 AND id <= (
                 SELECT id FROM cluster_status_history WHERE tenant_id = $1 AND cluster_id = $2
                 ORDER BY id DESC OFFSET $11 LIMIT 1)
         ), converged AS (
             INSERT INTO cluster_convergence (tenant_id, cluster_id, generation, set_at, converged_at)
             SELECT $1, $2, $6, $12, $7 WHERE $12 IS NOT NULL
             ON CONFLICT DO NOTHING
         ), scheduled AS (
             UPDATE cluster_reconcile r SET next_check_at = $7
             FROM clusters c
             WHERE r.tenant_id = $1 AND r.cluster_id = $2 AND r.next_check_at > $7
               AND c.tenant_id = r.tenant_id AND c.id = r.cluster_id
               AND (c.deletion_operation IS NOT NULL OR c.mesh -> 'upgrade' ->> 'mode' = 'automatic')
         )
         SELECT (SELECT health FROM previous) AS health,
                (SELECT connectivity FROM previous) AS connectivity
         FROM (SELECT pg_notify('meshfleet_rollout', $1 || '/' || $2::text)) AS hint",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(w.report_hash)
    .bind(w.health)
    .bind(w.observed_generation)
    .bind(w.health_generation)
    .bind(now)
    .bind(w.observed_versions)
    .bind(w.agent_version)
    .bind(Json(w.report))
    .bind((keep - 1).max(0))
    .bind(w.converged_since)
    .fetch_one(&mut *conn)
    .await
}

/// A connectivity transition recorded by [`sweep_connectivity`].
#[derive(Debug, sqlx::FromRow)]
pub struct Transition {
    pub tenant_id: String,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub from_state: String,
    pub to_state: String,
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Records, in one statement, the clusters whose agents went quiet: `Stale`
/// past `stale_before`, `Disconnected` past `disconnected_before` (at most
/// `limit` of them; rows a heartbeat holds are skipped and seen next time).
/// A heartbeat that arrived meanwhile keeps its row out (the condition is
/// checked again on the locked row). One scan of `cluster_status` instead of
/// a reconcile per cluster.
pub async fn sweep_connectivity(
    conn: &mut PgConnection,
    stale_before: DateTime<Utc>,
    disconnected_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Transition>, sqlx::Error> {
    sqlx::query_as(
        "WITH quiet AS (
             SELECT s.tenant_id, s.cluster_id, s.connectivity AS old,
                    CASE WHEN s.last_heartbeat_at < $2 THEN 'Disconnected' ELSE 'Stale' END AS new
             FROM cluster_status s
             WHERE s.last_heartbeat_at < $1
               AND s.connectivity <> CASE WHEN s.last_heartbeat_at < $2 THEN 'Disconnected' ELSE 'Stale' END
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE cluster_status s SET connectivity = q.new
         FROM quiet q, clusters c
         WHERE s.tenant_id = q.tenant_id AND s.cluster_id = q.cluster_id
           AND c.tenant_id = q.tenant_id AND c.id = q.cluster_id
         RETURNING s.tenant_id, s.cluster_id, c.name AS cluster_name, q.old AS from_state, q.new AS to_state,
                   s.last_heartbeat_at",
    )
    .bind(stale_before)
    .bind(disconnected_before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[derive(Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub health: String,
    pub observed_generation: Option<i64>,
    pub report: Json<meshfleet_model::StatusReport>,
}

/// A page of a cluster's status history, newest first, older than `before`.
pub async fn list_status_history(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, health, observed_generation, report FROM cluster_status_history
         WHERE tenant_id = $1 AND cluster_id = $2 AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
