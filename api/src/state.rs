//! What every handler gets: the pool, the verifier, the config, the clock,
//! the long-poll hub, and the drain signal.

use std::sync::Arc;

use meshfleet_core::clock::SharedClock;
use meshfleet_core::ops::heartbeat::Heartbeats;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Verifier;
use crate::config::AppConfig;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::route_stats::RouteStats;

/// A readiness condition beside the database and the listener (e.g. `up`'s
/// in-process reconciler): `Some(what is down)` while not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    /// Renders `/metrics` (the process's recorder is installed by the binary).
    pub metrics: PrometheusHandle,
    pub config: Arc<AppConfig>,
    pub clock: SharedClock,
    /// Wakes long-polling agents (fed by this process's LISTEN connection).
    pub hub: Arc<Hub>,
    /// Writes unchanged status reports in batches (one statement per batch).
    pub heartbeats: Heartbeats,
    /// This process's request limits (token buckets per tenant and per agent).
    pub limits: Arc<Limits>,
    /// This process's request counters per route (the SLI's rates).
    pub route_stats: Arc<RouteStats>,
    /// Turns `true` when the server starts draining: long polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    /// When `/metrics` last read the fleet gauges from the database.
    pub fleet_gauges_read: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
    /// More conditions `/readyz` reports on ([`AppState::with_readiness_check`]).
    pub readiness: Arc<[ReadinessCheck]>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        verifier: Verifier,
        config: AppConfig,
        metrics: PrometheusHandle,
        clock: SharedClock,
    ) -> Self {
        let (tx, rx) = watch::channel(false);
        let limits = Arc::new(Limits::new(config.tenant_rate, config.agent_rate));
        AppState {
            heartbeats: Heartbeats::spawn(pool.clone()),
            limits,
            pool,
            verifier: Arc::new(verifier),
            metrics,
            config: Arc::new(config),
            clock,
            hub: Arc::new(Hub::default()),
            route_stats: Arc::new(RouteStats::default()),
            shutdown: rx,
            shutdown_tx: Arc::new(tx),
            fleet_gauges_read: Arc::default(),
            readiness: Arc::new([]),
        }
    }

    /// Adds a condition to `/readyz`: `check` returns what is down, if anything.
    pub fn with_readiness_check(
        mut self,
        check: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let mut checks = self.readiness.to_vec();
        checks.push(Arc::new(check));
        self.readiness = checks.into();
        self
    }

    /// Starts this process's desired-state listener, which feeds the hub
    /// (it ends when the pool is closed). The caller owns the task.
    pub fn spawn_listener(&self) -> JoinHandle<()> {
        tokio::spawn(crate::hub::listen(self.pool.clone(), self.hub.clone()))
    }

    /// Waits (up to `limit`) until the listener is connected; whether it is.
    pub async fn wait_listening(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.hub.listening() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Starts draining: waiting long polls answer 304 at once.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }
}
