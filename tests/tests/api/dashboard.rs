//! The health dashboard: a tenant's fleet summary and the SRE's ops views,
//! over real agents on simulated clusters, checked against the fleet the
//! test built and against `GET` of each cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use meshfleet_core::clock::ManualClock;
use meshfleet_tests::agents::{RunningAgent, agent_for, wait_status};
use meshfleet_tests::{TestApp, TestRole, cluster_body};
use serde_json::Value;

/// acme: c0, c1 and c2 with agents on 1.27.1 (c1 then asked for 1.28.2,
/// which its cluster refuses to apply), c3 registered with no agent.
/// globex: g0 with no agent.
async fn built_fleet(app: &TestApp) -> Vec<RunningAgent> {
    let mut agents = Vec::new();
    for name in ["c0", "c1", "c2"] {
        app.create("acme", name, &cluster_body("1.27.1")).await;
        agents.push(agent_for(app, "acme", name).await);
    }
    app.create("acme", "c3", &cluster_body("1.27.1")).await;
    app.create("globex", "g0", &cluster_body("1.28.2")).await;
    for name in ["c0", "c1", "c2"] {
        wait_status(app, name, "Healthy", |s| s["health"] == "Healthy").await;
    }
    agents[1].sim.fail_apply(
        "DaemonSet",
        "ztunnel",
        "admission webhook \"policy.example\" denied the request",
    );
    let r = app
        .put("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .json(&cluster_body("1.28.2"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_status(app, "c1", "a failed ztunnel", |s| {
        s["health"] == "Degraded" || s["health"] == "Unhealthy"
    })
    .await;
    agents
}

