//! Fleet simulator: registers N clusters through the real API and runs N real
//! agent loops, each over a simulated cluster, in this one process; prints
//! what happens. A demo companion of `meshfleet up`, and the harness the
//! performance work grows on.
//!
//!   cargo run -p meshfleet-tests --bin fleet-sim -- --clusters 20
//!   cargo run --release -p meshfleet-tests --bin fleet-sim -- --clusters 2000 --exit-when-converged --upgrade-to 1.28.2

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use meshfleet_agent::{Agent, AgentConfig, SimCluster, SimOptions};
use meshfleet_api::auth::{DevSigner, Role};
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-sim",
    about = "Runs N simulated clusters with real agents against a meshfleet service"
)]
struct Args {
    /// Base URL of the service.
    #[arg(long, env = "MESHFLEET_URL", default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Bearer token (contributor or owner); default: minted with the dev key of --data-dir.
    #[arg(long, env = "TOKEN")]
    token: Option<String>,
    /// Data folder of `meshfleet up` (for its dev key).
    #[arg(long, default_value = ".meshfleet")]
    data_dir: PathBuf,
    /// Tenant of the minted token.
    #[arg(long, default_value = "demo")]
    tenant: String,
    #[arg(long, default_value_t = 20)]
    clusters: usize,
    /// Cluster name prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Istio version the clusters start on.
    #[arg(long, default_value = "1.27.1")]
    version: String,
    /// How long a simulated workload takes to become ready.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    ready_after: std::time::Duration,
    /// Percentage of clusters whose ztunnel rollout is broken (shows up as Degraded).
    #[arg(long, default_value_t = 0)]
    broken_percent: usize,
    /// Once all clusters are converged, upgrade them all to this version and measure again.
    #[arg(long)]
    upgrade_to: Option<String>,
    /// Exit once converged (after the upgrade, if any) instead of running until Ctrl-C.
    #[arg(long)]
    exit_when_converged: bool,
    /// Agent heartbeat and long-poll wait (production: 30s and 55s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: std::time::Duration,
    /// Span export of the agents (OTEL_EXPORTER_OTLP_ENDPOINT, ...), as `meshfleet-agent`.
    #[command(flatten)]
    otel: meshfleet_telemetry::OtelArgs,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Health counts of this run's clusters, and how many are at `generation`.
async fn census(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    run: &str,
    generation: i64,
) -> (BTreeMap<String, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut at_generation = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/v1/clusters?limit=500&labelSelector=meshfleet-sim%3D{run}",
            a.base
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for c in page["items"].as_array().unwrap() {
            let health = c["status"]["health"]
                .as_str()
                .unwrap_or("Unknown")
                .to_string();
            *counts.entry(health.clone()).or_insert(0) += 1;
            if health == "Healthy" && c["status"]["observedGeneration"] == generation {
                at_generation += 1;
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (counts, at_generation)
}

async fn wait_converged(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    run: &str,
    generation: i64,
    expect: usize,
) -> Duration {
    let started = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let (counts, done) = census(client, a, token, run, generation).await;
        if last_print.elapsed() >= Duration::from_secs(2) || done >= expect {
            println!(
                "  t+{:>5.1}s  {counts:?}  converged at generation {generation}: {done}/{expect}",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if done >= expect {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let telemetry = meshfleet_telemetry::init(
        "warn",
        meshfleet_telemetry::LogFormat::Text,
        &a.otel,
        "meshfleet-agent",
        meshfleet_agent::AGENT_VERSION,
        std::io::stderr,
    )
    .unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let token = match &a.token {
        Some(t) => t.clone(),
        None => {
            let signer = DevSigner::load(&a.data_dir).unwrap_or_else(|e| {
                eprintln!("error: {e}\nstart `meshfleet up` first, or pass --token");
                std::process::exit(2)
            });
            signer.mint(
                "fleet-sim",
                &a.tenant,
                &[Role::Owner],
                Duration::from_secs(24 * 3600),
            )
        }
    };
    let client = meshfleet_tests::agents::fleet_http();
    let run = format!("{:x}", std::process::id());
    let broken_every = if a.broken_percent == 0 {
        usize::MAX
    } else {
        (100 / a.broken_percent.min(100)).max(1)
    };
    println!(
        "fleet-sim: {} clusters against {} (run {run})",
        a.clusters, a.base
    );

    let started = Instant::now();
    let regions = ["eu-west", "us-east", "ap-south"];
    let sims: Vec<(String, SimCluster)> = futures::stream::iter(0..a.clusters)
        .map(|i| {
            let (client, a, token, run) = (client.clone(), &a, token.clone(), run.clone());
            async move {
                let name = format!("{}-{run}-{i:05}", a.prefix);
                let body = json!({
                    "labels": {"meshfleet-sim": run, "env": if i % 3 == 0 { "prod" } else { "staging" }, "region": regions[i % 3]},
                    "mesh": {"upgrade": {"mode": "manual", "version": a.version}, "enrolledNamespaces": ["shop"],
                             "waypoints": [{"namespace": "shop", "name": "shop-waypoint"}]}
                });
                let r = client.put(format!("{}/v1/clusters/{name}", a.base)).bearer_auth(&token).json(&body).send().await.unwrap();
                assert!(r.status().is_success(), "creating {name}: {}", r.text().await.unwrap());
                let r = client.post(format!("{}/v1/clusters/{name}/bootstrap-tokens", a.base)).bearer_auth(&token).send().await.unwrap();
                let bt: Value = r.json().await.unwrap();
                let sim = SimCluster::new(SimOptions { ready_after: a.ready_after, op_log: 0, ..SimOptions::default() });
                sim.set_bootstrap(AGENT_NAMESPACE, BOOTSTRAP_SECRET, bt["token"].as_str().unwrap(), Some(&a.base));
                if i % broken_every == broken_every - 1 {
                    sim.break_workload("ztunnel", "CrashLoopBackOff: ztunnel cannot reach istiod");
                }
                (name, sim)
            }
        })
        .buffered(32)
        .collect()
        .await;
    println!(
        "registered {} clusters in {:.1}s",
        sims.len(),
        started.elapsed().as_secs_f64()
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (_, sim) in &sims {
        let mut config = AgentConfig::new(a.base.clone());
        config.http = Some(client.clone());
        config.heartbeat = a.heartbeat;
        config.poll_wait = Duration::from_secs(55);
        // Simulated workloads become ready in --ready-after; look often.
        config.reconcile.poll_interval = Duration::from_millis(50);
        let agent = Agent::new(config, sim.clone());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = agent
                .run(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }));
    }
    let broken = if broken_every == usize::MAX {
        0
    } else {
        a.clusters / broken_every
    };
    let healthy_expected = a.clusters - broken;
    println!(
        "{} agents running; waiting for {healthy_expected} clusters to be Healthy ({broken} are broken on purpose)",
        tasks.len()
    );
    let took = wait_converged(&client, &a, &token, &run, 1, healthy_expected).await;
    println!(
        "converged: {healthy_expected} clusters Healthy in {:.1}s; this process holds {:.1} MiB RSS",
        took.as_secs_f64(),
        rss_mib()
    );

    if let Some(version) = &a.upgrade_to {
        println!("upgrading all clusters to {version}");
        let t0 = Instant::now();
        let names: Vec<String> = sims.iter().map(|(n, _)| n.clone()).collect();
        futures::stream::iter(names)
            .map(|name| {
                let (client, base, token) = (client.clone(), a.base.clone(), token.clone());
                let body = json!({"mesh": {"upgrade": {"version": version}}}).to_string();
                async move {
                    let r = client
                        .patch(format!("{base}/v1/clusters/{name}"))
                        .bearer_auth(&token)
                        .header("content-type", "application/merge-patch+json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(
                        r.status().is_success(),
                        "upgrading {name}: {}",
                        r.text().await.unwrap()
                    );
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        println!(
            "  {} spec changes written in {:.1}s",
            sims.len(),
            t0.elapsed().as_secs_f64()
        );
        let took = wait_converged(&client, &a, &token, &run, 2, healthy_expected).await;
        println!(
            "upgraded: {healthy_expected} clusters Healthy on {version} {:.1}s after the first write",
            (t0.elapsed()).as_secs_f64().max(took.as_secs_f64())
        );
    }

    if !a.exit_when_converged {
        println!(
            "running until Ctrl-C (the clusters stay registered; see them at {}/v1/clusters)",
            a.base
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    println!("fleet-sim: done; {:.1} MiB RSS at the end", rss_mib());
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
}
