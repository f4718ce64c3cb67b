use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meshfleet_api::auth::{Claims, DevSigner};
use meshfleet_tests::{TestApp, TestRole as Role, cluster_body};
use reqwest::Method;
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(tid: &str) -> Claims {
    Claims {
        sub: "mallory".into(),
        tid: tid.into(),
        roles: vec!["owner".into()],
        iss: "meshfleet-dev".into(),
        aud: "meshfleet".into(),
        exp: now() + 600,
        nbf: None,
        iat: Some(now()),
    }
}

async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let r = app.get("/v1/clusters").token(token).send().await;
    r.problem(401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"meshfleet\""),
        "{why}: WWW-Authenticate is {challenge:?}"
    );
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());

    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::to_value(claims("acme")).unwrap())
    );
    assert_refused(&app, &alg_none, "alg none").await;

    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("acme"),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    assert_refused(&app, &hs256, "HMAC token").await;

    let other_key = DevSigner::generate().unwrap();
    assert_refused(&app, &other_key.sign(&claims("acme")), "wrong key").await;

    let mut c = claims("acme");
    c.aud = "someone-else".into();
    assert_refused(&app, &app.signer.sign(&c), "wrong audience").await;
    let mut c = claims("acme");
    c.iss = "https://evil.example".into();
    assert_refused(&app, &app.signer.sign(&c), "wrong issuer").await;
    let mut c = claims("acme");
    c.exp = now() - 3600;
    assert_refused(&app, &app.signer.sign(&c), "expired").await;
    let mut c = claims("acme");
    c.nbf = Some(now() + 3600);
    assert_refused(&app, &app.signer.sign(&c), "not yet valid").await;

    // Tampered payload: a valid token for tenant "evil" with its payload swapped to "acme".
    let good = app.signer.sign(&claims("evil"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_value(claims("acme")).unwrap()),
        parts[2]
    );
    assert_refused(&app, &tampered, "tampered payload").await;

    assert_refused(&app, "not-a-jwt", "garbage").await;
    let mut c = claims("acme");
    c.tid = "".into();
    assert_refused(&app, &app.signer.sign(&c), "empty tenant").await;

    let missing = app.get("/v1/clusters").send().await;
    missing.problem(401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"meshfleet\"")
    );
    let basic = app
        .get("/v1/clusters")
        .header("authorization", "Basic YTpi")
        .send()
        .await;
    basic.problem(401);

    // And the real thing works.
    let ok = app
        .get("/v1/clusters/c1")
        .token(&app.signer.sign(&claims("acme")))
        .send()
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_touch_a_cluster() {
    let app = TestApp::spawn().await;
    let created = app
        .create("acme", "shared-name", &cluster_body("1.27.1"))
        .await;
    let etag = created.etag();
    let intruder = app.owner("globex");
    let path = "/v1/clusters/shared-name";

    let cases: Vec<(Method, Option<serde_json::Value>)> = vec![
        (Method::GET, None),
        (Method::PATCH, Some(json!({"labels": {"pwned": "yes"}}))),
        (Method::DELETE, None),
    ];
    for (method, body) in cases {
        let mut req = app.req(method.clone(), path).token(&intruder);
        if let Some(b) = &body {
            req = req.merge_patch(b);
        }
        let r = req.send().await;
        let p = r.problem(404);
        assert!(
            !r.text.contains(created.body["id"].as_str().unwrap()),
            "{method} leaks data"
        );
        assert_eq!(p["detail"], "cluster `shared-name` not found");
        // With the right ETag too.
        let mut req = app
            .req(method.clone(), path)
            .token(&intruder)
            .header("if-match", &etag);
        if let Some(b) = &body {
            req = req.merge_patch(b);
        }
        req.send().await.problem(404);
    }
    // A missing cluster answers exactly like the foreign one.
    let missing = app
        .get("/v1/clusters/never-existed")
        .token(&intruder)
        .send()
        .await;
    assert_eq!(missing.problem(404)["title"], "Not Found");
    // A conditional replace cannot reach it either.
    app.put(path)
        .token(&intruder)
        .header("if-match", &etag)
        .json(&cluster_body("1.28.2"))
        .send()
        .await
        .problem(412);
    // Lists and events show nothing of it.
    let list = app.get("/v1/clusters").token(&intruder).send().await;
    assert_eq!(list.body["items"], json!([]));
    let events = app
        .get("/v1/events?cluster=shared-name")
        .token(&intruder)
        .send()
        .await;
    assert_eq!(events.body["items"], json!([]));
    let all_events = app.get("/v1/events").token(&intruder).send().await;
    assert_eq!(all_events.body["items"], json!([]));
    // The same name in its own tenant is its own cluster.
    let own = app
        .put(path)
        .token(&intruder)
        .json(&cluster_body("1.28.2"))
        .send()
        .await;
    assert_eq!(own.status, 201);
    assert_ne!(own.body["id"], created.body["id"]);
    // And acme's cluster is untouched.
    let acme = app.get(path).token(&app.owner("acme")).send().await;
    assert_eq!(acme.etag(), etag);
    assert_eq!(acme.body["labels"], json!({"env": "prod"}));
}

#[tokio::test]
async fn an_owner_of_one_tenant_is_not_an_sre() {
    let app = TestApp::spawn().await;
    let body = json!({"releasedAt": "2026-01-01", "channels": []});
    let owner = app.token("acme", &[Role::Owner, Role::Contributor, Role::Reader]);
    app.put("/v1/ops/releases/1.29.0")
        .token(&owner)
        .json(&body)
        .send()
        .await
        .problem(403);
}
