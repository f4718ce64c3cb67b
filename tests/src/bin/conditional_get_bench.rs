//! Conditional-GET benchmark: requests/s of `If-None-Match` → 304 on the
//! real service against a bare axum handler answering the same path shape,
//! in one run on this machine with the same client.
//!
//! Three servers, each in a child process on a multi-threaded tokio runtime
//! with default settings (as `meshfleet` has): a bare axum 0.8 server (this
//! binary with `--bare-server`) whose `GET /v1/clusters/{name}` answers a
//! constant 304 with an ETag, and a private release `meshfleet up` (request
//! limits off) with clusters registered. The same client (reqwest, keep-alive,
//! `--connections` requests in flight) measures, after a warm-up, each path
//! for `--seconds` in all, cut into `--rounds` rounds that take the three in
//! turn (so a change of the machine's load weighs on all alike):
//!
//! - bare:   `GET /v1/clusters/{name}` → 304
//! - tenant: `GET /v1/clusters/{name}`, a tenant's JWT and the cluster's
//!   current ETag (no agent reports for it, so its ETag is all that changes)
//! - agent:  `GET /v1/agent/desired-state` (no `waitSeconds`), the cluster's
//!   agent credential and the current ETag of its desired state
//!
//! Every answer must be 304; each real path's rate is divided by the bare
//! rate and ends with `RESULT conditional_get_ratio_<path> <x> x target >= 0.5 PASS|FAIL`.
//!
//!   bench/conditional-get.sh [--seconds 10] [--rounds 5] [--connections 128] [--clusters 200]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use clap::Parser;
use meshfleet_tests::up::Up;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
struct Args {
    /// The `meshfleet` binary to run.
    #[arg(long, default_value = "target/release/meshfleet")]
    meshfleet: PathBuf,
    /// How long each path is measured in all (after a 2 s warm-up of each).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds the measurement is cut into: each round measures every path
    /// for its share of `--seconds`, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Requests in flight (keep-alive connections): enough to keep both
    /// servers busy. A cached 304 waits for a fence (up to about 2 ms), so
    /// with few in flight the real paths measure that wait, not their cost.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Clusters registered (each with an agent); requests go round them.
    #[arg(long, default_value_t = 200)]
    clusters: usize,
    /// Internal: serve the bare axum handler, print its address, run until stdin closes.
    #[arg(long, hide = true)]
    bare_server: bool,
}

/// The bare handler's constant ETag.
const BARE_ETAG: &str = "\"0123456789abcdef-1\"";
const TENANT: &str = "condget";
const VERSION: &str = "1.28.2";

/// The bare axum server: the same path shape, a constant 304 with an ETag.
fn bare_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        async fn cluster(Path(_name): Path<String>, headers: HeaderMap) -> impl IntoResponse {
            let matches = headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == BARE_ETAG.as_bytes());
            let status = if matches {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            };
            (status, [(header::ETAG, BARE_ETAG)])
        }
        let app = axum::Router::new().route("/v1/clusters/{name}", axum::routing::get(cluster));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("LISTENING {}", listener.local_addr().expect("addr"));
        let stdin_closed = async {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stdin_closed)
            .await
            .expect("serve");
    });
}

/// One request of a measurement: its URL, bearer token and `If-None-Match`.
#[derive(Clone)]
struct Target {
    url: String,
    token: Option<String>,
    etag: String,
}

#[derive(Default)]
struct Rate {
    not_modified: u64,
    other: u64,
    seconds: f64,
    /// The rate of each round's slice (to show the machine's spread).
    slices: Vec<f64>,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.not_modified as f64 / self.seconds.max(1e-9)
    }

    fn spread(&self) -> (f64, f64) {
        let min = self.slices.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.slices.iter().copied().fold(0.0, f64::max);
        (min, max)
    }
}

