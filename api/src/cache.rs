//! What this replica remembers per cluster so that a conditional GET or a
//! heartbeat can be answered without PostgreSQL: the ETag of the effective
//! desired state, the ETag of the cluster resource while no agent reports for
//! it, the agent credentials (by hash) valid for it, and the hash of its
//! stored status report (while its health was derived against the current
//! generation and its agent is Connected: an equal report is a heartbeat).
//!
//! Kept correct by the LISTEN connection (`hub`): every change of what is
//! remembered notifies at commit, and the notification makes this replica
//! forget what it changes of that cluster ([`Forget`]):
//! `meshfleet_desired_state` all but the credentials, `meshfleet_cluster` (a
//! status, first report or resource change) the report hash and the resource
//! ETag, `meshfleet_credentials` everything. Three rules make a remembered
//! value safe to answer from:
//!
//! - A value is stored only if its cluster was not forgotten between the
//!   [`Stamp`] taken before the database read and the store (a read that
//!   raced a change cannot leave the older state behind).
//! - A value is answered from only after a `notify::Fence` that started after
//!   the request arrived: every change whose COMMIT was acknowledged before
//!   the request has then been forgotten (the notification travels after the
//!   commit; the fence closes that window).
//! - Nothing is stored or answered from while the LISTEN connection is down,
//!   and everything is forgotten when it is lost or comes back (the `epoch`),
//!   or when the release catalog changes.
//!
//! Keys lead with the tenant: a tenant's request only ever looks up its own
//! tenant's clusters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// More clusters than this remembered (or forgotten) and all is forgotten.
const CAPACITY: usize = 250_000;

/// What a notification about one cluster makes a replica forget of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// Everything (its agent credential changed).
    All,
    /// All but the agent credentials (its desired state changed).
    AllButCredentials,
    /// What a status or resource change invalidates: the report hash and the
    /// resource ETag (the desired state and the credentials are unchanged).
    StatusAndResource,
}

/// Taken before a database read whose result may be stored.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    epoch: u64,
    seq: u64,
}

#[derive(Default)]
struct Slot {
    /// The `seq` of the last time this cluster was forgotten.
    forgotten_at: u64,
    desired_etag: Option<String>,
    /// The cluster resource's ETag, remembered only while it has no report.
    resource_etag: Option<String>,
    /// Credential hashes valid for this cluster: (hash, cluster name, until).
    credentials: Vec<(Vec<u8>, String, DateTime<Utc>)>,
    /// The stored report's hash (see `meshfleet_core::ops::status::record_report`).
    report_hash: Option<Vec<u8>>,
    /// The SHA-256 of the body that report came in: the same bytes again are
    /// the same report, known without parsing them (an agent's heartbeat).
    report_body: Option<[u8; 32]>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(String, Uuid), Slot>,
    /// A tenant's cluster name → id (to find the slot of `GET /v1/clusters/{name}`).
    names: HashMap<(String, String), Uuid>,
}

