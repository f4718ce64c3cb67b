//! Release bundles (issue 11 §2): imported through the ops route, refused
//! while missing, fetched by digest and verified by real agents over
//! simulated clusters.

use meshfleet_agent::SimOp;
use meshfleet_agent::bundle::Bundle;
use meshfleet_model::BundleDocument;
use meshfleet_tests::agents::{cluster_with_agent, wait_status};
use meshfleet_tests::{TestApp, TestRole as Role, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

/// Marks the CRD an import carries, to find it in the simulated cluster.
const MARK: &str = "example.com/imported-from";

/// An import of 1.28.2's files: every CRD of the release as its own JSON
/// text (JSON is YAML), one marked, and the waypoint template.
fn upstream_files() -> Value {
    let bundle = Bundle::development("1.28.2");
    let crds: Vec<String> = bundle
        .crds()
        .iter()
        .map(|c| {
            let mut crd = serde_json::to_value(&*c.crd).unwrap();
            if crd["metadata"]["name"] == "wasmplugins.extensions.istio.io" {
                crd["metadata"]["annotations"][MARK] = json!("upstream-1.28.2");
            }
            serde_json::to_string_pretty(&crd).unwrap()
        })
        .collect();
    json!({
        "crds": crds,
        "templates": {"waypoint": bundle.template("waypoint").unwrap()}
    })
}

async fn import(app: &TestApp, version: &str, body: &Value) -> meshfleet_tests::Reply {
    app.put(&format!("/v1/ops/releases/{version}/bundle"))
        .token(&app.token("ops", &[Role::Sre]))
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn a_release_without_a_bundle_cannot_be_chosen_until_its_bundle_is_imported() {
    let app = TestApp::spawn().await;
    let sre = app.token("ops", &[Role::Sre]);
    let added = app
        .put("/v1/ops/releases/1.29.0")
        .token(&sre)
        .json(&json!({"releasedAt": "2026-02-10", "channels": ["rapid"]}))
        .send()
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert_eq!(added.body["bundle"], Value::Null);

    // The seeded catalog: every release has its development bundle.
    let catalog = app
        .get("/v1/releases")
        .token(&app.token("acme", &[Role::Reader]))
        .send()
        .await;
    let items = catalog.body["items"].as_array().unwrap();
    let seeded = items.iter().find(|r| r["version"] == "1.28.2").unwrap();
    let digest = BundleDocument::development("1.28.2").digest();
    assert_eq!(
        seeded["bundle"],
        json!({"digest": digest, "origin": "development", "url": format!("/v1/agent/bundles/{digest}")})
    );
    assert!(
        items
            .iter()
            .filter(|r| r["version"] != "1.29.0")
            .all(|r| r["bundle"]["origin"] == "development")
    );

    let owner = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.28.2")).await;
    let refused = app
        .put("/v1/clusters/c1")
        .token(&owner)
        .json(&cluster_body("1.29.0"))
        .send()
        .await;
    let problem = refused.problem(422);
    assert_eq!(problem["errors"][0]["pointer"], "/mesh/upgrade/version");
    let detail = problem["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("1.29.0 has no release bundle"), "{detail}");
    app.put("/v1/clusters/c2")
        .token(&owner)
        .json(&cluster_body("1.29.0"))
        .send()
        .await
        .problem(422);
    let rollout = app
        .req(Method::POST, "/v1/rollouts")
        .token(&owner)
        .json(
            &json!({"name": "to-1-29", "targetVersion": "1.29.0", "selector": "env=prod",
            "stages": [{"name": "all", "maxConcurrency": 1}]}),
        )
        .send()
        .await;
    let problem = rollout.problem(422);
    assert!(
        problem.to_string().contains("has no release bundle"),
        "{problem}"
    );
    // A channel does not lead to it either: rapid's head is still 1.28.x.
    app.create(
        "acme",
        "follower",
        &json!({"mesh": {"upgrade": {"mode": "automatic", "channel": "rapid"}}}),
    )
    .await;
    let follower = app.get("/v1/clusters/follower").token(&owner).send().await;
    assert_eq!(follower.status, 200);
    assert_ne!(
        follower.body["desiredVersion"], "1.29.0",
        "{}",
        follower.text
    );

    let imported = import(&app, "1.29.0", &json!({"origin": "development"})).await;
    assert_eq!(imported.status, 201, "{}", imported.text);
    assert_eq!(imported.body["bundle"]["origin"], "development");
    let chosen = app
        .put("/v1/clusters/c1")
        .token(&owner)
        .json(&cluster_body("1.29.0"))
        .send()
        .await;
    assert_eq!(chosen.status, 200, "{}", chosen.text);
}

#[tokio::test]
async fn an_imported_bundle_reaches_a_real_agent_which_verifies_it_and_applies_its_crds() {
    let app = TestApp::spawn().await;
    let files = upstream_files();

    let not_sre = app
        .put("/v1/ops/releases/1.28.2/bundle")
        .token(&app.owner("acme"))
        .json(&files)
        .send()
        .await;
    not_sre.problem(403);

    let bad = json!({
        "crds": [files["crds"][0], "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "{ not: [yaml"],
        "templates": {}
    });
    let r = import(&app, "1.28.2", &bad).await;
    let problem = r.problem(422);
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/crds/1", "/crds/2", "/templates/waypoint"],
        "{problem}"
    );
    import(&app, "9.9.9", &files).await.problem(404);

    let first = import(&app, "1.28.2", &files).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let digest = first.body["bundle"]["digest"].as_str().unwrap().to_string();
    assert_eq!(first.body["bundle"]["origin"], "imported");
    assert!(
        first.body["crds"]
            .as_array()
            .unwrap()
            .contains(&json!("wasmplugins.extensions.istio.io"))
    );
    let again = import(&app, "1.28.2", &files).await;
    assert_eq!(again.status, 200, "the same content: {}", again.text);
    assert_eq!(again.body["bundle"]["digest"], digest.as_str());

    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    wait_status(&app, "c1", "Healthy at generation 1", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == 1
    })
    .await;
    let crd = agent
        .sim
        .find(
            "CustomResourceDefinition",
            None,
            "wasmplugins.extensions.istio.io",
        )
        .expect("the imported CRD is applied");
    assert_eq!(crd["metadata"]["annotations"][MARK], "upstream-1.28.2");

    // The route serves the document by digest, immutable.
    let credential = agent
        .sim
        .secret(
            meshfleet_model::AGENT_NAMESPACE,
            meshfleet_model::CREDENTIAL_SECRET,
        )
        .and_then(|s| s.get("credential").cloned())
        .unwrap();
    let served = app
        .get(&format!("/v1/agent/bundles/{digest}"))
        .token(&credential)
        .send()
        .await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.header("etag"),
        Some(format!("\"{digest}\"").as_str())
    );
    assert!(
        served
            .header("cache-control")
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        meshfleet_model::bundle::digest_of(served.text.as_bytes()),
        digest
    );
    let cached = app
        .get(&format!("/v1/agent/bundles/{digest}"))
        .token(&credential)
        .header("if-none-match", &format!("\"{digest}\""))
        .send()
        .await;
    assert_eq!(cached.status, 304);
    agent.stop().await;
}

#[tokio::test]
async fn a_bundle_whose_content_does_not_match_its_digest_applies_nothing() {
    let app = TestApp::spawn().await;
    let r = import(&app, "1.28.2", &upstream_files()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The stored document changes under its digest (a corrupted store or
    // a tampering proxy): the agent must notice.
    sqlx::query("UPDATE release_bundles SET document = replace(document, 'upstream-1.28.2', 'tampered') WHERE origin = 'imported'")
        .execute(&app.pool)
        .await
        .unwrap();

    let agent = cluster_with_agent(&app, "c1", "1.28.2").await;
    let cluster = wait_status(&app, "c1", "a failed component", |s| {
        s["components"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["ready"] == false && c["message"].is_string())
        })
    })
    .await;
    let failed = cluster["status"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["message"].is_string())
        .unwrap()
        .clone();
    assert_eq!(
        failed["conditions"][0]["reason"], "BundleInvalid",
        "{failed}"
    );
    assert!(
        failed["message"].as_str().unwrap().contains("hashes to"),
        "{failed}"
    );
    let applied: Vec<_> = agent
        .sim
        .ops()
        .into_iter()
        .filter(|op| matches!(op, SimOp::Apply { .. }))
        .collect();
    assert!(applied.is_empty(), "nothing applied: {applied:?}");
    agent.stop().await;
}

#[tokio::test]
async fn the_desired_state_names_the_bundle_and_carries_the_crd_purge_from_the_spec() {
    let app = TestApp::spawn().await;
    let mut body = cluster_body("1.28.2");
    body["mesh"]["uninstall"] = json!({"purgeCrds": true});
    let created = app.create("acme", "c1", &body).await;
    assert_eq!(
        created.body["mesh"]["uninstall"],
        json!({"purgeCrds": true, "force": false})
    );
    let plain = app.create("acme", "c2", &cluster_body("1.28.2")).await;
    assert_eq!(
        plain.body["mesh"]["uninstall"],
        json!({"purgeCrds": false, "force": false}),
        "the defaults are shown"
    );
    let mut forced = cluster_body("1.28.2");
    forced["mesh"]["uninstall"] = json!({"purgeCrds": true, "force": true});
    app.create("acme", "c3", &forced).await;
    let mut force_alone = cluster_body("1.28.2");
    force_alone["mesh"]["uninstall"] = json!({"force": true});
    app.create("acme", "c4", &force_alone).await;
    let desired = |name: &'static str| {
        let app = &app;
        async move {
            let token = app.bootstrap_token("acme", name).await;
            let credential = app.register_with(&token).await.body["credential"]
                .as_str()
                .unwrap()
                .to_string();
            app.get("/v1/agent/desired-state")
                .token(&credential)
                .send()
                .await
                .body
        }
    };
    let purging = desired("c1").await;
    assert_eq!(purging["purgeCrds"], true);
    assert_eq!(
        purging["forcePurgeCrds"], false,
        "a purge is checked by default"
    );
    let forcing = desired("c3").await;
    assert_eq!(
        (&forcing["purgeCrds"], &forcing["forcePurgeCrds"]),
        (&json!(true), &json!(true))
    );
    let nothing = desired("c4").await;
    assert_eq!(
        (&nothing["purgeCrds"], &nothing["forcePurgeCrds"]),
        (&json!(false), &json!(false)),
        "force alone purges nothing"
    );
    let digest = BundleDocument::development("1.28.2").digest();
    assert_eq!(purging["bundle"]["digest"], digest.as_str());
    assert_eq!(purging["bundle"]["origin"], "development");
    assert_eq!(
        desired("c2").await["purgeCrds"],
        false,
        "CRDs stay by default"
    );
}

#[tokio::test]
async fn the_release_import_command_reads_upstreams_files_and_stores_the_same_bundle_as_the_route()
{
    let app = TestApp::spawn().await;
    let files = upstream_files();
    // As upstream ships them: one YAML stream of Istio CRDs and one of the
    // Gateway API's, in a folder, and the waypoint template in its own file.
    let dir = std::env::temp_dir().join(format!("meshfleet-bundle-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("crds")).unwrap();
    let (gateway, istio): (Vec<&Value>, Vec<&Value>) = files["crds"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|t| t.as_str().unwrap().contains("gateway.networking.k8s.io\""));
    let stream = |texts: Vec<&Value>| {
        let docs: Vec<&str> = texts.iter().map(|t| t.as_str().unwrap()).collect();
        format!("# generated\n---\n{}\n---\n", docs.join("\n---\n"))
    };
    std::fs::write(dir.join("crds/crd-all.gen.yaml"), stream(istio)).unwrap();
    std::fs::write(dir.join("crds/standard-install.yaml"), stream(gateway)).unwrap();
    std::fs::write(
        dir.join("waypoint.yaml"),
        files["templates"]["waypoint"].as_str().unwrap(),
    )
    .unwrap();
    let args = |templates: Vec<String>| meshfleet::config::ReleaseImportArgs {
        database_url: String::new(),
        version: "1.28.2".into(),
        crds: vec![dir.join("crds")],
        templates,
        development: false,
        ops_tenant: "ops".into(),
    };

    let missing = meshfleet::cli::import_release_bundle(&app.pool, &args(vec![]))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/templates/waypoint"), "{missing}");

    let waypoint = format!("waypoint={}", dir.join("waypoint.yaml").display());
    let printed = meshfleet::cli::import_release_bundle(&app.pool, &args(vec![waypoint]))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(printed.contains("imported"), "{printed}");
    // The same content through the route, one JSON text per CRD: the same
    // digest, nothing changes.
    let route = import(&app, "1.28.2", &files).await;
    assert_eq!(route.status, 200, "{}", route.text);
    let digest = route.body["bundle"]["digest"].as_str().unwrap();
    assert!(printed.contains(digest), "{printed} vs {digest}");
}
