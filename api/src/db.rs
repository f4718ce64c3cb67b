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
    pub status: Option<Json<serde_json::Value>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CLUSTER_COLUMNS: &str =
    "name, id, labels, mesh, generation, resource_version, desired_version,
    version_history, status, last_heartbeat_at, created_at, updated_at";

pub async fn get_cluster(
    db: impl PgExecutor<'_>,
    tenant: &str,
    name: &str,
) -> Result<Option<ClusterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND name = $2"
    )))
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
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND name = $2 FOR UPDATE"
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO clusters (tenant_id, name, id, labels, mesh, desired_version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, name) DO NOTHING
         RETURNING {CLUSTER_COLUMNS}"
    )))
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
        "UPDATE clusters SET labels = $3, mesh = $4, generation = $5, desired_version = $6,
             version_history = $7, resource_version = resource_version + 1, updated_at = now()
         WHERE tenant_id = $1 AND name = $2
         RETURNING {CLUSTER_COLUMNS}"
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
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = "
    ));
    q.push_bind(tenant);
    if let Some(after) = after {
        q.push(" AND name > ").push_bind(after);
    }
    for req in selector {
        match req {
            Requirement::Eq(k, v) => {
                q.push(" AND labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ")
                    .push_bind(v.clone());
            }
            Requirement::NotEq(k, v) => {
                q.push(" AND (labels ->> ")
                    .push_bind(k.clone())
                    .push(") IS DISTINCT FROM ")
                    .push_bind(v.clone());
            }
            Requirement::In(k, vs) => {
                q.push(" AND labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ANY(")
                    .push_bind(vs.clone())
                    .push(")");
            }
            Requirement::NotIn(k, vs) => {
                q.push(" AND NOT coalesce(labels ->> ")
                    .push_bind(k.clone())
                    .push(" = ANY(")
                    .push_bind(vs.clone())
                    .push("), false)");
            }
            Requirement::Exists(k) => {
                q.push(" AND labels ? ").push_bind(k.clone());
            }
            Requirement::NotExists(k) => {
                q.push(" AND NOT labels ? ").push_bind(k.clone());
            }
        }
    }
    q.push(" ORDER BY name LIMIT ").push_bind(limit);
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