#[derive(Default)]
pub struct Cache {
    epoch: AtomicU64,
    seq: AtomicU64,
    inner: Mutex<Inner>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stamp(&self) -> Stamp {
        Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            seq: self.seq.load(Ordering::SeqCst),
        }
    }

    /// Forgets `what` is remembered of one cluster (a notification about
    /// it). Whatever it forgets, no read stamped before is stored afterwards
    /// (one `forgotten_at` per cluster).
    pub fn forget(&self, tenant: &str, cluster_id: Uuid, what: Forget) {
        let mut inner = self.lock();
        let at = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        if inner.slots.len() >= CAPACITY {
            self.forget_all_locked(&mut inner);
        }
        let slot = inner
            .slots
            .entry((tenant.to_string(), cluster_id))
            .or_default();
        let kept = std::mem::take(slot);
        *slot = Slot {
            forgotten_at: at,
            credentials: match what {
                Forget::All => Vec::new(),
                Forget::AllButCredentials | Forget::StatusAndResource => kept.credentials,
            },
            desired_etag: match what {
                Forget::StatusAndResource => kept.desired_etag,
                Forget::All | Forget::AllButCredentials => None,
            },
            ..Slot::default()
        };
    }

    /// Forgets everything (the listener was lost or is back; the catalog changed).
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        self.forget_all_locked(&mut inner);
    }

    fn forget_all_locked(&self, inner: &mut Inner) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        inner.slots.clear();
        inner.names.clear();
    }

    /// Stores into the slot of a cluster unless it was forgotten since `stamp`.
    fn store(&self, tenant: &str, cluster_id: Uuid, stamp: Stamp, f: impl FnOnce(&mut Slot)) {
        let mut inner = self.lock();
        if self.epoch.load(Ordering::SeqCst) != stamp.epoch || inner.slots.len() >= CAPACITY {
            return;
        }
        let slot = inner
            .slots
            .entry((tenant.to_string(), cluster_id))
            .or_default();
        if slot.forgotten_at <= stamp.seq {
            f(slot);
        }
    }

    fn read<T>(
        &self,
        tenant: &str,
        cluster_id: Uuid,
        f: impl FnOnce(&Slot) -> Option<T>,
    ) -> Option<T> {
        let inner = self.lock();
        inner
            .slots
            .get(&(tenant.to_string(), cluster_id))
            .and_then(f)
    }

    pub fn desired_etag(&self, tenant: &str, cluster_id: Uuid) -> Option<String> {
        self.read(tenant, cluster_id, |s| s.desired_etag.clone())
    }

    pub fn store_desired_etag(&self, tenant: &str, cluster_id: Uuid, stamp: Stamp, etag: &str) {
        self.store(tenant, cluster_id, stamp, |s| {
            s.desired_etag = Some(etag.to_string());
        });
    }

    /// The ETag of the tenant's cluster `name`, if remembered (only while it has no report).
    pub fn resource_etag(&self, tenant: &str, name: &str) -> Option<String> {
        let inner = self.lock();
        let id = inner.names.get(&(tenant.to_string(), name.to_string()))?;
        inner
            .slots
            .get(&(tenant.to_string(), *id))
            .and_then(|s| s.resource_etag.clone())
    }

    pub fn store_resource_etag(
        &self,
        tenant: &str,
        name: &str,
        cluster_id: Uuid,
        stamp: Stamp,
        etag: &str,
    ) {
        let mut stored = false;
        self.store(tenant, cluster_id, stamp, |s| {
            s.resource_etag = Some(etag.to_string());
            stored = true;
        });
        if stored {
            self.lock()
                .names
                .insert((tenant.to_string(), name.to_string()), cluster_id);
        }
    }

    /// The cluster name a credential (by hash) is valid for, if remembered and valid `now`.
    pub fn credential(
        &self,
        tenant: &str,
        cluster_id: Uuid,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.read(tenant, cluster_id, |s| {
            s.credentials
                .iter()
                .find(|(h, _, until)| h == hash && now < *until)
                .map(|(_, name, _)| name.clone())
        })
    }

    pub fn store_credential(
        &self,
        tenant: &str,
        cluster_id: Uuid,
        stamp: Stamp,
        hash: &[u8],
        name: &str,
        until: DateTime<Utc>,
    ) {
        self.store(tenant, cluster_id, stamp, |s| {
            // a rotation leaves two valid at once; more is someone guessing
            s.credentials.retain(|(h, _, _)| h != hash);
            s.credentials.truncate(3);
            s.credentials.push((hash.to_vec(), name.to_string(), until));
        });
    }
}

impl Cache {
    /// Whether `hash` is the remembered hash of the cluster's stored report.
    pub fn report_is(&self, tenant: &str, cluster_id: Uuid, hash: &[u8]) -> bool {
        self.read(tenant, cluster_id, |s| {
            (s.report_hash.as_deref() == Some(hash)).then_some(())
        })
        .is_some()
    }

    /// Whether `body` (a SHA-256) is that of the body the cluster's stored
    /// report came in.
    pub fn report_body_is(&self, tenant: &str, cluster_id: Uuid, body: &[u8; 32]) -> bool {
        self.read(tenant, cluster_id, |s| {
            (s.report_body.as_ref() == Some(body)).then_some(())
        })
        .is_some()
    }

