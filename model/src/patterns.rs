//! Formats of the API's strings as regular expressions, for the OpenAPI
//! document (and, where a rule is a grammar, for the server's own check), so
//! that the document states exactly what the server accepts.
//!
//! The expressions use only syntax that Python's `re`, ECMAScript and Rust's
//! `regex` read alike (no look-around, no `\s`/`\d` whose meaning differs).

/// A DNS label (RFC 1123): cluster, namespace and waypoint names.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// The name part of a Kubernetes label key, and a non-empty label value.
const LABEL_NAME: &str = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
const DNS_LABEL_BARE: &str = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";

/// A Kubernetes label key, `[prefix/]name` (the prefix a DNS subdomain).
pub fn label_key() -> String {
    format!("^{}$", label_key_bare())
}

fn label_key_bare() -> String {
    format!("({DNS_LABEL_BARE}(\\.{DNS_LABEL_BARE})*/)?{LABEL_NAME}")
}

/// A Kubernetes label value: empty, or like a label name.
pub fn label_value() -> String {
    format!("^({LABEL_NAME})?$")
}

/// A label selector (`env=prod,tier!=db,region in (eu,us),!legacy,canary`),
/// with spaces allowed around operators, requirements and values.
pub fn label_selector() -> String {
    let key = label_key_bare();
    let value = format!("({LABEL_NAME})?");
    let set = format!("\\( *({LABEL_NAME} *(, *{value} *)*|{value} *(, *{value} *)+)\\)");
    let requirement =
        format!("(! *{key}|{key} *(==|!=|=) *{value}|{key} +(in|notin) +{set}|{key})");
    format!("^ *({requirement}( *, *{requirement})*)? *$")
}

/// An Istio version, `MAJOR.MINOR.PATCH`, each part 0 or up to 6 digits
/// without a leading zero.
pub const VERSION: &str = "^(0|[1-9][0-9]{0,5})\\.(0|[1-9][0-9]{0,5})\\.(0|[1-9][0-9]{0,5})$";

/// `HH:MM`, 24-hour.
pub const HOUR_MINUTE: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A CPU quantity: a positive decimal, optionally in millicores (`200m`, `1.5`).
pub const CPU_QUANTITY: &str = "^([0-9]*[1-9][0-9]*(\\.[0-9]+)?|0+\\.[0-9]*[1-9][0-9]*)m?$";

/// A memory quantity: a positive integer with an optional unit (`512Mi`, `1G`).
pub const MEMORY_QUANTITY: &str = "^[0-9]*[1-9][0-9]*(Ki|Mi|Gi|Ti|k|M|G|T)?$";

/// A string without NUL, which PostgreSQL cannot store.
pub const NO_NUL: &str = "^[^\\x00]*$";

/// A container image reference as a release gives it: no whitespace, no NUL.
pub const IMAGE: &str = "^[^\\x00\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$";

/// A calendar date `YYYY-MM-DD` (years 0000 to 9999, leap years counted).
pub fn date() -> String {
    format!("^{}$", date_bare())
}

fn date_bare() -> String {
    let y = "[0-9]{4}";
    let leap = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)";
    format!(
        "({y}-(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|{y}-(0[469]|11)-(0[1-9]|[12][0-9]|30)|{y}-02-(0[1-9]|1[0-9]|2[0-8])|{leap}-02-29)"
    )
}

/// An RFC 3339 date-time, e.g. `2026-11-27T10:00:00Z` or `...00.5+01:00`.
pub fn date_time() -> String {
    format!(
        "^{}[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,9}})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
        date_bare()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_selector_pattern_reads_the_documented_examples() {
        let re = regex::Regex::new(&super::label_selector()).unwrap();
        for ok in [
            "",
            "env=prod",
            "env = prod, tier!=db",
            "region in (eu,us),!legacy",
            "example.com/team notin ( a , b )",
            "canary",
            "x in (,a)",
            "k==",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["x in ()", "=a", "a=b=c", "a in(b)", "a,,b", "-a", "a=b c"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn the_date_time_pattern_accepts_what_chrono_reads() {
        let re = regex::Regex::new(&super::date_time()).unwrap();
        for ok in [
            "2026-11-27T10:00:00Z",
            "2024-02-29T23:59:59.123456789+01:00",
            "2000-02-29t00:00:00z",
            "0001-12-31T00:00:00-23:59",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(ok.parse::<chrono::DateTime<chrono::Utc>>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
        ] {
            assert!(!re.is_match(bad), "{bad}");
            assert!(
                bad.parse::<chrono::DateTime<chrono::Utc>>().is_err(),
                "{bad}"
            );
        }
    }
}
