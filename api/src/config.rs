//! The api's settings (the `meshfleet` command fills them from flags and
//! environment; tests from code).

use std::time::Duration;

use meshfleet_core::settings::Settings;

use crate::limits::RateLimit;

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Limit for ordinary requests.
    pub request_timeout: Duration,
    /// Limit for the desired-state long poll (which waits up to 60 s by design).
    pub long_poll_timeout: Duration,
    /// How long a connection may take to send a request's head, counted
    /// from when the server starts waiting for it: so also how long a
    /// keep-alive connection may stay idle between requests before it is closed.
    pub header_read_timeout: Duration,
    pub bootstrap_ttl: Duration,
    pub credential_ttl: Duration,
    /// How long a rotated agent credential stays valid.
    pub rotation_grace: Duration,
    /// Image of the agent in the install manifest.
    pub agent_image: String,
    /// URL agents use to reach this service; derived from the request when unset.
    pub public_url: Option<String>,
    /// Timing rules shared with the reconciler (connectivity, deadlines, history).
    pub settings: Settings,
    /// Requests per tenant (its users' tokens); `None`: unlimited.
    pub tenant_rate: Option<RateLimit>,
    /// Requests per agent (cluster); `None`: unlimited.
    pub agent_rate: Option<RateLimit>,
    /// Clusters a tenant may have; `None`: unlimited.
    pub max_clusters_per_tenant: Option<u32>,
}

/// Longer than any pause of the agent between requests (a 30 s heartbeat; a
/// long poll is followed at once by the next), shorter than HTTP clients'
/// usual 90 s idle-connection timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Defaults of the shared service's limits (the `meshfleet` command's too).
pub const DEFAULT_TENANT_RATE: f64 = 50.0;
pub const DEFAULT_TENANT_BURST: u32 = 200;
pub const DEFAULT_AGENT_RATE: f64 = 2.0;
pub const DEFAULT_AGENT_BURST: u32 = 20;
pub const DEFAULT_MAX_CLUSTERS_PER_TENANT: u32 = 10_000;

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            request_timeout: Duration::from_secs(30),
            long_poll_timeout: Duration::from_secs(90),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            bootstrap_ttl: Duration::from_secs(24 * 3600),
            credential_ttl: Duration::from_secs(30 * 24 * 3600),
            rotation_grace: Duration::from_secs(600),
            agent_image: format!("meshfleet/meshfleet-agent:{}", env!("CARGO_PKG_VERSION")),
            public_url: None,
            settings: Settings::default(),
            tenant_rate: RateLimit::new(DEFAULT_TENANT_RATE, DEFAULT_TENANT_BURST),
            agent_rate: RateLimit::new(DEFAULT_AGENT_RATE, DEFAULT_AGENT_BURST),
            max_clusters_per_tenant: Some(DEFAULT_MAX_CLUSTERS_PER_TENANT),
        }
    }
}
