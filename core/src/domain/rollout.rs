//! Fleet rollouts, the pure part: validating a rollout, assigning the
//! selected clusters to stages, and the failure threshold.

use std::collections::BTreeSet;

use meshfleet_model::{
    FailurePolicy, FieldError, Labels, RolloutClusterState as C, RolloutCounts, RolloutInput,
};

use super::selector::{self, Requirement};

/// A parsed rollout: its selector and, per stage, how it takes clusters.
#[derive(Debug, Clone)]
pub struct Plan {
    pub selector: Vec<Requirement>,
    pub stages: Vec<StageRule>,
}

#[derive(Debug, Clone)]
pub enum StageRule {
    Selector(Vec<Requirement>),
    Percent(u32),
    Rest,
}

/// Checks a rollout body (not the clusters it selects).
pub fn validate(input: &RolloutInput) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Vec::new();
    if input.name.trim().is_empty() || input.name.chars().count() > 63 {
        errors.push(FieldError::new("/name", "1 to 63 characters"));
    }
    let selector = match selector::parse(&input.selector) {
        Ok(s) => s,
        Err(e) => {
            errors.push(FieldError::new("/selector", e));
            vec![]
        }
    };
    if input.stages.is_empty() || input.stages.len() > 10 {
        errors.push(FieldError::new("/stages", "1 to 10 stages"));
    }
    let mut names = BTreeSet::new();
    let mut stages = Vec::new();
    for (i, s) in input.stages.iter().enumerate() {
        let base = format!("/stages/{i}");
        if s.name.trim().is_empty() || s.name.chars().count() > 63 {
            errors.push(FieldError::new(
                format!("{base}/name"),
                "1 to 63 characters",
            ));
        } else if !names.insert(s.name.as_str()) {
            errors.push(FieldError::new(
                format!("{base}/name"),
                format!("stage `{}` is listed twice", s.name),
            ));
        }
        if !(1..=1000).contains(&s.max_concurrency) {
            errors.push(FieldError::new(
                format!("{base}/maxConcurrency"),
                "must be between 1 and 1000",
            ));
        }
        if s.soak_seconds > 86_400 {
            errors.push(FieldError::new(
                format!("{base}/soakSeconds"),
                "must be between 0 and 86400",
            ));
        }
        let rule = match (&s.selector, s.percent) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    format!("{base}/percent"),
                    "takes either `selector` or `percent`, not both",
                ));
                StageRule::Rest
            }
            (Some(sel), None) => match selector::parse(sel) {
                Ok(r) => StageRule::Selector(r),
                Err(e) => {
                    errors.push(FieldError::new(format!("{base}/selector"), e));
                    StageRule::Rest
                }
            },
            (None, Some(p)) if (1..=100).contains(&p) => StageRule::Percent(p),
            (None, Some(_)) => {
                errors.push(FieldError::new(
                    format!("{base}/percent"),
                    "must be between 1 and 100",
                ));
                StageRule::Rest
            }
            (None, None) => StageRule::Rest,
        };
        stages.push(rule);
    }
    validate_policy(&input.failure_policy, &mut errors);
    if !(60..=86_400).contains(&input.progress_deadline_seconds) {
        errors.push(FieldError::new(
            "/progressDeadlineSeconds",
            "must be between 60 and 86400",
        ));
    }
    if errors.is_empty() {
        Ok(Plan { selector, stages })
    } else {
        Err(errors)
    }
}

fn validate_policy(p: &FailurePolicy, errors: &mut Vec<FieldError>) {
    match (p.max_failed_clusters, p.max_failed_percent) {
        (Some(_), Some(_)) => errors.push(FieldError::new(
            "/failurePolicy/maxFailedPercent",
            "takes either `maxFailedClusters` or `maxFailedPercent`, not both",
        )),
        (None, Some(pct)) if pct > 100 => errors.push(FieldError::new(
            "/failurePolicy/maxFailedPercent",
            "must be between 0 and 100",
        )),
        _ => {}
    }
}

/// Assigns clusters (in the order given) to stages: each stage takes, among
/// those no earlier stage took, the ones matching its selector, or `percent`
/// of them (rounded up), or all that remain. `None`: no stage took it.
pub fn assign_stages(plan: &Plan, labels: &[&Labels]) -> Vec<Option<usize>> {
    let mut stage_of = vec![None; labels.len()];
    for (stage, rule) in plan.stages.iter().enumerate() {
        let remaining: Vec<usize> = (0..labels.len())
            .filter(|i| stage_of[*i].is_none())
            .collect();
        let taken: Vec<usize> = match rule {
            StageRule::Selector(reqs) => remaining
                .into_iter()
                .filter(|i| selector::matches(reqs, labels[*i]))
                .collect(),
            StageRule::Percent(p) => {
                let n = (remaining.len() * *p as usize).div_ceil(100);
                remaining.into_iter().take(n).collect()
            }
            StageRule::Rest => remaining,
        };
        for i in taken {
            stage_of[i] = Some(stage);
        }
    }
    stage_of
}

