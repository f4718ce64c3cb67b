//! Creating and deleting clusters. A deletion of a cluster whose agent has
//! registered is two-phase: the desired state becomes `mode: disabled`, the
//! agent uninstalls and reports, and the reconciler then removes the record
//! ([`finish_deletion`]).

use chrono::{DateTime, Utc};
use meshfleet_model::{ClusterInput, MeshMode, OperationStatus};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Actor;
use super::spec::{stored_version, write};
use crate::domain::validation;
use crate::domain::version::Catalog;
use crate::error::{Error, Result};
use crate::store::clusters::{self, ClusterRow};
use crate::store::events::{self, NewEvent};
use crate::store::{agents, operations};

/// Creates a cluster; `None` when a cluster of that name appeared meanwhile.
/// With a `quota`, a tenant that would have more clusters than it gets a
/// conflict, and the caller's transaction must be rolled back.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "desired_state.create", skip_all, fields(cluster = name))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: &str,
    catalog: &Catalog,
    name: &str,
    input: &ClusterInput,
    actor: &Actor,
    now: DateTime<Utc>,
    quota: Option<u32>,
) -> Result<Option<ClusterRow>> {
    let version =
        validation::validate_cluster(name, input, catalog, None).map_err(Error::Invalid)?;
    let Some(row) = clusters::insert_cluster(
        conn,
        tenant,
        name,
        &input.labels,
        &input.mesh,
        &version.to_string(),
        now,
    )
    .await?
    else {
        return Ok(None);
    };
    if let Some(quota) = quota {
        // Counted after the insert: its trigger holds the tenant's usage row
        // until commit, so two creations cannot both take the last place.
        let count = clusters::tenant_cluster_count(conn, tenant).await?;
        if count > i64::from(quota) {
            return Err(Error::Conflict(format!(
                "tenant `{tenant}` has reached its quota of {quota} clusters; delete a cluster or ask the service's operator to raise the quota"
            )));
        }
    }
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: Some(name),
            cluster_id: Some(row.id),
            actor: &actor.name(),
            action: "cluster.created",
            generation: Some(row.generation),
            detail: json!({ "version": row.desired_version }),
        },
    )
    .await?;
    Ok(Some(row))
}

/// What a deletion request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The record is gone.
    Removed,
    /// The agent is uninstalling; poll this operation.
    Started(Uuid),
}

/// Deletes a locked cluster: at once when no agent ever registered or when
/// forced, otherwise by uninstalling first (idempotent while it runs).
pub async fn request_deletion(
    conn: &mut PgConnection,
    tenant: &str,
    row: ClusterRow,
    actor: &Actor,
    force: bool,
    now: DateTime<Utc>,
) -> Result<Deletion> {
    if force || !agents::has_agent(&mut *conn, tenant, row.id).await? {
        let detail = if force {
            json!({ "force": true })
        } else {
            json!({})
        };
        remove(conn, tenant, &row, actor, detail, now).await?;
        return Ok(Deletion::Removed);
    }
    if let Some(op) = row.deletion_operation {
        return Ok(Deletion::Started(op));
    }
    let op = operations::insert_operation(
        conn,
        tenant,
        "cluster.delete",
        &format!("/v1/clusters/{}", row.name),
        &actor.name(),
        now,
    )
    .await?;
    let mut mesh = row.mesh.0.clone();
    mesh.mode = MeshMode::Disabled;
    let version = stored_version(&row)?;
    let labels = row.labels.0.clone();
    let id = row.id;
    let name = row.name.clone();
    let row = write(
        conn,
        tenant,
        row,
        &labels,
        &mesh,
        version,
        actor,
        Some("deletion: uninstall the mesh"),
        now,
    )
    .await?;
    clusters::set_deletion_operation(conn, tenant, id, op).await?;
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: Some(&name),
            cluster_id: Some(id),
            actor: &actor.name(),
            action: "cluster.deletion_started",
            generation: Some(row.generation),
            detail: json!({ "operation": op }),
        },
    )
    .await?;
    Ok(Deletion::Started(op))
}

/// Removes a locked cluster's record and ends its deletion operation, if any.
pub async fn remove(
    conn: &mut PgConnection,
    tenant: &str,
    row: &ClusterRow,
    actor: &Actor,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    clusters::delete_cluster(conn, tenant, &row.name).await?;
    if let Some(op) = row.deletion_operation {
        operations::finish_operation(conn, tenant, op, OperationStatus::Succeeded, None, now)
            .await?;
    }
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: Some(&row.name),
            cluster_id: Some(row.id),
            actor: &actor.name(),
            action: "cluster.deleted",
            generation: Some(row.generation),
            detail,
        },
    )
    .await?;
    Ok(())
}
