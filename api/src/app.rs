//! The application: shared state, the router with its middleware, and serving.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Verifier;
use crate::http;
use crate::notify::Hub;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    pub metrics: PrometheusHandle,
    pub config: Arc<AppConfig>,
    /// Wakes long-polling agents (fed by this process's LISTEN connection).
    pub hub: Arc<Hub>,
    /// Turns `true` when the server starts draining: long polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Limit for ordinary requests.
    pub request_timeout: Duration,
    /// Limit for the desired-state long poll (which waits up to 60 s by design).
    pub long_poll_timeout: Duration,
    pub bootstrap_ttl: Duration,
    pub credential_ttl: Duration,
    /// Image of the agent in the install manifest.
    pub agent_image: String,
    /// URL agents use to reach this service; derived from the request when unset.
    pub public_url: Option<String>,
    /// Status changes kept per cluster.
    pub status_history_keep: i64,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            request_timeout: Duration::from_secs(30),
            long_poll_timeout: Duration::from_secs(90),
            bootstrap_ttl: Duration::from_secs(24 * 3600),
            credential_ttl: Duration::from_secs(30 * 24 * 3600),
            agent_image: format!("meshfleet/meshfleet-agent:{}", env!("CARGO_PKG_VERSION")),
            public_url: None,
            status_history_keep: 100,
        }
    }
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours
            // simply renders nothing; never fatal.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl AppState {
    /// Builds the state and starts this process's desired-state listener
    /// (it ends when the pool is closed).
    pub fn new(pool: PgPool, verifier: Verifier, config: AppConfig) -> Self {
        let hub = Arc::new(Hub::default());
        tokio::spawn(crate::notify::listen(pool.clone(), hub.clone()));
        let (tx, rx) = watch::channel(false);
        AppState {
            pool,
            verifier: Arc::new(verifier),
            metrics: metrics_handle(),
            config: Arc::new(config),
            hub,
            shutdown: rx,
            shutdown_tx: Arc::new(tx),
        }
    }

    /// Starts draining: waiting long polls answer 304 at once.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = crate::openapi::api_router().split_for_parts();
    let mut doc = doc;
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.config.clone(),
            http::request_context,
        ))
        .with_state(state)
}

/// A server bound to an address, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr).await?,
            router,
        })
    }

    pub fn from_listener(listener: TcpListener, router: Router) -> Server {
        Server { listener, router }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining requests in flight");
}
