//! The sweep: claim due clusters, reconcile each, say when to look again;
//! on failure, back off (the error policy). NOTIFY wakes the sweep early;
//! the periodic poll is what guarantees progress.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use meshfleet_core::clock::SharedClock;
use meshfleet_core::notify::{self, RECONCILE_CHANNEL, RELEASES_CHANNEL, ROLLOUT_CHANNEL, Signal};
use meshfleet_core::store::reconcile::{self, Claim};
use meshfleet_core::store::rollouts;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::context::{Config, Context};
use crate::error::Result;
use crate::{cluster, rollout};

#[derive(Clone)]
pub struct Reconciler {
    ctx: Arc<Context>,
    wake: Arc<Notify>,
    /// Agents that reported since the last sweep: their clusters may be in
    /// flight in a rollout (a hint only; the rollouts' own times guarantee
    /// progress).
    hints: Arc<Mutex<Hints>>,
    /// When (by the clock) quiet agents were last looked for.
    connectivity_swept: Arc<Mutex<Option<chrono::DateTime<chrono::Utc>>>>,
}

/// Rollout hints gathered between sweeps.
#[derive(Debug, Default)]
pub struct Hints {
    /// Clusters whose agents reported, by tenant.
    clusters: HashMap<String, HashSet<Uuid>>,
    /// Notifications may have been missed (the listener connected again, or
    /// a payload was not understood): every active rollout gets a full look.
    anything: bool,
}

impl Hints {
    /// That these clusters' agents reported (as the listener gathers it).
    pub fn reported(tenant: &str, clusters: &[Uuid]) -> Self {
        Hints {
            clusters: HashMap::from([(tenant.to_string(), clusters.iter().copied().collect())]),
            anything: false,
        }
    }

    fn note(&mut self, payload: &str) {
        match notify::parse_cluster_payload(payload) {
            Some((tenant, id)) => match self.clusters.get_mut(tenant) {
                Some(ids) => {
                    ids.insert(id);
                }
                None => {
                    self.clusters
                        .insert(tenant.to_string(), HashSet::from([id]));
                }
            },
            None => self.anything = true,
        }
    }
}

/// How often (by the clock) quiet agents are looked for: a scan of
/// `cluster_status`, so not on every sweep.
const CONNECTIVITY_EVERY: i64 = 5;

/// Most clusters looked at in one transaction (their rows stay locked until
/// it commits, so a user's write to one of them waits that long at most).
const GROUP: usize = 50;

/// Backoff after `attempts` consecutive failures: 1 s, 2 s, 4 s ... 5 min.
fn backoff(attempts: i32) -> chrono::Duration {
    let secs = 1i64 << attempts.clamp(0, 9);
    chrono::Duration::seconds(secs.min(300))
}

impl Reconciler {
    pub fn new(pool: PgPool, config: Config, clock: SharedClock) -> Self {
        Reconciler {
            ctx: Arc::new(Context {
                pool,
                config,
                clock,
            }),
            wake: Arc::new(Notify::new()),
            hints: Arc::default(),
            connectivity_swept: Arc::default(),
        }
    }

