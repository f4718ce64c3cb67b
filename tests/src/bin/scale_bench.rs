//! Fleet-scale benchmark without an agent per cluster: registers N clusters
//! through the API of a private release `meshfleet up` (the same code path as
//! any client), registers M agents, stores their first reports, then drives
//! status reports from M credentials at full speed (a chosen share of them
//! changed, the rest heartbeats) and measures GET, list and summary latency at
//! that size. Prints each figure beside its target and ends with `RESULT`
//! lines.
//!
//!   bench/scale.sh [--clusters 100000] [--agents 10000] [--seconds 10]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use meshfleet_tests::bench::{cpu_snapshot, print_cpu, register_agent, rss_kib};
use meshfleet_tests::up::Up;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "target/release/meshfleet")]
    meshfleet: PathBuf,
    /// Clusters registered (one tenant: the worst case for its lists).
    #[arg(long, default_value_t = 100_000)]
    clusters: usize,
    /// Of those, clusters whose agent registers and reports.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// How long status reports are driven.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight from this driver.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Percent of the reporting clusters whose every report is a change.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
}

const TENANT: &str = "scale";
const VERSION: &str = "1.28.2";

fn name(i: usize) -> String {
    format!("c-{i:06}")
}

fn report(degraded: bool) -> Value {
    let ztunnel_ready = !degraded;
    json!({
        "observedGeneration": 1,
        "components": [
            {"name": "istiod", "desiredVersion": VERSION, "observedVersion": VERSION, "ready": true,
             "desiredReplicas": 2, "readyReplicas": 2},
            {"name": "ztunnel", "desiredVersion": VERSION, "observedVersion": VERSION,
             "ready": ztunnel_ready, "desiredReplicas": 3, "readyReplicas": if degraded { 2 } else { 3 }}
        ],
        "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3, "agentVersion": "0.1.0"}
    })
}

