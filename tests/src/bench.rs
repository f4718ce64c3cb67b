//! Small measures shared by the benchmark binaries.

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
