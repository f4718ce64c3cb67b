//! Validation of a cluster body: labels, the mesh spec and the upgrade rules.
//! Pure functions: the release catalog and the stored cluster come in as arguments.

use std::collections::BTreeSet;

use meshfleet_model::{ClusterInput, FieldError, MeshSpec, UpgradeMode, UpgradePolicy};

pub use super::names::{dns_label_problem, is_dns_label, label_key_problem, label_value_problem};
use super::version::{Catalog, Version, check_version_change};
use super::window::parse_hhmm;

/// The stored state a change is checked against.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    pub desired_version: Version,
    /// The stored policy: while it is unchanged the stored version stands
    /// (moving along a channel is the reconciler's job, not a PUT's).
    pub upgrade: &'a meshfleet_model::UpgradePolicy,
    pub history: &'a [String],
}

/// Checks a whole cluster body; returns the concrete version it resolves to.
pub fn validate_cluster(
    path_name: &str,
    input: &ClusterInput,
    catalog: &Catalog,
    current: Option<Stored<'_>>,
) -> Result<Version, Vec<FieldError>> {
    let mut errors = Vec::new();
    let version = validate_upgrade(&input.mesh, catalog, current, &mut errors);
    errors.extend(static_problems(path_name, input));
    match version {
        Some(v) if errors.is_empty() => Ok(v),
        _ => Err(errors),
    }
}

/// What is wrong with a cluster body whatever the release catalog and the
/// stored cluster say (so a write can refuse it before its preconditions).
pub fn static_problems(path_name: &str, input: &ClusterInput) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = &input.name
        && name != path_name
    {
        errors.push(FieldError::new(
            "/name",
            format!("`{name}` differs from the name in the path, `{path_name}`"),
        ));
    }
    if input.labels.len() > 64 {
        errors.push(FieldError::new("/labels", "at most 64 labels"));
    }
    for (k, v) in &input.labels {
        let pointer = format!("/labels/{}", escape_pointer(k));
        if let Some(p) = label_key_problem(k) {
            errors.push(FieldError::new(&pointer, p));
        }
        if let Some(p) = label_value_problem(v) {
            errors.push(FieldError::new(&pointer, p));
        }
    }
    upgrade_shape_problems(&input.mesh.upgrade, &mut errors);
    validate_mesh(&input.mesh, &mut errors);
    errors
}

