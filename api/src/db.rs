//! All SQL of the api crate. Every query on tenant data takes the tenant id
//! and has it in its `WHERE` clause (and in the primary key it uses).

use chrono::{DateTime, NaiveDate, Utc};
use meshfleet_model::{Channel, ComponentImages, Event, Labels, MeshSpec, Release, ReleaseInput};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::selector::Requirement;
use crate::validation::{Catalog, CatalogEntry, Version};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

// ---------------------------------------------------------------- releases

#[derive(sqlx::FromRow)]
struct ReleaseRow {
    version: String,
    channels: Vec<String>,
    released_at: NaiveDate,
    end_of_support: Option<NaiveDate>,
    retired: bool,
    images: Json<ComponentImages>,
}

impl From<ReleaseRow> for Release {
    fn from(r: ReleaseRow) -> Release {
        Release {
            version: r.version,
            channels: r
                .channels
                .iter()
                .filter_map(|c| Channel::parse(c))
                .collect(),
            released_at: r.released_at,
            end_of_support: r.end_of_support,
            retired: r.retired,
            images: r.images.0,
        }
    }
}

pub async fn list_releases(db: impl PgExecutor<'_>) -> Result<Vec<Release>, sqlx::Error> {
    let rows: Vec<ReleaseRow> = sqlx::query_as(
        "SELECT version, channels, released_at, end_of_support, retired, images
         FROM releases ORDER BY major DESC, minor DESC, patch DESC",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Release::from).collect())
}

pub async fn load_catalog(db: impl PgExecutor<'_>) -> Result<Catalog, sqlx::Error> {
    let rows: Vec<(String, Vec<String>, bool)> =
        sqlx::query_as("SELECT version, channels, retired FROM releases")
            .fetch_all(db)
            .await?;
    let entries = rows
        .into_iter()
        .filter_map(|(v, channels, retired)| {
            Some(CatalogEntry {
                version: Version::parse(&v)?,
                channels: channels.iter().filter_map(|c| Channel::parse(c)).collect(),
                retired,
            })
        })
        .collect();
    Ok(Catalog { entries })
}

/// The images of a release, locking it for the rest of the transaction.
pub async fn lock_release_images(
    tx: &mut Transaction<'_, Postgres>,
    version: Version,
) -> Result<Option<ComponentImages>, sqlx::Error> {
    let row: Option<Json<ComponentImages>> =
        sqlx::query_scalar("SELECT images FROM releases WHERE version = $1 FOR UPDATE")
            .bind(version.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|j| j.0))
}

/// Inserts or replaces a release; returns the stored release and whether it was created.
pub async fn upsert_release(
    tx: &mut Transaction<'_, Postgres>,
    version: Version,
    input: &ReleaseInput,
    images: &ComponentImages,
) -> Result<(Release, bool), sqlx::Error> {
    let mut channels: Vec<&str> = input.channels.iter().map(|c| c.as_str()).collect();
    channels.sort();
    channels.dedup();
    let (row, created): (ReleaseRow, bool) = {
        let row: (String, Vec<String>, NaiveDate, Option<NaiveDate>, bool, Json<ComponentImages>, bool) =
            sqlx::query_as(
                "INSERT INTO releases (version, major, minor, patch, channels, released_at, end_of_support, retired, images)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (version) DO UPDATE SET
                    channels = EXCLUDED.channels, released_at = EXCLUDED.released_at,
                    end_of_support = EXCLUDED.end_of_support, retired = EXCLUDED.retired,
                    images = EXCLUDED.images, updated_at = now()
                 RETURNING version, channels, released_at, end_of_support, retired, images, (xmax = 0) AS created",
            )
            .bind(version.to_string())
            .bind(version.major as i32)
            .bind(version.minor as i32)
            .bind(version.patch as i32)
            .bind(&channels)
            .bind(input.released_at)
            .bind(input.end_of_support)
            .bind(input.retired)
            .bind(Json(images))
            .fetch_one(&mut **tx)
            .await?;
        (
            ReleaseRow {
                version: row.0,
                channels: row.1,
                released_at: row.2,
                end_of_support: row.3,
                retired: row.4,
                images: row.5,
            },
            row.6,
        )
    };
    Ok((row.into(), created))
}

// ---------------------------------------------------------------- clusters

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
    /// The agent's last report, if any (from `cluster_status`).
    pub report: Option<Json<serde_json::Value>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of a [`ClusterRow`], from `clusters c LEFT JOIN cluster_status s`.
const CLUSTER_COLUMNS: &str = "c.name, c.id, c.labels, c.mesh, c.generation, c.resource_version,
    c.desired_version, c.version_history, s.report, s.last_heartbeat_at, c.created_at, c.updated_at";
const CLUSTER_FROM: &str =
    "clusters c LEFT JOIN cluster_status s ON s.tenant_id = c.tenant_id AND s.cluster_id = c.id";

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
pub async fn lock_cluster(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    name: &str,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM} WHERE c.tenant_id = $1 AND c.name = $2 FOR UPDATE OF c"
    )))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
}

