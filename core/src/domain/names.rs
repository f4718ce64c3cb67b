//! Names and labels: DNS labels for clusters, namespaces and waypoints, and
//! Kubernetes label keys and values.

/// A DNS label (RFC 1123): what cluster, namespace and waypoint names must be.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn dns_label_problem(what: &str, s: &str) -> String {
    format!(
        "{what} `{s}` is not a DNS label: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
    )
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label key: `[prefix/]name`.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!(
            "label key `{key}`: the prefix must be a DNS subdomain"
        ));
    }
    if !is_label_name(name) {
        return Some(format!(
            "label key `{key}`: the name must be 1-63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
        ));
    }
    None
}

/// A Kubernetes label value: empty, or like a label name.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || is_label_name(value) {
        None
    } else {
        Some(format!(
            "label value `{value}` must be empty or 1-63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
        ))
    }
}
