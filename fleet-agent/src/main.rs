//! `meshfleet-agent`: see the crate docs of `meshfleet_agent`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use meshfleet_agent::backend::ClusterBackend;
use meshfleet_agent::config::Cli;
use meshfleet_agent::{Agent, KubeBackend, SimCluster, SimOptions, health};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "meshfleet-agent failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let telemetry = meshfleet_agent::telemetry::init(&cli)?;
    let result = run_agent(cli).await;
    // Flushing blocks until the exporter is done; off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run_agent(cli: Cli) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    if cli.simulate {
        let sim = SimCluster::new(SimOptions::default());
        if let Some(token) = &cli.bootstrap_token {
            sim.set_bootstrap(
                &cli.namespace,
                &cli.bootstrap_secret,
                token,
                cli.url.as_deref(),
            );
        }
        tracing::warn!(
            "MESHFLEET_SIMULATE: running over a simulated cluster; nothing is installed"
        );
        serve(cli, sim, metrics).await
    } else {
        let backend = KubeBackend::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or kubeconfig)")?;
        serve(cli, backend, metrics).await
    }
}

async fn serve<B: ClusterBackend>(
    cli: Cli,
    backend: B,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let agent = Agent::new(cli.agent_config(), backend);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let listener = tokio::net::TcpListener::bind(cli.health_addr)
        .await
        .with_context(|| format!("MESHFLEET_HEALTH_ADDR: binding {}", cli.health_addr))?;
    let health = tokio::spawn(health::serve(
        listener,
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
    health.await?.context("health server")?;
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
