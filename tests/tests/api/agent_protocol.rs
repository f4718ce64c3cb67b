//! The agent's protocol, driven over raw HTTP (the real agent is exercised in fleet.rs).

use std::time::{Duration, Instant};

use meshfleet_tests::agents::wait_status;
use meshfleet_tests::{TestApp, TestRole as Role, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

fn report(observed: i64, ztunnel_failed: bool) -> Value {
    let mut ztunnel = json!({"name": "ztunnel", "desiredVersion": "1.27.1", "observedVersion": "1.27.1",
        "ready": true, "desiredReplicas": 3, "readyReplicas": 3, "conditions": []});
    if ztunnel_failed {
        ztunnel["ready"] = json!(false);
        ztunnel["message"] =
            json!("DaemonSet.apps \"ztunnel\" is invalid: spec.template: forbidden");
        ztunnel["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "ApplyFailed",
            "message": "forbidden", "lastTransitionTime": "2026-11-26T10:00:00Z"}]);
    }
    json!({
        "observedGeneration": observed,
        "components": [
            {"name": "istiod", "desiredVersion": "1.27.1", "observedVersion": "1.27.1", "ready": true,
             "desiredReplicas": 2, "readyReplicas": 2},
            ztunnel
        ],
        "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3, "agentVersion": "0.1.0"}
    })
}