    /// Remembers the hash of the cluster's stored report and the SHA-256 of
    /// the body it came in.
    pub fn store_report_hash(
        &self,
        tenant: &str,
        cluster_id: Uuid,
        stamp: Stamp,
        hash: &[u8],
        body: [u8; 32],
    ) {
        self.store(tenant, cluster_id, stamp, |s| {
            s.report_hash = Some(hash.to_vec());
            s.report_body = Some(body);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_change_is_not_stored() {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        let before = cache.stamp();
        cache.forget("t", id, Forget::All);
        cache.store_desired_etag("t", id, before, "\"old\"");
        assert_eq!(cache.desired_etag("t", id), None);
        let after = cache.stamp();
        cache.store_desired_etag("t", id, after, "\"new\"");
        assert_eq!(cache.desired_etag("t", id).as_deref(), Some("\"new\""));
        assert_eq!(cache.desired_etag("u", id), None, "another tenant's key");
    }

    #[test]
    fn a_status_change_keeps_the_credentials_and_the_desired_state_and_a_credential_change_forgets_all()
     {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        let now = Utc::now();
        let until = now + chrono::Duration::hours(1);
        let remember = |cache: &Cache| {
            let stamp = cache.stamp();
            cache.store_credential("t", id, stamp, b"h", "a", until);
            cache.store_desired_etag("t", id, stamp, "\"d\"");
            cache.store_report_hash("t", id, stamp, b"r", [1; 32]);
        };
        remember(&cache);
        cache.forget("t", id, Forget::StatusAndResource);
        assert_eq!(cache.credential("t", id, b"h", now).as_deref(), Some("a"));
        assert_eq!(cache.desired_etag("t", id).as_deref(), Some("\"d\""));
        assert!(!cache.report_is("t", id, b"r"));

        remember(&cache);
        cache.forget("t", id, Forget::AllButCredentials);
        assert_eq!(cache.credential("t", id, b"h", now).as_deref(), Some("a"));
        assert_eq!(cache.desired_etag("t", id), None);
        assert!(!cache.report_is("t", id, b"r"));

        // a read stamped before any forget is not stored
        let before = cache.stamp();
        cache.forget("t", id, Forget::StatusAndResource);
        cache.store_credential("t", id, before, b"old", "a", until);
        assert_eq!(cache.credential("t", id, b"old", now), None);

        remember(&cache);
        cache.forget("t", id, Forget::All);
        assert_eq!(cache.credential("t", id, b"h", now), None);
        assert_eq!(cache.desired_etag("t", id), None);
    }

    #[test]
    fn forgetting_everything_voids_stamps_taken_before() {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        let before = cache.stamp();
        cache.forget_all();
        cache.store_resource_etag("t", "a", id, before, "\"x-1\"");
        assert_eq!(cache.resource_etag("t", "a"), None);
        cache.store_resource_etag("t", "a", id, cache.stamp(), "\"x-1\"");
        assert_eq!(cache.resource_etag("t", "a").as_deref(), Some("\"x-1\""));
        assert_eq!(cache.resource_etag("u", "a"), None);
        cache.forget("t", id, Forget::All);
        assert_eq!(cache.resource_etag("t", "a"), None);
    }

    #[test]
    fn a_credential_is_remembered_until_it_expires() {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(60);
        cache.store_credential("t", id, cache.stamp(), b"h", "a", until);
        assert_eq!(cache.credential("t", id, b"h", now).as_deref(), Some("a"));
        assert_eq!(cache.credential("t", id, b"other", now), None);
        assert_eq!(cache.credential("t", id, b"h", until), None);
        cache.forget("t", id, Forget::All);
        assert_eq!(cache.credential("t", id, b"h", now), None);
    }

    #[test]
    fn a_report_hash_is_remembered_until_its_cluster_is_forgotten() {
        let cache = Cache::default();
        let id = Uuid::new_v4();
        let before = cache.stamp();
        cache.store_report_hash("t", id, before, b"h1", [1; 32]);
        assert!(cache.report_is("t", id, b"h1"));
        assert!(!cache.report_is("t", id, b"h2"), "another report");
        assert!(!cache.report_is("u", id, b"h1"), "another tenant's key");
        assert!(cache.report_body_is("t", id, &[1; 32]));
        assert!(!cache.report_body_is("t", id, &[2; 32]), "other bytes");
        assert!(
            !cache.report_body_is("u", id, &[1; 32]),
            "another tenant's key"
        );
        cache.forget("t", id, Forget::StatusAndResource);
        assert!(!cache.report_is("t", id, b"h1"));
        assert!(
            !cache.report_body_is("t", id, &[1; 32]),
            "the body is forgotten with the report"
        );
        cache.store_report_hash("t", id, before, b"h1", [1; 32]);
        assert!(
            !cache.report_is("t", id, b"h1"),
            "stamped before the change"
        );
    }
}