/// A rollout's counts from `(state, clusters)` pairs.
pub fn counts(states: impl IntoIterator<Item = (C, u32)>) -> RolloutCounts {
    let mut c = RolloutCounts::default();
    for (state, n) in states {
        c.total += n;
        match state {
            C::Pending => c.pending += n,
            C::Upgrading | C::Soaking | C::RollingBack => c.in_progress += n,
            C::Succeeded => c.succeeded += n,
            C::Failed => c.failed += n,
            C::RolledBack => c.rolled_back += n,
            C::Skipped => c.skipped += n,
        }
    }
    c
}

/// One rollout's counts from `(rollout, state name, clusters)` tallies of
/// several rollouts (unknown state names are left out).
pub fn counts_of(tallies: &[(uuid::Uuid, String, i64)], rollout: uuid::Uuid) -> RolloutCounts {
    counts(
        tallies
            .iter()
            .filter(|(id, _, _)| *id == rollout)
            .filter_map(|(_, s, n)| {
                let state: C = serde_json::from_value(serde_json::Value::String(s.clone())).ok()?;
                Some((state, u32::try_from(*n).unwrap_or(u32::MAX)))
            }),
    )
}

/// Whether `failed` clusters of a stage of `size` exceed the policy.
pub fn threshold_exceeded(policy: &FailurePolicy, failed: u32, size: u32) -> bool {
    match (policy.max_failed_clusters, policy.max_failed_percent) {
        (_, Some(pct)) => u64::from(failed) * 100 > u64::from(pct) * u64::from(size),
        (Some(max), None) => failed > max,
        (None, None) => failed > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshfleet_model::{FailureAction, StageInput};

    fn stage(name: &str, selector: Option<&str>, percent: Option<u32>) -> StageInput {
        StageInput {
            name: name.into(),
            selector: selector.map(String::from),
            percent,
            max_concurrency: 1,
            soak_seconds: 0,
            require_approval: false,
        }
    }

    fn input(stages: Vec<StageInput>) -> RolloutInput {
        RolloutInput {
            name: "r".into(),
            target_version: "1.28.2".into(),
            selector: String::new(),
            stages,
            failure_policy: FailurePolicy::default(),
            progress_deadline_seconds: 900,
        }
    }

    #[test]
    fn stages_take_by_selector_then_percent_then_the_rest() {
        let plan = validate(&input(vec![
            stage("canary", Some("ring=canary"), None),
            stage("half", None, Some(50)),
            stage("rest", None, None),
        ]))
        .unwrap();
        let mk = |ring: &str| Labels::from([("ring".to_string(), ring.to_string())]);
        let labels = [mk("a"), mk("canary"), mk("b"), mk("c"), mk("d")];
        let refs: Vec<&Labels> = labels.iter().collect();
        assert_eq!(
            assign_stages(&plan, &refs),
            vec![Some(1), Some(0), Some(1), Some(2), Some(2)]
        );
    }

    #[test]
    fn clusters_no_stage_takes_are_left_out() {
        let plan = validate(&input(vec![stage("only", Some("ring=canary"), None)])).unwrap();
        let other = Labels::new();
        assert_eq!(assign_stages(&plan, &[&other]), vec![None]);
    }

    #[test]
    fn invalid_rollouts_name_each_field() {
        let mut bad = input(vec![
            stage("a", Some("x"), Some(10)),
            stage("a", None, Some(0)),
        ]);
        bad.failure_policy = FailurePolicy {
            max_failed_clusters: Some(1),
            max_failed_percent: Some(5),
            action: FailureAction::Rollback,
        };
        bad.progress_deadline_seconds = 5;
        let errors = validate(&bad).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/stages/0/percent",
                "/stages/1/name",
                "/stages/1/percent",
                "/failurePolicy/maxFailedPercent",
                "/progressDeadlineSeconds"
            ]
        );
    }

    #[test]
    fn the_threshold_is_exceeded_only_past_the_limit() {
        let p = FailurePolicy {
            max_failed_clusters: Some(1),
            max_failed_percent: None,
            action: FailureAction::Pause,
        };
        assert!(!threshold_exceeded(&p, 1, 10));
        assert!(threshold_exceeded(&p, 2, 10));
        let pct = FailurePolicy {
            max_failed_clusters: None,
            max_failed_percent: Some(10),
            action: FailureAction::Pause,
        };
        assert!(!threshold_exceeded(&pct, 1, 10));
        assert!(threshold_exceeded(&pct, 2, 10));
    }
}
