//! Wakes long-polling agents when their cluster's desired state changes:
//! the process's LISTEN loop (`meshfleet_core::notify`) feeds this in-memory
//! fan-out to the requests waiting for that cluster, and keeps this replica's
//! [`Cache`] of what conditional GETs compare (see `cache` for its rules).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use meshfleet_core::notify::{
    CLUSTER_CHANNEL, CREDENTIALS_CHANNEL, DESIRED_STATE_CHANNEL, Fence, RELEASES_CHANNEL, Signal,
    parse_cluster_payload,
};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cache::{Cache, Forget, Stamp};

/// The longest a request waits for a fence before it reads the database instead.
const FENCE_LIMIT: Duration = Duration::from_secs(1);

type Key = (String, Uuid);

/// The in-memory fan-out.
#[derive(Default)]
pub struct Hub {
    waiters: Mutex<HashMap<Key, Weak<Notify>>>,
    /// Whether the LISTEN connection is up (false until it first connects):
    /// while it is down, changes do not wake waiting long polls.
    listening: AtomicBool,
    /// What conditional GETs compare, per cluster (kept by the notifications).
    pub cache: Cache,
    fence: Fence,
}

/// A registration for one cluster's changes; dropping it unregisters.
pub struct Subscription {
    hub: Arc<Hub>,
    key: Key,
    notify: Arc<Notify>,
}

impl Subscription {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.hub.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map's Weak and ours: we are the last waiter of this key.
        if Arc::strong_count(&self.notify) == 1 {
            map.remove(&self.key);
        }
    }
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, tenant: &str, cluster_id: Uuid) -> Subscription {
        let key = (tenant.to_string(), cluster_id);
        let mut map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let notify = match map.get(&key).and_then(Weak::upgrade) {
            Some(n) => n,
            None => {
                let n = Arc::new(Notify::new());
                map.insert(key.clone(), Arc::downgrade(&n));
                n
            }
        };
        Subscription {
            hub: self.clone(),
            key,
            notify,
        }
    }

    pub fn wake(&self, tenant: &str, cluster_id: Uuid) {
        let map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map
            .get(&(tenant.to_string(), cluster_id))
            .and_then(Weak::upgrade)
        {
            n.notify_waiters();
        }
    }

    /// For a database read whose result may be remembered: `None` while the
    /// LISTEN connection is down (nothing is remembered then).
    pub fn stamp(&self) -> Option<Stamp> {
        self.listening().then(|| self.cache.stamp())
    }

    /// What `look` finds in the cache, once it may be answered from: after a
    /// fence that started after the request arrived (`fenced` remembers, for
    /// the rest of the request, that one completed). `None` (read the
    /// database) when nothing is remembered, the LISTEN connection is down,
    /// or the fence does not complete within [`FENCE_LIMIT`].
    pub async fn remembered<T>(
        &self,
        fenced: &mut bool,
        look: impl Fn(&Cache) -> Option<T>,
    ) -> Option<T> {
        if !self.listening() {
            return None;
        }
        look(&self.cache)?;
        if !*fenced {
            *fenced = self.fence.wait(FENCE_LIMIT).await;
        }
        if !*fenced || !self.listening() {
            return None;
        }
        look(&self.cache)
    }

    /// Wakes everyone (after a lost listener connection or a catalog change):
    /// waiters re-read their state and go back to waiting if nothing changed.
    pub fn wake_all(&self) {
        let map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values().filter_map(Weak::upgrade) {
            n.notify_waiters();
        }
    }

    /// Whether this process's LISTEN connection is up (`/readyz`).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// How many clusters have at least one waiter.
    pub fn waiting_clusters(&self) -> usize {
        let map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }

    fn dispatch(&self, channel: &str, payload: &str) {
        if channel == RELEASES_CHANNEL {
            // a release's images are in every desired state on it
            self.cache.forget_all();
            self.wake_all();
            return;
        }
        match parse_cluster_payload(payload) {
            Some((tenant, id)) => {
                // forgotten before the waiters wake, so that they re-read;
                // an agent's credential stays remembered across its own
                // reports and upgrades (it changes only with a notification
                // of its own), and its desired state across its reports
                let what = match channel {
                    DESIRED_STATE_CHANNEL => Forget::AllButCredentials,
                    CLUSTER_CHANNEL => Forget::StatusAndResource,
                    _ => Forget::All,
                };
                self.cache.forget(tenant, id, what);
                if channel == DESIRED_STATE_CHANNEL {
                    self.wake(tenant, id);
                }
            }
            None => tracing::warn!(%payload, "ignoring a malformed cluster notification"),
        }
    }
}

/// Runs this process's listener, feeding the hub (ends when the pool is closed).
pub async fn listen(pool: PgPool, hub: Arc<Hub>) {
    let handler = hub.clone();
    meshfleet_core::notify::listen(
        pool,
        &[
            DESIRED_STATE_CHANNEL,
            CLUSTER_CHANNEL,
            CREDENTIALS_CHANNEL,
            RELEASES_CHANNEL,
        ],
        Some(&hub.fence),
        move |signal| match signal {
            Signal::Notification { channel, payload } => handler.dispatch(channel, payload),
            // Either way notifications may have been missed: the cache forgets
            // everything (after `listening` changes, so that no read stamped
            // before is stored), and every waiting long poll re-reads its
            // cluster (a poll woken while the database is down answers 503
            // and its agent retries).
            Signal::Connected => {
                handler.listening.store(true, Ordering::SeqCst);
                handler.cache.forget_all();
                handler.wake_all();
            }
            Signal::Lost => {
                handler.listening.store(false, Ordering::SeqCst);
                handler.cache.forget_all();
                handler.wake_all();
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_reaches_the_waiters_of_that_cluster_only() {
        let hub = Arc::new(Hub::default());
        let id = Uuid::new_v4();
        let a = hub.subscribe("t", id);
        let b = hub.subscribe("t", Uuid::new_v4());
        {
            let fa = a.notify().notified();
            let fb = b.notify().notified();
            tokio::pin!(fa, fb);
            fa.as_mut().enable();
            fb.as_mut().enable();
            hub.dispatch(DESIRED_STATE_CHANNEL, &format!("t/{id}"));
            tokio::time::timeout(Duration::from_millis(100), fa)
                .await
                .unwrap();
            assert!(
                tokio::time::timeout(Duration::from_millis(50), fb)
                    .await
                    .is_err()
            );
            assert_eq!(hub.waiting_clusters(), 2);
        }
        drop(a);
        drop(b);
        assert_eq!(
            hub.waiting_clusters(),
            0,
            "subscriptions clean up after themselves"
        );
    }
}
