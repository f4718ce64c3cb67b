//! The real fleet agent (over a simulated cluster) against the real API and
//! PostgreSQL: install, upgrade, failure, outage, restart.

use std::time::{Duration, Instant};

use meshfleet_agent::{ObjectRef, SimOp};
use meshfleet_model::AGENT_NAMESPACE;
use meshfleet_tests::TestApp;
use meshfleet_tests::agents::{cluster_with_agent, config, start_agent, wait_status};
use serde_json::{Value, json};

fn healthy_at(generation: i64) -> impl Fn(&Value) -> bool {
    move |s| s["health"] == "Healthy" && s["observedGeneration"] == generation
}

fn applied_index(ops: &[SimOp], kind: &str, name: &str) -> Option<usize> {
    ops.iter().position(|op| matches!(op, SimOp::Apply { reference, .. } if reference.kind == kind && reference.name == name))
}

#[tokio::test]
async fn an_agent_registers_installs_the_mesh_and_its_tenant_sees_it_healthy() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "prod-eu-1", "1.27.1").await;
    let cluster = wait_status(&app, "prod-eu-1", "Healthy at generation 1", healthy_at(1)).await;
    let status = &cluster["status"];
    assert_eq!(status["connectivity"], "Connected");
    assert_eq!(status["facts"]["nodeCount"], 3);
    assert!(status["facts"]["agentVersion"].is_string());
    let names: Vec<&str> = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in ["istiod", "istio-cni", "ztunnel", "waypoints"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let sim = &agent.sim;
    let istiod = sim
        .get(&ObjectRef::deployment("istio-system", "istiod-1-27-1"))
        .expect("istiod of the revision");
    assert_eq!(
        istiod["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/istio/pilot:1.27.1"
    );
    let shop = sim
        .find("Namespace", None, "shop")
        .expect("enrolled namespace");
    assert_eq!(
        shop["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    let gateway = sim
        .find("Gateway", Some("shop"), "shop-waypoint")
        .expect("waypoint");
    assert_eq!(gateway["spec"]["gatewayClassName"], "istio-waypoint");
    assert!(
        sim.secret(AGENT_NAMESPACE, meshfleet_model::CREDENTIAL_SECRET)
            .is_some(),
        "credential kept in a Secret"
    );
    // The token it used is spent.
    let events = app
        .get("/v1/events?cluster=prod-eu-1")
        .token(&app.owner("acme"))
        .send()
        .await;
    let actions: Vec<&str> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"agent.registered") && actions.contains(&"cluster.health_changed"),
        "{actions:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_version_change_wakes_the_agent_at_once_and_upgrades_in_the_upstream_order() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "c1", "1.27.1").await;
    wait_status(&app, "c1", "Healthy at generation 1", healthy_at(1)).await;
    agent.sim.clear_ops();

    let changed = Instant::now();
    let r = app
        .patch("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let new_istiod = ObjectRef::deployment("istio-system", "istiod-1-28-2");
    while agent.sim.get(&new_istiod).is_none() {
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the agent never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The agent long-polls for 30 s, so only the NOTIFY can explain a quick start;
    // bench/longpoll.sh measures the latency itself.
    assert!(
        changed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        changed.elapsed()
    );

    let cluster = wait_status(&app, "c1", "Healthy at generation 2", healthy_at(2)).await;
    for c in cluster["status"]["components"].as_array().unwrap() {
        if c["desiredVersion"].is_string() {
            assert_eq!(c["desiredVersion"], "1.28.2", "{c}");
        }
    }
    let ops = agent.sim.ops();
    let istiod = applied_index(&ops, "Deployment", "istiod-1-28-2").unwrap();
    let cni = applied_index(&ops, "DaemonSet", "istio-cni-node").unwrap();
    let ztunnel = applied_index(&ops, "DaemonSet", "ztunnel").unwrap();
    let old_removed = ops
        .iter()
        .position(|op| matches!(op, SimOp::Delete { reference } if reference.name == "istiod-1-27-1" && reference.kind == "Deployment"))
        .expect("the old revision is removed");
    assert!(
        istiod < cni && cni < ztunnel && ztunnel < old_removed,
        "order: {ops:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_failed_component_shows_the_cluster_degraded_with_the_apis_message() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "c1", "1.27.1").await;
    wait_status(&app, "c1", "Healthy at generation 1", healthy_at(1)).await;
    agent.sim.fail_apply(
        "DaemonSet",
        "ztunnel",
        "admission webhook \"policy.example.com\" denied the request",
    );
    app.patch("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    let cluster = wait_status(&app, "c1", "Degraded", |s| s["health"] == "Degraded").await;
    let ztunnel = cluster["status"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ztunnel")
        .unwrap()
        .clone();
    assert_eq!(ztunnel["ready"], false);
    assert!(
        ztunnel["message"]
            .as_str()
            .unwrap_or_default()
            .contains("denied the request"),
        "{ztunnel}"
    );
    assert!(
        agent
            .sim
            .get(&ObjectRef::deployment("istio-system", "istiod-1-27-1"))
            .is_some(),
        "the old revision stays while the upgrade is incomplete"
    );
    let events = app
        .get("/v1/events?cluster=c1")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert!(
        events.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"]["to"] == "Degraded")
    );

    agent.sim.clear_failures();
    wait_status(&app, "c1", "recovery", healthy_at(2)).await;
    agent.stop().await;
}

#[tokio::test]
async fn while_the_api_is_down_the_agent_keeps_the_cluster_as_is_and_reconverges_after() {
    let mut app = TestApp::spawn().await;
    let other = app.replica().await;
    let agent = cluster_with_agent(&app, "c1", "1.27.1").await;
    wait_status(&app, "c1", "Healthy at generation 1", healthy_at(1)).await;

    app.stop().await;
    agent.sim.clear_ops();
    let before = agent.sim.snapshot();
    // The spec changes (through another replica) while this agent's API is gone.
    let r = other
        .patch("/v1/clusters/c1")
        .token(&other.owner("acme"))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        agent.sim.ops().is_empty(),
        "nothing applied or pruned during the outage: {:?}",
        agent.sim.ops()
    );
    assert_eq!(agent.sim.snapshot().len(), before.len());

    app.restart().await;
    wait_status(
        &app,
        "c1",
        "Healthy at generation 2 after the outage",
        healthy_at(2),
    )
    .await;
    assert!(
        agent
            .sim
            .get(&ObjectRef::deployment("istio-system", "istiod-1-28-2"))
            .is_some()
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_credential_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "c1", "1.27.1").await;
    wait_status(&app, "c1", "Healthy at generation 1", healthy_at(1)).await;
    let sim = agent.stop().await;
    sim.clear_ops();
    let restarted = start_agent(sim, config(&app.base));
    // It reports again (a fresh heartbeat) without registering again.
    let first = wait_status(&app, "c1", "a heartbeat", |s| s["health"] == "Healthy").await["status"]["lastHeartbeatAt"].clone();
    wait_status(&app, "c1", "a later heartbeat", |s| {
        s["lastHeartbeatAt"] != first
    })
    .await;
    let changed: Vec<SimOp> = restarted
        .sim
        .ops()
        .into_iter()
        .filter(|op| !matches!(op, SimOp::Apply { changed: false, .. }))
        .collect();
    assert!(
        changed.is_empty(),
        "a restart changes nothing in the cluster: {changed:?}"
    );
    let events = app
        .get("/v1/events?cluster=c1")
        .token(&app.owner("acme"))
        .send()
        .await;
    let registrations = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.registered")
        .count();
    assert_eq!(registrations, 1);
    restarted.stop().await;
}
