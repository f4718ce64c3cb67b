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

use meshfleet_agent::OwnedObject;
use meshfleet_agent::render::{plan_uninstall, render};
use meshfleet_agent::testing::desired;
use meshfleet_model::{
    DesiredWaypoint, LogLevel, MeshMode, MtlsMode, OutboundMode, OutboundTrafficPolicy, TrafficType,
};
use serde_json::{Value, json};

fn check(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
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

fn rendered(d: &meshfleet_model::DesiredState) -> Value {
    let steps = render(d).unwrap();
    Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({
                    "step": s.step.name(),
                    "objects": s.objects.iter().map(|o| o.to_json().unwrap()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
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
/// what the strict install owns: reverse order, CRDs kept, namespaces released.
#[test]
fn disabled_uninstalls_in_reverse_order() {
    let installed = desired("1.28.2");
    let owned: Vec<OwnedObject> =
        meshfleet_agent::testing::owned_objects(&render(&installed).unwrap());
    let mut d = installed.clone();
    d.mode = MeshMode::Disabled;
    assert!(render(&d).unwrap().is_empty());
    let plan = plan_uninstall(&owned);
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
