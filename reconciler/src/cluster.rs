//! Reconciling one cluster: deletion, progress deadline, end of support and
//! channel following, in one transaction under the cluster's
//! row lock. Returns when to look again.

use chrono::{DateTime, Utc};
use meshfleet_core::domain::health::{self, StatusInputs};
use meshfleet_core::domain::version::{Catalog, Version};
use meshfleet_core::domain::window;
use meshfleet_core::ops::Actor;
use meshfleet_core::ops::clusters::remove;
use meshfleet_core::ops::spec::{change_version, stored_version};
use meshfleet_core::store::clusters::{self, ClusterRow};
use meshfleet_core::store::events::{self, NewEvent};
use meshfleet_core::store::reconcile::{self, Bookkeeping, Claim};
use meshfleet_core::store::releases;
use meshfleet_model::{Health, MeshMode, PendingUpgrade, StatusReport, UpgradeMode};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::context::Context;
use crate::error::Result;

/// The earliest of the times at which something about the cluster changes.
struct NextCheck(DateTime<Utc>);

impl NextCheck {
    fn at_most(&mut self, t: DateTime<Utc>) {
        if t < self.0 {
            self.0 = t;
        }
    }
}

fn chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Reconciles one claimed cluster; returns when to look at it again.
#[tracing::instrument(name = "reconcile.cluster", skip_all, fields(
    tenant = %claim.tenant_id,
    cluster_id = %claim.cluster_id,
    cluster = tracing::field::Empty,
    attempts = claim.attempts,
    trace_id = tracing::field::Empty,
))]
pub async fn reconcile(claim: &Claim, ctx: &Context) -> Result<DateTime<Utc>> {
    meshfleet_telemetry::record_trace_id(&tracing::Span::current());
    let now = ctx.clock.now();
    let tenant = claim.tenant_id.as_str();
    let mut tx = ctx.pool.begin().await?;
    let Some(row) = clusters::lock_cluster_by_id(&mut tx, tenant, claim.cluster_id).await? else {
        // deleted meanwhile; its bookkeeping went with it
        tx.commit().await?;
        return Ok(now + chrono(ctx.config.max_interval));
    };
    tracing::Span::current().record("cluster", row.name.as_str());
    let book = reconcile::bookkeeping(&mut tx, tenant, row.id).await?;
    let catalog = releases::load_catalog(&mut *tx).await?;
    let id = row.id;
    let next = match evaluate(&mut tx, tenant, row, book, &catalog, now, ctx).await? {
        Some((book, next)) => {
            reconcile::finish(&mut tx, tenant, id, &book, next).await?;
            next
        }
        None => now + chrono(ctx.config.max_interval),
    };
    tx.commit().await?;
    Ok(next)
}

/// Reconciles claimed clusters of one tenant together: one transaction, their
/// rows locked in id order, the catalog read once, and what each decided
/// written in one statement. Most looks change nothing but when to look
/// again; this makes them a few statements per batch rather than several per
/// cluster. Any failure rolls the whole batch back (the caller then takes
/// the clusters one by one, each with its own error policy). Returns how many
/// clusters it looked at.
#[tracing::instrument(name = "reconcile.clusters", skip_all, fields(%tenant, clusters = claims.len()))]
pub async fn reconcile_many(tenant: &str, claims: &[Claim], ctx: &Context) -> Result<usize> {
    let now = ctx.clock.now();
    let ids: Vec<uuid::Uuid> = claims.iter().map(|c| c.cluster_id).collect();
    let mut tx = ctx.pool.begin().await?;
    let rows = clusters::lock_clusters_by_ids(&mut tx, tenant, &ids).await?;
    let mut books = reconcile::bookkeeping_many(&mut tx, tenant, &ids).await?;
    let catalog = releases::load_catalog(&mut *tx).await?;
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.id;
        let book = books.remove(&id).unwrap_or_default();
        // each cluster's look is its own trace (as when taken alone): the
        // change it writes carries that trace to the cluster's agent
        let span = tracing::info_span!(
            parent: None,
            "reconcile.cluster",
            %tenant,
            cluster_id = %id,
            cluster = %row.name,
            trace_id = tracing::field::Empty,
        );
        meshfleet_telemetry::record_trace_id(&span);
        let decided = tracing::Instrument::instrument(
            evaluate(&mut tx, tenant, row, book, &catalog, now, ctx),
            span,
        )
        .await?;
        if let Some((book, next)) = decided {
            done.push((id, book, next));
        }
    }
    reconcile::finish_many(&mut tx, tenant, &done).await?;
    tx.commit().await?;
    Ok(claims.len())
}