/// Inserts a new cluster; `None` when one of that name exists already.
pub async fn insert_cluster(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    name: &str,
    labels: &Labels,
    mesh: &MeshSpec,
    desired_version: &str,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO clusters (tenant_id, name, id, labels, mesh, desired_version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, name) DO NOTHING
         RETURNING name, id, labels, mesh, generation, resource_version, desired_version, version_history,
                   NULL::jsonb AS report, NULL::timestamptz AS last_heartbeat_at, created_at, updated_at"
    )
    .bind(tenant)
    .bind(name)
    .bind(Uuid::now_v7())
    .bind(Json(labels))
    .bind(Json(mesh))
    .bind(desired_version)
    .fetch_optional(&mut **tx)
    .await
}

pub struct ClusterUpdate<'a> {
    pub labels: &'a Labels,
    pub mesh: &'a MeshSpec,
    pub generation: i64,
    pub desired_version: &'a str,
    pub version_history: &'a [String],
}

/// Writes a locked cluster; bumps its resource version.
pub async fn update_cluster(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    name: &str,
    update: ClusterUpdate<'_>,
) -> Result<ClusterRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH c AS (
             UPDATE clusters SET labels = $3, mesh = $4, generation = $5, desired_version = $6,
                 version_history = $7, resource_version = resource_version + 1, updated_at = now()
             WHERE tenant_id = $1 AND name = $2
             RETURNING *)
         SELECT {CLUSTER_COLUMNS} FROM c
         LEFT JOIN cluster_status s ON s.tenant_id = c.tenant_id AND s.cluster_id = c.id"
    )))
    .bind(tenant)
    .bind(name)
    .bind(Json(update.labels))
    .bind(Json(update.mesh))
    .bind(update.generation)
    .bind(update.desired_version)
    .bind(update.version_history)
    .fetch_one(&mut **tx)
    .await
}

pub async fn delete_cluster(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM clusters WHERE tenant_id = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A page of a tenant's clusters by name, after `after`, matching `selector`.
pub async fn list_clusters(
    db: impl PgExecutor<'_>,
    tenant: &str,
    selector: &[Requirement],
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ClusterRow>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM} WHERE c.tenant_id = "
    ));
    q.push_bind(tenant);
    if let Some(after) = after {
        q.push(" AND c.name > ").push_bind(after);
    }
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
    q.push(" ORDER BY c.name LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(db).await
}

// ---------------------------------------------------------------- events

pub struct NewEvent<'a> {
    pub cluster_name: Option<&'a str>,
    pub cluster_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub generation: Option<i64>,
    pub detail: serde_json::Value,
}

pub async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    event: NewEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (tenant_id, cluster_name, cluster_id, actor, action, generation, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(event.cluster_name)
    .bind(event.cluster_id)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.generation)
    .bind(Json(event.detail))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    cluster_name: Option<String>,
    cluster_id: Option<Uuid>,
    actor: String,
    action: String,
    generation: Option<i64>,
    detail: Json<serde_json::Value>,
    at: DateTime<Utc>,
}

/// A page of a tenant's events, newest first, older than `before`.
pub async fn list_events(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, cluster_name, cluster_id, actor, action, generation, detail, at
         FROM events
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR cluster_name = $2)
           AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC
         LIMIT $4",
    )
    .bind(tenant)
    .bind(cluster)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            id: r.id,
            cluster: r.cluster_name,
            cluster_id: r.cluster_id,
            actor: r.actor,
            action: r.action,
            generation: r.generation,
            at: r.at,
            detail: r.detail.0,
        })
        .collect())
}

// ---------------------------------------------------------------- agents

/// The name of a tenant's cluster by id, holding it against deletion until
/// the transaction ends (taken before the bootstrap token's row, in the same
/// order as a cluster deletion, so the two cannot deadlock).
pub async fn key_share_cluster(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM clusters WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE")
        .bind(tenant)
        .bind(cluster_id)
        .fetch_optional(&mut **tx)
        .await
}

