//! The status a tenant sees: the agent's last report, with health derived
//! against the cluster's current generation, connectivity from the heartbeat
//! age, and the service's own conditions (progress deadline, end of support).
//! The api (at read time) and the reconciler (in the background) both derive
//! status here, with the same [`Settings`].

use chrono::{DateTime, Utc};
use meshfleet_model::{
    ClusterStatus, ComponentStatus, Condition, Connectivity, Health, PendingUpgrade, StatusReport,
};

use crate::settings::Settings;

/// Components whose failure takes the mesh down rather than degrading it.
const CORE: [&str; 3] = ["istiod", "istio-cni", "ztunnel"];

pub fn connectivity(
    last_heartbeat_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Connectivity {
    match last_heartbeat_at {
        None => Connectivity::Disconnected,
        Some(at) => {
            let age = (now - at).to_std().unwrap_or_default();
            if age < settings.stale_after {
                Connectivity::Connected
            } else if age < settings.disconnected_after {
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

/// The agent has uninstalled the mesh for `generation` (a deletion waits for
/// this): it reports that generation with nothing installed and nothing failed.
pub fn uninstalled(report: &StatusReport, generation: i64) -> bool {
    report.observed_generation.is_some_and(|g| g >= generation)
        && report
            .components
            .iter()
            .all(|c| c.observed_version.is_none() && !failed(c))
}

/// What a cluster's status is derived from.
#[derive(Debug, Clone, Copy)]
pub struct StatusInputs<'a> {
    pub report: Option<&'a StatusReport>,
    pub generation: i64,
    /// When the current generation was set (start of the progress deadline).
    pub generation_changed_at: DateTime<Utc>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

/// The names of the components that keep a report from being converged.
fn not_converged(report: &StatusReport, generation: i64) -> Vec<String> {
    let mut why: Vec<String> = report
        .components
        .iter()
        .filter(|c| !c.ready)
        .map(|c| format!("{} (not ready)", c.name))
        .collect();
    if report.observed_generation.is_none_or(|g| g < generation) {
        why.push(format!(
            "observedGeneration {} behind generation {generation}",
            report
                .observed_generation
                .map_or("none".to_string(), |g| g.to_string())
        ));
    }
    why
}

/// The health of a report, with the progress deadline applied: a cluster
/// still `Progressing` on its current generation after the deadline is
/// `Degraded`, with the `Progressing=False` condition that says why.
pub fn health_with_deadline(
    inputs: StatusInputs<'_>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> (Health, Option<Condition>) {
    let Some(report) = inputs.report else {
        return (Health::Unknown, None);
    };
    let h = health(report, inputs.generation);
    if h != Health::Progressing {
        return (h, None);
    }
    let deadline = chrono::Duration::from_std(settings.progress_deadline)
        .map(|d| inputs.generation_changed_at + d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if now < deadline {
        return (h, None);
    }
    let condition = Condition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        message: Some(format!(
            "generation {} did not converge within {}: {}",
            inputs.generation,
            humanize(settings.progress_deadline),
            not_converged(report, inputs.generation).join(", ")
        )),
        last_transition_time: Some(deadline),
    };
    (Health::Degraded, Some(condition))
}

/// `90s`, `10m`, `2h` for a condition message.
pub fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Builds the status object from the stored report (if any).
pub fn derive(
    inputs: StatusInputs<'_>,
    pending_upgrade: Option<PendingUpgrade>,
    service_conditions: Vec<Condition>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> ClusterStatus {
    let (health, deadline) = health_with_deadline(inputs, now, settings);
    let mut status = match inputs.report {
        Some(r) => ClusterStatus {
            health,
            observed_generation: r.observed_generation,
            components: r.components.clone(),
            facts: r.facts.clone(),
            conditions: r.conditions.clone(),
            ..ClusterStatus::default()
        },
        None => ClusterStatus::default(),
    };
    status.conditions.extend(deadline);
    status.conditions.extend(service_conditions);
    status.pending_upgrade = pending_upgrade;
    status.last_heartbeat_at = inputs.last_heartbeat_at;
    status.connectivity = connectivity(inputs.last_heartbeat_at, now, settings);
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
        let s = Settings::default();
        assert_eq!(connectivity(None, now, &s), Connectivity::Disconnected);
        assert_eq!(
            connectivity(Some(now - Duration::seconds(5)), now, &s),
            Connectivity::Connected
        );
        assert_eq!(
            connectivity(Some(now - Duration::seconds(120)), now, &s),
            Connectivity::Stale
        );
        assert_eq!(
            connectivity(Some(now - Duration::hours(1)), now, &s),
            Connectivity::Disconnected
        );
    }

    #[test]
    fn a_cluster_no_agent_reported_for_is_unknown() {
        let inputs = StatusInputs {
            report: None,
            generation: 1,
            generation_changed_at: Utc::now(),
            last_heartbeat_at: None,
        };
        let s = derive(inputs, None, vec![], Utc::now(), &Settings::default());
        assert_eq!(s.health, Health::Unknown);
        assert!(s.components.is_empty());
    }

    #[test]
    fn a_generation_that_does_not_converge_within_the_deadline_is_degraded() {
        let now = Utc::now();
        let stuck = report(vec![component("ztunnel", false, (3, 1))], 2);
        let inputs = StatusInputs {
            report: Some(&stuck),
            generation: 2,
            generation_changed_at: now - Duration::minutes(9),
            last_heartbeat_at: Some(now),
        };
        let s = Settings::default();
        assert_eq!(health_with_deadline(inputs, now, &s).0, Health::Progressing);
        let later = now + Duration::minutes(2);
        let (h, cond) = health_with_deadline(inputs, later, &s);
        assert_eq!(h, Health::Degraded);
        let cond = cond.unwrap();
        assert_eq!(cond.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert!(cond.message.unwrap().contains("ztunnel"));
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
