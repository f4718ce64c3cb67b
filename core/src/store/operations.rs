//! Operations: long-running work a tenant polls.

use chrono::{DateTime, Utc};
use meshfleet_model::{Operation, OperationStatus, Problem};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, sqlx::FromRow)]
struct OperationRow {
    id: Uuid,
    kind: String,
    status: String,
    target: String,
    error: Option<Json<Problem>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<OperationRow> for Operation {
    fn from(r: OperationRow) -> Operation {
        Operation {
            id: r.id,
            kind: r.kind,
            status: OperationStatus::parse(&r.status).unwrap_or(OperationStatus::Failed),
            target: r.target,
            created_at: r.created_at,
            updated_at: r.updated_at,
            error: r.error.map(|e| e.0),
        }
    }
}

pub async fn insert_operation(
    conn: &mut PgConnection,
    tenant: &str,
    kind: &str,
    target: &str,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO operations (tenant_id, id, kind, target, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(tenant)
    .bind(id)
    .bind(kind)
    .bind(target)
    .bind(created_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Ends a running operation; `false` when it had already ended.
pub async fn finish_operation(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
    status: OperationStatus,
    error: Option<&Problem>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operations SET status = $3, error = $4, updated_at = $5
         WHERE tenant_id = $1 AND id = $2 AND status = 'Running'",
    )
    .bind(tenant)
    .bind(id)
    .bind(status.as_str())
    .bind(error.map(Json))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_operation(
    db: impl PgExecutor<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Operation>, sqlx::Error> {
    let row: Option<OperationRow> = sqlx::query_as(
        "SELECT id, kind, status, target, error, created_at, updated_at
         FROM operations WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Operation::from))
}
