//! The LISTEN loop: one connection per process receives the notifications
//! that the database triggers send at commit (whichever replica or tool
//! wrote), and hands them to a handler. A gap (lost connection) is reported
//! too: notifications may have been missed, so whoever waits must re-check.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// A cluster's effective desired state changed; payload `tenant/cluster-id`.
pub const DESIRED_STATE_CHANNEL: &str = "meshfleet_desired_state";
/// The release catalog changed; payload the version.
pub const RELEASES_CHANNEL: &str = "meshfleet_releases";
/// A rollout has something to look at (a cluster in flight reported);
/// payload `tenant/rollout-id`.
pub const ROLLOUT_CHANNEL: &str = "meshfleet_rollout";
/// Reconcile work became due early; payload a hint (ignored).
pub const RECONCILE_CHANNEL: &str = "meshfleet_reconcile";

/// What the listener tells its handler.
#[derive(Debug)]
pub enum Signal<'a> {
    /// Listening (again): anything may have changed while not listening.
    Connected,
    Notification {
        channel: &'a str,
        payload: &'a str,
    },
    /// The connection is lost; notifications may be missed until `Connected`.
    Lost,
}

/// Splits a desired-state payload `tenant/cluster-id`.
pub fn parse_cluster_payload(payload: &str) -> Option<(&str, uuid::Uuid)> {
    let (tenant, id) = payload.split_once('/')?;
    Some((tenant, uuid::Uuid::try_parse(id).ok()?))
}

/// Runs until the pool is closed; reconnects with a pause.
pub async fn listen(
    pool: PgPool,
    channels: &'static [&'static str],
    mut handler: impl FnMut(Signal<'_>) + Send,
) {
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all(channels.iter().copied()).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::debug!(?channels, "listener connected");
        handler(Signal::Connected);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    metrics::counter!("meshfleet_notifications_total", "channel" => n.channel().to_string())
                        .increment(1);
                    handler(Signal::Notification {
                        channel: n.channel(),
                        payload: n.payload(),
                    });
                }
                Ok(None) => {
                    // sqlx reconnects by itself on the next try_recv
                    tracing::warn!("listener lost its connection; reconnecting");
                    handler(Signal::Lost);
                    handler(Signal::Connected);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listener failed; reconnecting");
                    handler(Signal::Lost);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
