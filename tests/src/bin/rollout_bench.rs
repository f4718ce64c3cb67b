//! Rollout benchmark: registers N clusters through the real API, runs N real
//! agent loops over simulated clusters in this process, waits until all are
//! Healthy on `--version`, then starts one fleet rollout to `--target` in three
//! stages (1 % / 50 % / the rest, soak 0, maxConcurrency 500) and follows it to
//! its end. Prints the control-plane overhead (wall time minus what the
//! simulated agents took) and the database load while the rollout ran.
//!
//!   bench/rollout.sh [CLUSTERS]
//!   cargo run --release -p meshfleet-tests --bin rollout-bench -- --base http://127.0.0.1:8080 \
//!       --data-dir .meshfleet --clusters 1000 --database-url 'postgres://meshfleet@localhost/meshfleet?host=<dir>'
//!
//! How the agents' own time is measured: every agent runs over a [`Probe`], a
//! [`ClusterBackend`] that forwards to a [`SimCluster`] and notes
//! - *received*: the start of the reconcile pass that first applies a workload
//!   labelled with the target version (a pass begins with the CRD step; the
//!   agent starts it as soon as its long poll returns the new desired state);
//! - *ready*: the first moment the agent read every target-version workload it
//!   applied (istiod's new revision, istio-cni, ztunnel) as ready.
//!
//! The agent's time for a cluster is ready − received: the simulated rollouts
//! (`--ready-after` each, one after the other), the agent's polling of them,
//! and whatever CPU contention the agents meet on the machine.
//!
//!   overhead = wall time (POST sent → terminal state seen) − agents' time
//!
//! where the agents' time is what an infinitely fast control plane would need
//! with the same agents and limits: per stage, the measured agent times run
//! in the rollout's start order (per-cluster `startedAt`) on `maxConcurrency`
//! lanes, each cluster taking the lane that frees first; stages one after the
//! other. With equal agent times that is "Σ over waves of the slowest agent in
//! the wave" (a wave = up to `maxConcurrency` clusters started together). The
//! literal Σ-over-waves figure (waves cut from the start order) is printed
//! too; it over-counts when the reconciler refills slots as clusters finish,
//! because a slow agent in one cut does not hold up the next one.
//!
//! The *CPU floor* printed beside it is the rollout's CPU (control plane and
//! simulator, in core-seconds) over the machine's cores: no run of that much
//! CPU can take less wall time here, so the overhead cannot be below the
//! floor minus the agents' time. Where the two are close the run is
//! CPU-bound, and only less CPU per upgraded cluster (also printed, the idle
//! fleet's share apart) or more cores lowers the overhead.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use meshfleet_agent::render::VERSION_LABEL;
use meshfleet_agent::{
    Agent, AgentConfig, Applied, ClusterBackend, Object, ObjectRef, OwnedObject, SimCluster,
    SimOptions, WorkloadStatus,
};
use meshfleet_api::auth::{DevSigner, Role};
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET, ClusterFacts, Rollout};
use meshfleet_tests::bench::{cores, cpu_delta, cpu_snapshot, print_cpu};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};

/// The allocator the service runs on (see `meshfleet/src/main.rs`): glibc's
/// malloc took a quarter of the simulator's CPU in `perf` (10,000 agents
/// allocating JSON trees on two threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Watch {
    /// Poll `GET /v1/operations/{id}` (one row) every --poll-interval, the
    /// rollout's counts (`GET /v1/rollouts`) every --progress-every, and the
    /// full rollout only at the end.
    Operation,
    /// Poll the full `GET /v1/rollouts/{id}` (every cluster of every stage)
    /// every --poll-interval.
    Rollout,
}

#[derive(Debug, Parser)]
#[command(
    name = "rollout-bench",
    about = "Times a fleet rollout over N simulated clusters with real agents: control-plane overhead and database load"
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
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    /// Istio version the clusters start on (manual upgrade mode).
    #[arg(long, default_value = "1.27.1")]
    version: String,
    /// Version the rollout moves them to.
    #[arg(long, default_value = "1.28.2")]
    target: String,
    /// maxConcurrency of every stage.
    #[arg(long, default_value_t = 500)]
    max_concurrency: u32,
    /// Share of the clusters in the first stage (canary), in percent.
    #[arg(long, default_value_t = 1)]
    canary_percent: u32,
    /// Share of the remaining clusters in the second stage, in percent.
    #[arg(long, default_value_t = 50)]
    half_percent: u32,
    /// failurePolicy.maxFailedClusters (action: pause).
    #[arg(long, default_value_t = 100)]
    max_failed_clusters: u32,
    /// How long a simulated workload takes to become ready after its spec changed.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    ready_after: Duration,
    /// Agent heartbeat (production: 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// How often the agent reads workload status while it waits for a rollout.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    agent_poll: Duration,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// Agents are started evenly over this long (default: one --heartbeat),
    /// a batch every 250 ms: their heartbeats then spread over the period as
    /// in a real fleet instead of arriving all at once, and N agents do not
    /// all register in the same instant.
    #[arg(long, value_parser = humantime::parse_duration)]
    start_over: Option<Duration>,
    /// Before the rollout, measure the idle fleet's load (heartbeats) for this
    /// long, to tell the rollout's own load apart (0s: skip).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    baseline: Duration,
    /// Process id of `meshfleet up`: its CPU time and its PostgreSQL's are
    /// reported beside this process's.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Largest delay between an agent's retries while the service is
    /// unreachable (production: 300s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_backoff_max: Duration,
    /// While the fleet converges: clusters that never reported get a new
    /// bootstrap token when no progress was made for this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    rebootstrap_after: Duration,
    /// What to poll while the rollout runs.
    #[arg(long, value_enum, default_value_t = Watch::Operation)]
    watch: Watch,
    /// How often the rollout's end is looked for.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// How often progress is printed (reads the rollout list: counts and stage states).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    progress_every: Duration,
    /// PostgreSQL of the service, for pg_stat_database / pg_stat_statements,
    /// e.g. postgres://meshfleet@localhost/meshfleet?host=<socket dir>.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Only make sure pg_stat_statements is preloaded (ALTER SYSTEM) and exit:
    /// 0 = already loaded, 10 = configured, restart PostgreSQL, 1 = failed.
    #[arg(long)]
    prepare_database: bool,
    /// The whole run (registration, convergence, rollout) must end within this.
    #[arg(long, default_value = "540s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// More api replicas for the agents (repeatable): agent i talks to the
    /// i-th of [--base, --agent-base...] in turn. Tenant calls go to --base.
    #[arg(long)]
    agent_base: Vec<String>,
    /// Before the rollout, change every cluster's spec (its mesh config) and
    /// time each change from its write to its agent receiving it.
    #[arg(long)]
    propagate: bool,
    /// Spec changes in flight at once during --propagate.
    #[arg(long, default_value_t = 16)]
    propagate_concurrency: usize,
    /// Target for the propagation p99, in seconds.
    #[arg(long, default_value_t = 1.0)]
    target_propagation: f64,
    /// Stop once the simulator's memory is measured (the fleet converged):
    /// no propagation, no rollout. For profiling the simulator.
    #[arg(long)]
    memory_only: bool,
    /// Target for this process's memory (all simulated clusters and agents), in MiB.
    #[arg(long, default_value_t = 2048.0)]
    target_sim_mib: f64,
    /// Target for the overhead, in seconds.
    #[arg(long, default_value_t = 5.0)]
    target_overhead: f64,
}

