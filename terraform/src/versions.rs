//! Plan-time checks of Istio versions against the release catalog
//! (`GET /v1/releases`), mirroring the API's upgrade rules so that a change
//! the API would refuse fails at `terraform plan` where it can be known then.
//! The API stays the judge: what cannot be known here (rollback to a version
//! the cluster never ran, a cluster held by a rollout) fails at apply.

use meshfleet_model::Release;

/// `major.minor.patch`.
pub fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Why `target` cannot be selected (given the version the cluster is on,
/// when it exists), or `None` when it can as far as the catalog tells.
pub fn refusal(catalog: &[Release], current: Option<&str>, target: &str) -> Option<String> {
    let Some(t) = parse(target) else {
        return Some(format!(
            "`{target}` is not an Istio version (major.minor.patch, e.g. 1.28.2)"
        ));
    };
    let known: Vec<&str> = catalog
        .iter()
        .filter(|r| !r.retired && r.bundle.is_some())
        .map(|r| r.version.as_str())
        .collect();
    let Some(release) = catalog.iter().find(|r| parse(&r.version) == Some(t)) else {
        return Some(format!(
            "Istio {target} is not in meshfleet's release catalog; selectable versions: {}",
            known.join(", ")
        ));
    };
    let current = current.and_then(|c| parse(c).map(|p| (c, p)));
    if release.retired && current.is_none_or(|(_, c)| c != t) {
        return Some(format!(
            "Istio {target} is retired and cannot be newly selected; selectable versions: {}",
            known.join(", ")
        ));
    }
    if release.bundle.is_none() && current.is_none_or(|(_, c)| c != t) {
        return Some(format!(
            "Istio {target} has no release bundle in meshfleet's catalog yet (an SRE imports it); selectable versions: {}",
            known.join(", ")
        ));
    }
    if let Some((from, c)) = current
        && t > c
    {
        if t.0 != c.0 {
            return Some(format!(
                "upgrading from {from} to {target} changes the major version, which is not supported"
            ));
        }
        if t.1 > c.1 + 1 {
            return Some(format!(
                "upgrading from {from} to {target} skips a minor version; upgrade one minor at a time (next: {}.{}.x)",
                c.0,
                c.1 + 1
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use meshfleet_model::{BundleOrigin, BundleRef, ComponentImages};

    fn release(v: &str, retired: bool) -> Release {
        Release {
            version: v.into(),
            channels: vec![],
            released_at: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            end_of_support: None,
            retired,
            images: ComponentImages::upstream(v),
            bundle: Some(BundleRef::new(
                format!("sha256:{v}"),
                BundleOrigin::Development,
            )),
        }
    }

    #[test]
    fn the_catalog_and_the_one_minor_rule_are_checked() {
        let c = vec![
            release("1.26.2", false),
            release("1.27.1", false),
            release("1.28.2", false),
            release("1.25.0", true),
        ];
        assert_eq!(refusal(&c, None, "1.27.1"), None);
        assert_eq!(refusal(&c, Some("1.27.1"), "1.28.2"), None);
        assert!(
            refusal(&c, Some("1.26.2"), "1.28.2")
                .expect("refused")
                .contains("skips a minor")
        );
        assert!(
            refusal(&c, None, "1.99.0")
                .expect("refused")
                .contains("not in meshfleet's release catalog")
        );
        assert!(
            refusal(&c, Some("1.26.2"), "1.25.0")
                .expect("refused")
                .contains("retired")
        );
        assert_eq!(refusal(&c, Some("1.25.0"), "1.25.0"), None);
        assert!(refusal(&c, None, "latest").is_some());
        // a downgrade is the API's to judge (it knows the cluster's history)
        assert_eq!(refusal(&c, Some("1.28.2"), "1.26.2"), None);
    }
}
