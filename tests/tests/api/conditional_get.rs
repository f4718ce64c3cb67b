//! Conditional GETs and heartbeats answered from a replica's memory
//! (`api::cache`): a 304 never hides a change committed before the request,
//! whoever committed it (this replica, another one, or a statement straight
//! to the database), a report remembered as unchanged is stored again once
//! another replica stored a different one, a revoked or replaced agent
//! credential stops working at once, and one tenant's memory never answers
//! another's request.

use std::time::{Duration, Instant};

use meshfleet_core::ops::status::Fingerprint;
use meshfleet_model::StatusReport;
use meshfleet_tests::{TestApp, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The cluster's ETag after two conditional GETs answered 304 (the second
/// from memory).
async fn remembered_cluster_etag(app: &TestApp, tenant: &str, name: &str) -> String {
    let token = app.owner(tenant);
    let tag = app
        .get(&format!("/v1/clusters/{name}"))
        .token(&token)
        .send()
        .await
        .etag();
    for _ in 0..2 {
        let r = app
            .get(&format!("/v1/clusters/{name}"))
            .token(&token)
            .header("if-none-match", &tag)
            .send()
            .await;
        assert_eq!(r.status, 304, "{}", r.text);
        assert_eq!(r.etag(), tag);
    }
    tag
}

/// The desired state's ETag after two conditional GETs answered 304.
async fn remembered_desired_etag(app: &TestApp, credential: &str) -> String {
    let tag = app
        .get("/v1/agent/desired-state")
        .token(credential)
        .send()
        .await
        .etag();
    for _ in 0..2 {
        let r = app
            .get("/v1/agent/desired-state")
            .token(credential)
            .header("if-none-match", &tag)
            .send()
            .await;
        assert_eq!(r.status, 304, "{}", r.text);
    }
    tag
}

async fn cluster_with_etag(app: &TestApp, tenant: &str, name: &str, tag: &str) -> u16 {
    app.get(&format!("/v1/clusters/{name}"))
        .token(&app.owner(tenant))
        .header("if-none-match", tag)
        .send()
        .await
        .status
        .as_u16()
}

async fn desired_with_etag(app: &TestApp, credential: &str, tag: &str) -> u16 {
    app.get("/v1/agent/desired-state")
        .token(credential)
        .header("if-none-match", tag)
        .send()
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn a_remembered_cluster_answers_200_right_after_a_change_through_any_replica() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    a.create("acme", "c1", &cluster_body("1.27.1")).await;
    let tag = remembered_cluster_etag(&a, "acme", "c1").await;

    // a labels-only change through this replica
    let patched = a
        .patch("/v1/clusters/c1")
        .token(&a.owner("acme"))
        .merge_patch(&json!({"labels": {"x": "1"}}))
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(cluster_with_etag(&a, "acme", "c1", &tag).await, 200);

    // through the other replica: this one answers 200 at once, no waiting
    let tag = remembered_cluster_etag(&a, "acme", "c1").await;
    let patched = b
        .patch("/v1/clusters/c1")
        .token(&b.owner("acme"))
        .merge_patch(&json!({"labels": {"x": "2"}}))
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(cluster_with_etag(&a, "acme", "c1", &tag).await, 200);
    assert_eq!(
        cluster_with_etag(&a, "acme", "c1", &patched.etag()).await,
        304
    );

    // deleted through the other replica and made again under the same name
    let tag = remembered_cluster_etag(&a, "acme", "c1").await;
    let deleted = b
        .delete("/v1/clusters/c1")
        .token(&b.owner("acme"))
        .send()
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(cluster_with_etag(&a, "acme", "c1", &tag).await, 404);
    b.create("acme", "c1", &cluster_body("1.27.1")).await;
    assert_eq!(cluster_with_etag(&a, "acme", "c1", &tag).await, 200);
}

#[tokio::test]
async fn a_remembered_cluster_answers_200_right_after_a_statement_straight_to_the_database() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let tag = remembered_cluster_etag(&app, "acme", "c1").await;
    sqlx::query(
        "UPDATE clusters SET resource_version = resource_version + 1
         WHERE tenant_id = 'acme' AND name = 'c1'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(cluster_with_etag(&app, "acme", "c1", &tag).await, 200);
}

#[tokio::test]
async fn a_cluster_stops_answering_not_modified_once_its_agent_first_reports() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    let credential = a.registered("acme", "c1").await;
    let tag = remembered_cluster_etag(&a, "acme", "c1").await;
    let reported = b
        .put("/v1/agent/status")
        .token(&credential)
        .json(&json!({"observedGeneration": 1, "components": [],
                      "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3}}))
        .send()
        .await;
    assert_eq!(reported.status, 204, "{}", reported.text);
    // the status is live now: a GET always answers it whole
    let r = a
        .get("/v1/clusters/c1")
        .token(&a.owner("acme"))
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.etag(), tag);
}

#[tokio::test]
async fn a_remembered_desired_state_answers_200_right_after_a_change_through_another_replica() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    let credential = a.registered("acme", "c1").await;
    let tag = remembered_desired_etag(&a, &credential).await;
    let patched = b
        .patch("/v1/clusters/c1")
        .token(&b.owner("acme"))
        .merge_patch(&json!({"mesh": {"mtls": "permissive"}}))
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let r = a
        .get("/v1/agent/desired-state")
        .token(&credential)
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["mtls"], "permissive");
    assert_eq!(desired_with_etag(&a, &credential, &r.etag()).await, 304);
}

