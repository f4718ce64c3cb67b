//! What every reconcile gets: the pool, the configuration and the clock.

use std::time::Duration;

use meshfleet_core::clock::SharedClock;
use meshfleet_core::settings::Settings;
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct Config {
    /// Timing rules shared with the api (connectivity, deadlines).
    pub settings: Settings,
    /// Clusters claimed per sweep.
    pub batch: i64,
    /// Clusters reconciled at once by one replica.
    pub concurrency: usize,
    /// How long a claim holds a cluster before another replica may take it.
    pub lease: Duration,
    /// How often the sweep looks for due work when nothing wakes it.
    pub poll: Duration,
    /// The longest a cluster goes unchecked.
    pub max_interval: Duration,
    /// Sweeps woken by notifications start at most this often, and a
    /// quarter of it after the end of the last one: a burst of them (every
    /// agent report hints the rollout engine) is one sweep, and a rollout is
    /// driven at most this often for reports, not per report.
    pub settle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            settings: Settings::default(),
            batch: 200,
            concurrency: 8,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            settle: Duration::from_millis(100),
        }
    }
}

pub struct Context {
    pub pool: PgPool,
    pub config: Config,
    pub clock: SharedClock,
}
