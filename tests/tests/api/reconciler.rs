//! The reconciler against real PostgreSQL, the real API and real agents over
//! simulated clusters, on a clock the tests move (no real waiting for
//! windows, deadlines or heartbeat ages).

use chrono::{DateTime, Duration as Days, Utc};
use meshfleet_core::clock::ManualClock;
use meshfleet_tests::agents::{cluster_with_agent, config, start_agent, wait_status};
use meshfleet_tests::{TestApp, TestRole, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// 2026-12-01 is a Tuesday.
const TUESDAY: &str = "2026-12-01T10:30:00Z";

async fn publish(app: &TestApp, version: &str, channels: &[&str], eos: &str) {
    let sre = app.token("ops", &[TestRole::Sre]);
    let r = app
        .put(&format!("/v1/ops/releases/{version}"))
        .token(&sre)
        .json(&json!({"channels": channels, "releasedAt": "2026-10-01", "endOfSupport": eos}))
        .send()
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = app
        .put(&format!("/v1/ops/releases/{version}/bundle"))
        .token(&sre)
        .json(&json!({"origin": "development"}))
        .send()
        .await;
    assert!(r.status.is_success(), "{}", r.text);
}

async fn get(app: &TestApp, name: &str) -> Value {
    let r = app
        .get(&format!("/v1/clusters/{name}"))
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

async fn events(app: &TestApp, name: &str, action: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/events?cluster={name}&limit=500"))
        .token(&app.owner("acme"))
        .send()
        .await;
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// The `(from, to)` of events, oldest first.
fn from_to(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .rev()
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap().to_string(),
                e["detail"]["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn automatic(channel: &str) -> Value {
    json!({"labels": {"env": "prod"},
           "mesh": {"upgrade": {"mode": "automatic", "channel": channel},
                    "maintenanceWindow": {"slots": [{"day": "saturday", "start": "02:00", "durationMinutes": 240}]}}})
}

#[tokio::test]
async fn a_tuesday_channel_upgrade_waits_for_the_saturday_window_and_then_happens() {
    let clock = ManualClock::at(at(TUESDAY));
    let app = TestApp::spawn_at(&clock).await;
    publish(&app, "1.29.0", &["regular"], "2027-06-30").await;
    app.create("acme", "c1", &automatic("regular")).await;
    assert_eq!(
        get(&app, "c1").await["desiredVersion"],
        "1.29.0",
        "created at the channel head"
    );
    let reconciler = app.reconciler().await;
    reconciler.run_once().await.unwrap();

    publish(&app, "1.29.1", &["regular"], "2027-06-30").await;
    reconciler.run_once().await.unwrap();
    let c = get(&app, "c1").await;
    assert_eq!(
        c["desiredVersion"], "1.29.0",
        "outside the window nothing moves"
    );
    assert_eq!(
        c["status"]["pendingUpgrade"],
        json!({"version": "1.29.1", "reason": "waiting for the maintenance window",
               "notBefore": "2026-12-05T02:00:00Z"})
    );

    clock.set(at("2026-12-05T02:30:00Z"));
    reconciler.run_once().await.unwrap();
    let c = get(&app, "c1").await;
    assert_eq!(c["desiredVersion"], "1.29.1");
    assert_eq!(c["generation"], 2, "what the agent receives changed");
    assert_eq!(c["status"]["pendingUpgrade"], Value::Null);
    let changes = events(&app, "c1", "cluster.version_changed").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["actor"], "reconciler");
    assert_eq!(changes[0]["detail"]["from"], "1.29.0");
    assert_eq!(changes[0]["detail"]["to"], "1.29.1");
    assert!(
        changes[0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("regular")
    );
    reconciler.run_once().await.unwrap();
    assert_eq!(events(&app, "c1", "cluster.version_changed").await.len(), 1);
}

#[tokio::test]
async fn a_version_past_end_of_support_is_upgraded_outside_the_window() {
    let clock = ManualClock::at(at(TUESDAY));
    let app = TestApp::spawn_at(&clock).await;
    // regular's head 1.28.1 ended support on 2026-06-30
    app.create("acme", "c1", &automatic("regular")).await;
    publish(&app, "1.28.3", &["regular"], "2027-01-31").await;
    app.reconciler().await.run_once().await.unwrap();
    let c = get(&app, "c1").await;
    assert_eq!(c["desiredVersion"], "1.28.3");
    let changes = events(&app, "c1", "cluster.version_changed").await;
    assert!(
        changes[0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("end of support"),
        "{changes:?}"
    );
}

/// The reconciler looks at a tenant's due clusters together in one
/// transaction; one that cannot be reconciled must not hold the others back.
#[tokio::test]
async fn a_cluster_that_cannot_be_reconciled_backs_off_alone_and_its_neighbours_still_move() {
    let clock = ManualClock::at(at(TUESDAY));
    let app = TestApp::spawn_at(&clock).await;
    for name in ["c1", "c2", "c3"] {
        app.create("acme", name, &automatic("regular")).await;
    }
    // c2's stored version no longer parses (as a bad manual fix would leave it)
    sqlx::query("UPDATE clusters SET desired_version = 'not-a-version' WHERE tenant_id = 'acme' AND name = 'c2'")
        .execute(&app.pool)
        .await
        .unwrap();
    // regular's head ended support: c1 and c3 move even outside the window
    publish(&app, "1.28.3", &["regular"], "2027-01-31").await;
    app.reconciler().await.run_once().await.unwrap();
    for name in ["c1", "c3"] {
        assert_eq!(get(&app, name).await["desiredVersion"], "1.28.3", "{name}");
    }
    let (attempts, error): (i32, Option<String>) = sqlx::query_as(
        "SELECT r.attempts, r.last_error FROM cluster_reconcile r
         JOIN clusters c ON c.tenant_id = r.tenant_id AND c.id = r.cluster_id
         WHERE c.tenant_id = 'acme' AND c.name = 'c2'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("not-a-version")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_pinned_version_near_its_end_of_support_carries_a_condition_and_one_event() {
    let clock = ManualClock::at(at(TUESDAY));
    let app = TestApp::spawn_at(&clock).await;
    app.create("acme", "c1", &cluster_body("1.28.2")).await;
    let reconciler = app.reconciler().await;
    for _ in 0..3 {
        reconciler.run_once().await.unwrap();
    }
    let c = get(&app, "c1").await;
    let eos = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "EndOfSupport")
        .cloned()
        .expect("an EndOfSupport condition");
    assert_eq!(eos["status"], "True");
    assert_eq!(events(&app, "c1", "cluster.end_of_support").await.len(), 1);
}

#[tokio::test]
async fn minor_upgrades_go_one_at_a_time_and_the_next_waits_for_convergence() {
    let clock = ManualClock::at(at(TUESDAY));
    let app = TestApp::spawn_at(&clock).await;
    publish(&app, "1.29.0", &[], "2027-06-30").await;
    publish(&app, "1.30.1", &["rapid"], "2027-12-31").await;
    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Healthy on 1.28.2", |s| {
        s["health"] == "Healthy"
    })
    .await;
    // the agent stops, so the first step cannot converge yet
    let sim = agent.stop().await;
    let t = app.owner("acme");
    let r = app
        .patch("/v1/clusters/c1")
        .token(&t)
        .merge_patch(&json!({"mesh": {"upgrade": {"mode": "automatic", "version": null, "channel": "rapid"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["desiredVersion"], "1.28.2",
        "the reconciler moves it, not the PATCH"
    );

    let reconciler = app.reconciler().await;
    reconciler.run_once().await.unwrap();
    assert_eq!(
        get(&app, "c1").await["desiredVersion"],
        "1.29.0",
        "one minor first"
    );
    reconciler.run_once().await.unwrap();
    let c = get(&app, "c1").await;
    assert_eq!(
        c["desiredVersion"], "1.29.0",
        "not the next minor before 1.29.0 converged"
    );
    assert_eq!(c["status"]["pendingUpgrade"]["version"], "1.30.1");
    assert_eq!(c["status"]["pendingUpgrade"]["notBefore"], Value::Null);

    let agent = start_agent(sim, config(&app.base));
    let generation = c["generation"].as_i64().unwrap();
    wait_status(&app, "c1", "Healthy on 1.29.0", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == generation
    })
    .await;
    reconciler.run_once().await.unwrap();
    assert_eq!(get(&app, "c1").await["desiredVersion"], "1.30.1");
    wait_status(&app, "c1", "Healthy on 1.30.1", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == generation + 1
    })
    .await;
    let steps = from_to(&events(&app, "c1", "cluster.version_changed").await);
    assert_eq!(
        steps,
        vec![
            ("1.28.2".into(), "1.29.0".into()),
            ("1.29.0".into(), "1.30.1".into())
        ]
    );
    agent.stop().await;
}

#[tokio::test]
async fn connectivity_transitions_are_recorded_once_each() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Connected", |s| {
        s["connectivity"] == "Connected"
    })
    .await;
    let sim = agent.stop().await;
    let reconciler = app.reconciler().await;

    clock.advance(Days::seconds(120));
    reconciler.run_once().await.unwrap();
    reconciler.run_once().await.unwrap();
    assert_eq!(get(&app, "c1").await["status"]["connectivity"], "Stale");
    clock.advance(Days::minutes(10));
    reconciler.run_once().await.unwrap();
    reconciler.run_once().await.unwrap();
    assert_eq!(
        get(&app, "c1").await["status"]["connectivity"],
        "Disconnected"
    );

    let agent = start_agent(sim, config(&app.base));
    wait_status(&app, "c1", "Connected again", |s| {
        s["connectivity"] == "Connected"
    })
    .await;
    reconciler.run_once().await.unwrap();
    let transitions = from_to(&events(&app, "c1", "cluster.connectivity.changed").await);
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        transitions,
        vec![
            pair("Disconnected", "Connected"),
            pair("Connected", "Stale"),
            pair("Stale", "Disconnected"),
            pair("Disconnected", "Connected"),
        ]
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_generation_that_never_converges_becomes_degraded_after_the_progress_deadline() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    app.create("acme", "c1", &cluster_body("1.28.2")).await;
    let token = app
        .req(Method::POST, "/v1/clusters/c1/bootstrap-tokens")
        .token(&app.owner("acme"))
        .send()
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .req(Method::POST, "/v1/agent/register")
        .json(&json!({"bootstrapToken": token}))
        .send()
        .await;
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let stuck = json!({"observedGeneration": 1, "components": [
        {"name": "istiod", "desiredVersion": "1.28.2", "observedVersion": "1.28.2", "ready": true,
         "desiredReplicas": 2, "readyReplicas": 2},
        {"name": "ztunnel", "desiredVersion": "1.28.2", "observedVersion": null, "ready": false,
         "desiredReplicas": 3, "readyReplicas": 1}]});
    let r = app
        .put("/v1/agent/status")
        .token(&credential)
        .json(&stuck)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(get(&app, "c1").await["status"]["health"], "Progressing");

    clock.advance(Days::minutes(11));
    let c = get(&app, "c1").await;
    assert_eq!(c["status"]["health"], "Degraded");
    let cond = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "ProgressDeadlineExceeded");
    assert!(
        cond["message"].as_str().unwrap().contains("ztunnel"),
        "{cond}"
    );
    let reconciler = app.reconciler().await;
    reconciler.run_once().await.unwrap();
    reconciler.run_once().await.unwrap();
    assert_eq!(
        events(&app, "c1", "cluster.progress_deadline_exceeded")
            .await
            .len(),
        1
    );
}

/// The customer's own policy, in a namespace the mesh uses, and another
/// controller's Gateway (e.g. the platform's ingress).
fn customer_objects(
    sim: &meshfleet_agent::SimCluster,
) -> (meshfleet_agent::ObjectRef, meshfleet_agent::ObjectRef) {
    let policy = meshfleet_agent::ObjectRef::new(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        Some("shop"),
        "allow-frontend",
    );
    sim.insert(
        policy.clone(),
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "allow-frontend", "namespace": "shop"}, "spec": {}}),
    );
    let ingress = meshfleet_agent::ObjectRef::new(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        Some("edge"),
        "public",
    );
    sim.insert(
        ingress.clone(),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "public", "namespace": "edge"},
               "spec": {"gatewayClassName": "gke-l7-global-external-managed",
                        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
    );
    (policy, ingress)
}

