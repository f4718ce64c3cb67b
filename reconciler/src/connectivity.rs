//! Connectivity bookkeeping: agents that went quiet are recorded `Stale`,
//! then `Disconnected`, once each, by one set-based statement over
//! `cluster_status` (not by a reconcile per cluster every 90 s). The api
//! records the return to `Connected` when a heartbeat arrives.

use meshfleet_core::ops::Actor;
use meshfleet_core::store::events::{self, NewEvent};
use meshfleet_core::store::{fleet, status};
use serde_json::json;

use crate::context::Context;
use crate::error::Result;

/// Transitions recorded per statement.
const BATCH: i64 = 1000;

/// How long convergence records are kept.
const CONVERGENCE_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Records every due transition; how many.
pub async fn sweep(ctx: &Context) -> Result<usize> {
    let settings = &ctx.config.settings;
    let mut done = 0;
    loop {
        let now = ctx.clock.now();
        let before = |d: std::time::Duration| {
            now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        };
        let mut tx = ctx.pool.begin().await?;
        let transitions = status::sweep_connectivity(
            &mut tx,
            before(settings.stale_after),
            before(settings.disconnected_after),
            BATCH,
        )
        .await?;
        for t in &transitions {
            events::insert_event(
                &mut tx,
                &t.tenant_id,
                NewEvent {
                    cluster_name: Some(&t.cluster_name),
                    cluster_id: Some(t.cluster_id),
                    actor: &Actor::Reconciler.name(),
                    action: "cluster.connectivity.changed",
                    generation: None,
                    detail: json!({ "from": t.from_state, "to": t.to_state,
                                    "lastHeartbeatAt": t.last_heartbeat_at }),
                },
            )
            .await?;
        }
        tx.commit().await?;
        done += transitions.len();
        metrics::counter!("meshfleet_connectivity_transitions_total")
            .increment(transitions.len() as u64);
        if (transitions.len() as i64) < BATCH {
            // The convergence SLI looks back a day at most; a week is kept.
            fleet::prune_convergence(&ctx.pool, before(CONVERGENCE_KEPT), BATCH).await?;
            return Ok(done);
        }
    }
}