#[tokio::test]
async fn a_remembered_desired_state_answers_200_right_after_a_statement_straight_to_the_database() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    let tag = remembered_desired_etag(&app, &credential).await;
    // as the reconciler or a rollout writes: a new generation in one statement
    sqlx::query(
        "UPDATE clusters SET mesh = jsonb_set(mesh, '{mtls}', '\"permissive\"'),
             generation = generation + 1, resource_version = resource_version + 1
         WHERE tenant_id = 'acme' AND name = 'c1'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let r = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["generation"], 2);
}

#[tokio::test]
async fn a_remembered_credential_is_refused_right_after_it_is_revoked_or_replaced_elsewhere() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    let credential = a.registered("acme", "c1").await;
    let tag = remembered_desired_etag(&a, &credential).await;
    let revoked = b
        .delete("/v1/clusters/c1/agent-credential")
        .token(&b.owner("acme"))
        .send()
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(desired_with_etag(&a, &credential, &tag).await, 401);

    // replaced by a new registration through the other replica
    let first = a.register_agent("acme", "c1").await;
    let tag = remembered_desired_etag(&a, &first).await;
    let second = b.register_agent("acme", "c1").await;
    assert_eq!(desired_with_etag(&a, &first, &tag).await, 401);
    assert_eq!(desired_with_etag(&a, &second, &tag).await, 304);

    // rotated: the old one keeps its grace period, then only the new one works
    let rotated = b
        .req(Method::POST, "/v1/agent/credential/rotate")
        .token(&second)
        .send()
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let third = rotated.body["credential"].as_str().unwrap().to_string();
    assert_eq!(desired_with_etag(&a, &second, &tag).await, 304, "grace");
    sqlx::query(
        "UPDATE agent_credentials SET previous_valid_until = now() - interval '1 second'
         WHERE tenant_id = 'acme'",
    )
    .execute(&a.pool)
    .await
    .unwrap();
    assert_eq!(desired_with_etag(&a, &second, &tag).await, 401);
    assert_eq!(desired_with_etag(&a, &third, &tag).await, 304);
}

#[tokio::test]
async fn one_tenants_remembered_answers_never_reach_another_tenant() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    let tag = remembered_cluster_etag(&app, "acme", "c1").await;
    let desired = remembered_desired_etag(&app, &credential).await;

    // the same name in another tenant is another cluster; none is a 404
    assert_eq!(cluster_with_etag(&app, "globex", "c1", &tag).await, 404);
    app.create("globex", "c1", &cluster_body("1.27.1")).await;
    assert_eq!(cluster_with_etag(&app, "globex", "c1", &tag).await, 200);

    // a credential with another tenant's name written into it is no credential
    let forged = credential.replacen(".acme.", ".globex.", 1);
    assert_ne!(forged, credential);
    assert_eq!(desired_with_etag(&app, &forged, &desired).await, 401);
    assert_eq!(desired_with_etag(&app, &credential, &desired).await, 304);
}

fn status_report(ztunnel_ready: bool) -> Value {
    json!({
        "observedGeneration": 1,
        "components": [
            {"name": "istiod", "desiredVersion": "1.27.1", "observedVersion": "1.27.1", "ready": true,
             "desiredReplicas": 2, "readyReplicas": 2},
            {"name": "ztunnel", "desiredVersion": "1.27.1", "observedVersion": "1.27.1",
             "ready": ztunnel_ready, "desiredReplicas": 3, "readyReplicas": if ztunnel_ready { 3 } else { 2 }}
        ],
        "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3, "agentVersion": "0.1.0"}
    })
}

async fn put_status(app: &TestApp, credential: &str, report: &Value) {
    let r = app
        .put("/v1/agent/status")
        .token(credential)
        .json(report)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

async fn last_heartbeat(app: &TestApp, id: Uuid) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar(
        "SELECT last_heartbeat_at FROM cluster_status WHERE tenant_id = 'acme' AND cluster_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_report_remembered_as_unchanged_is_stored_again_once_another_replica_stored_a_change() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    let credential = a.registered("acme", "c1").await;
    let cluster = a
        .get("/v1/clusters/c1")
        .token(&a.owner("acme"))
        .send()
        .await;
    let id: Uuid = cluster.body["id"].as_str().unwrap().parse().unwrap();
    let (ready, not_ready) = (status_report(true), status_report(false));
    let hash = |v: &Value| {
        let report: StatusReport = serde_json::from_value(v.clone()).unwrap();
        Fingerprint::of(&report).unwrap().hash
    };

    // Replica a comes to remember the stored report (its first write's own
    // notification makes it forget once; the next unchanged report, checked
    // against the database, is remembered).
    put_status(&a, &credential, &ready).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.state().hub.cache.report_is("acme", id, &hash(&ready)) {
        assert!(
            Instant::now() < deadline,
            "replica a never remembered the report"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        put_status(&a, &credential, &ready).await;
    }

    // Answered from memory, the heartbeat is still written (within the flush interval).
    let before = last_heartbeat(&a, id).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    put_status(&a, &credential, &ready).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_heartbeat(&a, id).await <= before {
        assert!(
            Instant::now() < deadline,
            "the remembered heartbeat was never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // b stores a change; the report a remembered is a change again, through a.
    put_status(&b, &credential, &not_ready).await;
    put_status(&a, &credential, &ready).await;
    let c1 = a
        .get("/v1/clusters/c1")
        .token(&a.owner("acme"))
        .send()
        .await;
    assert_eq!(c1.body["status"]["health"], "Healthy", "{}", c1.text);
    let history = a
        .get("/v1/clusters/c1/status/history")
        .token(&a.owner("acme"))
        .send()
        .await;
    let healths: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["health"].as_str().unwrap())
        .collect();
    assert_eq!(
        healths.len(),
        3,
        "ready, not ready, ready again: {}",
        history.text
    );
    assert_ne!(healths[1], "Healthy", "{}", history.text);
}
