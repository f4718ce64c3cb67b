//! The application: the router with its middleware, and serving.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use utoipa_swagger_ui::SwaggerUi;

use crate::request_context::request_context;
use crate::state::AppState;
use crate::{http, route_stats};

pub fn router(state: AppState) -> Router {
    let (api, doc) = crate::openapi::api_router().split_for_parts();
    let doc = crate::openapi::finish(doc);
    api.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", doc))
        .merge(crate::portal::router())
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.config.clone(),
            request_context,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.route_stats.clone(),
            route_stats::count,
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
