//! Changing a cluster's desired state. [`write`] is the one function that
//! does it, whoever asks: it bumps `generation` whenever what the agent
//! receives changes (mesh or version), records the version history for the
//! rollback rule, writes the event, and has the reconciler look again.

use chrono::{DateTime, Utc};
use meshfleet_model::{ClusterInput, FieldError, Labels, MeshSpec, UpgradeMode};
use serde_json::json;
use sqlx::PgConnection;

use super::Actor;
use crate::domain::validation::{self, Stored};
use crate::domain::version::{Catalog, Version, check_version_change};
use crate::error::{Error, Result};
use crate::store::clusters::{self, ClusterRow, ClusterUpdate};
use crate::store::events::{self, NewEvent};
use crate::store::reconcile;

/// The stored version of a row, parsed.
pub fn stored_version(row: &ClusterRow) -> Result<Version> {
    Version::parse(&row.desired_version).ok_or_else(|| {
        Error::Internal(format!(
            "stored version `{}` of cluster `{}` does not parse",
            row.desired_version, row.name
        ))
    })
}

/// Refuses changes to a cluster that is being deleted.
fn not_deleting(row: &ClusterRow) -> Result<()> {
    match row.deletion_operation {
        Some(op) => Err(Error::Conflict(format!(
            "cluster `{}` is being deleted (operation {op}); it can no longer change",
            row.name
        ))),
        None => Ok(()),
    }
}

/// A tenant's new body for a stored (locked) cluster: validated against the
/// catalog and the upgrade rules, then written. A no-op when nothing changed.
pub async fn change_spec(
    conn: &mut PgConnection,
    tenant: &str,
    catalog: &Catalog,
    row: ClusterRow,
    input: ClusterInput,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<ClusterRow> {
    if input.mesh.upgrade != row.mesh.0.upgrade
        && let Some((id, name, _)) =
            crate::store::rollouts::holding_rollout(&mut *conn, tenant, &[row.id]).await?
    {
        return Err(Error::Conflict(format!(
            "cluster `{}` is in rollout `{name}` ({id}), which decides its version; \
             change `mesh.upgrade` after the rollout ends, or cancel it",
            row.name
        )));
    }
    let stored = Stored {
        desired_version: stored_version(&row)?,
        upgrade: &row.mesh.0.upgrade,
        history: &row.version_history,
    };
    let version = validation::validate_cluster(&row.name, &input, catalog, Some(stored))
        .map_err(Error::Invalid)?;
    if input.labels == row.labels.0 && input.mesh == row.mesh.0 {
        return Ok(row);
    }
    not_deleting(&row)?;
    write(
        conn,
        tenant,
        row,
        &input.labels,
        &input.mesh,
        version,
        actor,
        None,
        now,
    )
    .await
}

/// Moves a stored (locked) cluster to `to` (channel following, rollouts and
/// their rollbacks), under the upgrade rules. A manual cluster's pinned
/// version moves with it, so its spec keeps saying what it runs.
pub async fn change_version(
    conn: &mut PgConnection,
    tenant: &str,
    row: ClusterRow,
    to: Version,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<ClusterRow> {
    let from = stored_version(&row)?;
    if from == to {
        return Ok(row);
    }
    not_deleting(&row)?;
    check_version_change(from, &row.version_history, to)
        .map_err(|why| Error::Invalid(vec![FieldError::new("/mesh/upgrade/version", why)]))?;
    let mut mesh = row.mesh.0.clone();
    if mesh.upgrade.mode == UpgradeMode::Manual {
        mesh.upgrade.version = Some(to.to_string());
    }
    let labels = row.labels.0.clone();
    write(
        conn,
        tenant,
        row,
        &labels,
        &mesh,
        to,
        actor,
        Some(reason),
        now,
    )
    .await
}

/// The one function that changes a cluster's desired state (the row must be
/// locked by the caller's transaction).
#[allow(clippy::too_many_arguments)]
pub async fn write(
    conn: &mut PgConnection,
    tenant: &str,
    row: ClusterRow,
    labels: &Labels,
    mesh: &MeshSpec,
    version: Version,
    actor: &Actor,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ClusterRow> {
    let new_version = version.to_string();
    let version_changed = new_version != row.desired_version;
    let labels_changed = *labels != row.labels.0;
    let mesh_changed = *mesh != row.mesh.0;
    if !labels_changed && !mesh_changed && !version_changed {
        return Ok(row);
    }
    let mut history = row.version_history.clone();
    if version_changed && !history.contains(&row.desired_version) {
        history.push(row.desired_version.clone());
    }
    // What the agent receives is the mesh spec and the resolved version.
    let generation = row.generation + i64::from(mesh_changed || version_changed);
    let updated = clusters::update_cluster(
        conn,
        tenant,
        &row.name,
        ClusterUpdate {
            labels,
            mesh,
            generation,
            desired_version: &new_version,
            version_history: &history,
            now,
        },
    )
    .await?;
    let mut changed = Vec::new();
    if labels_changed {
        changed.push("labels");
    }
    if mesh_changed {
        changed.push("mesh");
    }
    if version_changed {
        changed.push("version");
    }
    let mut detail = json!({ "changed": changed });
    if version_changed {
        detail["from"] = json!(row.desired_version);
        detail["to"] = json!(new_version);
    }
    if let Some(reason) = reason {
        detail["reason"] = json!(reason);
    }
    let action = if actor.is_user() {
        "cluster.updated"
    } else {
        "cluster.version_changed"
    };
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: Some(&row.name),
            cluster_id: Some(row.id),
            actor: &actor.name(),
            action,
            generation: Some(generation),
            detail,
        },
    )
    .await?;
    // The cluster's own bookkeeping (pending upgrade, deadline, end of
    // support) looks again now; a rollout watches the clusters it moves
    // itself, so theirs can wait a minute (10,000 at once otherwise).
    let recheck = match actor {
        Actor::Rollout(_) => now + chrono::Duration::seconds(60),
        _ => now,
    };
    reconcile::schedule(conn, tenant, row.id, recheck).await?;
    Ok(updated)
}
