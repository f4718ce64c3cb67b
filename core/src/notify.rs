//! The LISTEN loop: one connection per process receives the notifications
//! that the database triggers send at commit (whichever replica or tool
//! wrote), and hands them to a handler. A gap (lost connection) is reported
//! too: notifications may have been missed, so whoever waits must re-check.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};

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

/// Pause before connecting again after the connection is lost or cannot be
/// made: short, so that the service is whole again soon after PostgreSQL is.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// `application_name` of the LISTEN connections (in `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "meshfleet-listener";

/// Runs until `pool` is closed; reconnects with a pause. `Connected` is
/// signalled only once the channels are listened to again.
///
/// The LISTEN connection is not taken from `pool` but made with its options
/// (named [`LISTENER_APPLICATION_NAME`]): requests that use up the pool
/// cannot keep the listener from coming back, and it holds no slot of theirs.
pub async fn listen(
    pool: PgPool,
    channels: &'static [&'static str],
    mut handler: impl FnMut(Signal<'_>) + Send,
) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(
            pool.connect_options()
                .as_ref()
                .clone()
                .application_name(LISTENER_APPLICATION_NAME),
        );
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        if pool.is_closed() {
            own.close().await;
            return;
        }
        let mut listener = match PgListener::connect_with(&own).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listener cannot connect; retrying");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all(channels.iter().copied()).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        tracing::info!(?channels, "listener connected");
        handler(Signal::Connected);
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                _ = &mut closed => break,
            };
            match received {
                Ok(Some(n)) => {
                    metrics::counter!("meshfleet_notifications_total", "channel" => n.channel().to_string())
                        .increment(1);
                    handler(Signal::Notification {
                        channel: n.channel(),
                        payload: n.payload(),
                    });
                }
                Ok(None) => {
                    // sqlx has already connected again and re-issued LISTEN
                    // (eager reconnect; had that failed we would get `Err`)
                    tracing::warn!("listener lost its connection and reconnected");
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
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