    /// Records connectivity transitions, at most every few seconds.
    async fn sweep_connectivity(&self) -> Result<usize> {
        let now = self.ctx.clock.now();
        {
            let mut last = self
                .connectivity_swept
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| now - t < chrono::Duration::seconds(CONNECTIVITY_EVERY)) {
                return Ok(0);
            }
            *last = Some(now);
        }
        crate::connectivity::sweep(&self.ctx).await
    }

    /// Reconciles one claimed cluster under the error policy.
    async fn handle(&self, claim: Claim, lease_until: chrono::DateTime<chrono::Utc>) -> bool {
        let started = Instant::now();
        let outcome = cluster::reconcile(&claim, &self.ctx).await;
        metrics::histogram!("meshfleet_reconcile_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(_) => {
                metrics::counter!("meshfleet_reconcile_total", "result" => "ok").increment(1);
                true
            }
            Err(e) => {
                metrics::counter!("meshfleet_reconcile_total", "result" => e.kind()).increment(1);
                tracing::warn!(tenant = %claim.tenant_id, cluster = %claim.cluster_id, error = %e,
                    attempts = claim.attempts + 1, "reconcile failed; backing off");
                let retry_at = self.ctx.clock.now() + backoff(claim.attempts);
                if let Err(e) = reconcile::failed(
                    &self.ctx.pool,
                    &claim.tenant_id,
                    claim.cluster_id,
                    &e.to_string(),
                    lease_until,
                    retry_at,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot record the failure; the lease will run out");
                }
                false
            }
        }
    }

    /// One sweep: quiet agents, due clusters and due (or hinted) rollouts,
    /// interleaved batch by batch so that neither starves the other; how
    /// many items it reconciled. Before each batch of clusters the rollout
    /// hints gathered so far are used: a rollout is driven at most once per
    /// batch for them.
    pub async fn run_once(&self) -> Result<usize> {
        let mut done = self.sweep_connectivity().await?;
        // bounded, so that `run` gets to check for shutdown
        for _ in 0..100 {
            // rollouts first, with the hints gathered so far: a report that
            // ends a cluster's upgrade starts the next one without waiting
            // for a batch of cluster looks (or several, in a backlog)
            let rollouts = self.sweep_rollouts(self.take_hints()).await?;
            let clusters = self.sweep_cluster_batch().await?;
            done += clusters + rollouts;
            if clusters < self.ctx.config.batch as usize {
                break;
            }
        }
        Ok(done)
    }

    fn take_hints(&self) -> Hints {
        std::mem::take(&mut *self.hints.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Drives due rollouts and those `hints` name, one tick each. A hinted
    /// rollout another replica holds is left to it (every replica hears
    /// every hint).
    pub async fn sweep_rollouts(&self, hints: Hints) -> Result<usize> {
        let mut hinted: HashMap<Uuid, rollout::Hint> = HashMap::new();
        if hints.anything {
            for id in rollouts::active_ids(&self.ctx.pool).await? {
                hinted.insert(id, rollout::Hint::Anything);
            }
        }
        if !hints.clusters.is_empty() {
            let reported: Vec<(String, Uuid)> = hints
                .clusters
                .into_iter()
                .flat_map(|(tenant, ids)| ids.into_iter().map(move |id| (tenant.clone(), id)))
                .collect();
            for (_, id, cluster) in rollouts::in_flight_among(&self.ctx.pool, &reported).await? {
                if let rollout::Hint::Reported(clusters) = hinted
                    .entry(id)
                    .or_insert_with(|| rollout::Hint::Reported(Vec::new()))
                {
                    clusters.push(cluster);
                }
            }
        }
        let mut done = 0;
        // bounded: a rollout is driven at most once per hint and once per due time
        for _ in 0..1000 {
            let started = Instant::now();
            let Some(id) = rollout::tick(&self.ctx, &hinted).await? else {
                break;
            };
            metrics::histogram!("meshfleet_rollout_tick_seconds")
                .record(started.elapsed().as_secs_f64());
            hinted.remove(&id);
            done += 1;
        }
        Ok(done)
    }

    /// Claims one batch of due clusters and reconciles them; how many.
    pub async fn sweep_cluster_batch(&self) -> Result<usize> {
        let now = self.ctx.clock.now();
        let lease = chrono::Duration::from_std(self.ctx.config.lease)
            .unwrap_or(chrono::Duration::seconds(30));
        let lease_until = now + lease;
        let claims =
            reconcile::claim_due(&self.ctx.pool, now, lease_until, self.ctx.config.batch).await?;
        let n = claims.len();
        // A tenant's clusters are looked at together (a transaction per
        // group); a group that fails is retried one cluster at a time, each
        // with its own backoff.
        let mut groups: Vec<Vec<Claim>> = Vec::new();
        let mut by_tenant: std::collections::BTreeMap<String, Vec<Claim>> = Default::default();
        for claim in claims {
            by_tenant
                .entry(claim.tenant_id.clone())
                .or_default()
                .push(claim);
        }
        for (_, claims) in by_tenant {
            for chunk in claims.chunks(GROUP) {
                groups.push(chunk.to_vec());
            }
        }
        futures::stream::iter(groups)
            .for_each_concurrent(self.ctx.config.concurrency, |group| async move {
                self.handle_group(group, lease_until).await;
            })
            .await;
        Ok(n)
    }

    async fn handle_group(&self, group: Vec<Claim>, lease_until: chrono::DateTime<chrono::Utc>) {
        let started = Instant::now();
        match cluster::reconcile_many(&group[0].tenant_id, &group, &self.ctx).await {
            Ok(n) => {
                metrics::histogram!("meshfleet_reconcile_batch_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("meshfleet_reconcile_total", "result" => "ok")
                    .increment(n as u64);
            }
            Err(e) => {
                tracing::debug!(error = %e, clusters = group.len(), "a group failed; taking its clusters one by one");
                for claim in group {
                    self.handle(claim, lease_until).await;
                }
            }
        }
    }

    /// Wakes the sweep now (e.g. from a NOTIFY).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Listens for work that became due early (clusters scheduled now, a
    /// catalog change: the api schedules the channel followers in the same
    /// transaction) and for rollout hints. The caller owns the task.
    pub fn spawn_listener(&self) -> JoinHandle<()> {
        let this = self.clone();
        let pool = self.ctx.pool.clone();
        tokio::spawn(async move {
            notify::listen(
                pool,
                &[RECONCILE_CHANNEL, RELEASES_CHANNEL, ROLLOUT_CHANNEL],
                None,
                move |signal| match signal {
                    Signal::Notification { channel, payload } if channel == ROLLOUT_CHANNEL => {
                        this.hints
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .note(payload);
                        this.wake();
                    }
                    Signal::Connected => {
                        // hints may have been missed while not listening
                        this.hints
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .anything = true;
                        this.wake();
                    }
                    _ => this.wake(),
                },
            )
            .await
        })
    }

    /// Runs sweeps until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("reconciler running");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let began = Instant::now();
            match self.run_once().await {
                Ok(n) if n > 0 => tracing::debug!(clusters = n, "sweep"),
                Ok(_) => {}
                Err(e) => {
                    // the hints it took may be lost: every active rollout gets a full look
                    self.hints
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .anything = true;
                    tracing::warn!(error = %e, "sweep failed; retrying");
                }
            }
            let poll = self.ctx.config.poll;
            tokio::select! {
                _ = self.wake.notified() => {
                    // Let the burst this wake-up belongs to settle; after a
                    // sweep longer than that, still a pause (a quarter of it):
                    // a stream of reports never runs sweeps back to back.
                    let settle = self.ctx.config.settle;
                    let settle = settle.saturating_sub(began.elapsed()).max(settle / 4);
                    tokio::select! {
                        _ = tokio::time::sleep(settle) => {},
                        _ = shutdown.changed() => {},
                    }
                },
                _ = tokio::time::sleep(poll) => {},
                _ = shutdown.changed() => {},
            }
        }
        tracing::info!("reconciler stopped");
    }
}