/// Polls an operation until it succeeds (30 s at most).
async fn wait_operation(app: &TestApp, op: &str) {
    let t = app.owner("acme");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = app.get(op).token(&t).send().await;
        if o.body["status"] == "Succeeded" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "operation: {}",
            o.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deleting_a_cluster_that_asked_for_a_crd_purge_keeps_the_crds_its_customers_resources_use()
{
    let app = TestApp::spawn().await;
    let mut body = meshfleet_tests::agents::spec("1.28.2");
    body["mesh"]["uninstall"] = json!({"purgeCrds": true});
    app.create("acme", "c1", &body).await;
    let agent = meshfleet_tests::agents::agent_for(&app, "acme", "c1").await;
    wait_status(&app, "c1", "Healthy", |s| s["health"] == "Healthy").await;
    let running = meshfleet_tests::reconciler::run(&app.reconciler().await);
    let (policy, ingress) = customer_objects(&agent.sim);
    let t = app.owner("acme");
    let r = app.delete("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(r.status, 202, "{}", r.text);
    wait_operation(&app, r.header("operation-location").unwrap()).await;

    let snapshot = agent.stop().await.snapshot();
    let crds: Vec<&str> = snapshot
        .keys()
        .filter(|r| r.kind == "CustomResourceDefinition")
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        crds,
        [
            "authorizationpolicies.security.istio.io",
            "gateways.gateway.networking.k8s.io"
        ],
        "the purge took every CRD but the two the customer's objects use"
    );
    assert!(snapshot.contains_key(&policy) && snapshot.contains_key(&ingress));
    let deleted = events(&app, "c1", "cluster.deleted").await;
    let kept = deleted[0]["detail"]["kept"].to_string();
    assert!(
        kept.contains("authorizationpolicies.security.istio.io (shop/allow-frontend)")
            && kept.contains("gateways.gateway.networking.k8s.io (edge/public)"),
        "the deletion says what it kept and why: {kept}"
    );
    running.stop().await;
}

#[tokio::test]
async fn deleting_a_cluster_with_a_connected_agent_uninstalls_the_mesh_first() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Healthy", |s| s["health"] == "Healthy").await;
    let running = meshfleet_tests::reconciler::run(&app.reconciler().await);
    let (policy, ingress) = customer_objects(&agent.sim);
    let t = app.owner("acme");
    let r = app.delete("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(r.status, 202, "{}", r.text);
    let op = r.header("operation-location").unwrap().to_string();
    assert_eq!(r.header("location"), Some(op.as_str()));
    assert_eq!(r.body["status"], "Running");
    assert_eq!(r.body["kind"], "cluster.delete");
    let again = app.delete("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(again.status, 202, "a second DELETE is the same operation");
    assert_eq!(again.header("operation-location"), Some(op.as_str()));

    wait_operation(&app, &op).await;
    assert_eq!(
        app.get("/v1/clusters/c1").token(&t).send().await.status,
        404
    );
    let sim = agent.stop().await;
    let left: Vec<String> = sim
        .snapshot()
        .into_keys()
        .filter(|o| o.namespace.as_deref() == Some("istio-system"))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    assert!(left.is_empty(), "the agent uninstalled the mesh: {left:?}");
    let snapshot = sim.snapshot();
    assert!(
        snapshot.contains_key(&policy),
        "the customer's AuthorizationPolicy stays"
    );
    assert!(snapshot.contains_key(&ingress), "the foreign Gateway stays");
    assert!(
        snapshot.keys().any(|r| r.kind == "CustomResourceDefinition"
            && r.name == "gateways.gateway.networking.k8s.io"),
        "and so does its CRD"
    );
    assert!(
        !snapshot
            .keys()
            .any(|r| r.kind == "Namespace" && r.name == "istio-system"),
        "istio-system, created by the agent and empty, is gone"
    );
    assert!(
        !snapshot
            .keys()
            .any(|r| r.kind == "Deployment" && r.name == "shop-waypoint"),
        "so is the waypoint istiod deployed"
    );
    assert!(
        snapshot
            .keys()
            .any(|r| r.kind == "CustomResourceDefinition"),
        "CRDs stay: deleting one deletes every resource of its kind"
    );
    let deleted = events(&app, "c1", "cluster.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["actor"], "reconciler");
    running.stop().await;
}

#[tokio::test]
async fn force_removes_a_cluster_at_once_and_only_an_owner_may_force() {
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Healthy", |s| s["health"] == "Healthy").await;
    let contributor = app.token("acme", &[TestRole::Contributor]);
    let r = app
        .delete("/v1/clusters/c1?force=true")
        .token(&contributor)
        .send()
        .await;
    r.problem(403);
    let r = app
        .delete("/v1/clusters/c1?force=true")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        app.get("/v1/clusters/c1")
            .token(&app.owner("acme"))
            .send()
            .await
            .status,
        404
    );
    agent.stop().await;
    // a cluster that never had an agent goes at once too
    app.create("acme", "c2", &cluster_body("1.28.2")).await;
    let r = app
        .delete("/v1/clusters/c2")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn deleting_a_cluster_whose_agent_is_disconnected_completes_after_the_disconnect_time() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Healthy", |s| s["health"] == "Healthy").await;
    agent.stop().await;
    let t = app.owner("acme");
    let r = app.delete("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(r.status, 202, "{}", r.text);
    let op = r.header("operation-location").unwrap().to_string();
    let reconciler = app.reconciler().await;
    reconciler.run_once().await.unwrap();
    assert_eq!(
        app.get("/v1/clusters/c1").token(&t).send().await.status,
        200,
        "still uninstalling"
    );
    let r = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&cluster_body("1.28.2"))
        .send()
        .await;
    r.problem(409);

    clock.advance(Days::minutes(11));
    reconciler.run_once().await.unwrap();
    assert_eq!(
        app.get("/v1/clusters/c1").token(&t).send().await.status,
        404
    );
    assert_eq!(
        app.get(&op).token(&t).send().await.body["status"],
        "Succeeded"
    );
    let deleted = events(&app, "c1", "cluster.deleted").await;
    assert!(
        deleted[0]["detail"]["warning"]
            .as_str()
            .unwrap()
            .contains("may still be installed")
    );
}

#[tokio::test]
async fn a_deletion_whose_agent_registered_but_never_reported_waits_the_disconnect_time() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    let t = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.28.2")).await;
    let token = app
        .req(Method::POST, "/v1/clusters/c1/bootstrap-tokens")
        .token(&t)
        .send()
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .req(Method::POST, "/v1/agent/register")
        .json(&json!({"bootstrapToken": token}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.delete("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(
        r.status, 202,
        "an agent registered: it must uninstall first"
    );
    let reconciler = app.reconciler().await;
    clock.advance(Days::minutes(5));
    reconciler.run_once().await.unwrap();
    assert_eq!(
        app.get("/v1/clusters/c1").token(&t).send().await.status,
        200
    );
    clock.advance(Days::minutes(6));
    reconciler.run_once().await.unwrap();
    assert_eq!(
        app.get("/v1/clusters/c1").token(&t).send().await.status,
        404
    );
}
