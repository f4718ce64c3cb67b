use meshfleet_api::http::merge_patch;
use meshfleet_tests::TestApp;
use serde_json::{Value, json};

fn full_body() -> Value {
    json!({
        "labels": {"env": "prod", "example.com/team": "payments"},
        "mesh": {
            "mode": "ambient",
            "upgrade": {"mode": "manual", "version": "1.27.1"},
            "maintenanceWindow": {"slots": [{"day": "saturday", "start": "02:00", "durationMinutes": 240}]},
            "mtls": "strict",
            "enrolledNamespaces": ["shop", "payments"],
            "waypoints": [{"namespace": "shop", "name": "shop-waypoint", "trafficType": "service", "replicas": 2}],
            "components": {
                "istiod": {"replicas": 2},
                "ztunnel": {"logLevel": "info", "resources": {"cpu": "200m", "memory": "512Mi"}}
            },
            "meshConfig": {
                "accessLogFile": "/dev/stdout",
                "accessLogEncoding": "JSON",
                "enableTracing": true,
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}
            },
            "uninstall": {"purgeCrds": true, "force": false}
        }
    })
}

#[tokio::test]
async fn a_spec_using_every_field_is_accepted_and_returned_as_given() {
    let app = TestApp::spawn().await;
    let body = full_body();
    let r = app.create("acme", "full", &body).await;
    assert_eq!(r.body["mesh"], body["mesh"]);
    assert_eq!(r.body["labels"], body["labels"]);
}

