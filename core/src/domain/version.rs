//! Versions, the release catalog, and the upstream upgrade rules.

use std::cmp::Ordering;
use std::fmt;

use chrono::NaiveDate;
use meshfleet_model::Channel;

/// A semantic version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.');
        let mut next = || -> Option<u32> {
            let part = it.next()?;
            if part.is_empty() || part.len() > 6 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if part.len() > 1 && part.starts_with('0') {
                return None;
            }
            part.parse().ok()
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if it.next().is_some() {
            return None;
        }
        Some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What validation needs to know about one catalog entry.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub version: Version,
    pub channels: Vec<Channel>,
    pub retired: bool,
    pub end_of_support: Option<NaiveDate>,
    /// Whether the release has its bundle (CRDs, injection templates); a
    /// version without one cannot be selected.
    pub has_bundle: bool,
}

impl CatalogEntry {
    /// Why this version cannot be selected (by a cluster that does not run
    /// it already, a rollout, or channel following), if it cannot.
    pub fn unselectable(&self) -> Option<String> {
        let v = self.version;
        if self.retired {
            Some(format!("{v} is retired and can no longer be selected"))
        } else if !self.has_bundle {
            Some(format!(
                "{v} has no release bundle (its CRDs and injection templates) yet; an SRE imports it with `meshfleet release import --version {v}` (PUT /v1/ops/releases/{v}/bundle)"
            ))
        } else {
            None
        }
    }
}

/// The release catalog, as validation sees it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    pub fn get(&self, v: Version) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.version == v)
    }

    /// The newest non-retired version on a channel.
    pub fn channel_head(&self, channel: Channel) -> Option<Version> {
        self.entries
            .iter()
            .filter(|e| e.unselectable().is_none() && e.channels.contains(&channel))
            .map(|e| e.version)
            .max()
    }

    /// The end-of-support date of a version, if the catalog has one.
    pub fn end_of_support(&self, v: Version) -> Option<NaiveDate> {
        self.get(v).and_then(|e| e.end_of_support)
    }

    /// The next version a cluster on `current` takes on its way to `target`
    /// under the upstream rules: a patch of the same minor directly, a newer
    /// minor one step at a time (the newest supported release of the next
    /// minor, never past `target`). `None` when `current` is not older.
    pub fn next_step(&self, current: Version, target: Version) -> Option<Version> {
        if target <= current || target.major != current.major {
            return None;
        }
        if target.minor == current.minor {
            return Some(target);
        }
        let next_minor = current.minor + 1;
        if target.minor == next_minor {
            return Some(target);
        }
        self.entries
            .iter()
            .filter(|e| {
                e.unselectable().is_none()
                    && e.version.major == current.major
                    && e.version.minor == next_minor
            })
            .map(|e| e.version)
            .max()
    }
}

/// The upstream upgrade rules: one minor at a time, no major jumps, and no
/// downgrade except to a version this cluster ran before.
pub fn check_version_change(
    current: Version,
    history: &[String],
    target: Version,
) -> Result<(), String> {
    match target.cmp(&current) {
        Ordering::Equal => Ok(()),
        Ordering::Greater => {
            if target.major != current.major {
                Err(format!(
                    "upgrading from {current} to {target} changes the major version, which is not supported"
                ))
            } else if target.minor > current.minor + 1 {
                Err(format!(
                    "upgrading from {current} to {target} skips a minor version; upgrade one minor at a time (next: {}.{}.x)",
                    current.major,
                    current.minor + 1
                ))
            } else {
                Ok(())
            }
        }
        Ordering::Less => {
            if history.iter().any(|h| Version::parse(h) == Some(target)) {
                Ok(())
            } else {
                Err(format!(
                    "downgrading from {current} to {target} is not allowed: rollback is only to a version this cluster ran before"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn catalog(versions: &[(&str, bool)]) -> Catalog {
        Catalog {
            entries: versions
                .iter()
                .map(|(s, retired)| CatalogEntry {
                    version: v(s),
                    channels: vec![],
                    retired: *retired,
                    end_of_support: None,
                    has_bundle: true,
                })
                .collect(),
        }
    }

    #[test]
    fn steps_go_one_minor_at_a_time_to_the_newest_patch_of_the_next_minor() {
        let c = catalog(&[
            ("1.26.2", false),
            ("1.27.0", false),
            ("1.27.1", false),
            ("1.27.2", true),
            ("1.28.2", false),
        ]);
        assert_eq!(c.next_step(v("1.26.2"), v("1.28.2")), Some(v("1.27.1")));
        assert_eq!(c.next_step(v("1.27.1"), v("1.28.2")), Some(v("1.28.2")));
        assert_eq!(c.next_step(v("1.27.0"), v("1.27.1")), Some(v("1.27.1")));
        assert_eq!(c.next_step(v("1.28.2"), v("1.28.2")), None);
        assert_eq!(c.next_step(v("1.28.2"), v("1.27.1")), None);
    }
}
