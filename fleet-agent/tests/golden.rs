//! Rendering of representative desired states against committed golden files
//! in `tests/golden/`.
//!
//! The test fails when the rendering drifts from the files. After an
//! intended change, regenerate them and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p meshfleet-agent --test golden
//! ```
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use meshfleet_agent::Bundle;
use meshfleet_agent::OwnedObject;
use meshfleet_agent::render::{
    Autoscale, CrdPurge, Directives, Step, plan_uninstall, render, render_with,
};
use meshfleet_agent::testing::desired;
use meshfleet_model::{
    DesiredWaypoint, LogLevel, MeshMode, MtlsMode, OutboundMode, OutboundTrafficPolicy,
    TrafficType, sorted_keys,
};
use serde_json::{Value, json};

fn check(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&sorted_keys(actual)).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != text {
        let diff_line = expected
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(text.lines().count()));
        panic!(
            "rendering differs from {} at line {}:\n  golden: {:?}\n  actual: {:?}\n\
             If the change is intended: UPDATE_GOLDEN=1 cargo test -p meshfleet-agent --test golden",
            path.display(),
            diff_line + 1,
            expected.lines().nth(diff_line),
            text.lines().nth(diff_line),
        );
    }
}

/// The rendering; the CRDs (the same for every spec of a version, and long)
/// only by name and labels — `crds-<version>.json` has them whole.
fn rendered(d: &meshfleet_model::DesiredState) -> Value {
    rendered_with(d, &Directives::default())
}

fn rendered_with(d: &meshfleet_model::DesiredState, directives: &Directives) -> Value {
    let steps = render_with(d, &Bundle::development(&d.version), directives).unwrap();
    Value::Array(
        steps
            .iter()
            .map(|s| {
                let objects: Vec<Value> = s
                    .objects
                    .iter()
                    .map(|o| {
                        let j = o.to_json().unwrap();
                        if s.step == Step::Crds {
                            json!({ "kind": j["kind"], "metadata": j["metadata"] })
                        } else {
                            j
                        }
                    })
                    .collect();
                json!({ "step": s.step.name(), "objects": objects })
            })
            .collect(),
    )
}

/// The development bundle's CRDs, whole (schemas included).
#[test]
fn development_bundle_crds() {
    let d = desired("1.28.2");
    let steps = render(&d).unwrap();
    let crds: Vec<Value> = steps[0]
        .objects
        .iter()
        .map(|o| o.to_json().unwrap())
        .collect();
    check("crds-1.28.2", &Value::Array(crds));
}

/// istiod scaled by an HPA (a directive of the desired-state document).
#[test]
fn ambient_with_istiod_autoscaling() {
    let d = desired("1.26.2");
    let directives = Directives {
        istiod_autoscale: Some(Autoscale {
            min_replicas: 2,
            max_replicas: 5,
        }),
        ..Directives::default()
    };
    let steps = rendered_with(&d, &directives);
    check("ambient-autoscale", &steps[1]);
}

#[test]
fn ambient_strict_with_waypoints() {
    let mut d = desired("1.28.2");
    d.enrolled_namespaces = vec!["shop".into(), "payments".into(), "search".into()];
    d.waypoints = vec![
        DesiredWaypoint {
            namespace: "shop".into(),
            name: "shop-waypoint".into(),
            traffic_type: TrafficType::Service,
            replicas: 2,
        },
        DesiredWaypoint {
            namespace: "search".into(),
            name: "search-svc".into(),
            traffic_type: TrafficType::Service,
            replicas: 1,
        },
        DesiredWaypoint {
            namespace: "search".into(),
            name: "search-pods".into(),
            traffic_type: TrafficType::Workload,
            replicas: 1,
        },
    ];
    check("ambient-strict", &rendered(&d));
}

#[test]
fn ambient_permissive_without_waypoints() {
    let mut d = desired("1.27.3");
    d.mtls = MtlsMode::Permissive;
    d.waypoints.clear();
    d.enrolled_namespaces = vec!["default".into()];
    d.istiod_replicas = 1;
    d.ztunnel_log_level = LogLevel::Debug;
    d.ztunnel_resources.cpu = None;
    d.mesh_config.access_log_file = None;
    d.mesh_config.access_log_encoding = None;
    d.mesh_config.enable_tracing = Some(true);
    d.mesh_config.outbound_traffic_policy = Some(OutboundTrafficPolicy {
        mode: OutboundMode::RegistryOnly,
    });
    check("ambient-permissive", &rendered(&d));
}

/// `mode: disabled` renders nothing; the golden file is the uninstall over
/// what the strict install owns: reverse order, CRDs kept, enrolled namespaces
/// released, istio-system deleted only if empty.
#[test]
fn disabled_uninstalls_in_reverse_order() {
    let installed = desired("1.28.2");
    let owned: Vec<OwnedObject> =
        meshfleet_agent::testing::owned_objects(&render(&installed).unwrap());
    let mut d = installed.clone();
    d.mode = MeshMode::Disabled;
    assert!(render(&d).unwrap().is_empty());
    let plan = plan_uninstall(&owned, CrdPurge::Keep);
    assert!(
        plan.iter()
            .all(|a| a.reference().kind != "CustomResourceDefinition"),
        "uninstall never deletes a CRD"
    );
    check(
        "disabled",
        &json!({ "rendered": rendered(&d), "uninstall": serde_json::to_value(&plan).unwrap() }),
    );
}
