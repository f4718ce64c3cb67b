//! The OpenAPI document is the contract: what it states, the server does
//! (scripts/contract.sh fuzzes that with schemathesis; these are the cases it
//! found, kept as regressions).

use meshfleet_tests::{Reply, TestApp, TestRole as Role, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

async fn put_cluster(app: &TestApp, token: &str, name: &str, body: &Value) -> Reply {
    app.put(&format!("/v1/clusters/{name}"))
        .token(token)
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn every_operation_states_its_limits_and_outages_with_retry_after() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").send().await.body;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            for status in ["429", "503"] {
                let response = &op["responses"][status];
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}: {response}"
                );
                assert!(response["content"]["application/problem+json"].is_object());
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(operations > 25, "{operations}");
    // The same document as committed (and as `meshfleet openapi` writes it).
    let committed: Value =
        serde_json::from_str(include_str!("../../../openapi/openapi.json")).unwrap();
    assert_eq!(doc, committed);
}

#[tokio::test]
async fn entity_tags_follow_the_documented_grammar() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let etag = app
        .create("acme", "c1", &cluster_body("1.27.1"))
        .await
        .etag();
    let get = |value: &'static str| {
        app.get("/v1/clusters/c1")
            .token(&t)
            .header("if-none-match", value)
            .send()
    };
    // A quote inside a tag, or an unquoted or weak one, is malformed.
    for bad in ["\"a\"b\"", "abc", "W/\"a\"", "\"a\",", "*, \"a\""] {
        get(bad).await.problem(400);
    }
    assert_eq!(get("\"a\" ,  \"b\"").await.status, 200);
    assert_eq!(get("*").await.status, 304);
    let r = app
        .get("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", &format!("\"x\", {etag}"))
        .send()
        .await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn json_numbers_are_read_by_value_and_objects_only_from_objects() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    // 2.0 is the integer 2, as JSON Schema says.
    let mut body = cluster_body("1.27.1");
    body["mesh"]["components"] = json!({"istiod": {"replicas": 3.0}});
    let r = put_cluster(&app, &t, "c1", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["mesh"]["components"]["istiod"]["replicas"], 3);
    body["mesh"]["components"] = json!({"istiod": {"replicas": 2.5}});
    let r = put_cluster(&app, &t, "c1", &body).await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/mesh/components/istiod/replicas"
    );
    // serde would read a struct from the list of its fields; the API does not.
    let body = json!({"mesh": {"upgrade": ["manual", "1.27.1", null]}});
    let r = put_cluster(&app, &t, "c2", &body).await;
    assert_eq!(r.problem(422)["errors"][0]["pointer"], "/mesh/upgrade");
    let r = app
        .req(Method::POST, "/v1/agent/register")
        .json(&json!({"bootstrapToken": "x", "facts": [null, null]}))
        .send()
        .await;
    assert_eq!(r.problem(422)["errors"][0]["pointer"], "/facts");
}

#[tokio::test]
async fn any_cursor_of_the_documented_shape_is_a_position_and_others_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.owner("ops");
    let sre = app.token("ops", &[Role::Owner, Role::Sre]);
    for name in ["a", "b", "c"] {
        app.create("ops", name, &cluster_body("1.27.1")).await;
    }
    let app = &app;
    let page = |path: String, token: &str| {
        let token = token.to_string();
        async move { app.get(&path).token(&token).send().await }
    };
    // Handed out: the next page starts after it.
    let first = page("/v1/clusters?limit=1".into(), &t).await;
    let next = first.body["nextCursor"].as_str().unwrap().to_string();
    let second = page(format!("/v1/clusters?limit=1&cursor={next}"), &t).await;
    assert_eq!(second.body["items"][0]["name"], "b");
    // Never handed out, but of the shape: a position all the same ("a" in hex,
    // a NUL, bytes that are not UTF-8).
    for cursor in ["c2.61", "c2.00", "c2.ff", "c2."] {
        let r = page(format!("/v1/clusters?cursor={cursor}"), &t).await;
        assert_eq!(r.status, 200, "{cursor}: {}", r.text);
    }
    let r = page("/v1/clusters?cursor=c2.61".into(), &t).await;
    assert_eq!(r.body["items"][0]["name"], "b");
    for (path, cursor) in [
        ("/v1/events", "e2.-999999999999999999"),
        (
            "/v1/rollouts",
            "r2.-999999999999999999.00000000000000000000000000000000",
        ),
        (
            "/v1/rollouts",
            "r2.999999999999999999.ffffffffffffffffffffffffffffffff",
        ),
        ("/v1/clusters/a/status/history", "h2.5"),
        ("/v1/ops/clusters", "o2.-1.00.6161"),
    ] {
        let r = page(format!("{path}?cursor={cursor}"), &sre).await;
        assert_eq!(r.status, 200, "{path} {cursor}: {}", r.text);
    }
    // Not of the shape: 400, naming the pattern.
    for (path, cursor) in [
        ("/v1/clusters", "c2.6"),
        ("/v1/clusters", "c2.AB"),
        ("/v1/clusters", "e2.1"),
        ("/v1/events", "e2.1234567890123456789"),
        ("/v1/events", "e2.1.2"),
        ("/v1/rollouts", "r2.1.abc"),
    ] {
        let r = page(format!("{path}?cursor={cursor}"), &sre).await;
        assert!(
            r.problem(400)["detail"]
                .as_str()
                .unwrap()
                .contains("pattern"),
            "{path} {cursor}"
        );
    }
}

