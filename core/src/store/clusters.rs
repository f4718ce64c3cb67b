//! Clusters: the desired state rows.

use chrono::{DateTime, NaiveDate, Utc};
use meshfleet_model::{Labels, MeshSpec, PendingUpgrade, StatusReport};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::desired::DesiredRow;
use crate::domain::selector::Requirement;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClusterRow {
    pub name: String,
    pub id: Uuid,
    pub labels: Json<Labels>,
    pub mesh: Json<MeshSpec>,
    pub generation: i64,
    pub resource_version: i64,
    pub desired_version: String,
    pub version_history: Vec<String>,
    pub generation_changed_at: DateTime<Utc>,
    /// Set while the cluster is being deleted.
    pub deletion_operation: Option<Uuid>,
    /// The agent's last report, if any (from `cluster_status`).
    pub report: Option<Json<StatusReport>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// The connectivity last recorded for the agent (`None`: never reported).
    pub recorded_connectivity: Option<String>,
    /// The upgrade the reconciler has decided on but not started.
    pub pending_upgrade: Option<Json<PendingUpgrade>>,
    /// End of support of `desired_version`, from the catalog.
    pub end_of_support: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClusterRow {
    /// Whether an agent has ever reported for this cluster.
    pub fn has_reported(&self) -> bool {
        self.report.is_some()
    }
}

/// The columns of a [`ClusterRow`], from [`CLUSTER_FROM`].
pub(crate) const CLUSTER_COLUMNS: &str =
    "c.name, c.id, c.labels, c.mesh, c.generation, c.resource_version,
    c.desired_version, c.version_history, c.generation_changed_at, c.deletion_operation,
    rep.report, s.last_heartbeat_at, s.connectivity AS recorded_connectivity,
    r.pending_upgrade, rel.end_of_support, c.created_at, c.updated_at";
// What [`CLUSTER_COLUMNS`] joins to a cluster row named `c`.
macro_rules! cluster_joins {
    () => {
        "
    LEFT JOIN cluster_status s ON s.tenant_id = c.tenant_id AND s.cluster_id = c.id
    LEFT JOIN cluster_reports rep ON rep.tenant_id = c.tenant_id AND rep.cluster_id = c.id
    LEFT JOIN cluster_reconcile r ON r.tenant_id = c.tenant_id AND r.cluster_id = c.id
    LEFT JOIN releases rel ON rel.version = c.desired_version"
    };
}
pub(crate) const CLUSTER_FROM: &str = concat!("clusters c", cluster_joins!());
/// The same joins, after a row named `c` (a CTE's).
const CLUSTER_JOINS: &str = cluster_joins!();

pub async fn get_cluster(
    db: impl PgExecutor<'_>,
    tenant: &str,
    name: &str,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM} WHERE c.tenant_id = $1 AND c.name = $2"
    )))
    .bind(tenant)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// The id of a tenant's cluster by name.
pub async fn cluster_id_by_name(
    db: impl PgExecutor<'_>,
    tenant: &str,
    name: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM clusters WHERE tenant_id = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .fetch_optional(db)
        .await
}

/// Reads a cluster and locks its row until the transaction ends.
///
/// Two statements on purpose: under READ COMMITTED a `SELECT … JOIN … FOR
/// UPDATE OF c` that waited for the lock re-reads `c` but keeps the joined
/// rows (status, bookkeeping) of its older snapshot; the read after the lock
/// is held sees what the previous holder committed.
pub async fn lock_cluster(
    conn: &mut PgConnection,
    tenant: &str,
    name: &str,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM clusters WHERE tenant_id = $1 AND name = $2 FOR UPDATE")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    match locked {
        Some(_) => get_cluster(&mut *conn, tenant, name).await,
        None => Ok(None),
    }
}

/// Reads a cluster by id and locks its row until the transaction ends (two
/// statements, as [`lock_cluster`]).
pub async fn lock_cluster_by_id(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    let locked: Option<String> =
        sqlx::query_scalar("SELECT name FROM clusters WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    match locked {
        Some(name) => get_cluster(&mut *conn, tenant, &name).await,
        None => Ok(None),
    }
}

/// Reads clusters by id and locks their rows until the transaction ends
/// (locked in id order, so two batches cannot deadlock; then read, as
/// [`lock_cluster`]). Ids of deleted clusters are left out.
pub async fn lock_clusters_by_ids(
    conn: &mut PgConnection,
    tenant: &str,
    ids: &[Uuid],
) -> Result<Vec<ClusterRow>, sqlx::Error> {
    sqlx::query(
        "SELECT 1 FROM clusters WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM} WHERE c.tenant_id = $1 AND c.id = ANY($2)"
    )))
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
}

/// Inserts a new cluster (and its reconciler bookkeeping); `None` when one
/// of that name exists already.
pub async fn insert_cluster(
    conn: &mut PgConnection,
    tenant: &str,
    name: &str,
    labels: &Labels,
    mesh: &MeshSpec,
    desired_version: &str,
    now: DateTime<Utc>,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO clusters (tenant_id, name, id, labels, mesh, desired_version,
                               generation_changed_at, created_at, updated_at, change_traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, $8)
         ON CONFLICT (tenant_id, name) DO NOTHING
         RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(Uuid::now_v7())
    .bind(Json(labels))
    .bind(Json(mesh))
    .bind(desired_version)
    .bind(now)
    .bind(meshfleet_telemetry::current_traceparent())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO cluster_reconcile (tenant_id, cluster_id, next_check_at) VALUES ($1, $2, $3)",
    )
    .bind(tenant)
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    get_cluster(&mut *conn, tenant, name).await
}

pub struct ClusterUpdate<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
    pub mesh: &'a MeshSpec,
    pub generation: i64,
    pub desired_version: &'a str,
    pub version_history: &'a [String],
}

