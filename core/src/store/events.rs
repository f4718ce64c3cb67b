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
    insert_events(conn, tenant, &[event]).await
}

/// Appends events in one statement, in order.
pub async fn insert_events(
    conn: &mut PgConnection,
    tenant: &str,
    events: &[NewEvent<'_>],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let names: Vec<Option<&str>> = events.iter().map(|e| e.cluster_name).collect();
    let ids: Vec<Option<Uuid>> = events.iter().map(|e| e.cluster_id).collect();
    let actors: Vec<&str> = events.iter().map(|e| e.actor).collect();
    let actions: Vec<&str> = events.iter().map(|e| e.action).collect();
    let generations: Vec<Option<i64>> = events.iter().map(|e| e.generation).collect();
    let details: Vec<Json<&serde_json::Value>> = events.iter().map(|e| Json(&e.detail)).collect();
    sqlx::query(
        "INSERT INTO events (tenant_id, cluster_name, cluster_id, actor, action, generation, detail)
         SELECT $1, e.cluster_name, e.cluster_id, e.actor, e.action, e.generation, e.detail
         FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::jsonb[])
              WITH ORDINALITY AS e(cluster_name, cluster_id, actor, action, generation, detail, n)
         ORDER BY e.n",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&ids)
    .bind(&actors)
    .bind(&actions)
    .bind(&generations)
    .bind(&details)
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
