use meshfleet_tests::{TestApp, cluster_body};
use serde_json::json;

#[tokio::test]
async fn every_error_path_answers_problem_json_with_the_request_id() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.27.1")).await;

    // 400 malformed JSON
    let r = app
        .put("/v1/clusters/c2")
        .token(&t)
        .raw("application/json", "{\"mesh\": ")
        .send()
        .await;
    assert!(
        r.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    let r = app
        .patch("/v1/clusters/c1")
        .token(&t)
        .raw("application/merge-patch+json", "nope")
        .send()
        .await;
    r.problem(400);
    // 400 bad query
    app.get("/v1/clusters?limit=0")
        .token(&t)
        .send()
        .await
        .problem(400);
    app.get("/v1/clusters?limit=abc")
        .token(&t)
        .send()
        .await
        .problem(400);
    app.get("/v1/clusters?cursor=%21%21")
        .token(&t)
        .send()
        .await
        .problem(400);
    app.get("/v1/clusters?colour=red")
        .token(&t)
        .send()
        .await
        .problem(400);
    app.get("/v1/events?cursor=zzz")
        .token(&t)
        .send()
        .await
        .problem(400);
    app.get("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", "unquoted")
        .send()
        .await
        .problem(400);
    // 401, 403: see auth.rs; 404 for unknown routes
    app.get("/v2/nothing").token(&t).send().await.problem(404);
    // 405
    let r = app
        .req(reqwest::Method::POST, "/v1/clusters")
        .token(&t)
        .send()
        .await;
    r.problem(405);
    assert!(r.header("allow").is_some());
    // 412: see clusters.rs; 413
    let huge = format!(
        "{{\"labels\": {{\"a\": \"{}\"}}}}",
        "x".repeat(1024 * 1024 + 10)
    );
    app.put("/v1/clusters/c3")
        .token(&t)
        .raw("application/json", huge)
        .send()
        .await
        .problem(413);
    // 415
    let r = app
        .put("/v1/clusters/c3")
        .token(&t)
        .raw("text/plain", "hello")
        .send()
        .await;
    r.problem(415);
    let r = app
        .patch("/v1/clusters/c1")
        .token(&t)
        .raw("application/json-patch+json", "[]")
        .send()
        .await;
    r.problem(415);
    // 422
    let r = app
        .put("/v1/clusters/Not_A_Name")
        .token(&t)
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    assert_eq!(r.problem(422)["errors"][0]["pointer"], "/name");
    let r = app
        .patch("/v1/clusters/c1")
        .token(&t)
        .merge_patch(&json!([1]))
        .send()
        .await;
    r.problem(422);
    // An incoming request id is kept.
    let r = app
        .get("/v1/clusters/zz")
        .token(&t)
        .header("x-request-id", "trace-abc-123")
        .send()
        .await;
    assert_eq!(r.problem(404)["instance"], "trace-abc-123");
    // Nothing of the failed writes was stored.
    let list = app.get("/v1/clusters").token(&t).send().await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn health_probes_metrics_and_docs_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").send().await.status, 200);
    assert_eq!(app.get("/readyz").send().await.status, 200);
    app.get("/v1/clusters").send().await;
    let metrics = app.get("/metrics").send().await;
    assert!(
        metrics.text.contains("meshfleet_http_requests_total"),
        "{}",
        metrics.text
    );
    let doc = app.get("/openapi.json").send().await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/clusters/{name}"]["put"].is_object());
    let docs = app.get("/docs/").send().await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.text.contains("swagger"),
        "the docs page is served locally"
    );
}

#[tokio::test]
async fn readiness_fails_with_a_problem_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.pool.close().await;
    let r = app.get("/readyz").send().await;
    r.problem(503);
    assert!(
        !r.text.contains("sqlx") && !r.text.contains("pool"),
        "no internals leak: {}",
        r.text
    );
}

#[tokio::test]
async fn a_constraint_violation_becomes_a_conflict_not_a_server_error() {
    let pool = meshfleet_tests::fresh_database().await;
    let mut tx = pool.begin().await.unwrap();
    // A bootstrap token for a cluster that does not exist (as when it is deleted mid-request).
    let err = meshfleet_core::store::agents::insert_bootstrap_token(
        &mut tx,
        "acme",
        uuid::Uuid::new_v4(),
        b"hash",
        chrono::Utc::now(),
        "me",
    )
    .await
    .unwrap_err();
    let api: meshfleet_api::error::ApiError = err.into();
    assert_eq!(api.status(), reqwest::StatusCode::CONFLICT, "{api:?}");
    assert!(api.to_string().contains("deleted"));
}
