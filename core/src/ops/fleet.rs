//! The dashboard's composed reads: a fleet summary (one tenant's or the
//! service's) and the SLIs, each from one consistent snapshot (a read-only
//! `REPEATABLE READ` transaction), in a handful of set-based statements.

use chrono::{DateTime, Utc};
use meshfleet_model::{
    AgentVersionCount, FleetSummary, LaggingCluster, Percentiles, RolloutSummary, TenantSummary,
};
use sqlx::PgPool;

use crate::domain::{fleet, rollout};
use crate::error::Result;
use crate::settings::Settings;
use crate::store::fleet::{self as store, Judged, Scope};
use crate::store::releases::load_catalog;

/// At most this many lagging clusters, rollouts and failing reports are read.
const LAGGING_SHOWN: i64 = 20;
const ROLLOUTS_SHOWN: i64 = 10;
const FAILING_REPORTS_READ: i64 = 1000;

async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// A fleet summary, and (for [`Scope::Service`]) its split per tenant.
pub async fn summary(
    pool: &PgPool,
    scope: Scope<'_>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<(FleetSummary, Vec<TenantSummary>)> {
    let judged = Judged::at(now, settings);
    let service = matches!(scope, Scope::Service);
    let mut tx = snapshot(pool).await?;
    let figures = store::figures(&mut *tx, scope, &judged, LAGGING_SHOWN).await?;
    let catalog = load_catalog(&mut *tx).await?;
    let reports = store::failing_reports(&mut *tx, scope, FAILING_REPORTS_READ).await?;
    let rollouts = store::recent_rollouts(&mut *tx, scope, ROLLOUTS_SHOWN).await?;
    let keys: Vec<_> = rollouts
        .iter()
        .map(|r| (r.tenant_id.clone(), r.id))
        .collect();
    let rollout_states = store::rollout_state_counts(&mut *tx, &keys).await?;
    tx.commit().await?;

    let groups = figures.groups.0;
    let states: Vec<_> = groups
        .iter()
        .map(|g| {
            (
                g.tenant_id.clone(),
                g.health.clone(),
                g.connectivity.clone(),
                g.n,
            )
        })
        .collect();
    let (all, tenants) = fleet::tally(&states);
    let mut by_version: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
    for g in &groups {
        by_version.entry(&g.desired_version).or_default().0 += g.n;
        for v in g.observed_versions.iter().filter(|v| !v.is_empty()) {
            by_version.entry(v).or_default().1 += g.n;
        }
    }
    let versions: Vec<_> = by_version
        .into_iter()
        .map(|(v, (d, o))| (v.to_string(), d, o))
        .collect();
    let versions = fleet::versions(&versions);
    let warn_days =
        i64::try_from(settings.end_of_support_warning.as_secs() / 86_400).unwrap_or(i64::MAX);
    let end_of_support = fleet::end_of_support(&versions, &catalog, now.date_naive(), warn_days);
    let reports: Vec<_> = reports.into_iter().map(|r| r.0).collect();
    let summary = FleetSummary {
        clusters: all.clusters,
        by_health: all.by_health,
        by_connectivity: all.by_connectivity,
        versions,
        end_of_support,
        lagging_total: groups
            .iter()
            .filter(|g| g.lagging)
            .map(|g| u64::try_from(g.n).unwrap_or(0))
            .sum(),
        lagging: figures
            .lagging
            .0
            .into_iter()
            .map(|r| LaggingCluster {
                tenant: service.then_some(r.tenant_id),
                name: r.name,
                generation: r.generation,
                observed_generation: r.observed_generation,
                since: r.since,
            })
            .collect(),
        failing_components: fleet::failing_components(&reports, 5),
        rollouts: rollouts
            .into_iter()
            .map(|r| RolloutSummary {
                tenant: service.then_some(r.tenant_id.clone()),
                id: r.id,
                name: r.name,
                target_version: r.target_version,
                state: r.state.0,
                counts: rollout::counts_of(&rollout_states, r.id),
            })
            .collect(),
        generated_at: now,
    };
    let tenants = tenants
        .into_iter()
        .map(|(tenant, t)| TenantSummary {
            tenant,
            clusters: t.clusters,
            by_health: t.by_health,
            by_connectivity: t.by_connectivity,
        })
        .collect();
    Ok((summary, tenants))
}

fn percentiles(row: (i64, Option<f64>, Option<f64>, Option<f64>)) -> Percentiles {
    let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
    Percentiles {
        count: u64::try_from(row.0).unwrap_or(0),
        p50: round(row.1),
        p90: round(row.2),
        p99: round(row.3),
    }
}

/// The fleet's side of the SLIs: heartbeat age over connected agents,
/// convergence over the generations that converged in `window`, agent
/// versions in the field.
pub async fn fleet_slis(
    pool: &PgPool,
    now: DateTime<Utc>,
    window: std::time::Duration,
    settings: &Settings,
) -> Result<(Percentiles, Percentiles, Vec<AgentVersionCount>)> {
    let judged = Judged::at(now, settings);
    let since = chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut tx = snapshot(pool).await?;
    let heartbeat = store::heartbeat_age_percentiles(&mut *tx, now, judged.stale_before).await?;
    let convergence = store::convergence_percentiles(&mut *tx, since).await?;
    let agents = store::agent_versions(&mut *tx).await?;
    tx.commit().await?;
    Ok((
        percentiles(heartbeat),
        percentiles(convergence),
        agents
            .into_iter()
            .map(|(v, n)| AgentVersionCount {
                version: v.unwrap_or_else(|| "unknown".into()),
                clusters: u64::try_from(n).unwrap_or(0),
            })
            .collect(),
    ))
}
