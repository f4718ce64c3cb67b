//! An agent's status report: a heartbeat when nothing changed, otherwise a
//! stored report, its history entry, and the events a change of health or
//! connectivity is worth.

use chrono::{DateTime, Utc};
use meshfleet_model::{Health, StatusReport};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::Actor;
use super::heartbeat::Heartbeats;
use crate::domain::health;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::store::events::{self, NewEvent};
use crate::store::status;
use crate::store::status::Beat;

/// What a report turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Unchanged: only the heartbeat moved.
    Heartbeat,
    /// A changed report was stored.
    Changed,
}

/// The distinct observed versions of the components that have a desired
/// version (`""` for one not observed yet), sorted.
pub fn observed_versions(report: &StatusReport) -> Vec<String> {
    let mut v: Vec<String> = report
        .components
        .iter()
        .filter(|c| c.desired_version.is_some())
        .map(|c| c.observed_version.clone().unwrap_or_default())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A report as stored: its JSON and the hash that tells an unchanged one.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    value: serde_json::Value,
    pub hash: Vec<u8>,
}

impl Fingerprint {
    pub fn of(report: &StatusReport) -> Result<Fingerprint> {
        let value = serde_json::to_value(report).map_err(|e| Error::Internal(e.to_string()))?;
        let hash = Sha256::digest(value.to_string().as_bytes()).to_vec();
        Ok(Fingerprint { value, hash })
    }
}

/// Records a validated report of the agent of `cluster_id` (`fingerprint`
/// is the report's). Afterwards, until a notification on `meshfleet_cluster`
/// says otherwise, the stored report hash is `fingerprint.hash`, its health
/// was derived against the cluster's generation, and the agent is Connected:
/// what lets the api answer the same report from memory.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "status.record", skip_all, fields(cluster = cluster_name))]
pub async fn record_report(
    pool: &PgPool,
    heartbeats: &Heartbeats,
    tenant: &str,
    cluster_id: Uuid,
    cluster_name: &str,
    report: &StatusReport,
    fingerprint: &Fingerprint,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<Recorded> {
    let Fingerprint {
        value,
        hash: report_hash,
    } = fingerprint;
    let beat = Beat {
        tenant: tenant.to_string(),
        cluster_id,
        report_hash: report_hash.clone(),
        at: now,
    };
    if heartbeats.beat(beat).await? {
        return Ok(Recorded::Heartbeat);
    }
    let actor = Actor::Agent(cluster_name.to_string()).name();
    let mut tx = pool.begin().await?;
    let lock = status::lock_for_status(&mut tx, tenant, cluster_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster `{cluster_name}` not found")))?;
    let health = health::health(report, lock.generation);
    let health_name = health::health_name(health);
    // The first Healthy report of a generation: it converged (the SLI).
    let converged =
        health == Health::Healthy && report.observed_generation == Some(lock.generation);
    let previous = status::write_changed_report(
        &mut tx,
        tenant,
        cluster_id,
        status::StatusWrite {
            report: value,
            report_hash,
            health: health_name,
            health_generation: lock.generation,
            observed_generation: report.observed_generation,
            observed_versions: &observed_versions(report),
            agent_version: report.facts.agent_version.as_deref(),
            converged_since: converged.then_some(lock.generation_changed_at),
        },
        settings.status_history_keep,
        now,
    )
    .await?;
    if previous.connectivity.as_deref() != Some("Connected") {
        events::insert_event(
            &mut tx,
            tenant,
            NewEvent {
                cluster_name: Some(cluster_name),
                cluster_id: Some(cluster_id),
                actor: &actor,
                action: "cluster.connectivity.changed",
                generation: None,
                detail: json!({
                    "from": previous.connectivity.as_deref().unwrap_or("Disconnected"),
                    "to": "Connected",
                }),
            },
        )
        .await?;
    }
    if previous.health.as_deref() != Some(health_name) {
        let failing: Vec<serde_json::Value> = report
            .components
            .iter()
            .filter(|c| health::failed(c))
            .map(|c| json!({ "name": c.name, "message": c.message }))
            .collect();
        events::insert_event(
            &mut tx,
            tenant,
            NewEvent {
                cluster_name: Some(cluster_name),
                cluster_id: Some(cluster_id),
                actor: &actor,
                action: "cluster.health_changed",
                generation: report.observed_generation,
                detail: json!({ "from": previous.health, "to": health_name, "failing": failing }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded::Changed)
}
