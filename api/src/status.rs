//! The status a tenant sees: what the agent last reported, with the
//! connectivity computed at read time from the heartbeat age.

use chrono::{DateTime, Utc};
use meshfleet_model::{ClusterStatus, Connectivity};

/// Heartbeats younger than this are `Connected`.
pub const CONNECTED_WITHIN_SECS: i64 = 90;
/// Heartbeats younger than this (and older than the above) are `Stale`.
pub const STALE_WITHIN_SECS: i64 = 600;

pub fn connectivity(last_heartbeat_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Connectivity {
    match last_heartbeat_at {
        None => Connectivity::Disconnected,
        Some(at) => {
            let age = (now - at).num_seconds();
            if age < CONNECTED_WITHIN_SECS {
                Connectivity::Connected
            } else if age < STALE_WITHIN_SECS {
                Connectivity::Stale
            } else {
                Connectivity::Disconnected
            }
        }
    }
}

/// Builds the status object from the stored report (if any).
pub fn derive(
    reported: Option<&serde_json::Value>,
    last_heartbeat_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ClusterStatus {
    let mut status: ClusterStatus = reported
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    status.last_heartbeat_at = last_heartbeat_at;
    status.connectivity = connectivity(last_heartbeat_at, now);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn connectivity_follows_the_heartbeat_age() {
        let now = Utc::now();
        assert_eq!(connectivity(None, now), Connectivity::Disconnected);
        assert_eq!(
            connectivity(Some(now - Duration::seconds(5)), now),
            Connectivity::Connected
        );
        assert_eq!(
            connectivity(Some(now - Duration::seconds(120)), now),
            Connectivity::Stale
        );
        assert_eq!(
            connectivity(Some(now - Duration::hours(1)), now),
            Connectivity::Disconnected
        );
    }

    #[test]
    fn a_cluster_no_agent_reported_for_is_unknown() {
        let s = derive(None, None, Utc::now());
        assert_eq!(s.health, meshfleet_model::Health::Unknown);
        assert!(s.components.is_empty());
    }
}