#[tokio::test]
async fn every_mesh_field_is_validated_and_the_error_points_at_it() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"mesh": {"mode": "sidecar"}}), "/mesh/mode"),
        (
            json!({"mesh": {"upgrade": {"mode": "sometimes"}}}),
            "/mesh/upgrade/mode",
        ),
        (
            json!({"mesh": {"upgrade": {"version": null}}}),
            "/mesh/upgrade/version",
        ),
        (
            json!({"mesh": {"upgrade": {"channel": "stable"}}}),
            "/mesh/upgrade/channel",
        ),
        (
            json!({"mesh": {"upgrade": {"version": "latest"}}}),
            "/mesh/upgrade/version",
        ),
        (
            json!({"mesh": {"upgrade": {"version": "9.9.9"}}}),
            "/mesh/upgrade/version",
        ),
        (
            json!({"mesh": {"upgrade": {"mode": "automatic", "version": null}}}),
            "/mesh/upgrade/channel",
        ),
        (
            json!({"mesh": {"upgrade": {"mode": "automatic", "channel": "stable"}}}),
            "/mesh/upgrade/version",
        ),
        (
            json!({"mesh": {"upgrade": {"mode": "automatic", "version": null, "channel": "beta"}}}),
            "/mesh/upgrade/channel",
        ),
        (
            json!({"mesh": {"upgrade": {"colour": "x"}}}),
            "/mesh/upgrade/colour",
        ),
        (
            json!({"mesh": {"maintenanceWindow": {"slots": []}}}),
            "/mesh/maintenanceWindow/slots",
        ),
        (
            json!({"mesh": {"maintenanceWindow": {"slots": [{"day": "funday", "start": "02:00", "durationMinutes": 60}]}}}),
            "/mesh/maintenanceWindow/slots/0/day",
        ),
        (
            json!({"mesh": {"maintenanceWindow": {"slots": [{"day": "monday", "start": "25:00", "durationMinutes": 60}]}}}),
            "/mesh/maintenanceWindow/slots/0/start",
        ),
        (
            json!({"mesh": {"maintenanceWindow": {"slots": [{"day": "monday", "start": "01:00", "durationMinutes": 10}]}}}),
            "/mesh/maintenanceWindow/slots/0/durationMinutes",
        ),
        (
            json!({"mesh": {"maintenanceWindow": {"slots": [
            {"day": "monday", "start": "01:00", "durationMinutes": 120},
            {"day": "monday", "start": "02:00", "durationMinutes": 60}]}}}),
            "/mesh/maintenanceWindow/slots/1",
        ),
        (json!({"mesh": {"mtls": "off"}}), "/mesh/mtls"),
        (
            json!({"mesh": {"enrolledNamespaces": ["Bad_NS"], "waypoints": []}}),
            "/mesh/enrolledNamespaces/0",
        ),
        (
            json!({"mesh": {"enrolledNamespaces": ["kube-system"], "waypoints": []}}),
            "/mesh/enrolledNamespaces/0",
        ),
        (
            json!({"mesh": {"enrolledNamespaces": ["shop", "shop"]}}),
            "/mesh/enrolledNamespaces/1",
        ),
        (
            json!({"mesh": {"enrolledNamespaces": "shop"}}),
            "/mesh/enrolledNamespaces",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "other", "name": "wp"}]}}),
            "/mesh/waypoints/0/namespace",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "shop", "name": "WP!"}]}}),
            "/mesh/waypoints/0/name",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "shop", "name": "wp", "trafficType": "some"}]}}),
            "/mesh/waypoints/0/trafficType",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "shop", "name": "wp", "replicas": 0}]}}),
            "/mesh/waypoints/0/replicas",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "shop", "name": "wp", "replicas": -1}]}}),
            "/mesh/waypoints/0/replicas",
        ),
        (
            json!({"mesh": {"waypoints": [{"namespace": "shop", "name": "wp"}, {"namespace": "shop", "name": "wp"}]}}),
            "/mesh/waypoints/1/name",
        ),
        (
            json!({"mesh": {"waypoints": [{"name": "wp"}]}}),
            "/mesh/waypoints/0/namespace",
        ),
        (
            json!({"mesh": {"components": {"istiod": {"replicas": 11}}}}),
            "/mesh/components/istiod/replicas",
        ),
        (
            json!({"mesh": {"components": {"ztunnel": {"logLevel": "loud"}}}}),
            "/mesh/components/ztunnel/logLevel",
        ),
        (
            json!({"mesh": {"components": {"ztunnel": {"resources": {"cpu": "lots"}}}}}),
            "/mesh/components/ztunnel/resources/cpu",
        ),
        (
            json!({"mesh": {"components": {"ztunnel": {"resources": {"memory": "1GB"}}}}}),
            "/mesh/components/ztunnel/resources/memory",
        ),
        (
            json!({"mesh": {"components": {"cni": {}}}}),
            "/mesh/components/cni",
        ),
        (
            json!({"mesh": {"meshConfig": {"trustDomain": "evil.local"}}}),
            "/mesh/meshConfig/trustDomain",
        ),
        (
            json!({"mesh": {"meshConfig": {"accessLogFile": "/var/log/access.log"}}}),
            "/mesh/meshConfig/accessLogFile",
        ),
        (
            json!({"mesh": {"meshConfig": {"accessLogEncoding": "XML"}}}),
            "/mesh/meshConfig/accessLogEncoding",
        ),
        (
            json!({"mesh": {"meshConfig": {"enableTracing": "yes"}}}),
            "/mesh/meshConfig/enableTracing",
        ),
        (
            json!({"mesh": {"meshConfig": {"outboundTrafficPolicy": {"mode": "DENY"}}}}),
            "/mesh/meshConfig/outboundTrafficPolicy/mode",
        ),
        (json!({"labels": {"bad key": "x"}}), "/labels/bad key"),
        (json!({"labels": {"env": "x".repeat(64)}}), "/labels/env"),
        (json!({"labels": {"env": 3}}), "/labels/env"),
        (json!({"spec": {}}), "/spec"),
        (json!({"name": "other"}), "/name"),
        (json!({"mesh": null}), "/mesh"),
    ];
    for (patch, pointer) in cases {
        let mut body = full_body();
        merge_patch(&mut body, &patch);
        let r = app
            .put("/v1/clusters/c1")
            .token(&t)
            .json(&body)
            .send()
            .await;
        let p = r.problem(422);
        let pointers: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(
            pointers.contains(&pointer),
            "patch {patch} should fail at {pointer}, got {}",
            r.text
        );
        for e in p["errors"].as_array().unwrap() {
            assert!(!e["detail"].as_str().unwrap().is_empty());
        }
    }
    let list = app.get("/v1/clusters").token(&t).send().await;
    assert_eq!(list.body["items"], json!([]), "no invalid body was stored");
}

#[tokio::test]
async fn all_the_errors_of_a_body_are_reported_at_once() {
    let app = TestApp::spawn().await;
    let mut body = full_body();
    merge_patch(
        &mut body,
        &json!({"mesh": {"components": {"istiod": {"replicas": 0}}, "waypoints": [{"namespace": "nope", "name": "wp"}]}}),
    );
    let r = app
        .put("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .json(&body)
        .send()
        .await;
    assert_eq!(
        r.problem(422)["errors"].as_array().unwrap().len(),
        2,
        "{}",
        r.text
    );
}
