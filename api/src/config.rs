//! The api's settings (the `meshfleet` command fills them from flags and
//! environment; tests from code).

use std::time::Duration;

use meshfleet_core::settings::Settings;

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Limit for ordinary requests.
    pub request_timeout: Duration,
    /// Limit for the desired-state long poll (which waits up to 60 s by design).
    pub long_poll_timeout: Duration,
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
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            request_timeout: Duration::from_secs(30),
            long_poll_timeout: Duration::from_secs(90),
            bootstrap_ttl: Duration::from_secs(24 * 3600),
            credential_ttl: Duration::from_secs(30 * 24 * 3600),
            rotation_grace: Duration::from_secs(600),
            agent_image: format!("meshfleet/meshfleet-agent:{}", env!("CARGO_PKG_VERSION")),
            public_url: None,
            settings: Settings::default(),
        }
    }
}