// ---------------------------------------------------------------------------
// The probe: a simulated cluster that notes when the agent worked on it.

#[derive(Debug, Default)]
struct ProbeState {
    /// The previous apply was of a CRD (a pass starts with the CRD step).
    last_was_crd: bool,
    /// When the current (or last) reconcile pass started.
    pass_started: Option<DateTime<Utc>>,
    /// Start of the pass that first applied the target version.
    received: Option<DateTime<Utc>>,
    /// Target-version workloads applied, and when each was first read ready.
    workloads: BTreeMap<ObjectRef, Option<DateTime<Utc>>>,
}

#[derive(Clone)]
struct Probe {
    sim: SimCluster,
    target: Arc<str>,
    state: Arc<Mutex<ProbeState>>,
}

impl Probe {
    fn new(sim: SimCluster, target: Arc<str>) -> Self {
        Probe {
            sim,
            target,
            state: Arc::new(Mutex::new(ProbeState::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (received, ready) once every target workload it applied was read ready.
    fn timing(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let s = self.lock();
        let received = s.received?;
        if s.workloads.is_empty() {
            return None;
        }
        let mut ready = received;
        for at in s.workloads.values() {
            ready = ready.max((*at)?);
        }
        Some((received, ready))
    }
}

impl ClusterBackend for Probe {
    async fn apply(&self, object: &Object) -> meshfleet_agent::Result<Applied> {
        let reference = object.reference();
        let now = Utc::now();
        {
            let mut s = self.lock();
            if reference.kind == "CustomResourceDefinition" {
                if !s.last_was_crd {
                    s.pass_started = Some(now);
                }
                s.last_was_crd = true;
            } else {
                s.last_was_crd = false;
            }
            if reference.is_workload()
                && object.labels().get(VERSION_LABEL).map(String::as_str) == Some(&*self.target)
            {
                if s.received.is_none() {
                    s.received = Some(s.pass_started.unwrap_or(now));
                }
                s.workloads.entry(reference).or_insert(None);
            }
        }
        self.sim.apply(object).await
    }

    async fn delete(&self, reference: &ObjectRef) -> meshfleet_agent::Result<()> {
        self.sim.delete(reference).await
    }

    async fn get_object(
        &self,
        reference: &ObjectRef,
    ) -> meshfleet_agent::Result<Option<serde_json::Value>> {
        self.sim.get_object(reference).await
    }

    async fn list_crds(&self) -> meshfleet_agent::Result<Vec<meshfleet_agent::ownership::LiveCrd>> {
        self.sim.list_crds().await
    }

    async fn foreign_custom_resources(
        &self,
        crd: &str,
        limit: u32,
    ) -> meshfleet_agent::Result<Vec<ObjectRef>> {
        self.sim.foreign_custom_resources(crd, limit).await
    }

    async fn namespace_contents(
        &self,
        namespace: &str,
    ) -> meshfleet_agent::Result<Vec<meshfleet_agent::ownership::NamespaceObject>> {
        self.sim.namespace_contents(namespace).await
    }

    async fn list_owned(&self) -> meshfleet_agent::Result<Vec<OwnedObject>> {
        self.sim.list_owned().await
    }

    async fn workload_status(
        &self,
        reference: &ObjectRef,
    ) -> meshfleet_agent::Result<Option<WorkloadStatus>> {
        let status = self.sim.workload_status(reference).await?;
        if let Some(ws) = &status
            && ws.is_ready()
            && ws.version.as_deref() == Some(&*self.target)
        {
            let now = Utc::now();
            let mut s = self.lock();
            if let Some(slot @ None) = s.workloads.get_mut(reference) {
                *slot = Some(now);
            }
        }
        Ok(status)
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> meshfleet_agent::Result<Option<meshfleet_agent::backend::SecretData>> {
        self.sim.get_secret(namespace, name).await
    }

    async fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: meshfleet_agent::backend::SecretData,
    ) -> meshfleet_agent::Result<()> {
        self.sim.put_secret(namespace, name, data).await
    }

    async fn facts(&self) -> meshfleet_agent::Result<ClusterFacts> {
        self.sim.facts().await
    }
}

// ---------------------------------------------------------------------------
// Small helpers.

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().map_or(f64::NAN, |us| us as f64 / 1e6)
}

/// p50 / p99 / max of `v` (sorted in place), as text.
fn spread(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.3} s  p99 {:.3} s  max {:.3} s  (n={})",
        at(0.5),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

fn result_line(overhead: f64, target: f64, pass: bool) -> String {
    format!(
        "RESULT rollout_overhead {overhead:.2} s target <= {target} {}",
        if pass { "PASS" } else { "FAIL" }
    )
}

fn give_up(a: &Args, why: &str) -> ! {
    println!("rollout-bench: {why}");
    println!("{}", result_line(f64::INFINITY, a.target_overhead, false));
    std::process::exit(1)
}

/// Sends a request, retrying transport errors, 429 and 5xx a few times.
async fn send(what: &str, make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let mut last = String::new();
    for attempt in 0..6u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
        match make().send().await {
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            }
            Ok(r) => return r,
            Err(e) => last = e.to_string(),
        }
    }
    panic!("{what}: {last}")
}

/// [`send`], then reads the body as JSON, retrying the whole request when
/// the body cannot be read (a 10,000-agent simulator on 2 cores can starve
/// a read past the client's timeout).
async fn send_json(what: &str, make: impl Fn() -> reqwest::RequestBuilder) -> Value {
    let mut last = String::new();
    for attempt in 0..6u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
        match send(what, &make).await.json().await {
            Ok(v) => return v,
            Err(e) => last = e.to_string(),
        }
    }
    panic!("{what}: {last}")
}

// ---------------------------------------------------------------------------
// Database load.

#[derive(Debug, Clone, Default)]
struct DbSnapshot {
    at: Option<Instant>,
    xact_commit: i64,
    xact_rollback: i64,
    tup_returned: i64,
    tup_fetched: i64,
    tup_inserted: i64,
    tup_updated: i64,
    tup_deleted: i64,
    /// queryid → its counters, when pg_stat_statements works.
    statements: Option<HashMap<i64, Stmt>>,
}

#[derive(Debug, Clone, Default)]
struct Stmt {
    calls: i64,
    rows: i64,
    exec_ms: f64,
    /// Buffer pages the statement touched (shared hits + reads): what scans.
    pages: i64,
    query: String,
}

async fn db_connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