async fn summary(app: &TestApp) -> Value {
    let r = app
        .get("/v1/fleet/summary")
        .token(&app.token("acme", &[TestRole::Reader]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// Counts of `key` ("health" or "connectivity") over `GET /v1/clusters`.
async fn counted_by_get(app: &TestApp, key: &str) -> BTreeMap<String, u64> {
    let r = app
        .get("/v1/clusters?limit=500")
        .token(&app.owner("acme"))
        .send()
        .await;
    let mut counts = BTreeMap::new();
    for c in r.body["items"].as_array().unwrap() {
        *counts
            .entry(c["status"][key].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

fn nonzero(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn the_fleet_summary_counts_the_fleet_the_test_built() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    let agents = built_fleet(&app).await;

    let s = summary(&app).await;
    assert_eq!(s["clusters"], 4, "globex's cluster is not acme's: {s}");
    let health = nonzero(&s["byHealth"]);
    assert_eq!(health, counted_by_get(&app, "health").await);
    assert_eq!(health["Healthy"], 2);
    assert_eq!(health["Unknown"], 1, "c3 has no agent");
    assert_eq!(s["byHealth"]["Progressing"], 0, "every key present: {s}");
    let connectivity = nonzero(&s["byConnectivity"]);
    assert_eq!(connectivity, counted_by_get(&app, "connectivity").await);
    assert_eq!(connectivity["Connected"], 3);
    assert_eq!(connectivity["Disconnected"], 1);

    let versions: BTreeMap<String, (u64, u64)> = s["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                (
                    v["desired"].as_u64().unwrap(),
                    v["observed"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(versions["1.27.1"].0, 3, "{s}");
    assert_eq!(versions["1.28.2"].0, 1, "c1 wants 1.28.2: {s}");
    // c0 and c2 run 1.27.1; c1 part of 1.28.2 (what applied before ztunnel).
    assert!(versions["1.27.1"].1 >= 2, "{s}");
    assert!(versions["1.28.2"].1 >= 1, "{s}");
    assert_eq!(s["versions"][0]["version"], "1.28.2", "newest first");

    let lagging: Vec<&str> = s["lagging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(lagging.len(), 2, "c1 (failing) and c3 (no agent): {s}");
    assert!(lagging.contains(&"c1") && lagging.contains(&"c3"), "{s}");
    assert_eq!(s["laggingTotal"], 2);
    let c3 = s["lagging"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "c3")
        .unwrap();
    assert!(c3["observedGeneration"].is_null());

    let failing = &s["failingComponents"];
    assert_eq!(failing.as_array().unwrap().len(), 1, "{s}");
    assert_eq!(failing[0]["clusters"], 1);
    assert!(
        failing[0]["topMessages"][0]["message"]
            .as_str()
            .unwrap()
            .contains("policy.example"),
        "{s}"
    );
    assert_eq!(failing[0]["topMessages"][0]["count"], 1);
    assert_eq!(s["rollouts"], serde_json::json!([]));

    // c2's agent stops; two minutes later it is Stale, the others heartbeat on.
    let mut agents = agents.into_iter();
    let (a0, a1, a2) = (
        agents.next().unwrap(),
        agents.next().unwrap(),
        agents.next().unwrap(),
    );
    a2.stop().await;
    clock.advance(chrono::Duration::seconds(120));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = summary(&app).await;
        let c = nonzero(&s["byConnectivity"]);
        if c.get("Stale") == Some(&1) && c.get("Connected") == Some(&2) {
            assert_eq!(c, counted_by_get(&app, "connectivity").await);
            break;
        }
        assert!(Instant::now() < deadline, "c2 never Stale: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a0.stop().await;
    a1.stop().await;
}

#[tokio::test]
async fn the_cluster_list_filters_by_health_connectivity_and_version() {
    let app = TestApp::spawn().await;
    let _agents = built_fleet(&app).await;
    let t = app.owner("acme");
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = app
        .get("/v1/clusters?health=Degraded,Unhealthy")
        .token(&t)
        .send()
        .await;
    assert_eq!(names(&r.body), ["c1"]);
    let r = app
        .get("/v1/clusters?connectivity=Disconnected")
        .token(&t)
        .send()
        .await;
    assert_eq!(names(&r.body), ["c3"]);
    let r = app
        .get("/v1/clusters?version=1.27.1&health=Healthy&limit=1")
        .token(&t)
        .send()
        .await;
    assert_eq!(names(&r.body), ["c0"]);
    let next = r.body["nextCursor"].as_str().unwrap();
    let r = app
        .get(&format!(
            "/v1/clusters?version=1.27.1&health=Healthy&limit=1&cursor={next}"
        ))
        .token(&t)
        .send()
        .await;
    assert_eq!(names(&r.body), ["c2"]);
    assert!(r.body["nextCursor"].is_null());
    let r = app.get("/v1/clusters?health=Sick").token(&t).send().await;
    let p = r.problem(400);
    assert!(p["detail"].as_str().unwrap().contains("Healthy"), "{p}");
}

#[tokio::test]
async fn ops_views_are_only_for_the_operators_sre_role() {
    let app = TestApp::spawn().await;
    let tenant_owner = app.owner("acme");
    let sre_elsewhere = app.token("acme", &[TestRole::Sre, TestRole::Owner]);
    for path in [
        "/v1/ops/fleet/summary",
        "/v1/ops/clusters",
        "/v1/ops/clusters/acme/c0",
        "/v1/ops/sli",
    ] {
        for t in [&tenant_owner, &sre_elsewhere] {
            let r = app.get(path).token(t).send().await;
            r.problem(403);
        }
        app.get(path).send().await.problem(401);
    }
}

#[tokio::test]
async fn ops_views_show_every_tenant_worst_first_in_pages() {
    let app = TestApp::spawn().await;
    let _agents = built_fleet(&app).await;
    let sre = app.token("ops", &[TestRole::Sre]);

    let r = app.get("/v1/ops/fleet/summary").token(&sre).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = &r.body;
    assert_eq!(s["clusters"], 5);
    assert_eq!(s["byHealth"]["Unknown"], 2, "c3 and g0: {s}");
    let tenants: Vec<(String, u64)> = s["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_string(),
                t["clusters"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tenants, [("acme".into(), 4), ("globex".into(), 1)]);
    assert!(
        s["lagging"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["tenant"] == "globex" && l["name"] == "g0"),
        "{s}"
    );

    // Worst first, two a page, every cluster exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/ops/clusters?sort=health&limit=2".to_string(),
            Some(c) => format!("/v1/ops/clusters?sort=health&limit=2&cursor={c}"),
        };
        let r = app.get(&path).token(&sre).send().await;
        assert_eq!(r.status, 200, "{}", r.text);
        for c in r.body["items"].as_array().unwrap() {
            seen.push((
                c["tenant"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
                c["status"]["health"].as_str().unwrap().to_string(),
            ));
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let order: Vec<(&str, &str)> = seen
        .iter()
        .map(|(t, n, _)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("acme", "c1"),
            ("acme", "c3"),
            ("globex", "g0"),
            ("acme", "c0"),
            ("acme", "c2")
        ],
        "{seen:?}"
    );

    let r = app
        .get("/v1/ops/clusters?tenant=globex")
        .token(&sre)
        .send()
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["tenant"], "globex");
    let r = app
        .get("/v1/ops/clusters?staleFor=10m&sort=heartbeatAge")
        .token(&sre)
        .send()
        .await;
    let quiet: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(quiet, ["c3", "g0"], "never heard from");
    let r = app
        .get("/v1/ops/clusters?staleFor=soon")
        .token(&sre)
        .send()
        .await;
    r.problem(400);
    let r = app
        .get("/v1/ops/clusters?sort=health&cursor=bm9wZQ")
        .token(&sre)
        .send()
        .await;
    r.problem(400);

    let r = app.get("/v1/ops/clusters/acme/c1").token(&sre).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["tenant"], "acme");
    assert_eq!(r.body["cluster"]["name"], "c1");
    assert!(!r.body["history"].as_array().unwrap().is_empty());
    assert!(
        r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "cluster.health_changed"),
        "{}",
        r.body
    );
    app.get("/v1/ops/clusters/globex/c1")
        .token(&sre)
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn the_slis_come_from_the_fleet_and_the_services_own_counters() {
    let app = TestApp::spawn().await;
    let _agents = built_fleet(&app).await;
    let sre = app.token("ops", &[TestRole::Sre]);
    let r = app.get("/v1/ops/sli?window=1h").token(&sre).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = &r.body;
    assert_eq!(s["windowSeconds"], 3600);
    assert_eq!(s["heartbeatAgeSeconds"]["count"], 3, "{s}");
    assert!(s["heartbeatAgeSeconds"]["p99"].as_f64().unwrap() < 90.0);
    // c0, c1 and c2 converged on generation 1 (c1's second never does).
    assert_eq!(s["convergenceSeconds"]["count"], 3, "{s}");
    assert!(s["convergenceSeconds"]["p50"].as_f64().unwrap() >= 0.0);
    let agents: u64 = s["agentVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["clusters"].as_u64().unwrap())
        .sum();
    assert_eq!(agents, 3);
    assert_ne!(s["agentVersions"][0]["version"], "unknown", "{s}");
    let status_puts = s["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/v1/agent/status" && r["method"] == "PUT")
        .unwrap_or_else(|| panic!("no agent status route in {s}"));
    assert!(status_puts["requests"].as_u64().unwrap() >= 3);
    assert_eq!(status_puts["serverErrors"], 0);
    let r = app.get("/v1/ops/sli?window=30s").token(&sre).send().await;
    r.problem(400);
}
