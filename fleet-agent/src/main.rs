//! `meshfleet-agent`: see the crate docs of `meshfleet_agent`.

use clap::Parser;
use meshfleet_agent::config::Cli;
use meshfleet_agent::{Agent, KubeBackend, health};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&cli.log).map_err(|e| anyhow::anyhow!("MESHFLEET_LOG: {e}"))?,
        )
        .json()
        .init();
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let backend = KubeBackend::try_default().await.map_err(|e| {
        anyhow::anyhow!("connecting to the Kubernetes API (in-cluster or kubeconfig): {e}")
    })?;
    let agent = Agent::new(cli.agent_config(), backend);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let health = tokio::spawn(health::serve(
        cli.health_addr,
        agent.state(),
        Some(metrics),
        stopped(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    agent.run(stopped()).await?;
    health.await??;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
