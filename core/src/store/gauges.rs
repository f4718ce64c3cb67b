//! Service-wide figures behind the `/metrics` gauges (across tenants, read
//! at scrape time): clusters by health and connectivity, rollouts and their
//! clusters by state, and the reconciler's backlog.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::fleet::{Judged, Scope, figures};
use crate::settings::Settings;

/// One scrape's figures; every list is `(label value, count)`.
#[derive(Debug, Clone, Default)]
pub struct FleetGauges {
    /// `(health, connectivity, clusters)` across tenants, derived as the
    /// dashboard derives them ([`super::fleet::figures`]).
    pub clusters: Vec<(String, String, i64)>,
    /// Rollouts by state (every rollout ever created, ended ones included).
    pub rollouts: Vec<(String, i64)>,
    /// Clusters of the rollouts still active, by their state in the rollout.
    pub rollout_clusters: Vec<(String, i64)>,
    /// Clusters whose reconcile is due (`next_check_at <= now`): the backlog.
    pub reconcile_due: i64,
}

pub async fn fleet_gauges<'c>(
    db: impl PgExecutor<'c> + Copy,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<FleetGauges, sqlx::Error> {
    let judged = Judged::at(now, settings);
    let mut clusters: Vec<(String, String, i64)> = Vec::new();
    for g in figures(db, Scope::Service, &judged, 0).await?.groups.0 {
        match clusters
            .iter_mut()
            .find(|(h, c, _)| *h == g.health && *c == g.connectivity)
        {
            Some(row) => row.2 += g.n,
            None => clusters.push((g.health, g.connectivity, g.n)),
        }
    }
    let rollouts = sqlx::query_as("SELECT state, count(*) FROM rollouts GROUP BY state")
        .fetch_all(db)
        .await?;
    let rollout_clusters = sqlx::query_as(
        "SELECT rc.state, count(*) FROM rollout_clusters rc
         JOIN rollouts r ON r.tenant_id = rc.tenant_id AND r.id = rc.rollout_id
         WHERE r.active GROUP BY rc.state",
    )
    .fetch_all(db)
    .await?;
    let reconcile_due =
        sqlx::query_scalar("SELECT count(*) FROM cluster_reconcile WHERE next_check_at <= $1")
            .bind(now)
            .fetch_one(db)
            .await?;
    Ok(FleetGauges {
        clusters,
        rollouts,
        rollout_clusters,
        reconcile_due,
    })
}
