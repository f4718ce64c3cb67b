use meshfleet_tests::{TestApp, TestRole as Role, cluster_body};
use serde_json::json;

#[tokio::test]
async fn a_cluster_can_be_created_read_patched_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let created = app
        .create("acme", "prod-eu-1", &cluster_body("1.27.1"))
        .await;
    assert_eq!(created.header("location"), Some("/v1/clusters/prod-eu-1"));
    assert_eq!(created.body["generation"], 1);
    assert_eq!(created.body["desiredVersion"], "1.27.1");
    assert_eq!(created.body["status"]["health"], "Unknown");
    assert_eq!(
        created.body["mesh"]["mtls"], "strict",
        "defaults are filled in"
    );

    let read = app.get("/v1/clusters/prod-eu-1").token(&t).send().await;
    assert_eq!(read.status, 200);
    assert_eq!(read.etag(), created.etag());
    assert_eq!(read.body, created.body);

    let patched = app
        .patch("/v1/clusters/prod-eu-1")
        .token(&t)
        .header("if-match", &read.etag())
        .merge_patch(
            &json!({"mesh": {"upgrade": {"version": "1.28.2"}}, "labels": {"tier": "web"}}),
        )
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["generation"], 2);
    assert_eq!(patched.body["desiredVersion"], "1.28.2");
    assert_eq!(
        patched.body["labels"],
        json!({"env": "prod", "tier": "web"})
    );
    assert_ne!(patched.etag(), read.etag());

    let listed = app
        .get("/v1/clusters?labelSelector=tier%3Dweb")
        .token(&t)
        .send()
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["nextCursor"], serde_json::Value::Null);

    let deleted = app
        .delete("/v1/clusters/prod-eu-1")
        .token(&t)
        .header("if-match", &patched.etag())
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    app.get("/v1/clusters/prod-eu-1")
        .token(&t)
        .send()
        .await
        .problem(404);

    let events = app
        .get("/v1/events?cluster=prod-eu-1")
        .token(&t)
        .send()
        .await;
    let actions: Vec<&str> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["cluster.deleted", "cluster.updated", "cluster.created"]
    );
    assert_eq!(events.body["items"][1]["actor"], "user@acme");
    assert_eq!(events.body["items"][1]["detail"]["from"], "1.27.1");
    assert_eq!(events.body["items"][1]["generation"], 2);
}

#[tokio::test]
async fn putting_the_same_body_twice_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let body = cluster_body("1.27.1");
    let first = app.create("acme", "c1", &body).await;
    let second = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&body)
        .send()
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.etag(), first.etag());
    assert_eq!(second.body["generation"], 1);
    assert_eq!(second.body["updatedAt"], first.body["updatedAt"]);
    // Spelling the defaults out is the same body too.
    let mut explicit = body.clone();
    explicit["mesh"]["mtls"] = json!("strict");
    explicit["mesh"]["mode"] = json!("ambient");
    let third = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&explicit)
        .send()
        .await;
    assert_eq!(third.etag(), first.etag());
    let events = app.get("/v1/events").token(&t).send().await;
    assert_eq!(
        events.body["items"].as_array().unwrap().len(),
        1,
        "only the creation is an event"
    );
}

#[tokio::test]
async fn a_label_change_bumps_the_etag_but_not_the_generation() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let first = app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let mut body = cluster_body("1.27.1");
    body["labels"]["team"] = json!("payments");
    let second = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&body)
        .send()
        .await;
    assert_eq!(second.status, 200);
    assert_ne!(second.etag(), first.etag());
    assert_eq!(second.body["generation"], 1);
}

#[tokio::test]
async fn if_none_match_star_makes_put_create_only() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let body = cluster_body("1.27.1");
    let first = app
        .put("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", "*")
        .json(&body)
        .send()
        .await;
    assert_eq!(first.status, 201);
    let second = app
        .put("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", "*")
        .json(&body)
        .send()
        .await;
    second.problem(412);
}

#[tokio::test]
async fn writes_with_a_stale_etag_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let first = app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let stale = first.etag();
    app.patch("/v1/clusters/c1")
        .token(&t)
        .merge_patch(&json!({"labels": {"a": "b"}}))
        .send()
        .await;
    let put = app
        .put("/v1/clusters/c1")
        .token(&t)
        .header("if-match", &stale)
        .json(&cluster_body("1.28.2"))
        .send()
        .await;
    put.problem(412);
    let patch = app
        .patch("/v1/clusters/c1")
        .token(&t)
        .header("if-match", &stale)
        .merge_patch(&json!({"labels": {"x": "y"}}))
        .send()
        .await;
    patch.problem(412);
    app.delete("/v1/clusters/c1")
        .token(&t)
        .header("if-match", &stale)
        .send()
        .await
        .problem(412);
    let now = app.get("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(now.body["desiredVersion"], "1.27.1");
    assert_eq!(now.body["labels"], json!({"env": "prod", "a": "b"}));
    // If-Match on a cluster that does not exist fails too.
    app.put("/v1/clusters/nope")
        .token(&t)
        .header("if-match", &stale)
        .json(&cluster_body("1.27.1"))
        .send()
        .await
        .problem(412);
    app.get("/v1/clusters/nope")
        .token(&t)
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn get_with_the_current_etag_answers_not_modified() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let first = app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let again = app
        .get("/v1/clusters/c1")
        .token(&t)
        .header("if-none-match", &first.etag())
        .send()
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.etag(), first.etag());
}

