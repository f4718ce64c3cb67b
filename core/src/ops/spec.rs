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
    let name = row.name.clone();
    change_versions(conn, tenant, vec![(row, to)], actor, reason, now)
        .await?
        .pop()
        .unwrap_or_else(|| Err(vanished(&name)))
}

fn vanished(name: &str) -> Error {
    Error::Internal(format!("cluster `{name}` vanished while locked"))
}

/// [`change_version`] for many locked clusters of a tenant at once (a
/// rollout's wave): per cluster, in order, the row as written or why it may
/// not move; the moves that may are written together by [`write_all`].
pub async fn change_versions(
    conn: &mut PgConnection,
    tenant: &str,
    moves: Vec<(ClusterRow, Version)>,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Result<ClusterRow>>> {
    let mut out: Vec<Option<Result<ClusterRow>>> = Vec::with_capacity(moves.len());
    let mut writes = Vec::new();
    let mut slots = Vec::new();
    for (row, to) in moves {
        let checked = stored_version(&row).and_then(|from| {
            if from == to {
                return Ok(None);
            }
            not_deleting(&row)?;
            check_version_change(from, &row.version_history, to).map_err(|why| {
                Error::Invalid(vec![FieldError::new("/mesh/upgrade/version", why)])
            })?;
            Ok(Some(()))
        });
        match checked {
            Ok(None) => out.push(Some(Ok(row))),
            Err(e) => out.push(Some(Err(e))),
            Ok(Some(())) => {
                let mut mesh = row.mesh.0.clone();
                if mesh.upgrade.mode == UpgradeMode::Manual {
                    mesh.upgrade.version = Some(to.to_string());
                }
                let labels = row.labels.0.clone();
                slots.push(out.len());
                out.push(None);
                writes.push(Write {
                    row,
                    labels,
                    mesh,
                    version: to,
                    reason: Some(reason),
                });
            }
        }
    }
    let written = write_all(conn, tenant, writes, actor, now).await?;
    for (slot, row) in slots.into_iter().zip(written) {
        out[slot] = Some(Ok(row));
    }
    Ok(out
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(vanished("?"))))
        .collect())
}

/// Changes one locked cluster's desired state: [`write_all`] of one.
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
    let name = row.name.clone();
    let write = Write {
        row,
        labels: labels.clone(),
        mesh: mesh.clone(),
        version,
        reason,
    };
    write_all(conn, tenant, vec![write], actor, now)
        .await?
        .pop()
        .ok_or_else(|| vanished(&name))
}

/// One cluster's new desired state, for [`write_all`].
pub struct Write<'a> {
    /// The stored row, locked by the caller's transaction.
    pub row: ClusterRow,
    pub labels: Labels,
    pub mesh: MeshSpec,
    pub version: Version,
    pub reason: Option<&'a str>,
}

/// The one function that changes clusters' desired state (each row locked
/// by the caller's transaction), one cluster or a rollout's wave of them in
/// a few statements: bumps `generation` when mesh or version changed, records
/// the version history, writes the events, has the reconciler look again.
/// Returns the rows as written (unchanged ones as they were), in order.
/// Its span's trace context is stored with the changes (see
/// `meshfleet_telemetry::current_traceparent`), so the agents applying them
/// continue its trace.
#[tracing::instrument(name = "desired_state.write", skip_all, fields(
    actor = %actor.name(),
    clusters = writes.len(),
    cluster = tracing::field::Empty,
    version = tracing::field::Empty,
    generation = tracing::field::Empty,
))]
pub async fn write_all(
    conn: &mut PgConnection,
    tenant: &str,
    writes: Vec<Write<'_>>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Vec<ClusterRow>> {
    struct Planned {
        slot: usize,
        generation: i64,
        version: String,
        history: Vec<String>,
        detail: serde_json::Value,
    }
    let mut planned = Vec::new();
    for (slot, w) in writes.iter().enumerate() {
        let row = &w.row;
        let new_version = w.version.to_string();
        let version_changed = new_version != row.desired_version;
        let labels_changed = w.labels != row.labels.0;
        let mesh_changed = w.mesh != row.mesh.0;
        if !labels_changed && !mesh_changed && !version_changed {
            continue;
        }
        let mut history = row.version_history.clone();
        if version_changed && !history.contains(&row.desired_version) {
            history.push(row.desired_version.clone());
        }
        let changed: Vec<&str> = [
            (labels_changed, "labels"),
            (mesh_changed, "mesh"),
            (version_changed, "version"),
        ]
        .into_iter()
        .filter_map(|(c, what)| c.then_some(what))
        .collect();
        let mut detail = json!({ "changed": changed });
        if version_changed {
            detail["from"] = json!(row.desired_version);
            detail["to"] = json!(new_version);
        }
        if let Some(reason) = w.reason {
            detail["reason"] = json!(reason);
        }
        planned.push(Planned {
            slot,
            // What the agent receives is the mesh spec and the resolved version.
            generation: row.generation + i64::from(mesh_changed || version_changed),
            version: new_version,
            history,
            detail,
        });
    }
    if planned.is_empty() {
        return Ok(writes.into_iter().map(|w| w.row).collect());
    }
    if let [one] = planned.as_slice() {
        let span = tracing::Span::current();
        span.record("cluster", writes[one.slot].row.name.as_str());
        span.record("version", one.version.as_str());
        span.record("generation", one.generation);
    }
    let updates: Vec<ClusterUpdate<'_>> = planned
        .iter()
        .map(|p| {
            let w = &writes[p.slot];
            ClusterUpdate {
                name: &w.row.name,
                labels: &w.labels,
                mesh: &w.mesh,
                generation: p.generation,
                desired_version: &p.version,
                version_history: &p.history,
            }
        })
        .collect();
    let mut written = clusters::update_clusters(conn, tenant, &updates, now).await?;
    let actor_name = actor.name();
    let action = if actor.is_user() {
        "cluster.updated"
    } else {
        "cluster.version_changed"
    };
    let new_events: Vec<NewEvent<'_>> = planned
        .iter()
        .map(|p| {
            let row = &writes[p.slot].row;
            NewEvent {
                cluster_name: Some(&row.name),
                cluster_id: Some(row.id),
                actor: &actor_name,
                action,
                generation: Some(p.generation),
                detail: p.detail.clone(),
            }
        })
        .collect();
    events::insert_events(conn, tenant, &new_events).await?;
    // The cluster's own bookkeeping (pending upgrade, deadline, end of
    // support) looks again now; a rollout watches the clusters it moves
    // itself, so theirs can wait a minute (10,000 at once otherwise).
    let recheck = match actor {
        Actor::Rollout(_) => now + chrono::Duration::seconds(60),
        _ => now,
    };
    let ids: Vec<_> = planned.iter().map(|p| writes[p.slot].row.id).collect();
    reconcile::schedule_all(conn, tenant, &ids, recheck).await?;
    let changed: Vec<usize> = planned.iter().map(|p| p.slot).collect();
    let mut out: Vec<ClusterRow> = Vec::with_capacity(writes.len());
    for (slot, w) in writes.into_iter().enumerate() {
        if changed.contains(&slot) {
            let at = written
                .iter()
                .position(|r| r.id == w.row.id)
                .ok_or_else(|| vanished(&w.row.name))?;
            out.push(written.swap_remove(at));
        } else {
            out.push(w.row);
        }
    }
    Ok(out)
}
