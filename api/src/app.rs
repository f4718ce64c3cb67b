//! The application: the router with its middleware, and serving.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use meshfleet_core::ops::heartbeat::Heartbeats;
use tokio::net::TcpListener;
use utoipa_swagger_ui::SwaggerUi;

use crate::http;
use crate::http::HEADER_LIMIT;
use crate::request_context::{ContextState, request_context};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let (api, doc) = crate::openapi::api_router().split_for_parts();
    let doc = crate::openapi::finish(doc);
    api.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", doc))
        .merge(crate::portal::router())
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            ContextState {
                config: state.config.clone(),
                route_stats: state.route_stats.clone(),
            },
            request_context,
        ))
        .with_state(state)
}

/// Largest buffer of a connection: the read buffer for a request head, and
/// the queue of response bytes not yet written. Twice [`HEADER_LIMIT`], so a
/// head over the limit still reaches the app and gets its 431 problem; a
/// larger one is refused by the server with a bare 431. A connection starts
/// with 1 KiB to read and a response-head buffer made on first use (hyper
/// itself starts both at 8 KiB; see vendor/hyper/MESHFLEET-PATCH.md), and
/// reads grow the read buffer by powers of two up to this.
pub const CONNECTION_BUFFER_LIMIT: usize = 2 * HEADER_LIMIT;

/// A server bound to an address, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    /// Written once the requests in flight are done.
    heartbeats: Heartbeats,
}

impl Server {
    /// The app of `state` ([`router`]) on `addr`, with the connection
    /// settings of `state.config`.
    pub async fn bind(addr: SocketAddr, state: &AppState) -> std::io::Result<Server> {
        Ok(Server::from_listener(TcpListener::bind(addr).await?, state))
    }

    pub fn from_listener(listener: TcpListener, state: &AppState) -> Server {
        Server {
            listener,
            router: router(state.clone()),
            header_read_timeout: state.config.header_read_timeout,
            heartbeats: state.heartbeats.clone(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves HTTP/1.1 until `shutdown` resolves, then stops accepting, lets
    /// the requests in flight finish (long polls answer at once once the app
    /// drains: `AppState::begin_shutdown`), closes idle connections and writes
    /// the heartbeats not written yet.
    ///
    /// hyper directly rather than `axum::serve`, for the connection settings
    /// and because `axum::serve` rebuilds the router's route tables for every
    /// connection (≈ 11 KiB each); here a connection shares the router.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(CONNECTION_BUFFER_LIMIT)
            // queue response bodies rather than copying them into the
            // connection's buffer, which would keep the largest one's size
            .writev(true);
        let connections = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = TowerToHyperService::new(self.router.clone());
            let connection =
                connections.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        connections.shutdown().await;
        // the heartbeats acknowledged from memory since the last flush
        if let Err(e) = self.heartbeats.flush().await {
            tracing::warn!(error = %e, "could not write the last heartbeats");
        }
        Ok(())
    }
}

/// A failed accept: the peer gave up (nothing to do), or the process is out
/// of something (file descriptors): say so and pause rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