#[tokio::test]
async fn label_selectors_filter_with_kubernetes_semantics() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    for (name, labels) in [
        ("a", json!({"env": "prod", "tier": "web"})),
        ("b", json!({"env": "prod", "tier": "db"})),
        ("c", json!({"env": "dev"})),
        ("d", json!({})),
    ] {
        let mut body = cluster_body("1.27.1");
        body["labels"] = labels;
        app.create("acme", name, &body).await;
    }
    let names = |sel: &str| {
        let app = &app;
        let t = t.clone();
        let sel = sel.to_string();
        async move {
            let q: String = url_encode(&sel);
            let r = app
                .get(&format!("/v1/clusters?labelSelector={q}"))
                .token(&t)
                .send()
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("env=prod").await, ["a", "b"]);
    assert_eq!(names("env=prod,tier!=db").await, ["a"]);
    assert_eq!(
        names("tier!=db").await,
        ["a", "c", "d"],
        "!= matches clusters without the key"
    );
    assert_eq!(names("env in (dev,prod),!tier").await, ["c"]);
    assert_eq!(names("env notin (prod)").await, ["c", "d"]);
    assert_eq!(names("tier").await, ["a", "b"]);
    assert_eq!(names("").await, ["a", "b", "c", "d"]);
    app.get("/v1/clusters?labelSelector=env%3D%3D%3Dx")
        .token(&t)
        .send()
        .await
        .problem(400);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn upgrades_follow_the_upstream_rules() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.26.2")).await;
    let set = |v: &str| {
        let body = cluster_body(v);
        let t = t.clone();
        let app = &app;
        async move {
            app.put("/v1/clusters/c1")
                .token(&t)
                .json(&body)
                .send()
                .await
        }
    };
    let skip = set("1.28.2").await;
    assert!(
        skip.problem(422)["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("skips a minor")
    );
    assert_eq!(skip.body["errors"][0]["pointer"], "/mesh/upgrade/version");
    assert_eq!(set("1.27.1").await.status, 200);
    assert_eq!(
        set("1.26.2").await.status,
        200,
        "rolling back to a version the cluster ran"
    );
    let never = set("1.26.0").await;
    assert!(
        never.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("rollback")
    );
    // Automatic: the cluster keeps its version; the reconciler moves it along
    // the channel (one minor at a time, inside its maintenance window).
    let mut auto = cluster_body("x");
    auto["mesh"]["upgrade"] = json!({"mode": "automatic", "channel": "rapid"});
    let ok = app
        .put("/v1/clusters/c1")
        .token(&t)
        .json(&auto)
        .send()
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["desiredVersion"], "1.26.2");
}

#[tokio::test]
async fn a_reader_reads_but_cannot_write() {
    let app = TestApp::spawn().await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let reader = app.token("acme", &[Role::Reader]);
    assert_eq!(
        app.get("/v1/clusters/c1")
            .token(&reader)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/v1/clusters").token(&reader).send().await.status,
        200
    );
    assert_eq!(
        app.get("/v1/events").token(&reader).send().await.status,
        200
    );
    assert_eq!(
        app.get("/v1/releases").token(&reader).send().await.status,
        200
    );
    app.put("/v1/clusters/c2")
        .token(&reader)
        .json(&cluster_body("1.27.1"))
        .send()
        .await
        .problem(403);
    app.patch("/v1/clusters/c1")
        .token(&reader)
        .merge_patch(&json!({"labels": {}}))
        .send()
        .await
        .problem(403);
    app.delete("/v1/clusters/c1")
        .token(&reader)
        .send()
        .await
        .problem(403);
    let contributor = app.token("acme", &[Role::Contributor]);
    let put = app
        .put("/v1/clusters/c2")
        .token(&contributor)
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    assert_eq!(put.status, 201);
    let sre_only = app.token("acme", &[Role::Sre]);
    app.get("/v1/clusters/c1")
        .token(&sre_only)
        .send()
        .await
        .problem(403);
    let nothing = app.token("acme", &[]);
    app.get("/v1/clusters")
        .token(&nothing)
        .send()
        .await
        .problem(403);
}
