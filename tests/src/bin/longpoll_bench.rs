//! Long-poll benchmark client: holds N concurrent agent long polls against a
//! running `meshfleet` server, changes M clusters' specs, and prints the
//! change→agent-received latency and the server's resident memory; then
//! measures status-report throughput (changed reports, then unchanged
//! heartbeats, which only touch the heartbeat timestamp).
//!
//! Run it through `bench/longpoll.sh`, which builds release binaries, starts a
//! private server, and passes `--base`, `--token` and `--server-pid`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use meshfleet_tests::bench::{percentile, rss_kib};
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    base: String,
    token: String,
    polls: usize,
    changes: usize,
    server_pid: Option<u32>,
    heartbeat_secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        base: String::new(),
        token: String::new(),
        polls: 2000,
        changes: 200,
        server_pid: None,
        heartbeat_secs: 10,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--base" => a.base = v,
            "--token" => a.token = v,
            "--polls" => a.polls = v.parse().expect("--polls N"),
            "--changes" => a.changes = v.parse().expect("--changes M"),
            "--server-pid" => a.server_pid = Some(v.parse().expect("--server-pid PID")),
            "--heartbeat-seconds" => a.heartbeat_secs = v.parse().expect("--heartbeat-seconds S"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(
        !a.base.is_empty() && !a.token.is_empty(),
        "--base URL and --token T are required"
    );
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.polls + 64)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let run = format!("{:x}", std::process::id());

    // 1. clusters and their agents' credentials
    let credentials: Vec<String> = futures::stream::iter(0..a.polls)
        .map(|i| {
            let (client, base, token, run) = (client.clone(), a.base.clone(), a.token.clone(), run.clone());
            async move {
                let name = format!("bench-{run}-{i:05}");
                let body = json!({"labels": {"bench": run}, "mesh": {"upgrade": {"mode": "manual", "version": "1.27.1"}}});
                let r = client.put(format!("{base}/v1/clusters/{name}")).bearer_auth(&token).json(&body).send().await.unwrap();
                assert!(r.status().is_success(), "create: {}", r.text().await.unwrap());
                let r = client.post(format!("{base}/v1/clusters/{name}/bootstrap-tokens")).bearer_auth(&token).send().await.unwrap();
                let bt: Value = r.json().await.unwrap();
                let r = client
                    .post(format!("{base}/v1/agent/register"))
                    .json(&json!({"bootstrapToken": bt["token"]}))
                    .send()
                    .await
                    .unwrap();
                let cred: Value = r.json().await.unwrap();
                cred["credential"].as_str().unwrap().to_string()
            }
        })
        .buffered(32)
        .collect()
        .await;
    println!(
        "setup: {} clusters registered in {:.1}s",
        a.polls,
        started.elapsed().as_secs_f64()
    );
    let rss_before = rss_kib(a.server_pid);

    // 2. N agents long-polling
    let received: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let parked = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, cred) in credentials.iter().enumerate() {
        let (client, base, cred) = (client.clone(), a.base.clone(), cred.clone());
        let (received, parked, errors) = (received.clone(), parked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/v1/agent/desired-state");
            let mut etag = loop {
                match client.get(&url).bearer_auth(&cred).send().await {
                    Ok(r) if r.status() == 200 => {
                        break r.headers()["etag"].to_str().unwrap().to_string();
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            let mut first = true;
            loop {
                let request = client
                    .get(format!("{url}?waitSeconds=60"))
                    .bearer_auth(&cred)
                    .header("if-none-match", &etag)
                    .send();
                if first {
                    parked.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                match request.await {
                    Ok(r) if r.status() == 200 => {
                        let at = Instant::now();
                        etag = r.headers()["etag"].to_str().unwrap().to_string();
                        received.lock().await.entry(i).or_insert(at);
                    }
                    Ok(r) if r.status() == 304 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    while parked.load(Ordering::Relaxed) < a.polls {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // let the last requests reach the server and park there
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = rss_kib(a.server_pid);

    // 3. M changes, spread over the fleet
    let step = (a.polls / a.changes.max(1)).max(1);
    let targets: Vec<usize> = (0..a.changes.min(a.polls)).map(|k| k * step).collect();
    let sent: HashMap<usize, Instant> = futures::stream::iter(targets.clone())
        .map(|i| {
            let (client, base, token, run) =
                (client.clone(), a.base.clone(), a.token.clone(), run.clone());
            async move {
                let name = format!("bench-{run}-{i:05}");
                let at = Instant::now();
                let r = client
                    .patch(format!("{base}/v1/clusters/{name}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/merge-patch+json")
                    .body(r#"{"mesh":{"mtls":"permissive"}}"#)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                (i, at)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && received.lock().await.len() < targets.len() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().await.clone();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(i, at)| got.get(i).map(|r| r.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let missed = targets.len() - latencies.len();
    let unexpected = got.keys().filter(|i| !sent.contains_key(i)).count();
    for t in &tasks {
        t.abort();
    }

    println!("long polls held: {}", a.polls);
    println!(
        "changes: {} (missed: {missed}, agents woken without a change: {unexpected})",
        targets.len()
    );
    println!(
        "change->agent-received latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if let (Some(before), Some(held)) = (rss_before, rss_held) {
        println!(
            "server RSS: {:.1} MiB before the polls, {:.1} MiB holding them ({:.1} KiB per poll)",
            before as f64 / 1024.0,
            held as f64 / 1024.0,
            (held.saturating_sub(before)) as f64 / a.polls as f64
        );
    }
    println!(
        "client-side request errors/retries: {}",
        errors.load(Ordering::Relaxed)
    );

    // 4. heartbeats: every agent reports once (a changed report: the full write),
    //    then unchanged reports as fast as 64 workers can send them.
    let report = json!({"observedGeneration": 1, "components": [
        {"name": "istiod", "desiredVersion": "1.27.1", "observedVersion": "1.27.1", "ready": true,
         "desiredReplicas": 2, "readyReplicas": 2}],
        "facts": {"kubernetesVersion": "v1.33.1", "nodeCount": 3}});
    let report = Arc::new(report.to_string());
    let t0 = Instant::now();
    futures::stream::iter(credentials.iter().cloned())
        .map(|cred| {
            let (client, base, report) = (client.clone(), a.base.clone(), report.clone());
            async move {
                let r = client
                    .put(format!("{base}/v1/agent/status"))
                    .bearer_auth(&cred)
                    .header("content-type", "application/json")
                    .body((*report).clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let first = t0.elapsed();
    println!(
        "status reports (changed, full write): {} in {:.1}s = {:.0}/s",
        credentials.len(),
        first.as_secs_f64(),
        credentials.len() as f64 / first.as_secs_f64()
    );
    let window = Duration::from_secs(a.heartbeat_secs);
    let deadline = Instant::now() + window;
    let credentials = Arc::new(credentials);
    let mut workers = Vec::new();
    for w in 0..64usize {
        let (client, base, report, credentials) = (
            client.clone(),
            a.base.clone(),
            report.clone(),
            credentials.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut k = w;
            while Instant::now() < deadline {
                let cred = &credentials[k % credentials.len()];
                k += 64;
                let at = Instant::now();
                let r = client
                    .put(format!("{base}/v1/agent/status"))
                    .bearer_auth(cred)
                    .header("content-type", "application/json")
                    .body((*report).clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
                latencies.push(at.elapsed());
            }
            latencies
        }));
    }
    let mut beats: Vec<Duration> = Vec::new();
    for w in workers {
        beats.extend(w.await.unwrap());
    }
    beats.sort();
    println!(
        "unchanged heartbeats: {:.0}/s over {}s from 64 workers (p50 {:.1} ms, p99 {:.1} ms)",
        beats.len() as f64 / window.as_secs_f64(),
        window.as_secs(),
        percentile(&beats, 0.50).as_secs_f64() * 1e3,
        percentile(&beats, 0.99).as_secs_f64() * 1e3,
    );
}