#[tokio::test]
async fn a_bootstrap_token_works_once_and_a_bad_one_creates_nothing() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let token = app.bootstrap_token("acme", "c1").await;
    assert!(token.len() > 60, "256 random bits and more");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM bootstrap_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes(), "only a hash is stored");

    let first = app.register_with(&token).await;
    assert_eq!(first.status, 201);
    let credential = first.body["credential"].as_str().unwrap().to_string();
    let again = app.register_with(&token).await;
    again.problem(401);
    assert!(
        again.body["detail"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    // The first credential still works: the reuse replaced nothing.
    let ds = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await;
    assert_eq!(ds.status, 200);

    app.register_with(
        "mfbt.acme.00000000000000000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await
    .problem(401);
    app.register_with("garbage").await.problem(401);

    let expired = app.bootstrap_token("acme", "c1").await;
    sqlx::query("UPDATE bootstrap_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    app.register_with(&expired).await.problem(401);
    let creds: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(creds, 1);
}

#[tokio::test]
async fn user_tokens_and_agent_credentials_do_not_mix() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    let user = app.owner("acme");
    let r = app.get("/v1/agent/desired-state").token(&user).send().await;
    assert!(
        r.problem(401)["detail"]
            .as_str()
            .unwrap()
            .contains("agent credential")
    );
    app.req(Method::PUT, "/v1/agent/status")
        .token(&user)
        .json(&report(1, false))
        .send()
        .await
        .problem(401);
    let r = app.get("/v1/clusters/c1").token(&credential).send().await;
    assert!(
        r.problem(401)["detail"]
            .as_str()
            .unwrap()
            .contains("/v1/agent")
    );
    app.get("/v1/clusters")
        .token(&credential)
        .send()
        .await
        .problem(401);
}

#[tokio::test]
async fn a_credential_reaches_only_its_own_cluster() {
    let app = TestApp::spawn().await;
    let a = app.registered("acme", "a").await;
    let _b = app.registered("acme", "b").await;
    let b_id = app
        .get("/v1/clusters/b")
        .token(&app.owner("acme"))
        .send()
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    // Point credential a at cluster b: the hash no longer matches anything.
    let parts: Vec<&str> = a.rsplitn(3, '.').collect();
    let forged = format!("{}.{}.{}", parts[2], b_id, parts[0]);
    app.get("/v1/agent/desired-state")
        .token(&forged)
        .send()
        .await
        .problem(401);
    let ds = app.get("/v1/agent/desired-state").token(&a).send().await;
    assert_eq!(ds.body["clusterName"], "a");
    // And another tenant's agent sees nothing of acme.
    let g = app.registered("globex", "a").await;
    let ds = app.get("/v1/agent/desired-state").token(&g).send().await;
    assert_ne!(
        ds.body["clusterId"],
        app.get("/v1/clusters/a")
            .token(&app.owner("acme"))
            .send()
            .await
            .body["id"]
    );
}

#[tokio::test]
async fn the_desired_state_resolves_the_version_and_answers_not_modified_for_its_etag() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    let ds = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await;
    assert_eq!(ds.status, 200);
    assert_eq!(ds.body["version"], "1.27.1");
    assert_eq!(ds.body["revision"], "1-27-1");
    assert_eq!(ds.body["images"]["istiod"], "docker.io/istio/pilot:1.27.1");
    assert_eq!(ds.body["generation"], 1);
    let etag = ds.etag();
    let same = app
        .get("/v1/agent/desired-state?waitSeconds=0")
        .token(&credential)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(same.status, 304);
    app.get("/v1/agent/desired-state?waitSeconds=61")
        .token(&credential)
        .send()
        .await
        .problem(400);
    // A labels-only change does not change what the agent must do.
    app.patch("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .merge_patch(&json!({"labels": {"x": "y"}}))
        .send()
        .await;
    let still = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(still.status, 304);
}

async fn long_poll_wakes_on_change(waiter: &TestApp, writer: &TestApp) {
    let credential = writer.registered("acme", "c1").await;
    let etag = waiter
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await
        .etag();
    let poll = async {
        let started = Instant::now();
        let r = waiter
            .get("/v1/agent/desired-state?waitSeconds=30")
            .token(&credential)
            .header("if-none-match", &etag)
            .send()
            .await;
        (r, started.elapsed())
    };
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = writer
            .patch("/v1/clusters/c1")
            .token(&writer.owner("acme"))
            .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
            .send()
            .await;
        assert_eq!(r.status, 200);
        Instant::now()
    };
    let ((reply, elapsed), _) = tokio::join!(poll, change);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["version"], "1.28.2");
    assert_eq!(reply.body["generation"], 2);
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by the change, not by the 30 s timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_when_the_desired_state_changes() {
    let app = TestApp::spawn().await;
    long_poll_wakes_on_change(&app, &app).await;
}

#[tokio::test]
async fn a_change_written_through_one_replica_wakes_an_agent_waiting_on_another() {
    let a = TestApp::spawn().await;
    let b = a.replica().await;
    long_poll_wakes_on_change(&b, &a).await;
}

#[tokio::test]
async fn a_long_poll_without_a_change_answers_not_modified_after_the_wait() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    let etag = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await
        .etag();
    let started = Instant::now();
    let r = app
        .get("/v1/agent/desired-state?waitSeconds=1")
        .token(&credential)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(r.status, 304);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn status_reports_show_up_as_health_and_unchanged_ones_only_beat() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let credential = app.registered("acme", "c1").await;
    let put = |body: Value| {
        let credential = credential.clone();
        let app = &app;
        async move {
            app.req(Method::PUT, "/v1/agent/status")
                .token(&credential)
                .json(&body)
                .send()
                .await
        }
    };
    assert_eq!(put(report(1, false)).await.status, 204);
    let c = app.get("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(c.body["status"]["health"], "Healthy", "{}", c.text);
    assert_eq!(c.body["status"]["connectivity"], "Connected");
    assert_eq!(c.body["status"]["observedGeneration"], 1);
    assert_eq!(c.body["status"]["facts"]["nodeCount"], 3);
    let first_beat = c.body["status"]["lastHeartbeatAt"]
        .as_str()
        .unwrap()
        .to_string();

    // an unchanged report moves the heartbeat: at once, or within the
    // flush interval when this replica knew the report was unchanged
    assert_eq!(put(report(1, false)).await.status, 204);
    wait_status(&app, "c1", "the heartbeat to move", |s| {
        s["lastHeartbeatAt"].as_str() != Some(first_beat.as_str())
    })
    .await;
    let history = app
        .get("/v1/clusters/c1/status/history")
        .token(&t)
        .send()
        .await;
    assert_eq!(
        history.body["items"].as_array().unwrap().len(),
        1,
        "an unchanged report is not history"
    );

    assert_eq!(put(report(1, true)).await.status, 204);
    let c = app.get("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(c.body["status"]["health"], "Degraded");
    let ztunnel = &c.body["status"]["components"][1];
    assert!(ztunnel["message"].as_str().unwrap().contains("forbidden"));
    let history = app
        .get("/v1/clusters/c1/status/history?limit=1")
        .token(&t)
        .send()
        .await;
    assert_eq!(history.body["items"][0]["health"], "Degraded");
    let next = history.body["nextCursor"].as_str().unwrap();
    let older = app
        .get(&format!(
            "/v1/clusters/c1/status/history?limit=1&cursor={next}"
        ))
        .token(&t)
        .send()
        .await;
    assert_eq!(older.body["items"][0]["health"], "Healthy");
    assert_eq!(older.body["nextCursor"], Value::Null);

    let events = app.get("/v1/events?cluster=c1").token(&t).send().await;
    let health_events: Vec<&Value> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "cluster.health_changed")
        .collect();
    assert_eq!(health_events.len(), 2);
    assert_eq!(health_events[0]["detail"]["to"], "Degraded");
    assert_eq!(health_events[0]["actor"], "agent:c1");

    // A spec change makes the same report stale: Progressing until the agent catches up.
    app.patch("/v1/clusters/c1")
        .token(&t)
        .merge_patch(&json!({"mesh": {"mtls": "permissive"}}))
        .send()
        .await;
    put(report(1, false)).await;
    let c = app.get("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(c.body["status"]["health"], "Progressing");

    let bad = json!({"observedGeneration": 1, "components": [{"name": "", "ready": true}]});
    put(bad).await.problem(422);
}

#[tokio::test]
async fn the_history_is_bounded() {
    let mut config = meshfleet_tests::test_config();
    config.settings.status_history_keep = 5;
    let app = TestApp::spawn_with(config).await;
    let credential = app.registered("acme", "c1").await;
    for generation in 1..=12 {
        let r = app
            .req(Method::PUT, "/v1/agent/status")
            .token(&credential)
            .json(&report(generation, false))
            .send()
            .await;
        assert_eq!(r.status, 204);
    }
    let history = app
        .get("/v1/clusters/c1/status/history")
        .token(&app.owner("acme"))
        .send()
        .await;
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["observedGeneration"], 12);
}

#[tokio::test]
async fn credentials_can_be_rotated_revoked_and_replaced() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let old = app.registered("acme", "c1").await;
    let rotated = app
        .req(Method::POST, "/v1/agent/credential/rotate")
        .token(&old)
        .send()
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["credential"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(
        app.get("/v1/agent/desired-state")
            .token(&new)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/v1/agent/desired-state")
            .token(&old)
            .send()
            .await
            .status,
        200,
        "grace period"
    );
    app.req(Method::POST, "/v1/agent/credential/rotate")
        .token(&old)
        .send()
        .await
        .problem(409);

    // Re-registering with a new bootstrap token replaces the credential.
    let token = app.bootstrap_token("acme", "c1").await;
    let again = app.register_with(&token).await;
    let newest = again.body["credential"].as_str().unwrap().to_string();
    app.get("/v1/agent/desired-state")
        .token(&new)
        .send()
        .await
        .problem(401);
    assert_eq!(
        app.get("/v1/agent/desired-state")
            .token(&newest)
            .send()
            .await
            .status,
        200
    );

    // Revoked by the tenant.
    let reader = app.token("acme", &[Role::Reader]);
    app.delete("/v1/clusters/c1/agent-credential")
        .token(&reader)
        .send()
        .await
        .problem(403);
    assert_eq!(
        app.delete("/v1/clusters/c1/agent-credential")
            .token(&t)
            .send()
            .await
            .status,
        204
    );
    app.get("/v1/agent/desired-state")
        .token(&newest)
        .send()
        .await
        .problem(401);
    app.delete("/v1/clusters/c1/agent-credential")
        .token(&t)
        .send()
        .await
        .problem(404);

    // Another tenant can neither mint tokens for nor revoke acme's cluster.
    let g = app.owner("globex");
    app.req(Method::POST, "/v1/clusters/c1/bootstrap-tokens")
        .token(&g)
        .send()
        .await
        .problem(404);
    app.delete("/v1/clusters/c1/agent-credential")
        .token(&g)
        .send()
        .await
        .problem(404);
    app.get("/v1/clusters/c1/status/history")
        .token(&g)
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn deleting_a_cluster_ends_its_agents_access() {
    let app = TestApp::spawn().await;
    let credential = app.registered("acme", "c1").await;
    assert_eq!(
        app.delete("/v1/clusters/c1?force=true")
            .token(&app.owner("acme"))
            .send()
            .await
            .status,
        204
    );
    app.get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await
        .problem(401);
}

#[tokio::test]
async fn the_agent_manifest_installs_the_agent_with_a_fresh_working_token() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let r = app
        .get("/v1/clusters/c1/agent-manifest")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    let yaml = &r.text;
    for kind in [
        "kind: Namespace",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: Secret",
        "kind: Deployment",
    ] {
        assert!(yaml.contains(kind), "missing {kind}");
    }
    assert!(
        !yaml.contains("REPLACE_WITH"),
        "every placeholder is filled"
    );
    assert!(
        yaml.contains(&format!("url: \"{}\"", app.base)),
        "the service URL comes from the request"
    );
    let token = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(
        app.register_with(token).await.status,
        201,
        "the embedded token registers"
    );
    let reader = app.token("acme", &[Role::Reader]);
    app.get("/v1/clusters/c1/agent-manifest")
        .token(&reader)
        .send()
        .await
        .problem(403);
    app.get("/v1/clusters/c1/agent-manifest")
        .token(&app.owner("globex"))
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn revoking_voids_unused_bootstrap_tokens_and_a_registration_voids_older_ones() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let leaked = app.bootstrap_token("acme", "c1").await;
    let used = app.bootstrap_token("acme", "c1").await;
    assert_eq!(app.register_with(&used).await.status, 201);
    app.register_with(&leaked).await.problem(401);

    let leaked_again = app.bootstrap_token("acme", "c1").await;
    let r = app
        .delete("/v1/clusters/c1/agent-credential")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 204);
    app.register_with(&leaked_again).await.problem(401);
}

