//! Kubernetes label selectors: `env=prod,tier!=db,region in (eu,us),!legacy`.

use std::sync::LazyLock;

use super::names::{label_key_problem, label_value_problem};

/// The grammar the OpenAPI document states (`meshfleet_model::patterns`);
/// the parser below reads what matches it.
static GRAMMAR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(&meshfleet_model::patterns::label_selector())
        .expect("the label selector pattern compiles")
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Eq(String, String),
    /// Matches clusters without the key too (Kubernetes semantics).
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced `)`".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced `(`".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    match label_key_problem(k) {
        Some(p) => Err(p),
        None => Ok(k.to_string()),
    }
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    match label_value_problem(v) {
        Some(p) => Err(p),
        None => Ok(v.to_string()),
    }
}

fn set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("`{rest}` must be a parenthesised list like `(a,b)`"))?;
    if inner.trim().is_empty() {
        return Err("a set needs at least one value".into());
    }
    inner.split(',').map(value).collect()
}

/// Parses a selector; an empty string selects everything.
pub fn parse(selector: &str) -> Result<Vec<Requirement>, String> {
    if selector.chars().count() > 4096 {
        return Err("the selector is longer than 4096 characters".into());
    }
    let raw = selector;
    // What the parser would read but the documented grammar does not (other
    // whitespace than spaces, say) is refused too.
    let ungrammatical = || {
        format!(
            "`{raw}` is not a label selector like `env=prod,tier!=db,region in (eu,us),!legacy` (spaces are the only whitespace allowed)"
        )
    };
    let selector = selector.trim();
    if selector.is_empty() {
        return if GRAMMAR.is_match(raw) {
            Ok(Vec::new())
        } else {
            Err(ungrammatical())
        };
    }
    let mut out = Vec::new();
    for part in split_top_level(selector)? {
        let part = part.trim();
        if part.is_empty() {
            return Err("empty requirement (two commas in a row?)".into());
        }
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEq(key(k)?, value(v)?)
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Eq(key(k)?, value(v)?)
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Eq(key(k)?, value(v)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(key(k)?)
        } else if let Some((k, rest)) = split_word(part, " notin ") {
            Requirement::NotIn(key(k)?, set(rest)?)
        } else if let Some((k, rest)) = split_word(part, " in ") {
            Requirement::In(key(k)?, set(rest)?)
        } else {
            Requirement::Exists(
                key(part).map_err(|e| format!("`{part}` is not a requirement: {e}"))?,
            )
        };
        out.push(req);
    }
    if !GRAMMAR.is_match(raw) {
        return Err(ungrammatical());
    }
    Ok(out)
}

fn split_word<'a>(s: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let i = s.find(word)?;
    Some((&s[..i], &s[i + word.len()..]))
}

/// Whether `labels` satisfy every requirement (the same meaning as the SQL
/// the store builds from them).
pub fn matches(requirements: &[Requirement], labels: &meshfleet_model::Labels) -> bool {
    requirements.iter().all(|r| match r {
        Requirement::Eq(k, v) => labels.get(k) == Some(v),
        Requirement::NotEq(k, v) => labels.get(k) != Some(v),
        Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
        Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::NotExists(k) => !labels.contains_key(k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_parses() {
        let r =
            parse("env=prod, tier!=db,region in (eu, us),zone notin (a),gpu,!legacy,x==y").unwrap();
        assert_eq!(
            r,
            vec![
                Requirement::Eq("env".into(), "prod".into()),
                Requirement::NotEq("tier".into(), "db".into()),
                Requirement::In("region".into(), vec!["eu".into(), "us".into()]),
                Requirement::NotIn("zone".into(), vec!["a".into()]),
                Requirement::Exists("gpu".into()),
                Requirement::NotExists("legacy".into()),
                Requirement::Eq("x".into(), "y".into()),
            ]
        );
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        assert!(parse("env=prod,,x").unwrap_err().contains("empty"));
        assert!(parse("region in (eu").unwrap_err().contains("unbalanced"));
        assert!(parse("env=pr od").is_err());
        assert!(parse("-bad=1").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