pub async fn insert_bootstrap_token(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
    created_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bootstrap_tokens (tenant_id, cluster_id, token_hash, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(token_hash)
    .bind(expires_at)
    .bind(created_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Voids every unused bootstrap token of a cluster (on revocation and after a
/// registration: a leaked older manifest must not mint a new credential).
pub async fn void_bootstrap_tokens(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE bootstrap_tokens SET used_at = now()
         WHERE tenant_id = $1 AND cluster_id = $2 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(cluster_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a bootstrap token used; `false` when it is unknown, used or expired.
pub async fn consume_bootstrap_token(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
    token_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE bootstrap_tokens SET used_at = now()
         WHERE tenant_id = $1 AND cluster_id = $2 AND token_hash = $3
           AND used_at IS NULL AND expires_at > now()",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(token_hash)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Installs a cluster's credential, replacing any earlier one (and its grace).
pub async fn replace_credential(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
    credential_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_credentials (tenant_id, cluster_id, credential_hash, expires_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, cluster_id) DO UPDATE SET
            credential_hash = EXCLUDED.credential_hash, expires_at = EXCLUDED.expires_at,
            previous_hash = NULL, previous_valid_until = NULL, created_at = now()",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(credential_hash)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rotates a credential; the one presented (`current_hash`) stays valid until `grace_until`.
pub async fn rotate_credential(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
    current_hash: &[u8],
    new_hash: &[u8],
    expires_at: DateTime<Utc>,
    grace_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE agent_credentials SET previous_hash = $3, previous_valid_until = $6,
             credential_hash = $4, expires_at = $5, created_at = now()
         WHERE tenant_id = $1 AND cluster_id = $2 AND credential_hash = $3",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(current_hash)
    .bind(new_hash)
    .bind(expires_at)
    .bind(grace_until)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_credential(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM agent_credentials WHERE tenant_id = $1 AND cluster_id = $2")
            .bind(tenant)
            .bind(cluster_id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The cluster an agent credential is valid for (current, or previous within its grace).
pub async fn authenticate_agent(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
    credential_hash: &[u8],
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.name FROM agent_credentials a
         JOIN clusters c ON c.tenant_id = a.tenant_id AND c.id = a.cluster_id
         WHERE a.tenant_id = $1 AND a.cluster_id = $2
           AND ((a.credential_hash = $3 AND a.expires_at > now())
             OR (a.previous_hash = $3 AND a.previous_valid_until > now()))",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(credential_hash)
    .fetch_optional(db)
    .await
}

/// What the effective desired state is made of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesiredRow {
    pub name: String,
    pub id: Uuid,
    pub mesh: Json<MeshSpec>,
    pub generation: i64,
    pub desired_version: String,
    pub images: Json<ComponentImages>,
}

pub async fn desired_state(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<DesiredRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.name, c.id, c.mesh, c.generation, c.desired_version, r.images
         FROM clusters c JOIN releases r ON r.version = c.desired_version
         WHERE c.tenant_id = $1 AND c.id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(db)
    .await
}

/// The cheap heartbeat: only when the report is unchanged and the health
/// stored with it was derived against the cluster's current generation.
/// `false` means the full write is needed.
pub async fn heartbeat_if_unchanged(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
    report_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE cluster_status s SET last_heartbeat_at = now()
         FROM clusters c
         WHERE s.tenant_id = $1 AND s.cluster_id = $2 AND s.report_hash = $3
           AND c.tenant_id = s.tenant_id AND c.id = s.cluster_id AND c.generation = s.health_generation",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(report_hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the cluster for a status write; its generation and the last derived health.
pub async fn lock_for_status(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<(i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.generation, s.health FROM clusters c
         LEFT JOIN cluster_status s ON s.tenant_id = c.tenant_id AND s.cluster_id = c.id
         WHERE c.tenant_id = $1 AND c.id = $2
         FOR UPDATE OF c",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(&mut **tx)
    .await
}

pub struct StatusWrite<'a> {
    pub report: &'a serde_json::Value,
    pub report_hash: &'a [u8],
    pub health: &'a str,
    pub health_generation: i64,
    pub observed_generation: Option<i64>,
}

/// Stores a changed report and appends it to the history (keeping the newest `keep`).
pub async fn write_status(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    cluster_id: Uuid,
    w: StatusWrite<'_>,
    keep: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cluster_status (tenant_id, cluster_id, report, report_hash, health, health_generation,
                                     observed_generation, last_heartbeat_at, changed_at)
         VALUES ($1, $2, $3, $4, $5, $7, $6, now(), now())
         ON CONFLICT (tenant_id, cluster_id) DO UPDATE SET
            report = EXCLUDED.report, report_hash = EXCLUDED.report_hash, health = EXCLUDED.health,
            health_generation = EXCLUDED.health_generation,
            observed_generation = EXCLUDED.observed_generation,
            last_heartbeat_at = now(), changed_at = now()",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(Json(w.report))
    .bind(w.report_hash)
    .bind(w.health)
    .bind(w.observed_generation)
    .bind(w.health_generation)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO cluster_status_history (tenant_id, cluster_id, health, observed_generation, report)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(w.health)
    .bind(w.observed_generation)
    .bind(Json(w.report))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM cluster_status_history
         WHERE tenant_id = $1 AND cluster_id = $2 AND id <= (
             SELECT id FROM cluster_status_history WHERE tenant_id = $1 AND cluster_id = $2
             ORDER BY id DESC OFFSET $3 LIMIT 1)",
    )
    .bind(tenant)
    .bind(cluster_id)
    .bind(keep)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub health: String,
    pub observed_generation: Option<i64>,
    pub report: Json<serde_json::Value>,
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