/// One look at a locked cluster: deletion, progress deadline, end of support
/// and channel following. Returns what to remember and when to look again,
/// or `None` when the look completed the cluster's deletion.
async fn evaluate(
    tx: &mut PgConnection,
    tenant: &str,
    row: ClusterRow,
    mut book: Bookkeeping,
    catalog: &Catalog,
    now: DateTime<Utc>,
    ctx: &Context,
) -> Result<Option<(Bookkeeping, DateTime<Utc>)>> {
    let settings = &ctx.config.settings;
    let mut next = NextCheck(now + chrono(ctx.config.max_interval));
    let report = row.report.as_ref().map(|r| r.0.clone());

    if row.deletion_operation.is_some() {
        // Quiet since the last heartbeat, or since the deletion was asked
        // (an agent that registered but never reported gets the full time).
        let quiet_since = row
            .last_heartbeat_at
            .map_or(row.generation_changed_at, |h| {
                h.max(row.generation_changed_at)
            });
        let gone_at = quiet_since + chrono(settings.disconnected_after);
        if finish_deletion(tx, tenant, &row, report.as_ref(), now >= gone_at, now).await? {
            return Ok(None);
        }
        next.at_most(gone_at);
        return Ok(Some((book, next.0)));
    }

    check_progress_deadline(
        tx,
        tenant,
        &row,
        report.as_ref(),
        now,
        &mut book,
        &mut next,
        ctx,
    )
    .await?;
    notify_end_of_support(tx, tenant, &row, catalog, now, &mut book, ctx).await?;
    follow_channel(
        tx,
        tenant,
        row,
        report.as_ref(),
        catalog,
        now,
        &mut book,
        &mut next,
    )
    .await?;
    Ok(Some((book, next.0)))
}

/// Component conditions by which an uninstall says what it kept.
const KEPT_CONDITIONS: [&str; 2] = ["NamespaceKept", "CrdsKept"];

/// A deletion completes when the agent has uninstalled (it reports the
/// disabled generation with nothing installed), or when it has been quiet for
/// `MESHFLEET_DISCONNECTED_AFTER` (the mesh may then still be installed, and
/// the event says so).
#[tracing::instrument(name = "reconcile.finish_deletion", skip_all)]
async fn finish_deletion(
    conn: &mut PgConnection,
    tenant: &str,
    row: &ClusterRow,
    report: Option<&StatusReport>,
    disconnected: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let uninstalled = report.is_some_and(|r| health::uninstalled(r, row.generation));
    let detail = if uninstalled {
        // What the uninstall left in the cluster on purpose: a namespace
        // holding others' objects, CRDs a purge found in use.
        let kept: Vec<&str> = report
            .into_iter()
            .flat_map(|r| &r.components)
            .flat_map(|c| &c.conditions)
            .filter(|c| KEPT_CONDITIONS.contains(&c.type_.as_str()))
            .filter_map(|c| c.message.as_deref())
            .collect();
        if kept.is_empty() {
            json!({ "uninstalled": true })
        } else {
            json!({ "uninstalled": true, "kept": kept })
        }
    } else if disconnected {
        json!({
            "uninstalled": false,
            "warning": "the agent is disconnected: the mesh may still be installed in the cluster",
        })
    } else {
        return Ok(false);
    };
    remove(conn, tenant, row, &Actor::Reconciler, detail, now).await?;
    tracing::info!(%tenant, cluster = %row.name, uninstalled, "cluster deleted");
    Ok(true)
}

/// An event about a cluster, written by the reconciler at its generation.
async fn reconciler_event(
    conn: &mut PgConnection,
    tenant: &str,
    row: &ClusterRow,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    events::insert_event(
        conn,
        tenant,
        NewEvent {
            cluster_name: Some(&row.name),
            cluster_id: Some(row.id),
            actor: &Actor::Reconciler.name(),
            action,
            generation: Some(row.generation),
            detail,
        },
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "reconcile.progress_deadline", skip_all)]
async fn check_progress_deadline(
    conn: &mut PgConnection,
    tenant: &str,
    row: &ClusterRow,
    report: Option<&StatusReport>,
    now: DateTime<Utc>,
    book: &mut Bookkeeping,
    next: &mut NextCheck,
    ctx: &Context,
) -> Result<()> {
    let inputs = StatusInputs {
        report,
        generation: row.generation,
        generation_changed_at: row.generation_changed_at,
        last_heartbeat_at: row.last_heartbeat_at,
    };
    let (h, condition) = health::health_with_deadline(inputs, now, &ctx.config.settings);
    match condition {
        Some(condition) if book.deadline_notified_generation != Some(row.generation) => {
            reconciler_event(
                conn,
                tenant,
                row,
                "cluster.progress_deadline_exceeded",
                json!({ "health": "Degraded", "message": condition.message }),
            )
            .await?;
            book.deadline_notified_generation = Some(row.generation);
        }
        None if h == Health::Progressing => {
            next.at_most(row.generation_changed_at + chrono(ctx.config.settings.progress_deadline));
        }
        _ => {}
    }
    Ok(())
}