/// `connections` workers going round `targets` at full speed for `secs`;
/// adds what they did to `into`.
async fn run(
    client: &reqwest::Client,
    targets: &Arc<Vec<Target>>,
    connections: usize,
    secs: f64,
    into: &mut Rate,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let (client, targets) = (client.clone(), targets.clone());
            let (stop, ok, other) = (stop.clone(), ok.clone(), other.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let t = &targets[i % targets.len()];
                    i += 1;
                    let mut request = client.get(&t.url).header(header::IF_NONE_MATCH, &t.etag);
                    if let Some(token) = &t.token {
                        request = request.bearer_auth(token);
                    }
                    let counter = match request.send().await {
                        Ok(r) if r.status() == StatusCode::NOT_MODIFIED => &ok,
                        Ok(r) => {
                            let _ = r.bytes().await;
                            &other
                        }
                        Err(_) => &other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n_ok, n_other) = (ok.load(Ordering::Relaxed), other.load(Ordering::Relaxed));
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    into.not_modified += n_ok;
    into.other += n_other;
    into.seconds += elapsed;
    into.slices.push(n_ok as f64 / elapsed);
}

async fn expect(response: reqwest::Result<reqwest::Response>, status: u16) -> reqwest::Response {
    let r = response.expect("request");
    assert_eq!(
        r.status().as_u16(),
        status,
        "unexpected answer from {}",
        r.url()
    );
    r
}

fn etag(r: &reqwest::Response) -> String {
    r.headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_string()
}

/// The real service's targets: (tenant GETs, agent desired-state GETs).
async fn real_targets(
    client: &reqwest::Client,
    up: &Up,
    clusters: usize,
) -> (Vec<Target>, Vec<Target>) {
    let token = up.token_with(TENANT, "reader").await;
    let owner = up.token(TENANT).await;
    let base = &up.base;
    let (mut tenant, mut agent) = (Vec::new(), Vec::new());
    for i in 0..clusters {
        let name = format!("c-{i:05}");
        let url = format!("{base}/v1/clusters/{name}");
        let created = client
            .put(&url)
            .bearer_auth(&owner)
            .json(&json!({"labels": {"env": "bench"},
                          "mesh": {"upgrade": {"mode": "manual", "version": VERSION}}}))
            .send()
            .await;
        let tag = etag(&expect(created, 201).await);
        tenant.push(Target {
            url,
            token: Some(token.clone()),
            etag: tag,
        });
        let credential =
            meshfleet_tests::bench::register_agent(client, base, &owner, &name, json!({}))
                .await
                .unwrap_or_else(|e| panic!("registering the agent of {name}: {e}"));
        let url = format!("{base}/v1/agent/desired-state");
        let first = client.get(&url).bearer_auth(&credential).send().await;
        let tag = etag(&expect(first, 200).await);
        agent.push(Target {
            url,
            token: Some(credential),
            etag: tag,
        });
    }
    (tenant, agent)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.bare_server {
        // the bare server runs its own runtime, like `meshfleet`
        std::thread::spawn(bare_server).join().expect("bare server");
        return;
    }
    println!(
        "conditional GET: {} s per path in {} rounds (after a warm-up), {} requests in flight, {} clusters",
        args.seconds, args.rounds, args.connections, args.clusters
    );

    let mut bare = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--bare-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bare server");
    let mut lines = BufReader::new(bare.stdout.take().expect("stdout")).lines();
    let bare_addr = loop {
        match lines.next_line().await.expect("bare server output") {
            Some(line) => {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    break addr.to_string();
                }
            }
            None => panic!("the bare server ended before listening"),
        }
    };

    let up = Up::start(
        &args.meshfleet,
        "condget",
        &[
            ("MESHFLEET_TENANT_RATE_LIMIT", "0"),
            ("MESHFLEET_AGENT_RATE_LIMIT", "0"),
            ("MESHFLEET_MAX_CLUSTERS_PER_TENANT", "0"),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections + 8)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let (tenant, agent) = real_targets(&client, &up, args.clusters).await;
    let bare_targets: Vec<Target> = tenant
        .iter()
        .map(|t| Target {
            url: t.url.replace(&up.base, &format!("http://{bare_addr}")),
            token: None,
            etag: BARE_ETAG.to_string(),
        })
        .collect();
    let (tenant, agent, bare_targets) = (Arc::new(tenant), Arc::new(agent), Arc::new(bare_targets));

    // Warm-up, then rounds of one slice each, in turn: a machine whose load
    // changes meanwhile weighs on all three alike.
    let paths = [&bare_targets, &tenant, &agent];
    for targets in paths {
        run(
            &client,
            targets,
            args.connections,
            2.0,
            &mut Rate::default(),
        )
        .await;
    }
    let slice = args.seconds as f64 / args.rounds.max(1) as f64;
    let mut rates: [Rate; 3] = Default::default();
    for round in 0..args.rounds.max(1) {
        for (i, targets) in paths.iter().enumerate() {
            // (on stderr, for a profiler to attach to the right phase)
            eprintln!("measuring {} round {round}", ["bare", "tenant", "agent"][i]);
            run(&client, targets, args.connections, slice, &mut rates[i]).await;
        }
    }
    let [bare_rate, tenant_rate, agent_rate] = rates;
    drop(bare.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), bare.wait()).await;
    up.stop().await;

    let bare_rps = bare_rate.per_second();
    let show = |label: &str, r: &Rate| {
        let (min, max) = r.spread();
        println!(
            "  {label:<58} {:9.0} req/s  (rounds {min:.0}..{max:.0}; {} answered 304, {} other)",
            r.per_second(),
            r.not_modified,
            r.other
        );
    };
    show("bare axum GET /v1/clusters/{name}", &bare_rate);
    show(
        "meshfleet GET /v1/clusters/{name} (tenant JWT)",
        &tenant_rate,
    );
    show(
        "meshfleet GET /v1/agent/desired-state (agent credential)",
        &agent_rate,
    );
    for (name, rate) in [
        ("tenant_get", &tenant_rate),
        ("agent_desired_state", &agent_rate),
    ] {
        let ratio = rate.per_second() / bare_rps.max(1.0);
        // every answer must have been a 304
        let pass = ratio >= 0.5 && rate.other == 0;
        println!("  {name}: {ratio:.2} x the bare handler (target >= 0.5)");
        println!(
            "RESULT conditional_get_ratio_{name} {ratio:.2} x target >= 0.5 {}",
            if pass { "PASS" } else { "FAIL" }
        );
    }
}
