//! Bootstrap tokens and agent credentials.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The name of a tenant's cluster by id, holding it against deletion until
/// the transaction ends (taken before the bootstrap token's row, in the same
/// order as a cluster deletion, so the two cannot deadlock).
pub async fn key_share_cluster(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM clusters WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE")
        .bind(tenant)
        .bind(cluster_id)
        .fetch_optional(&mut *conn)
        .await
}

pub async fn insert_bootstrap_token(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Voids every unused bootstrap token of a cluster (on revocation and after a
/// registration: a leaked older manifest must not mint a new credential).
pub async fn void_bootstrap_tokens(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE bootstrap_tokens SET used_at = now()
         WHERE tenant_id = $1 AND cluster_id = $2 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(cluster_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a bootstrap token used; `false` when it is unknown, used or expired.
pub async fn consume_bootstrap_token(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Installs a cluster's credential, replacing any earlier one (and its grace).
pub async fn replace_credential(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rotates a credential; the one presented (`current_hash`) stays valid until `grace_until`.
pub async fn rotate_credential(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_credential(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM agent_credentials WHERE tenant_id = $1 AND cluster_id = $2")
            .bind(tenant)
            .bind(cluster_id)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The cluster an agent credential is valid for (current, or previous within
/// its grace), and until when.
pub async fn authenticate_agent(
    db: impl PgExecutor<'_>,
    tenant: &str,
    cluster_id: Uuid,
    credential_hash: &[u8],
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.name, CASE WHEN a.credential_hash = $3 THEN a.expires_at
                             ELSE a.previous_valid_until END
         FROM agent_credentials a
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

/// Whether an agent ever registered for this cluster (it holds a credential,
/// or has reported).
pub async fn has_agent(
    conn: &mut PgConnection,
    tenant: &str,
    cluster_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM agent_credentials WHERE tenant_id = $1 AND cluster_id = $2)
             OR EXISTS (SELECT 1 FROM cluster_status WHERE tenant_id = $1 AND cluster_id = $2)",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_one(conn)
    .await
}
