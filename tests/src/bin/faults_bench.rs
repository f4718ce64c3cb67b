//! Faults under load: the real app (API, LISTEN loop, reconciler) on a
//! PostgreSQL of its own, 50 writers doing GET → PUT/PATCH with `If-Match`
//! and 1,000 light agents long-polling and reporting; then, one after the
//! other, PostgreSQL restarted (fast shutdown, then start), out of
//! connections, out of disk, and statements outlasting the statement
//! timeout. Per fault a table row: requests, their answers, writes
//! acknowledged and lost (must be 0), 5xx other than 503 and hung requests
//! (must be 0), the time from the fault's end to the first success (≤ 5 s),
//! and whether every agent saw a change made after it.
//!
//! Run it through `bench/faults.sh`. Everything listens on 127.0.0.1 (the
//! database on a Unix socket only) and stops by itself.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use meshfleet_core::store as db;
use meshfleet_tests::own_pg::OwnPg;
use meshfleet_tests::{AppConfig, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(about = "Database faults under load: nothing lost, clear 503s, quick recovery")]
struct Args {
    /// Concurrent writers (GET, then PUT or PATCH with If-Match).
    #[arg(long, default_value_t = 50)]
    writers: usize,
    /// Agents long-polling their cluster's desired state and reporting status.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// How long each fault lasts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// The app's statement timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    statement_timeout: Duration,
    /// Size of the tmpfs that holds the clusters and events tables.
    #[arg(long, default_value_t = 256)]
    tmpfs_mib: u64,
}

const TENANT: &str = "faults";
/// The app's database role: not a superuser, so that it cannot use the
/// connections reserved for superusers (the harness's side connections can).
const APP_ROLE: &str = "meshfleet_app";
/// The app's time limit of ordinary requests; a request unanswered after it
/// (plus a margin) counts as hung.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
const LONG_POLL_LIMIT: Duration = Duration::from_secs(30);
const WAIT_SECONDS: u64 = 20;
const MARGIN: Duration = Duration::from_secs(3);
const RECOVERY_TARGET: Duration = Duration::from_secs(5);

/// Counters of one phase (reset between faults).
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    other_5xx: AtomicU64,
    other_4xx: AtomicU64,
    hung: AtomicU64,
    /// Connection refused or reset: the app itself stays up, so none expected.
    failed: AtomicU64,
    writes: AtomicU64,
    acked: AtomicU64,
    lost: AtomicU64,
    /// A 503 that is not problem+json or has no Retry-After.
    bad_503: AtomicU64,
}

impl Counters {
    fn take(&self) -> [u64; 11] {
        [
            &self.sent,
            &self.ok,
            &self.unavailable,
            &self.other_5xx,
            &self.other_4xx,
            &self.hung,
            &self.failed,
            &self.writes,
            &self.acked,
            &self.lost,
            &self.bad_503,
        ]
        .map(|c| c.swap(0, Ordering::Relaxed))
    }
}

struct Shared {
    base: String,
    http: reqwest::Client,
    owner: String,
    counters: Counters,
    stop: AtomicBool,
    /// Per cluster: the label `seq` of its last acknowledged write.
    acked_seq: Vec<AtomicI64>,
    /// Per agent: the highest generation it received.
    seen_generation: Vec<AtomicI64>,
    /// Details of 5xx other than 503, and of lost writes (printed at the end).
    incidents: Mutex<Vec<String>>,
}

fn cluster_name(i: usize) -> String {
    format!("c{i:04}")
}

fn body(seq: i64) -> Value {
    json!({
        "labels": {"env": "faults", "seq": seq.to_string()},
        "mesh": {"upgrade": {"mode": "manual", "version": "1.27.1"}, "enrolledNamespaces": ["shop"]}
    })
}

/// What became of one request.
enum Outcome {
    Answered(StatusCode, reqwest::header::HeaderMap, String),
    Hung,
    Failed(String),
}

