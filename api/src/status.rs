//! The status a tenant sees: the agent's last report, with health derived
//! against the cluster's current generation and connectivity computed at read
//! time from the heartbeat age.

use chrono::{DateTime, Utc};
use meshfleet_model::{ClusterStatus, ComponentStatus, Connectivity, Health, StatusReport};

/// Heartbeats younger than this are `Connected` (agents beat every 30 s).
pub const CONNECTED_WITHIN_SECS: i64 = 90;
/// Heartbeats younger than this (and older than the above) are `Stale`.
pub const STALE_WITHIN_SECS: i64 = 600;

/// Components whose failure takes the mesh down rather than degrading it.
const CORE: [&str; 3] = ["istiod", "istio-cni", "ztunnel"];

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

/// A component failed: it carries a `Failed=True` (or `Degraded=True`) condition,
/// or `Ready=False` with a reason that says it failed (the agent reports
/// `ApplyFailed`, `RolloutTimeout` and `PruneFailed`; `Progressing` and
/// `Pending` are not failures).
pub fn failed(c: &ComponentStatus) -> bool {
    c.conditions.iter().any(|cond| {
        let is_true = cond.status.eq_ignore_ascii_case("true");
        let reason = cond.reason.as_deref().unwrap_or("").to_ascii_lowercase();
        match cond.type_.as_str() {
            "Failed" | "Degraded" | "ApplyFailed" => is_true,
            "Ready" | "Available" => {
                !is_true
                    && ["fail", "error", "crash", "timeout"]
                        .iter()
                        .any(|w| reason.contains(w))
            }
            _ => false,
        }
    })
}

/// Derives the overall health of a report against the cluster's generation.
pub fn health(report: &StatusReport, generation: i64) -> Health {
    if report.components.is_empty() && report.observed_generation.is_none() {
        return Health::Unknown;
    }
    let failures: Vec<&ComponentStatus> = report.components.iter().filter(|c| failed(c)).collect();
    let core_down = failures.iter().any(|c| {
        CORE.contains(&c.name.as_str())
            && c.desired_replicas.unwrap_or(0) > 0
            && c.ready_replicas.unwrap_or(0) == 0
    });
    if core_down {
        Health::Unhealthy
    } else if !failures.is_empty() {
        Health::Degraded
    } else if report.observed_generation.is_none_or(|g| g < generation)
        || report.components.iter().any(|c| !c.ready)
    {
        Health::Progressing
    } else {
        Health::Healthy
    }
}

pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "Healthy",
        Health::Progressing => "Progressing",
        Health::Degraded => "Degraded",
        Health::Unhealthy => "Unhealthy",
        Health::Unknown => "Unknown",
    }
}

pub fn parse_health(s: &str) -> Health {
    [
        Health::Healthy,
        Health::Progressing,
        Health::Degraded,
        Health::Unhealthy,
    ]
    .into_iter()
    .find(|h| health_name(*h) == s)
    .unwrap_or(Health::Unknown)
}

/// Builds the status object from the stored report (if any).
pub fn derive(
    reported: Option<&serde_json::Value>,
    generation: i64,
    last_heartbeat_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ClusterStatus {
    let report: Option<StatusReport> =
        reported.and_then(|v| serde_json::from_value(v.clone()).ok());
    let mut status = match report {
        Some(r) => ClusterStatus {
            health: health(&r, generation),
            observed_generation: r.observed_generation,
            components: r.components,
            facts: r.facts,
            conditions: r.conditions,
            ..ClusterStatus::default()
        },
        None => ClusterStatus::default(),
    };
    status.last_heartbeat_at = last_heartbeat_at;
    status.connectivity = connectivity(last_heartbeat_at, now);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use meshfleet_model::Condition;

    fn component(name: &str, ready: bool, replicas: (i32, i32)) -> ComponentStatus {
        ComponentStatus {
            name: name.into(),
            desired_version: Some("1.28.2".into()),
            observed_version: Some("1.28.2".into()),
            ready,
            desired_replicas: Some(replicas.0),
            ready_replicas: Some(replicas.1),
            conditions: vec![],
            message: None,
        }
    }

    fn failed_condition() -> Condition {
        Condition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("ApplyFailed".into()),
            message: Some("admission webhook denied the request".into()),
            last_transition_time: None,
        }
    }

    fn report(components: Vec<ComponentStatus>, observed: i64) -> StatusReport {
        StatusReport {
            observed_generation: Some(observed),
            components,
            facts: Default::default(),
            conditions: vec![],
        }
    }

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
        let s = derive(None, 1, None, Utc::now());
        assert_eq!(s.health, Health::Unknown);
        assert!(s.components.is_empty());
    }

    #[test]
    fn health_is_derived_from_components_and_generation() {
        let all_ready = vec![
            component("istiod", true, (2, 2)),
            component("ztunnel", true, (3, 3)),
        ];
        assert_eq!(health(&report(all_ready.clone(), 2), 2), Health::Healthy);
        assert_eq!(
            health(&report(all_ready.clone(), 1), 2),
            Health::Progressing,
            "an older generation"
        );
        let rolling = vec![
            component("istiod", true, (2, 2)),
            component("ztunnel", false, (3, 1)),
        ];
        assert_eq!(health(&report(rolling, 2), 2), Health::Progressing);

        let mut waypoint = component("waypoints", false, (1, 0));
        waypoint.conditions.push(failed_condition());
        let degraded = vec![component("istiod", true, (2, 2)), waypoint];
        assert_eq!(health(&report(degraded, 2), 2), Health::Degraded);

        let mut ztunnel = component("ztunnel", false, (3, 0));
        ztunnel.conditions.push(failed_condition());
        assert_eq!(
            health(&report(vec![ztunnel.clone()], 2), 2),
            Health::Unhealthy
        );
        // A failed upgrade while the old pods still serve is degraded, not down.
        ztunnel.ready_replicas = Some(3);
        assert_eq!(health(&report(vec![ztunnel], 2), 2), Health::Degraded);
    }
}
