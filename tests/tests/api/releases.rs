use meshfleet_tests::{TestApp, TestRole as Role, cluster_body};
use serde_json::json;

#[tokio::test]
async fn the_catalog_lists_real_istio_versions_newest_first() {
    let app = TestApp::spawn().await;
    let r = app
        .get("/v1/releases")
        .token(&app.token("acme", &[Role::Reader]))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items[0]["version"], "1.28.2");
    assert_eq!(
        items[0]["images"]["ztunnel"],
        "docker.io/istio/ztunnel:1.28.2"
    );
    assert!(items.iter().any(|i| i["version"] == "1.24.0"));
    assert!(items.iter().any(|i| i["channels"] == json!(["stable"])));
}

#[tokio::test]
async fn an_sre_adds_and_retires_releases_and_retired_ones_cannot_be_chosen() {
    let app = TestApp::spawn().await;
    let sre = app.token("ops", &[Role::Sre]);
    let body =
        json!({"releasedAt": "2026-02-10", "channels": ["rapid"], "endOfSupport": "2026-12-31"});
    let added = app
        .put("/v1/ops/releases/1.29.0")
        .token(&sre)
        .json(&body)
        .send()
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert_eq!(
        added.body["images"]["istiod"],
        "docker.io/istio/pilot:1.29.0"
    );
    let again = app
        .put("/v1/ops/releases/1.29.0")
        .token(&sre)
        .json(&body)
        .send()
        .await;
    assert_eq!(again.status, 200);
    // Selectable once it has its bundle (see bundles.rs).
    let bundle = app
        .put("/v1/ops/releases/1.29.0/bundle")
        .token(&sre)
        .json(&json!({"origin": "development"}))
        .send()
        .await;
    assert_eq!(bundle.status, 201, "{}", bundle.text);

    let t = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.28.2")).await;
    let up = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&cluster_body("1.29.0"))
        .send()
        .await;
    assert_eq!(up.status, 200, "{}", up.text);

    let retire = json!({"releasedAt": "2025-11-05", "retired": true});
    assert_eq!(
        app.put("/v1/ops/releases/1.28.0")
            .token(&sre)
            .json(&retire)
            .send()
            .await
            .status,
        200
    );
    let r = app
        .put("/v1/clusters/c2")
        .token(&t)
        .json(&cluster_body("1.28.0"))
        .send()
        .await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("retired")
    );

    let bad = app
        .put("/v1/ops/releases/1.29")
        .token(&sre)
        .json(&body)
        .send()
        .await;
    bad.problem(422);
    let bad_dates = json!({"releasedAt": "2026-02-10", "endOfSupport": "2025-01-01"});
    app.put("/v1/ops/releases/1.29.1")
        .token(&sre)
        .json(&bad_dates)
        .send()
        .await
        .problem(422);
    let bad_channel = json!({"releasedAt": "2026-02-10", "channels": ["nightly"]});
    let r = app
        .put("/v1/ops/releases/1.29.1")
        .token(&sre)
        .json(&bad_channel)
        .send()
        .await;
    assert_eq!(r.problem(422)["errors"][0]["pointer"], "/channels/0");
}