#[tokio::test]
async fn selectors_lists_and_durations_take_exactly_their_documented_forms() {
    let app = TestApp::spawn().await;
    let t = app.owner("ops");
    let sre = app.token("ops", &[Role::Sre]);
    app.create("ops", "a", &cluster_body("1.27.1")).await;
    let app = &app;
    let status = |path: &'static str, token: &str| {
        let token = token.to_string();
        async move { app.get(path).token(&token).send().await.status.as_u16() }
    };
    assert_eq!(
        status("/v1/clusters?labelSelector=%20env%20%3D%20prod%20", &t).await,
        200
    );
    // Whitespace other than spaces is not in the grammar, even where it could be trimmed.
    assert_eq!(
        status("/v1/clusters?labelSelector=env%3Dprod%09", &t).await,
        400
    );
    assert_eq!(
        status("/v1/clusters?labelSelector=%E3%80%80", &t).await,
        400
    );
    assert_eq!(
        status("/v1/clusters?health=%20Healthy%20,Degraded", &t).await,
        200
    );
    assert_eq!(status("/v1/clusters?health=Healthy%09", &t).await, 400);
    assert_eq!(status("/v1/ops/clusters?staleFor=90s", &sre).await, 200);
    assert_eq!(status("/v1/ops/clusters?staleFor=1h30m", &sre).await, 400);
    assert_eq!(status("/v1/ops/clusters?staleFor=010m", &sre).await, 400);
    assert_eq!(status("/v1/ops/sli?window=7d", &sre).await, 200);
    assert_eq!(status("/v1/ops/sli?window=10080m", &sre).await, 200);
    assert_eq!(status("/v1/ops/sli?window=10081m", &sre).await, 400);
}

#[tokio::test]
async fn text_limits_count_characters_and_times_are_strict() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    // `HH:MM` is two digits each (Rust would read "+1" as 1).
    let mut body = cluster_body("1.27.1");
    body["mesh"]["maintenanceWindow"] =
        json!({"slots": [{"day": "monday", "start": "+1:00", "durationMinutes": 60}]});
    let r = put_cluster(&app, &t, "c1", &body).await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/mesh/maintenanceWindow/slots/0/start"
    );
    // 63 characters of two bytes each is a valid rollout name.
    app.create("acme", "c2", &cluster_body("1.27.1")).await;
    let name = "é".repeat(63);
    let r = app
        .req(Method::POST, "/v1/rollouts")
        .token(&t)
        .json(&json!({"name": name, "targetVersion": "1.28.2", "stages": [{"name": "all"}]}))
        .send()
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // An agent's condition time is RFC 3339, with the `T`.
    let credential = app.registered("acme", "c3").await;
    let report = |at: &str| {
        json!({"observedGeneration": 1, "conditions": [
            {"type": "Drifted", "status": "False", "lastTransitionTime": at}]})
    };
    let app = &app;
    let put = |body: Value| {
        let credential = credential.clone();
        async move {
            app.put("/v1/agent/status")
                .token(&credential)
                .json(&body)
                .send()
                .await
        }
    };
    assert_eq!(put(report("2026-11-27T10:00:00Z")).await.status, 204);
    let r = put(report("2026-11-27 10:00:00Z")).await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/conditions/0/lastTransitionTime"
    );
    // NUL cannot be stored: a client's mistake, 400 (never a 500).
    let r = put(json!({"observedGeneration": 1, "facts": {"platform": "a\u{0}b"}})).await;
    r.problem(400);
}

#[tokio::test]
async fn an_invalid_body_is_refused_whatever_the_preconditions_say() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let mut body = cluster_body("1.27.1");
    body["mesh"]["enrolledNamespaces"] = json!(["shop*"]);
    // No such cluster, so `If-Match: *` fails; but the body is the first problem.
    let r = app
        .put("/v1/clusters/c1")
        .token(&t)
        .header("if-match", "*")
        .json(&body)
        .send()
        .await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/mesh/enrolledNamespaces/0"
    );
    let r = app
        .put("/v1/clusters/c1")
        .token(&t)
        .header("if-match", "*")
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    r.problem(412);
    // An existing cluster with `If-None-Match: *` fails too; an upgrade policy
    // of the wrong shape (the document's oneOf: manual without a channel) is
    // still the first problem.
    app.create("acme", "c2", &cluster_body("1.27.1")).await;
    let mut both = cluster_body("1.27.1");
    both["mesh"]["upgrade"]["channel"] = json!("rapid");
    let r = app
        .put("/v1/clusters/c2")
        .token(&t)
        .header("if-none-match", "*")
        .json(&both)
        .send()
        .await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/mesh/upgrade/channel"
    );
    let mut bare = cluster_body("1.27.1");
    bare["mesh"]["upgrade"] = json!({"mode": "automatic"});
    let r = app
        .put("/v1/clusters/c2")
        .token(&t)
        .header("if-none-match", "*")
        .json(&bare)
        .send()
        .await;
    assert_eq!(
        r.problem(422)["errors"][0]["pointer"],
        "/mesh/upgrade/channel"
    );
}