impl Shared {
    /// Sends a request and counts its outcome in this phase's counters.
    async fn send(&self, req: reqwest::RequestBuilder, limit: Duration) -> Outcome {
        let c = &self.counters;
        let out = match tokio::time::timeout(limit + MARGIN, req.send()).await {
            Err(_) => Outcome::Hung,
            Ok(Err(e)) if e.is_timeout() => Outcome::Hung,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Ok(Ok(r)) => {
                let status = r.status();
                let headers = r.headers().clone();
                match tokio::time::timeout(limit + MARGIN, r.text()).await {
                    Ok(Ok(text)) => Outcome::Answered(status, headers, text),
                    Ok(Err(e)) => Outcome::Failed(e.to_string()),
                    Err(_) => Outcome::Hung,
                }
            }
        };
        // Counted when it ends, with its outcome, so that a phase's
        // figures add up (a long poll may span two phases).
        c.sent.fetch_add(1, Ordering::Relaxed);
        match &out {
            Outcome::Hung => {
                c.hung.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.incident(format!("request failed: {e}")).await;
            }
            Outcome::Answered(s, headers, text) => {
                if s.is_success() || *s == StatusCode::NOT_MODIFIED {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                } else if *s == StatusCode::SERVICE_UNAVAILABLE {
                    c.unavailable.fetch_add(1, Ordering::Relaxed);
                    let problem = headers
                        .get("content-type")
                        .is_some_and(|v| v == "application/problem+json");
                    if !problem || !headers.contains_key("retry-after") {
                        c.bad_503.fetch_add(1, Ordering::Relaxed);
                    }
                } else if s.is_server_error() {
                    c.other_5xx.fetch_add(1, Ordering::Relaxed);
                    self.incident(format!("{s}: {text}")).await;
                } else {
                    c.other_4xx.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        out
    }

    async fn incident(&self, what: String) {
        let mut all = self.incidents.lock().await;
        if all.len() < 50 {
            all.push(what);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn pause(ms: std::ops::Range<u64>) -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(ms))
}

/// One writer: round-robin over its clusters, GET (checking that the last
/// acknowledged write is there), then PATCH or PUT with If-Match.
async fn writer(s: Arc<Shared>, clusters: Vec<usize>) {
    let mut round = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        for &i in &clusters {
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            round += 1;
            let path = format!("/v1/clusters/{}", cluster_name(i));
            let Outcome::Answered(status, headers, text) = s
                .send(
                    s.http.get(s.url(&path)).bearer_auth(&s.owner),
                    REQUEST_LIMIT,
                )
                .await
            else {
                tokio::time::sleep(pause(50..200)).await;
                continue;
            };
            if status != StatusCode::OK {
                tokio::time::sleep(pause(50..200)).await;
                continue;
            }
            let current: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let seq: i64 = current["labels"]["seq"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let acked = s.acked_seq[i].load(Ordering::Relaxed);
            if seq < acked {
                s.counters.lost.fetch_add(1, Ordering::Relaxed);
                s.incident(format!(
                    "{path}: acknowledged seq {acked}, the database has {seq}"
                ))
                .await;
            }
            let etag = headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let next = seq.max(acked) + 1;
            let req = if round.is_multiple_of(2) {
                s.http
                    .patch(s.url(&path))
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"labels": {"seq": next.to_string()}}).to_string())
            } else {
                s.http
                    .put(s.url(&path))
                    .header("content-type", "application/json")
                    .body(body(next).to_string())
            };
            let out = s
                .send(
                    req.bearer_auth(&s.owner).header("if-match", etag),
                    REQUEST_LIMIT,
                )
                .await;
            s.counters.writes.fetch_add(1, Ordering::Relaxed);
            match out {
                Outcome::Answered(status, ..) if status.is_success() => {
                    s.counters.acked.fetch_add(1, Ordering::Relaxed);
                    s.acked_seq[i].fetch_max(next, Ordering::Relaxed);
                    tokio::time::sleep(pause(10..30)).await;
                }
                _ => tokio::time::sleep(pause(50..200)).await,
            }
        }
    }
}

/// One light agent: long polls with its ETag and reports status every few seconds.
async fn agent(s: Arc<Shared>, index: usize, credential: String) {
    let poll = {
        let s = s.clone();
        let credential = credential.clone();
        async move {
            let mut etag: Option<String> = None;
            while !s.stop.load(Ordering::Relaxed) {
                let mut req = s
                    .http
                    .get(s.url(&format!(
                        "/v1/agent/desired-state?waitSeconds={WAIT_SECONDS}"
                    )))
                    .bearer_auth(&credential);
                if let Some(e) = &etag {
                    req = req.header("if-none-match", e);
                }
                match s.send(req, LONG_POLL_LIMIT).await {
                    Outcome::Answered(StatusCode::OK, headers, text) => {
                        let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if let Some(g) = state["generation"].as_i64() {
                            s.seen_generation[index].fetch_max(g, Ordering::Relaxed);
                        }
                        etag = headers
                            .get("etag")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                    }
                    Outcome::Answered(StatusCode::NOT_MODIFIED, ..) => {}
                    _ => tokio::time::sleep(pause(100..1000)).await,
                }
            }
        }
    };
    let report = async {
        tokio::time::sleep(pause(0..5000)).await;
        while !s.stop.load(Ordering::Relaxed) {
            let generation = s.seen_generation[index].load(Ordering::Relaxed);
            let body = json!({"observedGeneration": generation, "components": [],
                "facts": {"kubernetesVersion": "v1.33.1", "nodeCount": 3}});
            s.send(
                s.http
                    .put(s.url("/v1/agent/status"))
                    .bearer_auth(&credential)
                    .json(&body),
                REQUEST_LIMIT,
            )
            .await;
            tokio::time::sleep(pause(4000..6000)).await;
        }
    };
    tokio::join!(poll, report);
}

/// Polls a cheap read every 25 ms until it succeeds: the time it took.
async fn recovery(s: &Shared) -> Duration {
    let started = Instant::now();
    loop {
        let r = s
            .http
            .get(s.url("/v1/clusters/c0000"))
            .bearer_auth(&s.owner)
            .timeout(REQUEST_LIMIT + MARGIN)
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Changes every cluster's mesh (a new generation) and waits until every
/// agent has received it: how many did, and how long it took.
async fn change_reaches_every_agent(s: &Shared, mark: &str) -> (usize, Duration) {
    let started = Instant::now();
    let targets: Vec<i64> = futures::stream::iter(0..s.acked_seq.len())
        .map(|i| async move {
            let path = format!("/v1/clusters/{}", cluster_name(i));
            loop {
                let r = s
                    .http
                    .patch(s.url(&path))
                    .bearer_auth(&s.owner)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"mesh": {"enrolledNamespaces": ["shop", mark]}}).to_string())
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == StatusCode::OK
                    && let Ok(v) = r.json::<Value>().await
                    && let Some(g) = v["generation"].as_i64()
                {
                    return g;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .buffered(50)
        .collect()
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = targets
            .iter()
            .enumerate()
            .filter(|(i, g)| s.seen_generation[*i].load(Ordering::Relaxed) >= **g)
            .count();
        if seen == targets.len() || Instant::now() > deadline {
            return (seen, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The faults, each with how it starts and ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Restart,
    Connections,
    DiskFull,
    StatementTimeout,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Restart => "restart",
            Fault::Connections => "connections",
            Fault::DiskFull => "disk-full",
            Fault::StatementTimeout => "statement-timeout",
        }
    }
}

struct Lab {
    pg: OwnPg,
    options: sqlx::postgres::PgConnectOptions,
    /// The tmpfs for the disk-full fault, when it could be mounted.
    tmpfs: Option<Tmpfs>,
}

/// A mounted tmpfs, unmounted when dropped (after PostgreSQL stopped).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // PostgreSQL first (it has files on the tmpfs), then the tmpfs.
        self.pg.stop_blocking();
        self.tmpfs.take();
    }
}

async fn connect(options: &sqlx::postgres::PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options).await.unwrap()
}

impl Lab {
    /// Puts the clusters and events tables (and their indexes) on a small
    /// tmpfs, so that the disk-full fault can fill it. `None` (and why) when
    /// tmpfs cannot be mounted here.
    async fn tablespace_on_tmpfs(&mut self, mib: u64) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.pg.root().join("tiny");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        self.tmpfs = Some(Tmpfs(dir.clone()));
        let owner = std::fs::metadata(self.pg.data_dir()).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| e.to_string())?;
        let mut c = connect(&self.options).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLESPACE tiny LOCATION '{}'",
            dir.display()
        )))
        .execute(&mut c)
        .await
        .map_err(|e| e.to_string())?;
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE tablename IN ('clusters', 'events')",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| e.to_string())?;
        let mut statements = vec![
            "ALTER TABLE clusters SET TABLESPACE tiny".to_string(),
            "ALTER TABLE events SET TABLESPACE tiny".to_string(),
        ];
        statements.extend(
            indexes
                .iter()
                .map(|i| format!("ALTER INDEX \"{i}\" SET TABLESPACE tiny")),
        );
        for st in statements {
            sqlx::query(sqlx::AssertSqlSafe(st))
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Starts `fault`; returns what ends it.
    async fn inject(&mut self, fault: Fault) -> Option<Ending> {
        match fault {
            Fault::Restart => {
                self.pg.stop().await;
                Some(Ending::Start)
            }
            Fault::Connections => {
                // The app may not connect meanwhile (53300, like a full
                // server); its connections end; then every connection the
                // server allows is taken, and only that keeps the app out.
                let admin = self.pg.options("postgres");
                let mut c = connect(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER ROLE {APP_ROLE} CONNECTION LIMIT 0"
                )))
                .execute(&mut c)
                .await
                .unwrap();
                let ended: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
                )
                .bind(APP_ROLE)
                .fetch_one(&mut c)
                .await
                .unwrap();
                let mut side = vec![c];
                while side.len() < 1000 {
                    match PgConnection::connect_with(&admin).await {
                        Ok(c) => side.push(c),
                        Err(_) => break,
                    }
                }
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER ROLE {APP_ROLE} CONNECTION LIMIT -1"
                )))
                .execute(&mut side[0])
                .await
                .unwrap();
                println!(
                    "  (ended the app's {ended} connections; holding all {} the server allows)",
                    side.len()
                );
                Some(Ending::Release(side))
            }
            Fault::DiskFull => {
                self.tmpfs.as_ref()?;
                let mut c = connect(&self.options).await;
                for st in [
                    "CREATE TABLE filler (b text) TABLESPACE tiny",
                    "ALTER TABLE filler ALTER COLUMN b SET STORAGE EXTERNAL",
                ] {
                    sqlx::query(st).execute(&mut c).await.unwrap();
                }
                for size in [8i32 << 20, 1 << 20, 64 << 10, 8 << 10, 1 << 10] {
                    while sqlx::query(
                        "INSERT INTO filler SELECT repeat(md5(random()::text), $1 / 32)",
                    )
                    .bind(size)
                    .execute(&mut c)
                    .await
                    .is_ok()
                    {}
                }
                Some(Ending::DropFiller(c))
            }
            Fault::StatementTimeout => {
                let mut c = connect(&self.options).await;
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE clusters IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                Some(Ending::Unlock(c))
            }
        }
    }

    async fn end(&mut self, ending: Ending) {
        match ending {
            Ending::Start => self.pg.start_again().await,
            Ending::Release(side) => {
                for c in side {
                    let _ = c.close().await;
                }
            }
            Ending::DropFiller(mut c) => {
                sqlx::query("DROP TABLE filler")
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Ending::Unlock(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

enum Ending {
    Start,
    Release(Vec<PgConnection>),
    DropFiller(PgConnection),
    Unlock(PgConnection),
}

struct Row {
    fault: Fault,
    counts: [u64; 11],
    recovery: Duration,
    agents_saw: usize,
    propagation: Duration,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    println!(
        "faults bench: {} writers, {} agents, {} per fault",
        args.writers,
        args.agents,
        humantime::format_duration(args.outage)
    );
    let pg = OwnPg::start(true).await;
    let options = pg.database("meshfleet").await;
    let mut lab = Lab {
        options: options.clone(),
        tmpfs: None,
        pg,
    };
    let disk = match lab.tablespace_on_tmpfs(args.tmpfs_mib).await {
        Ok(()) => format!(
            "clusters and events on a {} MiB tmpfs tablespace, filled by a side table",
            args.tmpfs_mib
        ),
        Err(e) => format!("skipped: cannot mount tmpfs here ({e})"),
    };
    {
        let mut c = connect(&options).await;
        for st in [
            format!("CREATE ROLE {APP_ROLE} LOGIN"),
            format!("GRANT USAGE ON SCHEMA public TO {APP_ROLE}"),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {APP_ROLE}"),
            format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(st))
                .execute(&mut c)
                .await
                .unwrap();
        }
        let _ = c.close().await;
    }
    let config = AppConfig {
        request_timeout: REQUEST_LIMIT,
        long_poll_timeout: LONG_POLL_LIMIT,
        // the request limits would refuse the load (429) before any fault
        ..meshfleet_tests::test_config()
    };
    let app = TestApp::spawn_on(
        db::with_statement_timeout(options.clone().username(APP_ROLE), args.statement_timeout),
        config,
    )
    .await;
    let reconciler = app.reconciler().await;
    let (stop_reconciler, stop_rx) = tokio::sync::watch::channel(false);
    let reconciler_listener = reconciler.spawn_listener();
    let reconciler_task = tokio::spawn(async move { reconciler.run(stop_rx).await });
    println!(
        "service: {} (database {})",
        app.base,
        lab.pg.root().display()
    );

    // The fleet: a cluster and a registered agent each.
    let owner = app.owner(TENANT);
    let credentials: Vec<String> = futures::stream::iter(0..args.agents)
        .map(|i| {
            let app = &app;
            async move {
                let name = cluster_name(i);
                let r = app
                    .put(&format!("/v1/clusters/{name}"))
                    .token(&app.owner(TENANT))
                    .json(&body(0))
                    .send()
                    .await;
                assert_eq!(r.status, 201, "{}", r.text);
                app.register_agent(TENANT, &name).await
            }
        })
        .buffered(50)
        .collect()
        .await;
    println!(
        "fleet: {} clusters with agents registered in {:.1}s",
        credentials.len(),
        started.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4000)
        .build()
        .unwrap();
    let shared = Arc::new(Shared {
        base: app.base.clone(),
        http,
        owner,
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        acked_seq: (0..args.agents).map(|_| AtomicI64::new(0)).collect(),
        seen_generation: (0..args.agents).map(|_| AtomicI64::new(0)).collect(),
        incidents: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    for (i, credential) in credentials.into_iter().enumerate() {
        tasks.push(tokio::spawn(agent(shared.clone(), i, credential)));
    }
    for w in 0..args.writers {
        let mine: Vec<usize> = (w..args.agents).step_by(args.writers).collect();
        tasks.push(tokio::spawn(writer(shared.clone(), mine)));
    }
    let (saw, took) = change_reaches_every_agent(&shared, "warm-up").await;
    println!(
        "load: {} agents long-polling and reporting, {} writers; {saw} agents had a first change in {:.1}s",
        args.agents,
        args.writers,
        took.as_secs_f64()
    );
    shared.counters.take();

    let mut rows = Vec::new();
    for fault in [
        Fault::Restart,
        Fault::Connections,
        Fault::DiskFull,
        Fault::StatementTimeout,
    ] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("fault {} ...", fault.name());
        let Some(ending) = lab.inject(fault).await else {
            println!("  skipped ({disk})");
            continue;
        };
        tokio::time::sleep(args.outage).await;
        lab.end(ending).await;
        let recovered = recovery(&shared).await;
        let (agents_saw, propagation) = change_reaches_every_agent(&shared, fault.name()).await;
        rows.push(Row {
            fault,
            counts: shared.counters.take(),
            recovery: recovered,
            agents_saw,
            propagation,
        });
    }

    // Stop the load, then check every acknowledged write against the database.
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(LONG_POLL_LIMIT + MARGIN, t).await;
    }
    let tail = shared.counters.take();
    let mut c = connect(&options).await;
    let stored: HashMap<String, i64> = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT name, labels->>'seq' FROM clusters WHERE tenant_id = $1",
    )
    .bind(TENANT)
    .fetch_all(&mut c)
    .await
    .unwrap()
    .into_iter()
    .map(|(n, s)| (n, s.and_then(|s| s.parse().ok()).unwrap_or(0)))
    .collect();
    let mut lost_at_end = 0;
    for i in 0..args.agents {
        let acked = shared.acked_seq[i].load(Ordering::Relaxed);
        if stored.get(&cluster_name(i)).copied().unwrap_or(0) < acked {
            lost_at_end += 1;
        }
    }
    // Nothing half-written: every change of a cluster came with its event.
    let half_written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM clusters c WHERE c.tenant_id = $1 AND c.resource_version <> 1 +
           (SELECT count(*) FROM events e WHERE e.tenant_id = c.tenant_id AND e.cluster_id = c.id
              AND e.action IN ('cluster.updated', 'cluster.version_changed'))",
    )
    .bind(TENANT)
    .fetch_one(&mut c)
    .await
    .unwrap();
    let _ = c.close().await;
    let _ = stop_reconciler.send(true);
    let _ = reconciler_task.await;
    reconciler_listener.abort();

    println!();
    println!(
        "| fault | requests | 2xx/304 | 4xx | 503 | other 5xx | hung | other errors | writes | acknowledged (2xx) | lost | recovery | agents saw the change after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut pass = true;
    let mut results = Vec::new();
    for r in &rows {
        let [
            sent,
            ok,
            unavailable,
            other_5xx,
            other_4xx,
            hung,
            failed,
            writes,
            acked,
            lost,
            bad_503,
        ] = r.counts;
        println!(
            "| {} | {sent} | {ok} | {other_4xx} | {unavailable} | {other_5xx} | {hung} | {failed} | {writes} | {acked} | {lost} | {:.2} s | {}/{} in {:.1} s |",
            r.fault.name(),
            r.recovery.as_secs_f64(),
            r.agents_saw,
            args.agents,
            r.propagation.as_secs_f64()
        );
        let lost_ok = lost == 0;
        let recovery_ok = r.recovery <= RECOVERY_TARGET;
        let clean = other_5xx == 0 && hung == 0 && failed == 0 && bad_503 == 0;
        let agents_ok = r.agents_saw == args.agents;
        pass &= lost_ok && recovery_ok && clean && agents_ok;
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        results.push(format!(
            "RESULT faults-{}-lost {lost} writes target = 0 {}",
            r.fault.name(),
            verdict(lost_ok)
        ));
        results.push(format!(
            "RESULT faults-{}-recovery {:.2} s target <= {} s {}",
            r.fault.name(),
            r.recovery.as_secs_f64(),
            RECOVERY_TARGET.as_secs(),
            verdict(recovery_ok)
        ));
        results.push(format!(
            "RESULT faults-{}-unclean {} answers (5xx other than 503, hung, failed, 503 without problem+json or Retry-After) target = 0 {}",
            r.fault.name(),
            other_5xx + hung + failed + bad_503,
            verdict(clean)
        ));
        results.push(format!(
            "RESULT faults-{}-agents-saw-change {}/{} target = all {}",
            r.fault.name(),
            r.agents_saw,
            args.agents,
            verdict(agents_ok)
        ));
    }
    println!();
    println!("disk full: {disk}");
    println!(
        "after the load ({} more requests while stopping): {lost_at_end} clusters miss an acknowledged write; {half_written} clusters whose version and events disagree",
        tail[0]
    );
    pass &= lost_at_end == 0 && half_written == 0;
    for incident in shared.incidents.lock().await.iter() {
        println!("  incident: {incident}");
    }
    for r in results {
        println!("{r}");
    }
    println!(
        "RESULT faults-final-lost {lost_at_end} writes target = 0 {}",
        if lost_at_end == 0 { "PASS" } else { "FAIL" }
    );
    println!(
        "RESULT faults-half-written {half_written} clusters target = 0 {}",
        if half_written == 0 { "PASS" } else { "FAIL" }
    );
    println!("total {:.0}s", started.elapsed().as_secs_f64());
    drop(app);
    lab.pg.stop().await;
    drop(lab);
    if !pass {
        std::process::exit(1);
    }
}