/// Ensures `CREATE EXTENSION pg_stat_statements` in the database; Err says why
/// it cannot be read (usually: not in shared_preload_libraries).
async fn enable_statements(db: &mut PgConnection) -> Result<(), String> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut *db)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT count(*) FROM pg_stat_statements")
        .fetch_one(&mut *db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn db_snapshot(db: &mut PgConnection, statements: bool) -> Result<DbSnapshot, sqlx::Error> {
    // Read fresh counters, not the ones cached in this transaction.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *db)
        .await?;
    let row = sqlx::query(
        "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *db)
    .await?;
    let mut s = DbSnapshot {
        at: Some(Instant::now()),
        xact_commit: row.try_get(0)?,
        xact_rollback: row.try_get(1)?,
        tup_returned: row.try_get(2)?,
        tup_fetched: row.try_get(3)?,
        tup_inserted: row.try_get(4)?,
        tup_updated: row.try_get(5)?,
        tup_deleted: row.try_get(6)?,
        statements: None,
    };
    if statements {
        let rows = sqlx::query(
            "SELECT coalesce(queryid, 0) AS queryid, sum(calls)::bigint AS calls, sum(rows)::bigint AS rows, \
             sum(total_exec_time)::float8 AS exec_ms, \
             sum(shared_blks_hit + shared_blks_read)::bigint AS pages, min(query) AS query \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             GROUP BY 1",
        )
        .fetch_all(&mut *db)
        .await?;
        let mut m = HashMap::new();
        for r in rows {
            let id: i64 = r.try_get("queryid")?;
            m.insert(
                id,
                Stmt {
                    calls: r.try_get("calls")?,
                    rows: r.try_get("rows")?,
                    exec_ms: r.try_get("exec_ms")?,
                    pages: r.try_get("pages")?,
                    query: r.try_get("query").unwrap_or_default(),
                },
            );
        }
        s.statements = Some(m);
    }
    Ok(s)
}

fn one_line(q: &str, max: usize) -> String {
    let flat = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn print_db_load(before: &DbSnapshot, after: &DbSnapshot) {
    let (Some(t0), Some(t1)) = (before.at, after.at) else {
        return;
    };
    let dt = (t1 - t0).as_secs_f64().max(1e-3);
    let commits = after.xact_commit - before.xact_commit;
    let rollbacks = after.xact_rollback - before.xact_rollback;
    println!(
        "database load over {dt:.1} s (pg_stat_database of the service's database; API, agents' reports and long polls, and the reconciler together):"
    );
    println!(
        "  transactions   {commits} committed ({:.0}/s), {rollbacks} rolled back",
        commits as f64 / dt
    );
    println!(
        "  tuples         returned {} fetched {} inserted {} updated {} deleted {}",
        after.tup_returned - before.tup_returned,
        after.tup_fetched - before.tup_fetched,
        after.tup_inserted - before.tup_inserted,
        after.tup_updated - before.tup_updated,
        after.tup_deleted - before.tup_deleted,
    );
    match (&before.statements, &after.statements) {
        (Some(b), Some(a)) => {
            let zero = Stmt::default();
            let mut deltas: Vec<Stmt> = a
                .iter()
                .map(|(id, x)| {
                    let y = b.get(id).unwrap_or(&zero);
                    Stmt {
                        calls: x.calls - y.calls,
                        rows: x.rows - y.rows,
                        exec_ms: x.exec_ms - y.exec_ms,
                        pages: x.pages - y.pages,
                        query: x.query.clone(),
                    }
                })
                .filter(|d| d.calls > 0)
                .collect();
            let total: i64 = deltas.iter().map(|d| d.calls).sum();
            let exec_ms: f64 = deltas.iter().map(|d| d.exec_ms).sum();
            let control: i64 = deltas
                .iter()
                .filter(|d| {
                    let q = d.query.trim_start().to_ascii_uppercase();
                    q.starts_with("BEGIN") || q.starts_with("COMMIT") || q.starts_with("ROLLBACK")
                })
                .map(|d| d.calls)
                .sum();
            println!(
                "  statements     {total} ({:.0}/s; {:.0}/s without BEGIN/COMMIT/ROLLBACK) from pg_stat_statements; {:.2} s of execution ({:.0}% of one core)",
                total as f64 / dt,
                (total - control) as f64 / dt,
                exec_ms / 1000.0,
                exec_ms / 10.0 / dt
            );
            let row = |d: &Stmt| {
                format!(
                    "    {:>8} {:>7.0}/s {:>8.0} ms {:>9} rows  {}",
                    d.calls,
                    d.calls as f64 / dt,
                    d.exec_ms,
                    d.rows,
                    one_line(&d.query, 100)
                )
            };
            println!("  top statements by calls:   calls   calls/s   exec time     rows  query");
            deltas.sort_by_key(|d| std::cmp::Reverse(d.calls));
            for d in deltas.iter().take(15) {
                println!("{}", row(d));
            }
            println!("  top statements by execution time:");
            deltas.sort_by(|x, y| y.exec_ms.total_cmp(&x.exec_ms));
            for d in deltas.iter().take(8) {
                println!("{}", row(d));
            }
            println!("  top statements by buffer pages touched (what scans):   pages per call");
            deltas.sort_by_key(|d| std::cmp::Reverse(d.pages));
            for d in deltas.iter().take(6) {
                println!(
                    "{}  {:>7.0}",
                    row(d),
                    d.pages as f64 / d.calls.max(1) as f64
                );
            }
        }
        _ => println!("  statements     n/a (pg_stat_statements not available; see above)"),
    }
}

/// Transactions and statements per second of the idle fleet (`d0` → `d1`)
/// against the rollout's (`d1` → `d2`), and the difference.
fn print_db_baseline(d0: &DbSnapshot, d1: &DbSnapshot, d2: &DbSnapshot) {
    let rate = |x: &DbSnapshot, y: &DbSnapshot| {
        let (Some(t0), Some(t1)) = (x.at, y.at) else {
            return (0.0, None);
        };
        let dt = (t1 - t0).as_secs_f64().max(1e-3);
        let tx = (y.xact_commit - x.xact_commit) as f64 / dt;
        let st = match (&x.statements, &y.statements) {
            (Some(a), Some(b)) => {
                let calls = |m: &HashMap<i64, Stmt>| m.values().map(|s| s.calls).sum::<i64>();
                Some((calls(b) - calls(a)) as f64 / dt)
            }
            _ => None,
        };
        (tx, st)
    };
    let (tx0, st0) = rate(d0, d1);
    let (tx1, st1) = rate(d1, d2);
    let fmt = |s: Option<f64>| s.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    println!(
        "  the same fleet just before the rollout (heartbeats and the reconciler's own work): {tx0:.0} transactions/s, {} statements/s → the rollout adds ≈ {:.0} transactions/s, {} statements/s",
        fmt(st0),
        tx1 - tx0,
        fmt(st1.zip(st0).map(|(a, b)| a - b))
    );
}

// ---------------------------------------------------------------------------
// Server counters from /metrics.

/// (metric name, selected labels) → value, for the counters this bench reports.
fn scrape_parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        let label = |l: &str| {
            key.split_once(&format!("{l}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string())
        };
        let k = if name == "meshfleet_http_requests_total" {
            format!(
                "http {} {}",
                label("method").unwrap_or_default(),
                label("route").unwrap_or_default()
            )
        } else if name == "meshfleet_reconcile_total"
            || name == "meshfleet_notifications_total"
            // time in rollout ticks and reconcile groups: `_sum` per second is
            // the share of one task's time they took
            || ((name.starts_with("meshfleet_rollout_tick_seconds_")
                || name.starts_with("meshfleet_reconcile_batch_seconds_"))
                && !name.ends_with("_bucket"))
            || (name.contains("rollout") && !name.ends_with("_bucket"))
        {
            key.to_string()
        } else {
            continue;
        };
        *out.entry(k).or_insert(0.0) += value;
    }
    out
}

async fn scrape(client: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(r) if r.status().is_success() => scrape_parse(&r.text().await.unwrap_or_default()),
        _ => BTreeMap::new(),
    }
}

fn print_counters(
    title: &str,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    dt: f64,
) {
    let mut rows: Vec<(&String, f64)> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    if rows.is_empty() {
        println!("{title}: /metrics unavailable or unchanged");
        return;
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("{title} (/metrics):");
    for (k, d) in rows.iter().take(20) {
        println!("  {d:>9.0}  {:>7.0}/s  {k}", d / dt);
    }
}

// ---------------------------------------------------------------------------
// The fleet.

/// How many of this run's clusters are Healthy at their generation on
/// `version`, and the health counts.
async fn census(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    selector: &str,
    version: &str,
) -> (usize, BTreeMap<String, usize>, Vec<String>) {
    let mut counts = BTreeMap::new();
    let mut done = 0;
    let mut unknown = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/v1/clusters?limit=500&labelSelector={}",
            a.base,
            selector.replace('=', "%3D").replace(',', "%2C")
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = send_json("listing clusters", || client.get(&url).bearer_auth(token)).await;
        for c in page["items"].as_array().into_iter().flatten() {
            let health = c["status"]["health"].as_str().unwrap_or("Unknown");
            *counts.entry(health.to_string()).or_insert(0) += 1;
            if health == "Unknown"
                && let Some(name) = c["name"].as_str()
            {
                unknown.push(name.to_string());
            }
            if health == "Healthy"
                && c["status"]["observedGeneration"] == c["generation"]
                && c["desiredVersion"] == version
            {
                done += 1;
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (done, counts, unknown)
}

/// Mints a new bootstrap token for each of `names` and puts it where the
/// agent reads it.
async fn rebootstrap(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    probes: &[(String, Probe)],
    names: &[String],
) {
    let by_name: HashMap<&str, &Probe> = probes.iter().map(|(n, p)| (n.as_str(), p)).collect();
    futures::stream::iter(names)
        .map(|name| {
            let probe = by_name.get(name.as_str()).copied();
            async move {
                let Some(probe) = probe else { return };
                let url = format!("{}/v1/clusters/{name}/bootstrap-tokens", a.base);
                let r = send("minting a bootstrap token", || {
                    client.post(&url).bearer_auth(token)
                })
                .await;
                if let Ok(bt) = r.json::<Value>().await
                    && let Some(t) = bt["token"].as_str()
                {
                    probe
                        .sim
                        .set_bootstrap(AGENT_NAMESPACE, BOOTSTRAP_SECRET, t, Some(&a.base));
                }
            }
        })
        .buffer_unordered(a.register_concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// What the rollout body and the probes say, per cluster and per stage.
#[derive(Debug, Default)]
struct Timings {
    stage_rows: Vec<String>,
    dispatch: Vec<f64>,
    /// Rollout startedAt → the agent's long poll returned the new state.
    delivered: Vec<f64>,
    /// Long poll returned → the agent's pass started (the simulator's own wait).
    pickup: Vec<f64>,
    agent: Vec<f64>,
    report: Vec<f64>,
    /// Agent ready → its report stored (the agent's end of pass, its PUT).
    reported: Vec<f64>,
    /// Report stored → the rollout's finishedAt (the reconciler's pick-up).
    picked: Vec<f64>,
    server: Vec<f64>,
    approximated: usize,
    waves: usize,
    /// Σ over stages of the list-scheduling makespan of the agent times.
    ideal: f64,
    /// Σ over waves of the slowest agent in the wave.
    wave_sum: f64,
    /// waves × 3 × ready_after.
    nominal: f64,
}

/// Finishing time of `durations` run in order on `lanes` lanes, each taking
/// the lane that frees first.
fn makespan(durations: &[f64], lanes: usize) -> f64 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let us = |s: f64| (s.max(0.0) * 1e6) as u64;
    let mut free: BinaryHeap<Reverse<u64>> = (0..lanes.max(1)).map(|_| Reverse(0)).collect();
    let mut end = 0;
    for d in durations {
        let Reverse(at) = free.pop().unwrap_or(Reverse(0));
        let done = at + us(*d);
        end = end.max(done);
        free.push(Reverse(done));
    }
    end as f64 / 1e6
}

/// When each cluster's first `Healthy` report of its newest generation was
/// stored (`cluster_convergence`, written by the report's own transaction),
/// for those stored since `since`: splits "agent ready → finishedAt" into the
/// report's way in and the reconciler's pick-up.
async fn reports_stored(
    db: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<HashMap<String, DateTime<Utc>>, sqlx::Error> {
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.name, cv.converged_at FROM cluster_convergence cv
         JOIN clusters c ON c.tenant_id = cv.tenant_id AND c.id = cv.cluster_id
                        AND c.generation = cv.generation
         WHERE cv.converged_at >= $1",
    )
    .bind(since)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().collect())
}

fn analyse(
    a: &Args,
    rollout: Option<&Rollout>,
    probes: &[(String, Probe)],
    agent_states: &[Arc<meshfleet_agent::AgentState>],
    stored: &HashMap<String, DateTime<Utc>>,
    posted_at: DateTime<Utc>,
) -> Timings {
    let by_name: HashMap<&str, (&Probe, Option<&Arc<meshfleet_agent::AgentState>>)> = probes
        .iter()
        .enumerate()
        .map(|(i, (n, p))| (n.as_str(), (p, agent_states.get(i))))
        .collect();
    let approx_agent = a.ready_after.as_secs_f64() * 3.0;
    let mut t = Timings::default();
    let Some(r) = rollout else { return t };
    let mut prev_end = Some(posted_at);
    for st in &r.stages {
        let mut started: Vec<(DateTime<Utc>, f64)> = Vec::new();
        for c in st.clusters.iter().flatten() {
            let Some(s_at) = c.started_at else { continue };
            let entry = by_name.get(c.name.as_str());
            if let Some((_, Some(state))) = entry
                && let Some((_, got)) = state.received()
                && got >= s_at
            {
                t.delivered.push(secs(got - s_at));
                if let Some((received, _)) = entry.and_then(|(p, _)| p.timing()) {
                    t.pickup.push(secs(received - got));
                }
            }
            let agent = match entry.and_then(|(p, _)| p.timing()) {
                Some((received, ready)) => {
                    t.dispatch.push(secs(received - s_at));
                    if let Some(f) = c.finished_at {
                        t.report.push(secs(f - ready));
                        if let Some(at) = stored.get(&c.name) {
                            t.reported.push(secs(*at - ready));
                            t.picked.push(secs(f - *at));
                        }
                    }
                    secs(ready - received)
                }
                None => {
                    t.approximated += 1;
                    approx_agent
                }
            };
            t.agent.push(agent);
            if let Some(f) = c.finished_at {
                t.server.push(secs(f - s_at));
            }
            started.push((s_at, agent));
        }
        started.sort_by_key(|x| x.0);
        let lanes = st.max_concurrency.max(1) as usize;
        let durations: Vec<f64> = started.iter().map(|(_, d)| *d).collect();
        let ideal = makespan(&durations, lanes);
        let mut wave_sum = 0.0;
        let mut waves = 0;
        for chunk in durations.chunks(lanes) {
            wave_sum += chunk.iter().copied().fold(0.0, f64::max);
            waves += 1;
        }
        t.waves += waves;
        t.ideal += ideal;
        t.wave_sum += wave_sum;
        t.nominal += waves as f64 * approx_agent;
        let took = match (st.started_at, st.finished_at) {
            (Some(s), Some(f)) => secs(f - s),
            _ => f64::NAN,
        };
        let gap = match (prev_end, st.started_at) {
            (Some(p), Some(s)) => secs(s - p),
            _ => f64::NAN,
        };
        prev_end = st.finished_at;
        t.stage_rows.push(format!(
            "  {:<8} {:<9} {:>5} clusters {:>3} waves {:>7.2} s  {:>9.2} s  {:>9.2} s  [{:>9.2} s]  {:>9.3} s",
            st.name,
            format!("{:?}", st.state),
            started.len(),
            waves,
            took,
            ideal,
            took - ideal,
            wave_sum,
            gap
        ));
    }
    t
}

/// `GET {base}{path}` as JSON (the tenant's token).
async fn get_json(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    path: &str,
) -> Result<Value, String> {
    let r = send("reading the rollout", || {
        client.get(format!("{}{path}", a.base)).bearer_auth(token)
    })
    .await;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("GET {path}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}"))
}

fn with_state(v: Value) -> (Value, String) {
    let state = v["state"].as_str().unwrap_or("?").to_string();
    (v, state)
}

async fn get_rollout(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    id: &str,
) -> Result<(Value, String), String> {
    get_json(client, a, token, &format!("/v1/rollouts/{id}"))
        .await
        .map(with_state)
}

/// The rollout as the list shows it (counts and stage states, no clusters):
/// what the progress line needs, without loading every member each time.
async fn rollout_summary(
    client: &reqwest::Client,
    a: &Args,
    token: &str,
    id: &str,
) -> Result<(Value, String), String> {
    let list = get_json(client, a, token, "/v1/rollouts?limit=10").await?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"].as_str() == Some(id))
        .cloned()
        .map(with_state)
        .ok_or_else(|| format!("rollout {id} is not among the newest in GET /v1/rollouts"))
}

/// CPU seconds per process group ([`cpu_snapshot`]).
type Cpu = BTreeMap<String, f64>;

/// This process's group in the CPU figures.
const SIM: &str = "rollout-bench (simulator, agents)";

/// The bound the machine's cores set: with every core busy the whole time,
/// the CPU the rollout took (control plane and simulator together) needs at
/// least `total / cores` of wall time, so the overhead measured on this
/// machine cannot be below that minus the agents' time. And the control
/// plane's CPU per upgraded cluster, the figure that decides that bound,
/// with the idle fleet's own load (heartbeats, long polls: the `idle` CPU
/// rate before the rollout) counted apart.
fn print_cpu_floor(
    before: &Cpu,
    after: &Cpu,
    idle: Option<(&Cpu, &Cpu, f64)>,
    dt: f64,
    clusters: usize,
    agents_s: f64,
) {
    let cores = cores();
    let used = |b: &Cpu, a: &Cpu| -> (f64, f64) {
        let d = cpu_delta(b, a);
        let sim = d.get(SIM).copied().unwrap_or(0.0);
        (d.values().sum::<f64>() - sim, sim)
    };
    let (control, sim) = used(before, after);
    if clusters == 0 || control + sim <= 0.0 {
        return;
    }
    let floor = (control + sim) / cores;
    println!(
        "CPU floor       {floor:.2} s = {:.1} core-s ÷ {cores} cores: no run of this CPU is shorter on this machine, so the overhead here is at least {:.2} s",
        control + sim,
        floor - agents_s
    );
    let per = |core_s: f64| core_s / clusters as f64 * 1000.0;
    let idle_part = idle
        .map(|(b, a, idle_dt)| used(b, a).0 / idle_dt.max(1e-3) * dt)
        .map(|c| format!(" ({:.2} ms of it the idle fleet's heartbeats and long polls, at the rate measured before the rollout)", per(c)))
        .unwrap_or_default();
    println!(
        "                per upgraded cluster: control plane (api, reconciler, PostgreSQL) {:.2} ms of CPU{idle_part}, simulator {:.2} ms",
        per(control),
        per(sim)
    );
}

fn terminal(state: &str) -> bool {
    matches!(
        state,
        "Succeeded" | "RolledBack" | "Cancelled" | "Paused" | "WaitingForApproval"
    )
}

fn progress_line(t: f64, v: &Value) -> String {
    let c = &v["counts"];
    let mut s = format!(
        "  t+{t:>6.1}s  {:<10} succeeded {:>5} inProgress {:>4} pending {:>5} failed {:>3}",
        v["state"].as_str().unwrap_or("?"),
        c["succeeded"],
        c["inProgress"],
        c["pending"],
        c["failed"]
    );
    for st in v["stages"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "  [{} {}]",
            st["name"].as_str().unwrap_or("?"),
            st["state"].as_str().unwrap_or("?")
        );
    }
    s
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let t_start = Instant::now();
    let deadline = t_start + a.timeout;

    if a.prepare_database {
        std::process::exit(prepare_database(&a).await);
    }

    let token = match &a.token {
        Some(t) => t.clone(),
        None => {
            let signer = DevSigner::load(&a.data_dir).unwrap_or_else(|e| {
                eprintln!("error: {e}\nstart `meshfleet up` first, or pass --token");
                std::process::exit(2)
            });
            signer.mint(
                "rollout-bench",
                &a.tenant,
                &[Role::Owner],
                Duration::from_secs(24 * 3600),
            )
        }
    };
    let client = meshfleet_tests::agents::fleet_http();
    let run = format!(
        "{:x}",
        std::process::id() ^ (Utc::now().timestamp_subsec_micros())
    );
    let selector = format!("bench=rollout,bench-run={run}");
    println!(
        "rollout-bench: {} clusters against {} (run {run}); {} → {}, 3 stages ({}% / {}% / rest), soak 0, maxConcurrency {}, ready-after {:?}, heartbeat {:?}",
        a.clusters,
        a.base,
        a.version,
        a.target,
        a.canary_percent,
        a.half_percent,
        a.max_concurrency,
        a.ready_after,
        a.heartbeat
    );

    // The database connection, before anything else fails late.
    let mut db = match &a.database_url {
        Some(url) => match db_connect(url).await {
            Ok(c) => Some(c),
            Err(e) => {
                println!("database: cannot connect ({e}); no database figures");
                None
            }
        },
        None => {
            println!("database: no --database-url; no database figures");
            None
        }
    };
    let mut statements_ok = false;
    if let Some(c) = db.as_mut() {
        match enable_statements(c).await {
            Ok(()) => statements_ok = true,
            Err(e) => println!(
                "database: pg_stat_statements unavailable ({e}); transactions and tuples only"
            ),
        }
    }

    // 1. Register the clusters.
    let target: Arc<str> = Arc::from(a.target.as_str());
    let started = Instant::now();
    let agent_bases: Vec<String> = std::iter::once(a.base.clone())
        .chain(a.agent_base.iter().cloned())
        .collect();
    let agent_base = |i: usize| agent_bases[i % agent_bases.len()].clone();
    if agent_bases.len() > 1 {
        println!(
            "agents spread over {} api replicas: {agent_bases:?}",
            agent_bases.len()
        );
    }
    let probes: Vec<(String, Probe)> = futures::stream::iter(0..a.clusters)
        .map(|i| {
            let (client, a, token, run, target, agent_base) = (
                client.clone(),
                &a,
                token.clone(),
                run.clone(),
                target.clone(),
                agent_base(i),
            );
            async move {
                let name = format!("rb-{run}-{i:05}");
                let body = json!({
                    "labels": {"bench": "rollout", "bench-run": run},
                    "mesh": {"upgrade": {"mode": "manual", "version": a.version}}
                });
                let url = format!("{}/v1/clusters/{name}", a.base);
                let r = send("creating a cluster", || {
                    client.put(&url).bearer_auth(&token).json(&body)
                })
                .await;
                assert!(
                    r.status().is_success(),
                    "creating {name}: {}",
                    r.text().await.unwrap()
                );
                let url = format!("{}/v1/clusters/{name}/bootstrap-tokens", a.base);
                let r = send("minting a bootstrap token", || {
                    client.post(&url).bearer_auth(&token)
                })
                .await;
                assert!(
                    r.status().is_success(),
                    "bootstrap token for {name}: {}",
                    r.status()
                );
                let bt: Value = r.json().await.unwrap();
                let sim = SimCluster::new(SimOptions {
                    ready_after: a.ready_after,
                    op_log: 0,
                    ..SimOptions::default()
                });
                sim.set_bootstrap(
                    AGENT_NAMESPACE,
                    BOOTSTRAP_SECRET,
                    bt["token"].as_str().unwrap(),
                    Some(&agent_base),
                );
                (name, Probe::new(sim, target))
            }
        })
        .buffered(a.register_concurrency.max(1))
        .collect()
        .await;
    println!(
        "registered {} clusters in {:.1}s",
        probes.len(),
        started.elapsed().as_secs_f64()
    );

    // 2. Start an agent per cluster.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agents_started = Instant::now();
    let start_pause = Duration::from_millis(250);
    let start_over = a.start_over.unwrap_or(a.heartbeat);
    let slots = (start_over.as_millis() / start_pause.as_millis()).max(1) as usize;
    let start_batch = a.clusters.div_ceil(slots).max(1);
    let mut agent_states = Vec::with_capacity(probes.len());
    for (i, (_, probe)) in probes.iter().enumerate() {
        if i > 0 && i % start_batch == 0 {
            tokio::time::sleep(start_pause).await;
        }
        let mut config = AgentConfig::new(agent_base(i));
        config.http = Some(client.clone());
        config.heartbeat = a.heartbeat;
        config.poll_wait = Duration::from_secs(55);
        config.reconcile.poll_interval = a.agent_poll;
        config.backoff_max = a.agent_backoff_max;
        let agent = Agent::new(config, probe.clone());
        agent_states.push(agent.state());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = agent
                .run(async move {
                    let _ = stop.changed().await;
                })
                .await;
        });
    }

    // 3. Wait until every cluster is Healthy on the start version.
    // A census lists every cluster: do not let it crowd out the registrations.
    let census_every = Duration::from_millis((a.clusters as u64 / 2).clamp(1000, 5000));
    let started = agents_started;
    let mut last_print = Instant::now();
    let mut best = (0usize, Instant::now());
    loop {
        let (done, counts, unknown) = census(&client, &a, &token, &selector, &a.version).await;
        if done >= a.clusters {
            println!(
                "converged: {done} clusters Healthy on {} {:.1}s after the first agent started (agents started over {start_over:?})",
                a.version,
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!(
                "  t+{:>5.1}s  {counts:?}  Healthy on {}: {done}/{}",
                started.elapsed().as_secs_f64(),
                a.version,
                a.clusters
            );
            last_print = Instant::now();
        }
        if Instant::now() >= deadline {
            give_up(
                &a,
                &format!(
                    "timed out waiting for the fleet to converge: {done}/{} ({counts:?})",
                    a.clusters
                ),
            );
        }
        if done > best.0 {
            best = (done, Instant::now());
        } else if best.1.elapsed() >= a.rebootstrap_after && !unknown.is_empty() {
            // An agent whose registration answer was lost (a client timeout
            // after the server consumed the token) waits for a new bootstrap
            // token: give it one, as an operator would.
            println!(
                "  {} clusters have never reported for {:?}: new bootstrap tokens for them",
                unknown.len(),
                a.rebootstrap_after
            );
            rebootstrap(&client, &a, &token, &probes, &unknown).await;
            best.1 = Instant::now();
        }
        tokio::time::sleep(census_every).await;
    }
    // Let the status reports of the last clusters settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sim_kib = meshfleet_tests::bench::rss_kib(Some(std::process::id())).unwrap_or(0);
    let sim_mib = sim_kib as f64 / 1024.0;
    let sim_cpu: f64 = cpu_snapshot(None, SIM).values().sum();
    println!(
        "simulator: {} clusters with their agents hold {sim_mib:.0} MiB RSS in this process ({:.0} KiB each; {sim_cpu:.0} s of CPU so far)   (target <= {} MiB)",
        a.clusters,
        sim_kib as f64 / a.clusters.max(1) as f64,
        a.target_sim_mib
    );
    let mut results = vec![format!(
        "RESULT fleet_sim_rss {sim_mib:.0} MiB target <= {} {}",
        a.target_sim_mib,
        if sim_mib <= a.target_sim_mib {
            "PASS"
        } else {
            "FAIL"
        }
    )];
    if a.memory_only {
        println!("{}", results[0]);
        std::process::exit(0);
    }
    if a.propagate {
        results.push(propagate(&a, &client, &token, &probes, &agent_states, deadline).await);
    }

    // 4. The idle fleet's load (heartbeats), then the rollout.
    let mut baseline = None;
    if !a.baseline.is_zero() {
        let m0 = scrape(&client, &a.base).await;
        let d0 = match db.as_mut() {
            Some(c) => db_snapshot(c, statements_ok).await.ok(),
            None => None,
        };
        let c0 = cpu_snapshot(a.server_pid, SIM);
        tokio::time::sleep(a.baseline).await;
        baseline = Some((m0, d0, c0));
    }
    let metrics_before = scrape(&client, &a.base).await;
    let db_before = match db.as_mut() {
        Some(c) => db_snapshot(c, statements_ok).await.ok(),
        None => None,
    };
    let cpu_before = cpu_snapshot(a.server_pid, SIM);
    let body = json!({
        "name": format!("bench-{run}"),
        "targetVersion": a.target,
        "selector": selector,
        "stages": [
            {"name": "canary", "percent": a.canary_percent, "maxConcurrency": a.max_concurrency},
            {"name": "half", "percent": a.half_percent, "maxConcurrency": a.max_concurrency},
            {"name": "rest", "maxConcurrency": a.max_concurrency}
        ],
        "failurePolicy": {"maxFailedClusters": a.max_failed_clusters, "action": "pause"},
        "progressDeadlineSeconds": 900
    });
    let posted_at = Utc::now();
    let t0 = Instant::now();
    let r = client
        .post(format!("{}/v1/rollouts", a.base))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| give_up(&a, &format!("POST /v1/rollouts: {e}")));
    let post_took = t0.elapsed();
    let status = r.status();
    let op_location = r
        .headers()
        .get("operation-location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    if status.as_u16() != 202 {
        give_up(
            &a,
            &format!("POST /v1/rollouts answered {status} (expected 202): {text}"),
        );
    }
    let created: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| give_up(&a, &format!("POST /v1/rollouts body: {e}: {text}")));
    let id = created["id"].as_str().unwrap_or_default().to_string();
    println!(
        "rollout {id} created in {:.3}s ({} clusters); watching {} every {:?}",
        post_took.as_secs_f64(),
        created["counts"]["total"],
        match a.watch {
            Watch::Operation => op_location.as_deref().unwrap_or("the rollout"),
            Watch::Rollout => "the rollout",
        },
        a.poll_interval
    );

    let mut last_progress = Instant::now();
    let mut final_state = String::new();
    let mut timed_out = false;
    loop {
        let now_done = match (a.watch, &op_location) {
            (Watch::Operation, Some(loc)) => {
                let r = send("reading the operation", || {
                    client.get(format!("{}{loc}", a.base)).bearer_auth(&token)
                })
                .await;
                let v: Value = r.json().await.unwrap_or(Value::Null);
                v["status"].as_str().is_some_and(|s| s != "Running")
            }
            _ => {
                let (_, state) = get_rollout(&client, &a, &token, &id)
                    .await
                    .unwrap_or_else(|e| give_up(&a, &e));
                if terminal(&state) {
                    final_state = state;
                    true
                } else {
                    false
                }
            }
        };
        if now_done {
            break;
        }
        if last_progress.elapsed() >= a.progress_every {
            last_progress = Instant::now();
            if let Ok((v, state)) = rollout_summary(&client, &a, &token, &id).await {
                println!("{}", progress_line(t0.elapsed().as_secs_f64(), &v));
                // Paused / waiting for approval does not end the operation.
                if terminal(&state) {
                    final_state = state;
                    break;
                }
            }
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(a.poll_interval).await;
    }
    let wall = t0.elapsed();
    let ended_at = Utc::now();
    let db_after = match db.as_mut() {
        Some(c) => db_snapshot(c, statements_ok).await.ok(),
        None => None,
    };
    let cpu_after = cpu_snapshot(a.server_pid, SIM);
    let metrics_after = scrape(&client, &a.base).await;

    // 5. What happened.
    let (full, state) = match get_rollout(&client, &a, &token, &id).await {
        Ok(x) => x,
        Err(e) => give_up(&a, &e),
    };
    if final_state.is_empty() {
        final_state = state;
    }
    println!("{}", progress_line(wall.as_secs_f64(), &full));
    let rollout: Option<Rollout> = match serde_json::from_value(full.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("note: the rollout body does not parse as meshfleet_model::Rollout ({e})");
            None
        }
    };
    let _ = stop_tx.send(true);

    let stored = match db.as_mut() {
        Some(c) => reports_stored(c, posted_at).await.unwrap_or_default(),
        None => HashMap::new(),
    };
    let t = analyse(
        &a,
        rollout.as_ref(),
        &probes,
        &agent_states,
        &stored,
        posted_at,
    );
    let wall_s = wall.as_secs_f64();

    println!();
    println!("rollout {id}: {final_state}");
    println!(
        "  wall time      {wall_s:.2} s (POST sent → terminal state seen, polling every {:?}; server: POST → rollout updatedAt {:.2} s)",
        a.poll_interval,
        rollout
            .as_ref()
            .map_or(f64::NAN, |r| secs(r.updated_at - posted_at))
    );
    println!(
        "stages:                                  took   agents (ideal)   overhead   [Σ slowest per wave]  start gap"
    );
    for row in &t.stage_rows {
        println!("{row}");
    }
    let mut t = t;
    println!(
        "per cluster: dispatch (rollout startedAt → agent got the desired state)  {}",
        spread(&mut t.dispatch)
    );
    println!(
        "               of which startedAt → the agent's long poll returned it      {}",
        spread(&mut t.delivered)
    );
    println!(
        "               of which long poll returned → the agent's pass started      {}",
        spread(&mut t.pickup)
    );
    println!(
        "per cluster: agent    (got it → every target workload read ready)        {}",
        spread(&mut t.agent)
    );
    println!(
        "per cluster: report   (agent ready → rollout finishedAt)                  {}",
        spread(&mut t.report)
    );
    if !t.reported.is_empty() {
        println!(
            "               of which agent ready → its report stored (convergence row)   {}",
            spread(&mut t.reported)
        );
        println!(
            "               of which report stored → the reconciler's finishedAt       {}",
            spread(&mut t.picked)
        );
    }
    println!(
        "per cluster: server   (rollout startedAt → finishedAt)                    {}",
        spread(&mut t.server)
    );
    if t.approximated > 0 {
        println!(
            "note: {} clusters had no agent timing from the simulator; their agent time is approximated as 3 sequential readiness waits × ready-after = {:.3} s",
            t.approximated,
            a.ready_after.as_secs_f64() * 3.0
        );
    }
    println!(
        "agents' time    {:.2} s = Σ over stages of the makespan of the measured agent times on maxConcurrency lanes, in the rollout's start order",
        t.ideal
    );
    println!(
        "                (an infinitely fast control plane with the same agents and limits; for equal agent times this is the slowest agent per wave × {} waves)",
        t.waves
    );
    println!(
        "                Σ over {} waves of the slowest agent in the wave (wave = maxConcurrency clusters of a stage in startedAt order): {:.2} s → overhead {:.2} s",
        t.waves,
        t.wave_sum,
        wall_s - t.wave_sum
    );
    println!(
        "                lower bound without CPU contention: {} waves × 3 readiness waits × ready-after {:?} = {:.2} s → overhead {:.2} s",
        t.waves,
        a.ready_after,
        t.nominal,
        wall_s - t.nominal
    );
    let overhead = wall_s - t.ideal;
    println!(
        "overhead        {overhead:.2} s = wall {wall_s:.2} s − agents {:.2} s   (target <= {} s)",
        t.ideal, a.target_overhead
    );
    let dt = (ended_at - posted_at)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-3);
    print_cpu(&cpu_before, &cpu_after, dt);
    let idle = baseline
        .as_ref()
        .map(|(_, _, c0)| (c0, &cpu_before, a.baseline.as_secs_f64()));
    print_cpu_floor(&cpu_before, &cpu_after, idle, dt, a.clusters, t.ideal);
    if let (Some(b), Some(af)) = (&db_before, &db_after) {
        print_db_load(b, af);
        if let Some((_, Some(d0), _)) = &baseline {
            print_db_baseline(d0, b, af);
        }
    }
    print_counters(
        "server counters during the rollout",
        &metrics_before,
        &metrics_after,
        dt,
    );
    if let Some((m0, _, c0)) = &baseline {
        let bdt = a.baseline.as_secs_f64();
        println!("the same fleet just before the rollout, for comparison ({bdt:.0} s):");
        print_cpu(c0, &cpu_before, bdt);
        print_counters("  server counters", m0, &metrics_before, bdt);
    }
    let succeeded = final_state == "Succeeded" && !timed_out;
    if timed_out {
        println!(
            "rollout-bench: the rollout did not end within --timeout {:?}",
            a.timeout
        );
    }
    if let Some(c) = db.as_mut() {
        match rollout_events(c, &id).await {
            Ok(rows) => {
                println!(
                    "events written by rollout:{id} (one per cluster and change: none missed or doubled)"
                );
                for (action, n, clusters) in &rows {
                    println!("  {action:<32} {n:>7} events for {clusters:>7} distinct clusters");
                }
                let per_cluster: Vec<_> = rows
                    .iter()
                    .filter(|(action, ..)| !action.starts_with("rollout."))
                    .collect();
                let exact = !per_cluster.is_empty()
                    && per_cluster
                        .iter()
                        .all(|(_, n, clusters)| n == clusters && *clusters as usize == a.clusters);
                results.push(format!(
                    "RESULT rollout_cluster_events_exact {} bool target = 1 {}",
                    u8::from(exact),
                    if exact { "PASS" } else { "FAIL" }
                ));
            }
            Err(e) => println!("events of the rollout: cannot read ({e})"),
        }
    }
    let pass = succeeded && overhead <= a.target_overhead;
    for line in results {
        println!("{line}");
    }
    println!("{}", result_line(overhead, a.target_overhead, pass));
    // The agents stop with the process.
    std::process::exit(if succeeded { 0 } else { 1 });
}

