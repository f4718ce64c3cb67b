//! Noisy-neighbour benchmark: one tenant's script at full speed (many
//! connections, ignoring `Retry-After`) against another tenant's steady
//! reads, on a private release `meshfleet up`. Run twice in one go: with the
//! default request limits, and with them off (the baseline that shows what the
//! limits buy). Prints the quiet tenant's p50/p99 unloaded and loaded, the
//! noisy tenant's accepted and refused rates, and ends with
//! `RESULT noisy_neighbour_p99_ratio <x> ratio target <= 2 PASS|FAIL`.
//!
//!   bench/noisy-neighbour.sh [--seconds 10] [--noisy-connections 32]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use meshfleet_tests::bench::percentile;
use meshfleet_tests::up::Up;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The `meshfleet` binary to run.
    #[arg(long, default_value = "target/release/meshfleet")]
    meshfleet: PathBuf,
    /// How long each measurement lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent requests of the noisy tenant.
    #[arg(long, default_value_t = 32)]
    noisy_connections: usize,
    /// Requests per second of the quiet tenant.
    #[arg(long, default_value_t = 25)]
    quiet_rate: u32,
}

struct Quiet {
    p50: Duration,
    p99: Duration,
    requests: usize,
    failed: usize,
}

/// The quiet tenant: a GET of one of its clusters and a page of its list,
/// alternately, at a steady rate.
async fn quiet_reads(client: &reqwest::Client, base: &str, token: &str, args: &Args) -> Quiet {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.quiet_rate);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut took = Vec::new();
    let mut failed = 0;
    let mut i = 0u32;
    while Instant::now() < until {
        tick.tick().await;
        let url = if i.is_multiple_of(2) {
            format!("{base}/v1/clusters/quiet-{}", i % 20)
        } else {
            format!("{base}/v1/clusters?limit=20")
        };
        i += 1;
        let started = Instant::now();
        match client.get(&url).bearer_auth(token).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                took.push(started.elapsed());
            }
            _ => failed += 1,
        }
    }
    took.sort();
    Quiet {
        p50: percentile(&took, 0.50),
        p99: percentile(&took, 0.99),
        requests: took.len() + failed,
        failed,
    }
}

#[derive(Default)]
struct Noise {
    accepted: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

async fn create(client: &reqwest::Client, base: &str, token: &str, name: &str) {
    let r = client
        .put(format!("{base}/v1/clusters/{name}"))
        .bearer_auth(token)
        .json(&json!({"labels": {"env": "bench"},
                      "mesh": {"upgrade": {"mode": "manual", "version": "1.28.2"}}}))
        .send()
        .await
        .expect("create");
    assert!(r.status().is_success(), "create {name}: {}", r.status());
}

struct Run {
    unloaded: Quiet,
    loaded: Quiet,
    noisy_rps: f64,
    accepted_rps: f64,
    refused_rps: f64,
    noisy_other: u64,
}

async fn run(args: &Args, limits_on: bool) -> Run {
    let env: &[(&str, &str)] = if limits_on {
        &[]
    } else {
        &[("MESHFLEET_TENANT_RATE_LIMIT", "0")]
    };
    let up = Up::start(&args.meshfleet, "noisy", env).await;
    let quiet_token = up.token("quiet").await;
    let noisy_token = up.token("noisy").await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.noisy_connections + 8)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for i in 0..20 {
        create(&client, &up.base, &quiet_token, &format!("quiet-{i}")).await;
        create(&client, &up.base, &noisy_token, &format!("noisy-{i}")).await;
    }
    // warm-up, then the quiet tenant alone
    let _ = quiet_reads(
        &client,
        &up.base,
        &quiet_token,
        &Args {
            seconds: 2,
            ..Args::parse_from(["noisy-bench"])
        },
    )
    .await;
    let unloaded = quiet_reads(&client, &up.base, &quiet_token, args).await;

    // the noisy tenant at full speed, ignoring Retry-After
    let noise = Arc::new(Noise::default());
    let stop = Arc::new(AtomicBool::new(false));
    let noisy_client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.noisy_connections)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.noisy_connections)
        .map(|_| {
            let (client, base, token) =
                (noisy_client.clone(), up.base.clone(), noisy_token.clone());
            let (noise, stop) = (noise.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .get(format!("{base}/v1/clusters?limit=50"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    let counter = match r {
                        Ok(r) => {
                            let status = r.status();
                            let _ = r.bytes().await;
                            if status.is_success() {
                                &noise.accepted
                            } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                                &noise.refused
                            } else {
                                &noise.other
                            }
                        }
                        Err(_) => &noise.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = quiet_reads(&client, &up.base, &quiet_token, args).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let accepted = noise.accepted.load(Ordering::Relaxed) as f64;
    let refused = noise.refused.load(Ordering::Relaxed) as f64;
    up.stop().await;
    Run {
        unloaded,
        loaded,
        noisy_rps: (accepted + refused) / secs,
        accepted_rps: accepted / secs,
        refused_rps: refused / secs,
        noisy_other: noise.other.load(Ordering::Relaxed),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(label: &str, r: &Run) -> f64 {
    let ratio = ms(r.loaded.p99) / ms(r.unloaded.p99).max(0.001);
    println!("{label}");
    println!(
        "  quiet tenant alone        p50 {:7.2} ms  p99 {:7.2} ms  ({} requests, {} failed)",
        ms(r.unloaded.p50),
        ms(r.unloaded.p99),
        r.unloaded.requests,
        r.unloaded.failed
    );
    println!(
        "  quiet beside noisy        p50 {:7.2} ms  p99 {:7.2} ms  ({} requests, {} failed)",
        ms(r.loaded.p50),
        ms(r.loaded.p99),
        r.loaded.requests,
        r.loaded.failed
    );
    println!(
        "  noisy tenant              {:8.0} req/s sent: {:7.0}/s accepted, {:7.0}/s refused (429), {} other",
        r.noisy_rps, r.accepted_rps, r.refused_rps, r.noisy_other
    );
    println!("  quiet p99 loaded/unloaded {ratio:.2}");
    ratio
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!(
        "noisy neighbour: {} s per measurement, noisy tenant on {} connections, quiet tenant at {} req/s",
        args.seconds, args.noisy_connections, args.quiet_rate
    );
    let off = run(&args, false).await;
    let on = run(&args, true).await;
    report("request limits off (MESHFLEET_TENANT_RATE_LIMIT=0):", &off);
    let ratio = report(
        &format!(
            "request limits on (defaults: {} req/s, burst {} per tenant):",
            meshfleet_api::config::DEFAULT_TENANT_RATE,
            meshfleet_api::config::DEFAULT_TENANT_BURST
        ),
        &on,
    );
    let pass = ratio <= 2.0 && on.loaded.failed == 0 && on.unloaded.failed == 0;
    println!(
        "RESULT noisy_neighbour_p99_ratio {ratio:.2} ratio target <= 2 {}",
        if pass { "PASS" } else { "FAIL" }
    );
}
