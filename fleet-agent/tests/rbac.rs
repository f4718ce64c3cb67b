//! The agent's own RBAC (`deploy/agent/rbac.yaml`) holds every permission of
//! the ClusterRoles it renders: Kubernetes refuses to let a subject without
//! `escalate` create a ClusterRole that grants more than it holds, and the
//! agent has no `escalate` or `bind` on ClusterRoles.
#![allow(clippy::unwrap_used)]

use meshfleet_agent::render::render;
use meshfleet_agent::testing::desired;
use serde_json::Value;

#[derive(Debug, Default)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

/// The rules of the first document (the agent's ClusterRole), written with
/// JSON flow sequences (`apiGroups: ["…"]`), one key a line.
fn agent_rules() -> Vec<Rule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/agent/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.split("\n---").next().unwrap();
    let mut rules: Vec<Rule> = Vec::new();
    for line in first.lines().map(str::trim) {
        let (key, rest) = match line.strip_prefix("- ") {
            Some(r) => {
                rules.push(Rule::default());
                r.split_once(':').unwrap()
            }
            None => match line.split_once(':') {
                Some(kv) if !line.starts_with('#') => kv,
                _ => continue,
            },
        };
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        let list = || -> Vec<String> { serde_json::from_str(rest.trim()).unwrap() };
        match key {
            "apiGroups" => rule.groups = list(),
            "resources" => rule.resources = list(),
            "resourceNames" => rule.names = list(),
            "verbs" => rule.verbs = list(),
            _ => {}
        }
    }
    rules
}

fn covers(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.names.is_empty()
            && r.groups.iter().any(|g| g == group || g == "*")
            && r.resources.iter().any(|x| x == resource || x == "*")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_agent_holds_every_permission_of_the_cluster_roles_it_creates() {
    let rules = agent_rules();
    assert!(rules.len() > 10, "{rules:?}");
    assert!(
        !rules
            .iter()
            .any(|r| r.resources.iter().any(|x| x == "clusterroles")
                && r.verbs.iter().any(|v| v == "escalate" || v == "bind")),
        "no escalate/bind on ClusterRoles"
    );
    let mut missing = Vec::new();
    for step in render(&desired("1.28.2")).unwrap() {
        for o in &step.objects {
            let j = o.to_json().unwrap();
            if j["kind"] != "ClusterRole" {
                continue;
            }
            for rule in j["rules"].as_array().unwrap() {
                for g in strings(&rule["apiGroups"]) {
                    for r in strings(&rule["resources"]) {
                        for v in strings(&rule["verbs"]) {
                            if !covers(&rules, &g, &r, &v) {
                                missing.push(format!("{}: {g}/{r} {v}", j["metadata"]["name"]));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/agent/rbac.yaml lacks:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_agent_may_do_what_it_does_with_every_kind_it_touches() {
    use meshfleet_agent::backend::{MANAGED_KINDS, NAMESPACE_CONTENT_KINDS};
    let rules = agent_rules();
    let mut missing = Vec::new();
    let mut need = |group: &str, resource: &str, verb: &str| {
        if !covers(&rules, group, resource, verb) {
            missing.push(format!("{group}/{resource} {verb}"));
        }
    };
    // Applied (get before, patch; create when new), pruned by label (list,
    // delete), read back (get).
    for k in MANAGED_KINDS {
        for verb in ["get", "list", "create", "patch", "delete"] {
            need(k.group(), k.plural, verb);
        }
    }
    // Listed to decide whether istio-system is empty.
    for k in NAMESPACE_CONTENT_KINDS {
        need(k.group(), k.plural, "list");
    }
    // A CRD purge lists the custom resources of each CRD it installed.
    for crd in meshfleet_agent::Bundle::development("1.28.2").crds() {
        need(&crd.crd.spec.group, &crd.crd.spec.names.plural, "list");
    }
    need("apiextensions.k8s.io", "customresourcedefinitions", "get");
    // Rollout status, cluster facts.
    need("apps", "deployments", "get");
    need("apps", "daemonsets", "get");
    need("", "nodes", "list");
    assert!(
        missing.is_empty(),
        "deploy/agent/rbac.yaml lacks:\n{}",
        missing.join("\n")
    );
}