/// Writes locked clusters in one statement; bumps their resource versions
/// (and restarts the progress deadline where the generation changes).
/// Returns the rows as written, in no particular order.
pub async fn update_clusters(
    conn: &mut PgConnection,
    tenant: &str,
    updates: &[ClusterUpdate<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<ClusterRow>, sqlx::Error> {
    let names: Vec<&str> = updates.iter().map(|u| u.name).collect();
    let labels: Vec<Json<&Labels>> = updates.iter().map(|u| Json(u.labels)).collect();
    let meshes: Vec<Json<&MeshSpec>> = updates.iter().map(|u| Json(u.mesh)).collect();
    let generations: Vec<i64> = updates.iter().map(|u| u.generation).collect();
    let versions: Vec<&str> = updates.iter().map(|u| u.desired_version).collect();
    // text[][] must be rectangular: each history travels as a JSON array.
    let histories: Vec<Json<&[String]>> = updates.iter().map(|u| Json(u.version_history)).collect();
    // One statement: the update, then the rows as written joined with the
    // rest of their row (the joined tables as of the statement's start,
    // which this statement does not change).
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH c AS (
             UPDATE clusters c SET labels = u.labels, mesh = u.mesh,
                 generation_changed_at = CASE WHEN c.generation = u.generation
                                              THEN c.generation_changed_at ELSE $8 END,
                 generation = u.generation, desired_version = u.desired_version,
                 version_history = ARRAY(SELECT jsonb_array_elements_text(u.history)),
                 resource_version = c.resource_version + 1, updated_at = $8,
                 change_traceparent = CASE WHEN c.generation = u.generation
                                           THEN c.change_traceparent ELSE $9 END
             FROM unnest($2::text[], $3::jsonb[], $4::jsonb[], $5::bigint[], $6::text[], $7::jsonb[])
                  AS u(name, labels, mesh, generation, desired_version, history)
             WHERE c.tenant_id = $1 AND c.name = u.name
             RETURNING c.*)
         SELECT {CLUSTER_COLUMNS} FROM c {CLUSTER_JOINS}"
    )))
    .bind(tenant)
    .bind(&names)
    .bind(&labels)
    .bind(&meshes)
    .bind(&generations)
    .bind(&versions)
    .bind(&histories)
    .bind(now)
    .bind(meshfleet_telemetry::current_traceparent())
    .fetch_all(&mut *conn)
    .await
}

/// Marks a locked cluster as being deleted by `operation`.
pub async fn set_deletion_operation(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
    operation: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE clusters SET deletion_operation = $3, resource_version = resource_version + 1
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(operation)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tenant's clusters as counted by `tenant_usage` (kept by triggers on
/// `clusters`); in a transaction that inserted one, the row is locked until
/// commit, so concurrent creations of one tenant count one after another.
pub async fn tenant_cluster_count(
    conn: &mut PgConnection,
    tenant: &str,
) -> Result<i64, sqlx::Error> {
    let n: Option<i64> =
        sqlx::query_scalar("SELECT clusters FROM tenant_usage WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(n.unwrap_or(0))
}

pub async fn delete_cluster(
    conn: &mut PgConnection,
    tenant: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM clusters WHERE tenant_id = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn desired_state(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<DesiredRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.name, c.id, c.mesh, c.generation, c.desired_version, r.images,
                c.change_traceparent, r.bundle_digest, b.origin AS bundle_origin
         FROM clusters c JOIN releases r ON r.version = c.desired_version
         LEFT JOIN release_bundles b ON b.digest = r.bundle_digest
         WHERE c.tenant_id = $1 AND c.id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(db)
    .await
}

/// A cluster as a new rollout sees it, locked until the transaction ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutCandidate {
    pub id: Uuid,
    pub name: String,
    pub labels: Json<Labels>,
    pub mesh: Json<MeshSpec>,
    pub desired_version: String,
    pub version_history: Vec<String>,
    pub deletion_operation: Option<Uuid>,
}

/// Every cluster of a tenant matching `selector`, by name, locked (so that
/// two rollouts created at once cannot both take a cluster).
pub async fn lock_matching(
    conn: &mut PgConnection,
    tenant: &str,
    selector: &[Requirement],
) -> Result<Vec<RolloutCandidate>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT c.id, c.name, c.labels, c.mesh, c.desired_version, c.version_history,
                c.deletion_operation FROM clusters c WHERE c.tenant_id = ",
    );
    q.push_bind(tenant);
    push_selector(&mut q, selector);
    q.push(" ORDER BY c.name FOR UPDATE");
    q.build_query_as().fetch_all(conn).await
}

/// Appends a label selector's conditions on `c.labels`.
pub(crate) fn push_selector(q: &mut QueryBuilder<Postgres>, selector: &[Requirement]) {
    for req in selector {
        match req {
            Requirement::Eq(k, v) => {
                q.push(" AND c.labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ")
                    .push_bind(v.clone());
            }
            Requirement::NotEq(k, v) => {
                q.push(" AND (c.labels ->> ")
                    .push_bind(k.clone())
                    .push(") IS DISTINCT FROM ")
                    .push_bind(v.clone());
            }
            Requirement::In(k, vs) => {
                q.push(" AND c.labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ANY(")
                    .push_bind(vs.clone())
                    .push(")");
            }
            Requirement::NotIn(k, vs) => {
                q.push(" AND NOT coalesce(c.labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ANY(")
                    .push_bind(vs.clone())
                    .push("), false)");
            }
            Requirement::Exists(k) => {
                q.push(" AND c.labels ? ").push_bind(k.clone());
            }
            Requirement::NotExists(k) => {
                q.push(" AND NOT c.labels ? ").push_bind(k.clone());
            }
        }
    }
}
