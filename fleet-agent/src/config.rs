//! Configuration from the environment (or flags). Every error names the
//! variable: clap prints the `value_name`, which is the variable's name.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET, CREDENTIAL_SECRET, MAX_WAIT_SECONDS};
use meshfleet_telemetry::{LogFormat, OtelArgs};

use crate::agent::AgentConfig;

/// The meshfleet fleet agent: installs and upgrades Istio ambient in this
/// cluster as the meshfleet service asks, and reports status.
#[derive(Debug, Clone, Parser)]
#[command(name = "meshfleet-agent", version)]
pub struct Cli {
    /// Base URL of the meshfleet service (default: the `url` key of the bootstrap Secret).
    #[arg(long, env = "MESHFLEET_URL", value_name = "MESHFLEET_URL", value_parser = parse_url)]
    pub url: Option<String>,

    /// Namespace of the agent's Secrets.
    #[arg(long, env = "MESHFLEET_NAMESPACE", value_name = "MESHFLEET_NAMESPACE", default_value = AGENT_NAMESPACE)]
    pub namespace: String,

    /// Secret holding the bootstrap token (`token`) and the service URL (`url`).
    #[arg(long, env = "MESHFLEET_BOOTSTRAP_SECRET", value_name = "MESHFLEET_BOOTSTRAP_SECRET", default_value = BOOTSTRAP_SECRET)]
    pub bootstrap_secret: String,

    /// Secret in which the agent keeps its credential.
    #[arg(long, env = "MESHFLEET_CREDENTIAL_SECRET", value_name = "MESHFLEET_CREDENTIAL_SECRET", default_value = CREDENTIAL_SECRET)]
    pub credential_secret: String,

    /// Long-poll wait for desired-state changes (at most 60s).
    #[arg(long, env = "MESHFLEET_POLL_WAIT", value_name = "MESHFLEET_POLL_WAIT", default_value = "55s", value_parser = parse_poll_wait)]
    pub poll_wait: Duration,

    /// Period of the drift re-apply (jittered ±20%).
    #[arg(long, env = "MESHFLEET_RESYNC", value_name = "MESHFLEET_RESYNC", default_value = "5m", value_parser = parse_positive)]
    pub resync: Duration,

    /// Status heartbeat period (the service expects one at least every 30s).
    #[arg(long, env = "MESHFLEET_HEARTBEAT", value_name = "MESHFLEET_HEARTBEAT", default_value = "30s", value_parser = parse_heartbeat)]
    pub heartbeat: Duration,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "MESHFLEET_HEALTH_ADDR",
        value_name = "MESHFLEET_HEALTH_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub health_addr: SocketAddr,

    /// Run over an in-memory simulated cluster instead of Kubernetes (local
    /// mode for demos and end-to-end tests of the service; nothing is installed).
    #[arg(
        long,
        env = "MESHFLEET_SIMULATE",
        value_name = "MESHFLEET_SIMULATE",
        default_value_t = false
    )]
    pub simulate: bool,

    /// With MESHFLEET_SIMULATE: the bootstrap token to seed the simulated
    /// cluster's bootstrap Secret with.
    #[arg(
        long,
        env = "MESHFLEET_BOOTSTRAP_TOKEN",
        value_name = "MESHFLEET_BOOTSTRAP_TOKEN",
        hide_env_values = true
    )]
    pub bootstrap_token: Option<String>,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `meshfleet_agent=debug`.
    #[arg(
        long,
        env = "MESHFLEET_LOG",
        value_name = "MESHFLEET_LOG",
        default_value = "info"
    )]
    pub log: String,

    /// Log line format: `json` (one object per line, with the span's cluster
    /// and trace id) or `text`.
    #[arg(
        long,
        env = "MESHFLEET_LOG_FORMAT",
        value_name = "MESHFLEET_LOG_FORMAT",
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Span export (OTLP); off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[command(flatten)]
    pub otel: OtelArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 30s or 5m)"))
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_poll_wait(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(MAX_WAIT_SECONDS) {
        return Err(format!("must be between 1s and {MAX_WAIT_SECONDS}s"));
    }
    Ok(d)
}

fn parse_heartbeat(s: &str) -> Result<Duration, String> {
    let d = parse_positive(s)?;
    if d > Duration::from_secs(30) {
        return Err("must be at most 30s (the service marks quieter agents stale)".into());
    }
    Ok(d)
}

fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !(s.starts_with("https://") || s.starts_with("http://")) {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

impl Cli {
    /// The agent configuration these settings describe.
    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            url: self.url.clone(),
            namespace: self.namespace.clone(),
            bootstrap_secret: self.bootstrap_secret.clone(),
            credential_secret: self.credential_secret.clone(),
            poll_wait: self.poll_wait,
            resync: self.resync,
            heartbeat: self.heartbeat,
            ..AgentConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["meshfleet-agent"]).unwrap();
        let c = cli.agent_config();
        assert_eq!(c.namespace, "meshfleet-system");
        assert_eq!(c.bootstrap_secret, "meshfleet-bootstrap");
        assert_eq!(c.credential_secret, "meshfleet-agent-credential");
        assert_eq!(c.poll_wait, Duration::from_secs(55));
        assert_eq!(c.resync, Duration::from_secs(300));
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(cli.health_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(c.url, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = Cli::try_parse_from(["meshfleet-agent", "--poll-wait", "90s"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("MESHFLEET_POLL_WAIT") && msg.contains("at most")
                || msg.contains("between"),
            "{msg}"
        );
        assert!(msg.contains("MESHFLEET_POLL_WAIT"), "{msg}");
        let err = Cli::try_parse_from(["meshfleet-agent", "--url", "ftp://x"]).unwrap_err();
        assert!(err.to_string().contains("MESHFLEET_URL"), "{err}");
        let err = Cli::try_parse_from(["meshfleet-agent", "--resync", "soon"]).unwrap_err();
        assert!(err.to_string().contains("MESHFLEET_RESYNC"), "{err}");
    }
}