/// (action, events, distinct clusters) of the events a rollout wrote.
async fn rollout_events(
    db: &mut PgConnection,
    id: &str,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT action, count(*), count(DISTINCT cluster_id) FROM events
         WHERE actor = $1 GROUP BY action ORDER BY action",
    )
    .bind(format!("rollout:{id}"))
    .fetch_all(db)
    .await
}

/// `--propagate`: one spec change per cluster (its mesh config's tracing
/// flag), `--propagate-concurrency` writes in flight; for each, the time from
/// the write's acknowledgement (and from its sending) to its agent receiving
/// the new generation. Returns the RESULT line.
async fn propagate(
    a: &Args,
    client: &reqwest::Client,
    token: &str,
    probes: &[(String, Probe)],
    agents: &[Arc<meshfleet_agent::AgentState>],
    deadline: Instant,
) -> String {
    println!(
        "propagation: changing the spec of each of {} clusters, {} writes in flight",
        probes.len(),
        a.propagate_concurrency
    );
    let t0 = Instant::now();
    let body = json!({"mesh": {"meshConfig": {"enableTracing": true}}}).to_string();
    // (index, generation, sent, acknowledged)
    let writes: Vec<(usize, i64, DateTime<Utc>, DateTime<Utc>)> =
        futures::stream::iter(probes.iter().enumerate())
            .map(|(i, (name, _))| {
                let url = format!("{}/v1/clusters/{name}", a.base);
                let body = body.clone();
                async move {
                    let sent = Utc::now();
                    let r = send("changing a spec", || {
                        client
                            .patch(&url)
                            .bearer_auth(token)
                            .header("content-type", "application/merge-patch+json")
                            .body(body.clone())
                    })
                    .await;
                    let acked = Utc::now();
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    assert!(status.is_success(), "changing {name}: {status} {v}");
                    (i, v["generation"].as_i64().unwrap_or(i64::MAX), sent, acked)
                }
            })
            .buffer_unordered(a.propagate_concurrency.max(1))
            .collect()
            .await;
    let wrote = t0.elapsed().as_secs_f64();
    println!(
        "  {} writes in {wrote:.1} s ({:.0}/s)",
        writes.len(),
        writes.len() as f64 / wrote.max(1e-3)
    );
    let mut from_ack = Vec::with_capacity(writes.len());
    let mut from_sent = Vec::with_capacity(writes.len());
    let mut missing = writes.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        missing.retain(|(i, generation, sent, acked)| match agents[*i].received() {
            Some((g, at)) if g >= *generation => {
                from_ack.push(secs(at - *acked).max(0.0));
                from_sent.push(secs(at - *sent));
                false
            }
            _ => true,
        });
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "  write acknowledged → agent received  {}",
        spread(&mut from_ack)
    );
    println!(
        "  write sent         → agent received  {}",
        spread(&mut from_sent)
    );
    // `spread` sorted it.
    let p99 = from_ack
        .get(((from_ack.len().max(1) - 1) as f64 * 0.99).round() as usize)
        .copied()
        .unwrap_or(f64::INFINITY);
    let pass = missing.is_empty() && p99 <= a.target_propagation;
    if !missing.is_empty() {
        println!("  {} agents never received their change", missing.len());
    }
    println!(
        "  p99 {p99:.3} s   (target <= {} s, all {} received: {})",
        a.target_propagation,
        writes.len(),
        missing.is_empty()
    );
    format!(
        "RESULT spec_propagation_p99 {p99:.3} s target <= {} {}",
        a.target_propagation,
        if pass { "PASS" } else { "FAIL" }
    )
}

/// `--prepare-database`: make sure pg_stat_statements is preloaded.
async fn prepare_database(a: &Args) -> i32 {
    let Some(url) = &a.database_url else {
        eprintln!("--prepare-database needs --database-url");
        return 1;
    };
    let mut db = match db_connect(url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("database: cannot connect: {e}");
            return 1;
        }
    };
    let current: String =
        match sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&mut db)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("database: {e}");
                return 1;
            }
        };
    if current.split(',').any(|l| l.trim() == "pg_stat_statements") {
        println!("pg_stat_statements is preloaded");
        return 0;
    }
    let libs = if current.trim().is_empty() {
        "pg_stat_statements".to_string()
    } else {
        format!("{current},pg_stat_statements")
    };
    // ALTER SYSTEM takes no bind parameters; the value is ours and quoted.
    let sql = format!(
        "ALTER SYSTEM SET shared_preload_libraries = '{}'",
        libs.replace('\'', "''")
    );
    match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut db).await {
        Ok(_) => {
            println!("pg_stat_statements added to shared_preload_libraries; restart PostgreSQL");
            10
        }
        Err(e) => {
            eprintln!("database: cannot preload pg_stat_statements: {e}");
            1
        }
    }
}