/// `manual` with a well-formed `version` and no `channel`, or `automatic`
/// with a `channel` and no `version` (the document's oneOf).
fn upgrade_shape_problems(up: &UpgradePolicy, errors: &mut Vec<FieldError>) {
    match up.mode {
        UpgradeMode::Manual => {
            if up.channel.is_some() {
                errors.push(FieldError::new(
                    "/mesh/upgrade/channel",
                    "must not be set with mode `manual`; use `version`",
                ));
            }
            match &up.version {
                None => errors.push(FieldError::new(
                    "/mesh/upgrade/version",
                    "is required with mode `manual`",
                )),
                Some(raw) if Version::parse(raw).is_none() => errors.push(FieldError::new(
                    "/mesh/upgrade/version",
                    format!("`{raw}` is not a version like `1.28.2`"),
                )),
                Some(_) => {}
            }
        }
        UpgradeMode::Automatic => {
            if up.version.is_some() {
                errors.push(FieldError::new(
                    "/mesh/upgrade/version",
                    "must not be set with mode `automatic`; the channel decides the version",
                ));
            }
            if up.channel.is_none() {
                errors.push(FieldError::new(
                    "/mesh/upgrade/channel",
                    "is required with mode `automatic`",
                ));
            }
        }
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Namespaces that cannot join the mesh.
pub const RESERVED_NAMESPACES: [&str; 5] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
    "meshfleet-system",
];

fn validate_mesh(mesh: &MeshSpec, errors: &mut Vec<FieldError>) {
    if let Some(window) = &mesh.maintenance_window {
        validate_window(window, errors);
    }

    let mut enrolled = BTreeSet::new();
    if mesh.enrolled_namespaces.len() > 1000 {
        errors.push(FieldError::new(
            "/mesh/enrolledNamespaces",
            "at most 1000 namespaces",
        ));
    }
    for (i, ns) in mesh.enrolled_namespaces.iter().enumerate() {
        let pointer = format!("/mesh/enrolledNamespaces/{i}");
        if !is_dns_label(ns) {
            errors.push(FieldError::new(
                &pointer,
                dns_label_problem("namespace", ns),
            ));
        } else if RESERVED_NAMESPACES.contains(&ns.as_str()) {
            errors.push(FieldError::new(
                &pointer,
                format!("namespace `{ns}` is reserved and cannot join the mesh"),
            ));
        } else if !enrolled.insert(ns.as_str()) {
            errors.push(FieldError::new(
                &pointer,
                format!("namespace `{ns}` is listed twice"),
            ));
        }
    }

    if mesh.waypoints.len() > 100 {
        errors.push(FieldError::new("/mesh/waypoints", "at most 100 waypoints"));
    }
    let mut seen = BTreeSet::new();
    for (i, w) in mesh.waypoints.iter().enumerate() {
        let base = format!("/mesh/waypoints/{i}");
        if !is_dns_label(&w.namespace) {
            errors.push(FieldError::new(
                format!("{base}/namespace"),
                dns_label_problem("namespace", &w.namespace),
            ));
        } else if !enrolled.contains(w.namespace.as_str()) {
            errors.push(FieldError::new(
                format!("{base}/namespace"),
                format!("namespace `{}` is not in enrolledNamespaces; waypoints serve ambient namespaces only", w.namespace),
            ));
        }
        if !is_dns_label(&w.name) {
            errors.push(FieldError::new(
                format!("{base}/name"),
                dns_label_problem("waypoint name", &w.name),
            ));
        }
        if !(1..=10).contains(&w.replicas) {
            errors.push(FieldError::new(
                format!("{base}/replicas"),
                "must be between 1 and 10",
            ));
        }
        if !seen.insert((w.namespace.as_str(), w.name.as_str())) {
            errors.push(FieldError::new(
                format!("{base}/name"),
                format!("waypoint `{}/{}` is listed twice", w.namespace, w.name),
            ));
        }
    }

    if !(1..=10).contains(&mesh.components.istiod.replicas) {
        errors.push(FieldError::new(
            "/mesh/components/istiod/replicas",
            "must be between 1 and 10",
        ));
    }
    let res = &mesh.components.ztunnel.resources;
    if let Some(cpu) = &res.cpu
        && !is_cpu_quantity(cpu)
    {
        errors.push(FieldError::new(
            "/mesh/components/ztunnel/resources/cpu",
            format!("`{cpu}` is not a CPU quantity like `200m` or `1`"),
        ));
    }
    if let Some(mem) = &res.memory
        && !is_memory_quantity(mem)
    {
        errors.push(FieldError::new(
            "/mesh/components/ztunnel/resources/memory",
            format!("`{mem}` is not a memory quantity like `512Mi` or `1Gi`"),
        ));
    }
    if let Some(file) = &mesh.mesh_config.access_log_file
        && !(file.is_empty() || file == "/dev/stdout")
    {
        errors.push(FieldError::new(
            "/mesh/meshConfig/accessLogFile",
            "must be \"\" (off) or \"/dev/stdout\"",
        ));
    }
}

fn validate_upgrade(
    mesh: &MeshSpec,
    catalog: &Catalog,
    current: Option<Stored<'_>>,
    errors: &mut Vec<FieldError>,
) -> Option<Version> {
    let up = &mesh.upgrade;
    if let Some(cur) = &current
        && cur.upgrade == up
    {
        return Some(cur.desired_version);
    }
    let target = match up.mode {
        UpgradeMode::Manual => {
            // a missing or malformed version is upgrade_shape_problems' to report
            let v = up.version.as_deref().and_then(Version::parse)?;
            match catalog.get(v) {
                None => {
                    let known: Vec<String> = catalog
                        .entries
                        .iter()
                        .filter(|e| e.unselectable().is_none())
                        .map(|e| e.version.to_string())
                        .collect();
                    errors.push(FieldError::new(
                        "/mesh/upgrade/version",
                        format!(
                            "{v} is not in the release catalog (supported: {})",
                            known.join(", ")
                        ),
                    ));
                    return None;
                }
                Some(e) if current.as_ref().is_none_or(|c| c.desired_version != v) => {
                    if let Some(why) = e.unselectable() {
                        errors.push(FieldError::new("/mesh/upgrade/version", why));
                        return None;
                    }
                    v
                }
                Some(_) => v,
            }
        }
        UpgradeMode::Automatic => {
            let channel = up.channel?;
            match catalog.channel_head(channel) {
                // An existing cluster keeps its version: the reconciler moves it
                // along the channel, one minor at a time, inside its window.
                Some(_) if current.is_some() => {
                    return current.map(|c| c.desired_version);
                }
                Some(v) => v,
                None => {
                    errors.push(FieldError::new(
                        "/mesh/upgrade/channel",
                        format!("channel `{}` has no supported version", channel.as_str()),
                    ));
                    return None;
                }
            }
        }
    };
    if let Some(cur) = current
        && let Err(why) = check_version_change(cur.desired_version, cur.history, target)
    {
        let pointer = match up.mode {
            UpgradeMode::Manual => "/mesh/upgrade/version",
            UpgradeMode::Automatic => "/mesh/upgrade/channel",
        };
        errors.push(FieldError::new(pointer, why));
        return None;
    }
    Some(target)
}

fn validate_window(window: &meshfleet_model::MaintenanceWindow, errors: &mut Vec<FieldError>) {
    const WEEK: u32 = 7 * 24 * 60;
    if window.slots.is_empty() {
        errors.push(FieldError::new(
            "/mesh/maintenanceWindow/slots",
            "needs at least one slot",
        ));
    }
    if window.slots.len() > 21 {
        errors.push(FieldError::new(
            "/mesh/maintenanceWindow/slots",
            "at most 21 slots",
        ));
    }
    let mut ranges: Vec<(u32, u32, usize)> = Vec::new();
    for (i, slot) in window.slots.iter().enumerate() {
        let base = format!("/mesh/maintenanceWindow/slots/{i}");
        let start = parse_hhmm(&slot.start);
        if start.is_none() {
            errors.push(FieldError::new(
                format!("{base}/start"),
                format!("`{}` is not a UTC time `HH:MM`", slot.start),
            ));
        }
        if !(30..=1440).contains(&slot.duration_minutes) {
            errors.push(FieldError::new(
                format!("{base}/durationMinutes"),
                "must be between 30 and 1440",
            ));
        }
        if let Some(start) = start {
            let s = slot.day as u32 * 1440 + start;
            ranges.push((s, s + slot.duration_minutes, i));
        }
    }
    for (a_idx, a) in ranges.iter().enumerate() {
        for b in &ranges[a_idx + 1..] {
            let overlap = |x: &(u32, u32, usize), y: &(u32, u32, usize)| {
                // compare on the weekly circle: shift y by -WEEK, 0, +WEEK
                [0i64, WEEK as i64, -(WEEK as i64)].iter().any(|shift| {
                    let (ys, ye) = (y.0 as i64 + shift, y.1 as i64 + shift);
                    (x.0 as i64) < ye && ys < x.1 as i64
                })
            };
            if overlap(a, b) {
                errors.push(FieldError::new(
                    format!("/mesh/maintenanceWindow/slots/{}", b.2),
                    format!("overlaps slot {}", a.2),
                ));
            }
        }
    }
}

fn is_cpu_quantity(s: &str) -> bool {
    let digits = s.strip_suffix('m').unwrap_or(s);
    let ok_number = !digits.is_empty()
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !digits.starts_with('.')
        && !digits.ends_with('.');
    ok_number && digits.bytes().any(|b| b != b'0' && b != b'.')
}

fn is_memory_quantity(s: &str) -> bool {
    let suffixes = ["Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"];
    let digits = suffixes
        .iter()
        .find_map(|suf| s.strip_suffix(suf))
        .unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn dns_labels_are_checked() {
        assert!(is_dns_label("prod-eu-1"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label(""));
    }

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(
            v("1.28.2"),
            Version {
                major: 1,
                minor: 28,
                patch: 2
            }
        );
        assert!(Version::parse("1.28").is_none());
        assert!(Version::parse("1.28.2.1").is_none());
        assert!(Version::parse("1.028.2").is_none());
        assert!(Version::parse("v1.28.2").is_none());
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time() {
        assert!(check_version_change(v("1.26.2"), &[], v("1.27.1")).is_ok());
        assert!(check_version_change(v("1.26.2"), &[], v("1.26.3")).is_ok());
        assert!(
            check_version_change(v("1.26.2"), &[], v("1.28.0"))
                .unwrap_err()
                .contains("skips a minor")
        );
        assert!(
            check_version_change(v("1.26.2"), &[], v("2.0.0"))
                .unwrap_err()
                .contains("major")
        );
    }

    #[test]
    fn downgrades_only_go_back_to_a_version_the_cluster_ran() {
        let history = vec!["1.26.0".to_string()];
        assert!(check_version_change(v("1.27.1"), &history, v("1.26.0")).is_ok());
        assert!(
            check_version_change(v("1.27.1"), &history, v("1.26.2"))
                .unwrap_err()
                .contains("rollback")
        );
    }

    #[test]
    fn quantities_are_checked() {
        assert!(is_cpu_quantity("200m"));
        assert!(is_cpu_quantity("1.5"));
        assert!(!is_cpu_quantity("0"));
        assert!(!is_cpu_quantity("lots"));
        assert!(is_memory_quantity("512Mi"));
        assert!(!is_memory_quantity("512MB"));
    }

    #[test]
    fn overlapping_maintenance_slots_are_rejected_even_across_the_week_boundary() {
        use meshfleet_model::{MaintenanceSlot, MaintenanceWindow, Weekday};
        let slot = |day, start: &str, d| MaintenanceSlot {
            day,
            start: start.into(),
            duration_minutes: d,
        };
        let mut errors = vec![];
        validate_window(
            &MaintenanceWindow {
                slots: vec![
                    slot(Weekday::Sunday, "23:00", 120),
                    slot(Weekday::Monday, "00:30", 60),
                ],
            },
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        let mut errors = vec![];
        validate_window(
            &MaintenanceWindow {
                slots: vec![
                    slot(Weekday::Saturday, "02:00", 60),
                    slot(Weekday::Sunday, "02:00", 60),
                ],
            },
            &mut errors,
        );
        assert!(errors.is_empty());
    }
}
