//! The reconciler's per-cluster bookkeeping (`cluster_reconcile`): when to
//! look again, leases, and what it has already told the tenant.

use chrono::{DateTime, Utc};
use meshfleet_model::PendingUpgrade;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Has the reconciler look at a cluster at `at` (or earlier, if it was due earlier).
pub async fn schedule(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    schedule_all(conn, tenant, &[cluster_id], at).await
}

/// [`schedule`] for many clusters in one statement.
pub async fn schedule_all(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_ids: &[Uuid],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cluster_reconcile SET next_check_at = LEAST(next_check_at, $3)
         WHERE tenant_id = $1 AND cluster_id = ANY($2)",
    )
    .bind(tenant)
    .bind(cluster_ids)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Has the reconciler look at every channel-following cluster now (after a
/// catalog change).
pub async fn schedule_channel_followers(
    db: impl PgExecutor<'_>,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE cluster_reconcile r SET next_check_at = $1
         FROM clusters c
         WHERE c.tenant_id = r.tenant_id AND c.id = r.cluster_id
           AND c.mesh -> 'upgrade' ->> 'mode' = 'automatic' AND r.next_check_at > $1",
    )
    .bind(at)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A cluster claimed for one reconcile.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub tenant_id: String,
    pub cluster_id: Uuid,
    pub attempts: i32,
}

/// Claims up to `limit` due clusters for `lease` (their next_check_at moves
/// to `now + lease`, so another replica takes them over if this one dies).
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT tenant_id, cluster_id FROM cluster_reconcile
             WHERE next_check_at <= $1
             ORDER BY next_check_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE cluster_reconcile r SET next_check_at = $2
         FROM due WHERE r.tenant_id = due.tenant_id AND r.cluster_id = due.cluster_id
         RETURNING r.tenant_id, r.cluster_id, r.attempts",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The reconciler's memory of a cluster, read under the cluster's lock.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Bookkeeping {
    pub pending_upgrade: Option<Json<PendingUpgrade>>,
    pub eos_notified_version: Option<String>,
    pub deadline_notified_generation: Option<i64>,
}

pub async fn bookkeeping(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Bookkeeping, sqlx::Error> {
    Ok(sqlx::query_as(
        "SELECT pending_upgrade, eos_notified_version, deadline_notified_generation
         FROM cluster_reconcile WHERE tenant_id = $1 AND cluster_id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(conn)
    .await?
    .unwrap_or_default())
}

/// [`bookkeeping`] of many clusters of one tenant (read under their locks);
/// a cluster without a row is missing from the map.
pub async fn bookkeeping_many(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Bookkeeping>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        cluster_id: Uuid,
        #[sqlx(flatten)]
        book: Bookkeeping,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT cluster_id, pending_upgrade, eos_notified_version, deadline_notified_generation
         FROM cluster_reconcile WHERE tenant_id = $1 AND cluster_id = ANY($2)",
    )
    .bind(tenant)
    .bind(cluster_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.cluster_id, r.book)).collect())
}

/// [`finish`] for many clusters of one tenant in one statement.
pub async fn finish_many(
    conn: &mut PgConnection,
    tenant: &str,
    done: &[(Uuid, Bookkeeping, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
    let pending: Vec<Option<Json<PendingUpgrade>>> =
        done.iter().map(|d| d.1.pending_upgrade.clone()).collect();
    let eos: Vec<Option<String>> = done
        .iter()
        .map(|d| d.1.eos_notified_version.clone())
        .collect();
    let deadline: Vec<Option<i64>> = done
        .iter()
        .map(|d| d.1.deadline_notified_generation)
        .collect();
    let next: Vec<DateTime<Utc>> = done.iter().map(|d| d.2).collect();
    sqlx::query(
        "UPDATE cluster_reconcile r SET pending_upgrade = u.pending_upgrade,
             eos_notified_version = u.eos, deadline_notified_generation = u.deadline,
             next_check_at = u.next, attempts = 0, last_error = NULL
         FROM unnest($2::uuid[], $3::jsonb[], $4::text[], $5::bigint[], $6::timestamptz[])
              AS u(cluster_id, pending_upgrade, eos, deadline, next)
         WHERE r.tenant_id = $1 AND r.cluster_id = u.cluster_id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&pending)
    .bind(&eos)
    .bind(&deadline)
    .bind(&next)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the outcome of one reconcile: what to remember and when to look again.
pub async fn finish(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
    book: &Bookkeeping,
    next_check_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cluster_reconcile SET pending_upgrade = $3, eos_notified_version = $4,
             deadline_notified_generation = $5, next_check_at = $6, attempts = 0, last_error = NULL
         WHERE tenant_id = $1 AND cluster_id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(&book.pending_upgrade)
    .bind(&book.eos_notified_version)
    .bind(book.deadline_notified_generation)
    .bind(next_check_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Error policy: remember the failure and look again after `retry_at` —
/// unless the cluster was scheduled again meanwhile (its `next_check_at` is no
/// longer the claim's lease), which then stands.
pub async fn failed(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
    error: &str,
    lease_until: DateTime<Utc>,
    retry_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cluster_reconcile SET attempts = attempts + 1, last_error = $3,
             next_check_at = CASE WHEN next_check_at = $4 THEN $5 ELSE next_check_at END
         WHERE tenant_id = $1 AND cluster_id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(error)
    .bind(lease_until)
    .bind(retry_at)
    .execute(db)
    .await?;
    Ok(())
}
