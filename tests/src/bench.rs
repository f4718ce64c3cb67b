//! Small measures shared by the benchmark binaries.

use std::collections::BTreeMap;
use std::time::Duration;

/// The `p` quantile (0..=1) of sorted durations; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Resident memory of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A benchmark's closing line for one figure:
/// `RESULT <name> <value> <unit> target <op> <target> PASS|FAIL` (`op` is
/// `<=` or `>=`).
pub fn result(name: &str, value: f64, unit: &str, op: &str, target: f64) -> String {
    let pass = match op {
        "<=" => value <= target,
        _ => value >= target,
    };
    format!(
        "RESULT {name} {value:.1} {unit} target {op} {target} {}",
        if pass { "PASS" } else { "FAIL" }
    )
}

/// Registers the agent of cluster `name` the way an install does: a
/// bootstrap token (with the tenant `token`), then `POST /v1/agent/register`
/// with `register` (its `bootstrapToken` is filled in). The credential, or
/// what went wrong.
pub async fn register_agent(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
    mut register: serde_json::Value,
) -> Result<String, String> {
    async fn created(r: reqwest::Result<reqwest::Response>) -> Result<serde_json::Value, String> {
        let r = r.map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status.as_u16() != 201 {
            return Err(format!("{status} (expected 201 Created): {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
    let issued = created(
        client
            .post(format!("{base}/v1/clusters/{name}/bootstrap-tokens"))
            .bearer_auth(token)
            .send()
            .await,
    )
    .await?;
    register["bootstrapToken"] = issued["token"].clone();
    let registered = created(
        client
            .post(format!("{base}/v1/agent/register"))
            .json(&register)
            .send()
            .await,
    )
    .await?;
    registered["credential"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no credential in {registered}"))
}

/// comm → CPU seconds (user + system, with reaped children), for this
/// process (named `me`) and every process under `server` (`meshfleet up` and
/// its PostgreSQL).
pub fn cpu_snapshot(server: Option<u32>, me: &str) -> BTreeMap<String, f64> {
    // USER_HZ is 100 on every Linux ABI.
    const HZ: f64 = 100.0;
    let mut procs: Vec<(u32, u32, String, f64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let ppid = f.get(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            procs.push((
                pid,
                ppid,
                comm,
                (num(11) + num(12) + num(13) + num(14)) / HZ,
            ));
        }
    }
    let (me, me_label) = (std::process::id(), me);
    let mut out = BTreeMap::new();
    let mut mine: Vec<u32> = server.into_iter().collect();
    let mut i = 0;
    while i < mine.len() {
        let parent = mine[i];
        for (pid, ppid, _, _) in &procs {
            if *ppid == parent && !mine.contains(pid) {
                mine.push(*pid);
            }
        }
        i += 1;
    }
    for (pid, _, comm, cpu) in &procs {
        let key = if *pid == me {
            me_label.to_string()
        } else if mine.contains(pid) {
            if comm.starts_with("postgres") {
                "postgres".to_string()
            } else {
                format!("{comm} (server, reconciler)")
            }
        } else {
            continue;
        };
        *out.entry(key).or_insert(0.0) += cpu;
    }
    out
}

/// Prints the CPU each process took between two [`cpu_snapshot`]s `dt` seconds apart.
/// This machine's cores, as a divisor of core-seconds.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// CPU seconds each process group used between two [`cpu_snapshot`]s (the
/// groups of `after`).
pub fn cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

pub fn print_cpu(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, dt: f64) {
    let cores = cores();
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (k, d) in cpu_delta(before, after) {
        total += d;
        parts.push(format!("{k} {d:.1} s ({:.0}%)", d / dt * 100.0));
    }
    if parts.is_empty() {
        return;
    }
    println!(
        "  CPU over {dt:.1} s: {}; together {total:.1} of {:.1} core-seconds ({:.0}%)",
        parts.join(", "),
        dt * cores,
        total / (dt * cores) * 100.0
    );
}
