//! The dashboard's figures from counted rows: tallies by health and
//! connectivity, the version table, end of support, failing components.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use meshfleet_model::{
    ConnectivityCounts, EndOfSupportCount, FailingComponent, HealthCounts, MessageCount,
    StatusReport, VersionCount,
};

use super::health;
use super::version::{Catalog, Version};

/// Clusters by health and by connectivity, for one tenant or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub clusters: u64,
    pub by_health: HealthCounts,
    pub by_connectivity: ConnectivityCounts,
}

impl Tally {
    /// Adds `n` clusters of a derived health and connectivity (names as
    /// stored; an unknown name counts as `Unknown`/`Disconnected`).
    pub fn add(&mut self, health: &str, connectivity: &str, n: u64) {
        self.clusters += n;
        let h = &mut self.by_health;
        *match health {
            "Healthy" => &mut h.healthy,
            "Progressing" => &mut h.progressing,
            "Degraded" => &mut h.degraded,
            "Unhealthy" => &mut h.unhealthy,
            _ => &mut h.unknown,
        } += n;
        let c = &mut self.by_connectivity;
        *match connectivity {
            "Connected" => &mut c.connected,
            "Stale" => &mut c.stale,
            _ => &mut c.disconnected,
        } += n;
    }
}

/// Tallies `(tenant, health, connectivity, n)` rows: the whole, and per
/// tenant (most clusters first, then by name).
pub fn tally(rows: &[(String, String, String, i64)]) -> (Tally, Vec<(String, Tally)>) {
    let mut all = Tally::default();
    let mut per: BTreeMap<&str, Tally> = BTreeMap::new();
    for (tenant, h, c, n) in rows {
        let n = u64::try_from(*n).unwrap_or(0);
        all.add(h, c, n);
        per.entry(tenant.as_str()).or_default().add(h, c, n);
    }
    let mut tenants: Vec<(String, Tally)> =
        per.into_iter().map(|(t, s)| (t.to_string(), s)).collect();
    tenants.sort_by(|a, b| b.1.clusters.cmp(&a.1.clusters).then(a.0.cmp(&b.0)));
    (all, tenants)
}

/// The version table, newest version first.
pub fn versions(rows: &[(String, i64, i64)]) -> Vec<VersionCount> {
    let mut v: Vec<VersionCount> = rows
        .iter()
        .map(|(version, d, o)| VersionCount {
            version: version.clone(),
            desired: u64::try_from(*d).unwrap_or(0),
            observed: u64::try_from(*o).unwrap_or(0),
        })
        .collect();
    v.sort_by(
        |a, b| match (Version::parse(&a.version), Version::parse(&b.version)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => b.version.cmp(&a.version),
        },
    );
    v
}

/// Desired versions whose end of support is past or within `warn_days`,
/// soonest first.
pub fn end_of_support(
    versions: &[VersionCount],
    catalog: &Catalog,
    today: NaiveDate,
    warn_days: i64,
) -> Vec<EndOfSupportCount> {
    let mut out: Vec<EndOfSupportCount> = versions
        .iter()
        .filter(|v| v.desired > 0)
        .filter_map(|v| {
            let eos = catalog.end_of_support(Version::parse(&v.version)?)?;
            ((eos - today).num_days() <= warn_days).then(|| EndOfSupportCount {
                version: v.version.clone(),
                end_of_support: eos,
                past: eos < today,
                clusters: v.desired,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.end_of_support
            .cmp(&b.end_of_support)
            .then(a.version.cmp(&b.version))
    });
    out
}

/// The components failing in these reports: clusters per component and
/// their most frequent messages (at most `top` each), most clusters first.
pub fn failing_components(reports: &[StatusReport], top: usize) -> Vec<FailingComponent> {
    let mut per: HashMap<&str, (u64, HashMap<String, u64>)> = HashMap::new();
    for report in reports {
        for c in report.components.iter().filter(|c| health::failed(c)) {
            let entry = per.entry(c.name.as_str()).or_default();
            entry.0 += 1;
            let message = c
                .message
                .clone()
                .or_else(|| {
                    c.conditions
                        .iter()
                        .find_map(|cond| cond.message.clone().or(cond.reason.clone()))
                })
                .unwrap_or_else(|| "(no message)".into());
            *entry.1.entry(message).or_default() += 1;
        }
    }
    let mut out: Vec<FailingComponent> = per
        .into_iter()
        .map(|(component, (clusters, messages))| {
            let mut top_messages: Vec<MessageCount> = messages
                .into_iter()
                .map(|(message, count)| MessageCount { message, count })
                .collect();
            top_messages.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));
            top_messages.truncate(top);
            FailingComponent {
                component: component.to_string(),
                clusters,
                top_messages,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.clusters
            .cmp(&a.clusters)
            .then(a.component.cmp(&b.component))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshfleet_model::{ComponentStatus, Condition};

    fn failing(name: &str, message: &str) -> ComponentStatus {
        ComponentStatus {
            name: name.into(),
            desired_version: Some("1.28.2".into()),
            observed_version: None,
            ready: false,
            desired_replicas: Some(1),
            ready_replicas: Some(0),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: Some("ApplyFailed".into()),
                message: None,
                last_transition_time: None,
            }],
            message: Some(message.into()),
        }
    }

    #[test]
    fn a_tally_counts_every_cluster_once_in_each_dimension() {
        let rows = vec![
            ("a".into(), "Healthy".into(), "Connected".into(), 3),
            ("b".into(), "Degraded".into(), "Stale".into(), 1),
            ("a".into(), "Unknown".into(), "Disconnected".into(), 2),
        ];
        let (all, tenants) = tally(&rows);
        assert_eq!(all.clusters, 6);
        assert_eq!(all.by_health.healthy, 3);
        assert_eq!(all.by_health.degraded, 1);
        assert_eq!(all.by_health.unknown, 2);
        assert_eq!(all.by_connectivity.connected, 3);
        assert_eq!(all.by_connectivity.disconnected, 2);
        assert_eq!(tenants[0].0, "a");
        assert_eq!(tenants[0].1.clusters, 5);
    }

    #[test]
    fn failing_components_count_clusters_and_rank_messages() {
        let r = |cs| StatusReport {
            observed_generation: Some(1),
            components: cs,
            facts: Default::default(),
            conditions: vec![],
        };
        let reports = vec![
            r(vec![failing("ztunnel", "image pull")]),
            r(vec![
                failing("ztunnel", "image pull"),
                failing("istiod", "oom"),
            ]),
            r(vec![failing("ztunnel", "crash")]),
        ];
        let out = failing_components(&reports, 5);
        assert_eq!(out[0].component, "ztunnel");
        assert_eq!(out[0].clusters, 3);
        assert_eq!(out[0].top_messages[0].message, "image pull");
        assert_eq!(out[0].top_messages[0].count, 2);
        assert_eq!(out[1].component, "istiod");
    }

    #[test]
    fn versions_sort_newest_first_by_semver() {
        let v = versions(&[
            ("1.9.0".into(), 1, 0),
            ("1.28.2".into(), 2, 1),
            ("1.10.1".into(), 0, 3),
        ]);
        let names: Vec<&str> = v.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(names, ["1.28.2", "1.10.1", "1.9.0"]);
    }
}