/// Runs `n` requests made by `make(i)`, `concurrency` at a time; panics on a
/// failure (the figures of a run with errors mean nothing). Returns req/s.
async fn drive<F, Fut>(n: usize, concurrency: usize, what: &str, make: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(make)
        .buffer_unordered(concurrency);
    let mut done = 0usize;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            panic!("{what}: {e}");
        }
        done += 1;
        if done.is_multiple_of(20_000) {
            eprintln!(
                "  {what}: {done}/{n} ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn expect(r: reqwest::Result<reqwest::Response>, status: u16) -> Result<Value, String> {
    let r = r.map_err(|e| e.to_string())?;
    let got = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if got != status {
        return Err(format!("{got} (expected {status}): {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Latency of `samples` requests of `url(i)`, 4 at a time.
async fn latencies(
    client: &reqwest::Client,
    token: &str,
    samples: usize,
    url: impl Fn(usize) -> String,
) -> Vec<Duration> {
    let mut took: Vec<Duration> = futures::stream::iter(0..samples)
        .map(|i| {
            let request = client.get(url(i)).bearer_auth(token);
            async move {
                let started = Instant::now();
                let r = request.send().await.expect("request");
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await;
                started.elapsed()
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    took.sort();
    took
}

/// The `p` quantile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    meshfleet_tests::bench::percentile(sorted, p).as_secs_f64() * 1000.0
}

fn result(name: &str, value: f64, unit: &str, op: &str, target: f64) {
    println!(
        "{}",
        meshfleet_tests::bench::result(name, value, unit, op, target)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.agents <= args.clusters, "--agents exceeds --clusters");
    let up = Up::start(
        &args.meshfleet,
        "scale",
        &[
            ("MESHFLEET_TENANT_RATE_LIMIT", "0"),
            ("MESHFLEET_AGENT_RATE_LIMIT", "0"),
            ("MESHFLEET_MAX_CLUSTERS_PER_TENANT", "0"),
            ("MESHFLEET_DB_MAX_CONNECTIONS", "40"),
        ],
    )
    .await;
    let token = up.token(TENANT).await;
    let base = up.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency + 8)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    println!(
        "scale: {} clusters in one tenant, {} reporting agents, {} s of status reports ({}% changes), {} requests in flight",
        args.clusters, args.agents, args.seconds, args.change_percent, args.concurrency
    );

    let rate = drive(args.clusters, args.concurrency, "register", |i| {
        let request = client
            .put(format!("{base}/v1/clusters/{}", name(i)))
            .bearer_auth(&token)
            .json(
                &json!({"labels": {"env": "prod", "ring": format!("r{}", i % 10)},
                          "mesh": {"upgrade": {"mode": "manual", "version": VERSION}}}),
            );
        async move { expect(request.send().await, 201).await.map(|_| ()) }
    })
    .await;
    println!(
        "  registered {} clusters through the API: {rate:.0}/s",
        args.clusters
    );

    let credentials: Arc<Vec<std::sync::Mutex<String>>> = Arc::new(
        (0..args.agents)
            .map(|_| std::sync::Mutex::new(String::new()))
            .collect(),
    );
    let rate = drive(args.agents, args.concurrency, "agents", |i| {
        let (client, base, token, credentials) = (
            client.clone(),
            base.clone(),
            token.clone(),
            credentials.clone(),
        );
        async move {
            *credentials[i].lock().expect("lock") = register_agent(
                &client,
                &base,
                &token,
                &name(i),
                json!({"facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3}}),
            )
            .await?;
            Ok(())
        }
    })
    .await;
    println!(
        "  registered {} agents: {rate:.0}/s (bootstrap token + registration)",
        args.agents
    );
    let credentials: Vec<String> = credentials
        .iter()
        .map(|c| c.lock().expect("lock").clone())
        .collect();
    let credentials = Arc::new(credentials);

    let rate = drive(args.agents, args.concurrency, "first reports", |i| {
        let request = client
            .put(format!("{base}/v1/agent/status"))
            .bearer_auth(&credentials[i])
            .json(&report(false));
        async move { expect(request.send().await, 204).await.map(|_| ()) }
    })
    .await;
    println!("  first (changed) reports: {rate:.0}/s");

    // status reports at full speed: a share of clusters change every time
    let changing = ((args.agents as f64) * args.change_percent / 100.0).round() as usize;
    let next = Arc::new(AtomicU64::new(0));
    let (beats, changes, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let cpu_before = cpu_snapshot(up.pid(), "scale-bench (load generator)");
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, base, credentials) = (client.clone(), base.clone(), credentials.clone());
            let (next, beats, changes, failed) =
                (next.clone(), beats.clone(), changes.clone(), failed.clone());
            let agents = args.agents as u64;
            tokio::spawn(async move {
                let (same, flipped) = (report(false), report(true));
                while Instant::now() < until {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let i = (n % agents) as usize;
                    let change = i < changing;
                    let body = if change && (n / agents).is_multiple_of(2) {
                        &flipped
                    } else {
                        &same
                    };
                    let r = client
                        .put(format!("{base}/v1/agent/status"))
                        .bearer_auth(&credentials[i])
                        .json(body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 204 => {
                            let counter = if change { &changes } else { &beats };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(up.pid(), "scale-bench (load generator)");
    let heartbeats_per_s = beats.load(Ordering::Relaxed) as f64 / secs;
    let changes_per_s = changes.load(Ordering::Relaxed) as f64 / secs;
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "  status reports for {secs:.1} s: {heartbeats_per_s:.0}/s unchanged (heartbeats), {changes_per_s:.0}/s changed, {failed} failed"
    );
    print_cpu(&cpu_before, &cpu_after, secs);

    // latency at this size, the driver otherwise idle
    let n = args.clusters;
    let get = latencies(&client, &token, 2000, |i| {
        format!("{base}/v1/clusters/{}", name((i * 7919) % n))
    })
    .await;
    println!(
        "  GET /v1/clusters/{{name}}              p50 {:6.2} ms  p99 {:6.2} ms   (target p99 <= 20 ms)",
        percentile(&get, 0.5),
        percentile(&get, 0.99)
    );
    // list pages: the first page and pages deep into the list (keyset cursors)
    let page_url = |limit: usize, cursor: &str| {
        if cursor.is_empty() {
            format!("{base}/v1/clusters?limit={limit}")
        } else {
            format!("{base}/v1/clusters?limit={limit}&cursor={cursor}")
        }
    };
    let mut cursors = vec![String::new()];
    let mut cursor = String::new();
    for _ in 0..50 {
        let page: Value = client
            .get(page_url(500, &cursor))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("list json");
        match page["nextCursor"].as_str() {
            Some(c) => {
                cursor = c.to_string();
                cursors.push(cursor.clone());
            }
            None => break,
        }
    }
    let list = latencies(&client, &token, 1000, |i| {
        page_url(50, &cursors[i % cursors.len()])
    })
    .await;
    println!(
        "  GET /v1/clusters?limit=50 (any page)  p50 {:6.2} ms  p99 {:6.2} ms   (target p99 <= 50 ms)",
        percentile(&list, 0.5),
        percentile(&list, 0.99)
    );
    let selected = latencies(&client, &token, 500, |i| {
        format!(
            "{base}/v1/clusters?limit=50&labelSelector=ring%3Dr{}",
            i % 10
        )
    })
    .await;
    println!(
        "  GET /v1/clusters?labelSelector=ring=… p50 {:6.2} ms  p99 {:6.2} ms",
        percentile(&selected, 0.5),
        percentile(&selected, 0.99)
    );
    let summary = latencies(&client, &token, 40, |_| format!("{base}/v1/fleet/summary")).await;
    println!(
        "  GET /v1/fleet/summary                 p50 {:6.2} ms  p99 {:6.2} ms",
        percentile(&summary, 0.5),
        percentile(&summary, 0.99)
    );
    let rss_kib = rss_kib(up.pid()).unwrap_or(0);
    println!("  api process RSS: {:.0} MiB", rss_kib as f64 / 1024.0);
    up.stop().await;

    result("scale_get_p99", percentile(&get, 0.99), "ms", "<=", 20.0);
    result("scale_list_p99", percentile(&list, 0.99), "ms", "<=", 50.0);
    result(
        "scale_heartbeats",
        heartbeats_per_s,
        "per_s",
        ">=",
        10_000.0,
    );
    if failed > 0 {
        println!("RESULT scale_report_failures {failed} requests target = 0 FAIL");
    }
}