/// One event when a pinned cluster's version comes within the warning period
/// of its end of support (the condition itself is derived at read time).
#[tracing::instrument(name = "reconcile.end_of_support", skip_all)]
async fn notify_end_of_support(
    conn: &mut PgConnection,
    tenant: &str,
    row: &ClusterRow,
    catalog: &Catalog,
    now: DateTime<Utc>,
    book: &mut Bookkeeping,
    ctx: &Context,
) -> Result<()> {
    if row.mesh.0.upgrade.mode != UpgradeMode::Manual {
        return Ok(());
    }
    let Some(eos) = Version::parse(&row.desired_version).and_then(|v| catalog.end_of_support(v))
    else {
        return Ok(());
    };
    let warn_from = eos - chrono(ctx.config.settings.end_of_support_warning);
    if now.date_naive() < warn_from
        || book.eos_notified_version.as_deref() == Some(row.desired_version.as_str())
    {
        return Ok(());
    }
    reconciler_event(
        conn,
        tenant,
        row,
        "cluster.end_of_support",
        json!({ "version": row.desired_version, "endOfSupport": eos }),
    )
    .await?;
    book.eos_notified_version = Some(row.desired_version.clone());
    Ok(())
}

/// Whether the cluster runs `version` converged and healthy (a cluster whose
/// agent never reported has nothing installed to step through).
/// The report is judged against its own generation: a later spec change that
/// does not touch the version (the upgrade policy, a label) does not undo a
/// convergence.
fn converged_on(report: Option<&StatusReport>, version: &str) -> bool {
    let Some(report) = report else {
        return true;
    };
    let Some(observed) = report.observed_generation else {
        return false;
    };
    health::health(report, observed) == Health::Healthy
        && report
            .components
            .iter()
            .filter(|c| c.desired_version.is_some())
            .all(|c| c.observed_version.as_deref() == Some(version))
}

/// Moves an automatic cluster one step along its channel when its window is
/// open (or its version is past end of support), and otherwise says in
/// `pendingUpgrade` what it waits for.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "reconcile.follow_channel", skip_all)]
async fn follow_channel(
    conn: &mut PgConnection,
    tenant: &str,
    row: ClusterRow,
    report: Option<&StatusReport>,
    catalog: &Catalog,
    now: DateTime<Utc>,
    book: &mut Bookkeeping,
    next: &mut NextCheck,
) -> Result<ClusterRow> {
    book.pending_upgrade = None;
    let upgrade = &row.mesh.0.upgrade;
    let (UpgradeMode::Automatic, Some(channel), MeshMode::Ambient) =
        (upgrade.mode, upgrade.channel, row.mesh.0.mode)
    else {
        return Ok(row);
    };
    let current = stored_version(&row)?;
    let Some(head) = catalog.channel_head(channel) else {
        return Ok(row);
    };
    let Some(step) = catalog.next_step(current, head) else {
        return Ok(row);
    };
    let past_eos = catalog
        .end_of_support(current)
        .is_some_and(|eos| now.date_naive() > eos);
    let wait = |reason: String, not_before: Option<DateTime<Utc>>| PendingUpgrade {
        version: step.to_string(),
        reason,
        not_before,
    };
    if step.minor > current.minor && !converged_on(report, &row.desired_version) {
        book.pending_upgrade = Some(Json(wait(
            format!(
                "waiting for {current} to converge and report Healthy before upgrading to the next minor"
            ),
            None,
        )));
        return Ok(row);
    }
    let window = row.mesh.0.maintenance_window.as_ref();
    let open = window::is_open(window, now);
    if !open && !past_eos {
        let opens = window::next_opening(window, now);
        if let Some(t) = opens {
            next.at_most(t);
        }
        book.pending_upgrade = Some(Json(wait(
            "waiting for the maintenance window".into(),
            opens,
        )));
        return Ok(row);
    }
    let reason = if !open {
        format!("{current} is past its end of support: upgrading outside the maintenance window")
    } else if step == head {
        format!("channel {}: {head} is the newest release", channel.as_str())
    } else {
        format!(
            "channel {}: {head} is the newest release; one minor at a time, {step} first",
            channel.as_str()
        )
    };
    tracing::info!(%tenant, cluster = %row.name, from = %current, to = %step, %reason, "channel upgrade");
    let row = change_version(conn, tenant, row, step, &Actor::Reconciler, &reason, now).await?;
    if let Some(after) = catalog.next_step(step, head) {
        book.pending_upgrade = Some(Json(PendingUpgrade {
            version: after.to_string(),
            reason: format!(
                "waiting for {step} to converge and report Healthy before upgrading to the next minor"
            ),
            not_before: None,
        }));
    }
    // look again soon: the next step may already be possible
    next.at_most(now + chrono::Duration::seconds(1));
    Ok(row)
}
