//! Typed configuration from flags and environment. Every option that can come
//! from the environment shows its variable as its value name, so that clap's
//! errors name the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
pub use meshfleet_telemetry::{LogFormat, OtelArgs};

#[derive(Debug, Parser)]
#[command(
    name = "meshfleet",
    version,
    about = "meshfleet: the control plane of a managed Istio ambient mesh"
)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(
        long,
        env = "MESHFLEET_LOG",
        value_name = "MESHFLEET_LOG",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub log: String,
    /// Log line format.
    #[arg(
        long,
        env = "MESHFLEET_LOG_FORMAT",
        value_name = "MESHFLEET_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Span export (OTLP); off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[command(flatten)]
    pub otel: OtelArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// All-in-one dev/demo mode: a private PostgreSQL (unless DATABASE_URL is set), migrations, the API on 127.0.0.1.
    Up(UpArgs),
    /// Production mode: an external database and configured verification keys.
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(MigrateArgs),
    /// Mint a dev token signed with the dev key of the local data folder.
    Token(TokenArgs),
    /// Run only the reconciler (any number may run against one database).
    Reconcile(ReconcileArgs),
    /// Print (or write) the OpenAPI document.
    Openapi(OpenapiArgs),
    /// The release catalog (`release import`: a release's bundle).
    #[command(subcommand)]
    Release(ReleaseCommand),
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Import a release's bundle (its CRD files and injection templates from
    /// upstream's release artifacts) into the catalog, writing to
    /// DATABASE_URL through the same operation as PUT /v1/ops/releases/{version}/bundle.
    Import(ReleaseImportArgs),
}

#[derive(Debug, Args)]
pub struct ReleaseImportArgs {
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
    /// The catalog version, e.g. `1.28.2` (add it first with PUT /v1/ops/releases/{version}).
    #[arg(long)]
    pub version: String,
    /// CRD files (YAML streams or JSON), or directories of `*.yaml`/`*.yml`/`*.json` files (read in name order).
    #[arg(long = "crds", required_unless_present = "development", num_args = 1..)]
    pub crds: Vec<PathBuf>,
    /// An injection template as NAME=FILE (at least `waypoint=...`); repeatable.
    #[arg(long = "injection-template", value_name = "NAME=FILE")]
    pub templates: Vec<String>,
    /// Give the release the development bundle (rendered by the agent) instead.
    #[arg(long, conflicts_with_all = ["crds", "templates"])]
    pub development: bool,
    /// Tenant whose event log records the import (the operator's tenant).
    #[arg(
        long,
        env = "MESHFLEET_OPS_TENANT",
        value_name = "MESHFLEET_OPS_TENANT",
        default_value = "ops"
    )]
    pub ops_tenant: String,
}

/// Timing rules shared by the api and the reconciler.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// A cluster whose last heartbeat is older than this is `Stale` (e.g. `90s`).
    #[arg(long, env = "MESHFLEET_STALE_AFTER", value_name = "MESHFLEET_STALE_AFTER",
          default_value = "90s", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// ... and older than this `Disconnected` (e.g. `10m`).
    #[arg(long, env = "MESHFLEET_DISCONNECTED_AFTER", value_name = "MESHFLEET_DISCONNECTED_AFTER",
          default_value = "10m", value_parser = humantime::parse_duration)]
    pub disconnected_after: Duration,
    /// A generation not converged within this is `Degraded` (e.g. `10m`).
    #[arg(long, env = "MESHFLEET_PROGRESS_DEADLINE", value_name = "MESHFLEET_PROGRESS_DEADLINE",
          default_value = "10m", value_parser = humantime::parse_duration)]
    pub progress_deadline: Duration,
    /// The database cancels any statement that runs longer than this (`0s`:
    /// never); the request then answers 503 instead of waiting for its time limit.
    #[arg(long, env = "MESHFLEET_STATEMENT_TIMEOUT", value_name = "MESHFLEET_STATEMENT_TIMEOUT",
          default_value = "10s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
    /// Connections in the database pool.
    #[arg(long, env = "MESHFLEET_DB_MAX_CONNECTIONS", value_name = "MESHFLEET_DB_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Give up on a request after this long (e.g. `30s`).
    #[arg(long, env = "MESHFLEET_REQUEST_TIMEOUT", value_name = "MESHFLEET_REQUEST_TIMEOUT",
          default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Close a connection that has not sent a whole request head this long
    /// after the server began to wait for one (also: idle keep-alive).
    #[arg(long, env = "MESHFLEET_HEADER_READ_TIMEOUT", value_name = "MESHFLEET_HEADER_READ_TIMEOUT",
          default_value = "60s", value_parser = parse_header_read_timeout)]
    pub header_read_timeout: Duration,
    /// Connections in the database pool.
    #[arg(long, env = "MESHFLEET_DB_MAX_CONNECTIONS", value_name = "MESHFLEET_DB_MAX_CONNECTIONS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
    /// Agent image in the install manifest.
    #[arg(long, env = "MESHFLEET_AGENT_IMAGE", value_name = "MESHFLEET_AGENT_IMAGE",
          default_value = concat!("meshfleet/meshfleet-agent:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// URL agents use to reach this service (default: derived from the request).
    #[arg(
        long,
        env = "MESHFLEET_PUBLIC_URL",
        value_name = "MESHFLEET_PUBLIC_URL"
    )]
    pub public_url: Option<String>,
    /// The operator's tenant: only its tokens' `sre` role counts.
    #[arg(
        long,
        env = "MESHFLEET_OPS_TENANT",
        value_name = "MESHFLEET_OPS_TENANT",
        default_value = "ops"
    )]
    pub ops_tenant: String,
    /// Lifetime of bootstrap tokens.
    #[arg(long, env = "MESHFLEET_BOOTSTRAP_TTL", value_name = "MESHFLEET_BOOTSTRAP_TTL",
          default_value = "24h", value_parser = humantime::parse_duration)]
    pub bootstrap_ttl: Duration,
    /// Requests per second each tenant's users and scripts may make, sustained (0: no limit).
    #[arg(long, env = "MESHFLEET_TENANT_RATE_LIMIT", value_name = "MESHFLEET_TENANT_RATE_LIMIT",
          default_value_t = meshfleet_api::config::DEFAULT_TENANT_RATE, value_parser = rate)]
    pub tenant_rate_limit: f64,
    /// Requests a tenant may make at once on top of its rate.
    #[arg(long, env = "MESHFLEET_TENANT_RATE_BURST", value_name = "MESHFLEET_TENANT_RATE_BURST",
          default_value_t = meshfleet_api::config::DEFAULT_TENANT_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_rate_burst: u32,
    /// Requests per second each cluster's agent may make, sustained (0: no limit).
    #[arg(long, env = "MESHFLEET_AGENT_RATE_LIMIT", value_name = "MESHFLEET_AGENT_RATE_LIMIT",
          default_value_t = meshfleet_api::config::DEFAULT_AGENT_RATE, value_parser = rate)]
    pub agent_rate_limit: f64,
    /// Requests an agent may make at once on top of its rate.
    #[arg(long, env = "MESHFLEET_AGENT_RATE_BURST", value_name = "MESHFLEET_AGENT_RATE_BURST",
          default_value_t = meshfleet_api::config::DEFAULT_AGENT_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_rate_burst: u32,
    /// Clusters one tenant may register (0: no quota).
    #[arg(long, env = "MESHFLEET_MAX_CLUSTERS_PER_TENANT", value_name = "MESHFLEET_MAX_CLUSTERS_PER_TENANT",
          default_value_t = meshfleet_api::config::DEFAULT_MAX_CLUSTERS_PER_TENANT)]
    pub max_clusters_per_tenant: u32,
}

