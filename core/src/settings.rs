//! The service's timing rules, shared by the api (read-time status) and the
//! reconciler (background bookkeeping), so that both see the same cluster.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A heartbeat older than this makes a cluster `Stale` (`MESHFLEET_STALE_AFTER`).
    pub stale_after: Duration,
    /// ... and older than this `Disconnected` (`MESHFLEET_DISCONNECTED_AFTER`).
    pub disconnected_after: Duration,
    /// A generation not converged within this is `Degraded` (`MESHFLEET_PROGRESS_DEADLINE`).
    pub progress_deadline: Duration,
    /// Status changes kept per cluster.
    pub status_history_keep: i64,
    /// How long before a version's end of support a manual cluster is warned.
    pub end_of_support_warning: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stale_after: Duration::from_secs(90),
            disconnected_after: Duration::from_secs(600),
            progress_deadline: Duration::from_secs(600),
            status_history_keep: 100,
            end_of_support_warning: Duration::from_secs(30 * 24 * 3600),
        }
    }
}
