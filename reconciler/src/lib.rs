//! meshfleet's reconciler: the background engine that makes the service
//! *managed*. It moves channel-following clusters along their channel inside
//! their maintenance windows (one minor at a time, the next only after the
//! previous one converged), forces upgrades past end of support, records
//! connectivity transitions and progress deadlines once each, and finishes
//! cluster deletions.
//!
//! Shaped like kube-rs `controller-rs`: a [`Context`] (pool, config, clock),
//! one `reconcile(item, &ctx)` per kind of work that says when to look
//! again, and an error policy that retries with backoff. Work is found by a
//! periodic sweep of due rows (`cluster_reconcile.next_check_at`, claimed
//! with `FOR UPDATE SKIP LOCKED` and leased), so any number of replicas can
//! run against one database; NOTIFY only wakes the sweep early.

pub mod cluster;
pub mod connectivity;
pub mod context;
pub mod engine;
pub mod error;
pub mod rollout;

pub use context::{Config, Context};
pub use engine::Reconciler;
pub use error::Error;
