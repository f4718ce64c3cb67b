//! The LISTEN loop: one connection per process receives the notifications
//! that the database triggers send at commit (whichever replica or tool
//! wrote), and hands them to a handler. A gap (lost connection) is reported
//! too: notifications may have been missed, so whoever waits must re-check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};

/// A cluster's effective desired state changed; payload `tenant/cluster-id`.
pub const DESIRED_STATE_CHANNEL: &str = "meshfleet_desired_state";
/// The release catalog changed; payload the version.
pub const RELEASES_CHANNEL: &str = "meshfleet_releases";
/// A rollout may have something to look at (an agent reported); payload
/// `tenant/cluster-id`.
pub const ROLLOUT_CHANNEL: &str = "meshfleet_rollout";
/// Something a replica may remember about a cluster changed without changing
/// its desired state (its resource version, its first report, its status,
/// its agent credential); payload `tenant/cluster-id`. Wakes nobody; forgets.
pub const CLUSTER_CHANNEL: &str = "meshfleet_cluster";
/// A cluster's agent credential changed (replaced, rotated, revoked): sent
/// with a [`CLUSTER_CHANNEL`] notification, and the only one that makes a
/// replica forget the credentials it remembers; payload `tenant/cluster-id`.
pub const CREDENTIALS_CHANNEL: &str = "meshfleet_credentials";
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

/// The least time between the starts of two fences (a fence's wait is at
/// most this plus a round trip to PostgreSQL).
const FENCE_SPACING: Duration = Duration::from_millis(1);

/// A fence through the LISTEN connection: [`Fence::wait`] returns once every
/// notification of a transaction whose COMMIT was acknowledged before the
/// call has been handed to the handler.
///
/// How: the listener runs a statement on its own connection, and PostgreSQL
/// sends a listening session the notifications it has been signalled about
/// before that statement's ReadyForQuery (a committing session signals the
/// listeners before its COMMIT is acknowledged). One statement serves every
/// caller that asked before it started.
pub struct Fence {
    wanted: Notify,
    started: AtomicU64,
    done: watch::Sender<u64>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            wanted: Notify::new(),
            started: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }
}

impl Fence {
    /// Waits (at most `limit`) for a fence that starts after this call;
    /// whether one completed.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut done = self.done.subscribe();
        // A fence numbered above `started` has not sent its statement yet.
        let target = self.started.load(Ordering::SeqCst) + 1;
        self.wanted.notify_one();
        matches!(
            tokio::time::timeout(limit, done.wait_for(|d| *d >= target)).await,
            Ok(Ok(_))
        )
    }
}

fn dispatch(handler: &mut impl FnMut(Signal<'_>), n: &sqlx::postgres::PgNotification) {
    metrics::counter!("meshfleet_notifications_total", "channel" => n.channel().to_string())
        .increment(1);
    handler(Signal::Notification {
        channel: n.channel(),
        payload: n.payload(),
    });
}

/// Runs until `pool` is closed; reconnects with a pause. `Connected` is
/// signalled only once the channels are listened to again.
///
/// The LISTEN connection is not taken from `pool` but made with its options
/// (named [`LISTENER_APPLICATION_NAME`]): requests that use up the pool
/// cannot keep the listener from coming back, and it holds no slot of theirs.
///
/// With a `fence`, answers its [`Fence::wait`]s while connected.
pub async fn listen(
    pool: PgPool,
    channels: &'static [&'static str],
    fence: Option<&Fence>,
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
        let mut fence_pending = false;
        let mut next_fence_at = tokio::time::Instant::now();
        loop {
            // A fence is run when one is wanted, at most one per
            // FENCE_SPACING: under load one statement serves many requests.
            let fence_due = async {
                match fence {
                    None => std::future::pending::<bool>().await,
                    Some(f) if !fence_pending => {
                        f.wanted.notified().await;
                        false
                    }
                    Some(_) => {
                        tokio::time::sleep_until(next_fence_at).await;
                        true
                    }
                }
            };
            let received = tokio::select! {
                r = listener.try_recv() => r,
                run = fence_due => {
                    let Some(fence) = fence else { continue };
                    if !run {
                        fence_pending = true;
                        continue;
                    }
                    fence_pending = false;
                    next_fence_at = tokio::time::Instant::now() + FENCE_SPACING;
                    let number = fence.started.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Err(e) = crate::store::ping_on(&mut listener).await {
                        tracing::warn!(error = %e, "listener failed; reconnecting");
                        handler(Signal::Lost);
                        break;
                    }
                    // what arrived before the statement's end, in order
                    while let Some(n) = listener.next_buffered() {
                        dispatch(&mut handler, &n);
                    }
                    fence.done.send_replace(number);
                    continue;
                }
                _ = &mut closed => break,
            };
            match received {
                Ok(Some(n)) => dispatch(&mut handler, &n),
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
