//! The append-only event log.

use chrono::{DateTime, Utc};
use meshfleet_model::Event;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub struct NewEvent<'a> {
    pub cluster_name: Option<&'a str>,
    pub cluster_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub generation: Option<i64>,
    pub detail: serde_json::Value,
}

pub async fn insert_event(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
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