/// A header read timeout: a duration of at least a second.
fn parse_header_read_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!("`{s}` is too short: give at least 1s")),
        Err(e) => Err(e.to_string()),
    }
}

/// A request rate: a finite number ≥ 0 of requests per second.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give requests per second as a number ≥ 0 (0 turns the limit off)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Folder for the private database, the dev signing key and the lock (kept between runs).
    #[arg(
        long,
        env = "MESHFLEET_DATA_DIR",
        value_name = "MESHFLEET_DATA_DIR",
        default_value = ".meshfleet"
    )]
    pub data_dir: PathBuf,
    /// Port to serve on, on 127.0.0.1 (0 picks a free one).
    #[arg(
        long,
        env = "MESHFLEET_PORT",
        value_name = "MESHFLEET_PORT",
        default_value_t = 8080
    )]
    pub port: u16,
    /// Use this database instead of starting a private one.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Tenant of the printed dev token.
    #[arg(
        long,
        env = "MESHFLEET_DEMO_TENANT",
        value_name = "MESHFLEET_DEMO_TENANT",
        default_value = "demo"
    )]
    pub demo_tenant: String,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "MESHFLEET_LISTEN",
        value_name = "MESHFLEET_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Token verification keys as ALG:PATH-TO-PEM (EdDSA, RS256.., PS256.., ES256, ES384), comma-separated.
    #[arg(
        long = "jwt-key",
        env = "MESHFLEET_JWT_KEYS",
        value_name = "MESHFLEET_JWT_KEYS",
        value_delimiter = ',',
        required = true
    )]
    pub jwt_keys: Vec<String>,
    /// Required `iss` of tokens.
    #[arg(
        long,
        env = "MESHFLEET_JWT_ISSUER",
        value_name = "MESHFLEET_JWT_ISSUER"
    )]
    pub jwt_issuer: String,
    /// Required `aud` of tokens.
    #[arg(
        long,
        env = "MESHFLEET_JWT_AUDIENCE",
        value_name = "MESHFLEET_JWT_AUDIENCE"
    )]
    pub jwt_audience: String,
    /// Apply migrations before serving.
    #[arg(long, env = "MESHFLEET_MIGRATE", value_name = "MESHFLEET_MIGRATE")]
    pub migrate: bool,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant id (`tid` claim).
    #[arg(long)]
    pub tenant: String,
    /// Role(s): reader, contributor, owner, sre (repeat or comma-separate).
    #[arg(long = "role", value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// Subject (`sub` claim).
    #[arg(long, default_value = "dev@meshfleet.local")]
    pub sub: String,
    /// Lifetime, e.g. `1h`, `30m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(
        long,
        env = "MESHFLEET_DATA_DIR",
        value_name = "MESHFLEET_DATA_DIR",
        default_value = ".meshfleet"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}