#[tokio::test]
async fn a_conditional_get_never_hides_a_status_change() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let credential = app.registered("acme", "c1").await;
    let etag = app.get("/v1/clusters/c1").token(&t).send().await.etag();
    app.req(Method::PUT, "/v1/agent/status")
        .token(&credential)
        .json(&report(1, false))
        .send()
        .await;
    let r = app
        .get("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"]["health"], "Healthy");
}

#[tokio::test]
async fn nul_characters_are_the_clients_mistake_not_a_server_error() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let credential = app.registered("acme", "c1").await;
    app.get("/v1/clusters/%00")
        .token(&t)
        .send()
        .await
        .problem(404);
    app.delete("/v1/clusters/%00")
        .token(&t)
        .send()
        .await
        .problem(404);
    app.get("/v1/events?cluster=%00")
        .token(&t)
        .send()
        .await
        .problem(400);
    let mut bad = report(1, false);
    bad["components"][0]["message"] = json!("nul \u{0000} here");
    app.req(Method::PUT, "/v1/agent/status")
        .token(&credential)
        .json(&bad)
        .send()
        .await
        .problem(400);
}

/// Unchanged reports arriving together are written in one batch; a changed
/// report among them (even of the same cluster, at the same moment) still
/// takes the full write and is stored.
#[tokio::test]
async fn concurrent_heartbeats_are_recorded_together_and_a_change_among_them_is_stored() {
    let app = TestApp::spawn().await;
    let mut credentials = Vec::new();
    for i in 0..20 {
        let credential = app.registered("acme", &format!("hb-{i}")).await;
        let first = app
            .put("/v1/agent/status")
            .token(&credential)
            .json(&report(1, false))
            .send()
            .await;
        assert_eq!(first.status, 204, "{}", first.text);
        credentials.push(credential);
    }
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(last_heartbeat_at) FROM cluster_status")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut sends = Vec::new();
    for credential in &credentials {
        sends.push(
            app.put("/v1/agent/status")
                .token(credential)
                .json(&report(1, false))
                .send(),
        );
    }
    sends.push(
        app.put("/v1/agent/status")
            .token(&credentials[0])
            .json(&report(1, true))
            .send(),
    );
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.status, 204, "{}", r.text);
    }
    // written in the batch before the answer, or (known unchanged) within the
    // flush interval
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let beaten: i64 =
            sqlx::query_scalar("SELECT count(*) FROM cluster_status WHERE last_heartbeat_at > $1")
                .bind(before)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if beaten == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every heartbeat is recorded: {beaten} of 20"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let degraded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cluster_status_history h
         JOIN clusters c ON c.tenant_id = h.tenant_id AND c.id = h.cluster_id
         WHERE c.name = 'hb-0' AND h.health <> 'Healthy'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        degraded, 1,
        "the changed report was stored, not taken for a heartbeat"
    );
}
