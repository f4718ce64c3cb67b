//! Fleet rollouts end to end: real agents over simulated clusters, the real
//! API and PostgreSQL, and reconcilers running as they do in `meshfleet up`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meshfleet_core::clock::ManualClock;
use meshfleet_reconciler::engine::Hints;
use meshfleet_tests::agents::{RunningAgent, agent_for, wait_status};
use meshfleet_tests::reconciler::{Running, run};
use meshfleet_tests::{TestApp, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

/// `n` clusters `c00..` on `version` with `labels(i)`, each with a real agent;
/// waits until all report Healthy.
async fn fleet(
    app: &TestApp,
    n: usize,
    version: &str,
    labels: impl Fn(usize) -> Value,
) -> Vec<RunningAgent> {
    let mut agents = Vec::new();
    for i in 0..n {
        let name = format!("c{i:02}");
        let mut body = cluster_body(version);
        body["labels"] = labels(i);
        app.create("acme", &name, &body).await;
        agents.push(agent_for(app, "acme", &name).await);
    }
    for i in 0..n {
        wait_status(app, &format!("c{i:02}"), "Healthy", |s| {
            s["health"] == "Healthy"
        })
        .await;
    }
    agents
}

async fn start(app: &TestApp, body: &Value) -> Value {
    let r = app
        .req(Method::POST, "/v1/rollouts")
        .token(&app.owner("acme"))
        .json(body)
        .send()
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/rollouts/{id}").as_str())
    );
    assert!(
        r.header("operation-location")
            .is_some_and(|o| o.starts_with("/v1/operations/"))
    );
    r.body
}

async fn rollout(app: &TestApp, id: &str) -> Value {
    let r = app
        .get(&format!("/v1/rollouts/{id}"))
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

async fn wait_rollout(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rollout(app, id).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: state {} counts {}",
            r["state"],
            r["counts"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn action(app: &TestApp, id: &str, action: &str) -> meshfleet_tests::Reply {
    app.req(Method::POST, &format!("/v1/rollouts/{id}/{action}"))
        .token(&app.owner("acme"))
        .send()
        .await
}

fn at(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The most clusters of a stage that were in flight at one moment.
fn max_in_flight(stage: &Value) -> usize {
    let mut points: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for c in stage["clusters"].as_array().unwrap() {
        if c["startedAt"].is_string() {
            points.push((at(&c["startedAt"]), 1));
            points.push((at(&c["finishedAt"]), -1));
        }
    }
    // a finish at the same instant as a start frees its slot first
    points.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in points {
        now += d;
        max = max.max(now);
    }
    max as usize
}

async fn version_changes(app: &TestApp) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut by_cluster: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=500&cursor={c}"),
            None => "/v1/events?limit=500".to_string(),
        };
        let r = app.get(&path).token(&app.owner("acme")).send().await;
        for e in r.body["items"].as_array().unwrap() {
            if e["action"] == "cluster.version_changed" {
                by_cluster
                    .entry(e["cluster"].as_str().unwrap().to_string())
                    .or_default()
                    .push((
                        e["actor"].as_str().unwrap().to_string(),
                        e["detail"]["from"].as_str().unwrap().to_string(),
                        e["detail"]["to"].as_str().unwrap().to_string(),
                    ));
            }
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return by_cluster,
        }
    }
}

fn three_stages() -> Value {
    json!({"name": "q4-upgrade", "targetVersion": "1.28.2", "selector": "env=prod",
        "stages": [
            {"name": "canary", "selector": "ring=canary", "maxConcurrency": 1, "soakSeconds": 1},
            {"name": "half", "percent": 50, "maxConcurrency": 5},
            {"name": "rest", "maxConcurrency": 10}],
        "failurePolicy": {"maxFailedClusters": 1, "action": "rollback"},
        "progressDeadlineSeconds": 120})
}

fn ring(i: usize) -> Value {
    let ring = if i < 3 { "canary" } else { "main" };
    json!({"env": "prod", "ring": ring})
}

#[tokio::test]
async fn a_three_stage_rollout_over_fifty_clusters_runs_in_order_within_its_concurrency() {
    let app = TestApp::spawn().await;
    let agents = fleet(&app, 50, "1.27.1", ring).await;
    let reconciler = run(&app.reconciler().await);
    let created = start(&app, &three_stages()).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["counts"]["total"], 50);
    let sizes: Vec<usize> = created["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["clusters"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        vec![3, 24, 23],
        "canary by selector, half of the rest, the rest"
    );

    let done = wait_rollout(&app, id, "Succeeded", |r| r["state"] == "Succeeded").await;
    assert_eq!(done["counts"]["succeeded"], 50);
    let stages = done["stages"].as_array().unwrap();
    for pair in stages.windows(2) {
        assert!(
            at(&pair[1]["startedAt"]) >= at(&pair[0]["finishedAt"]),
            "stage {} started before {} finished",
            pair[1]["name"],
            pair[0]["name"]
        );
    }
    for (stage, limit) in stages.iter().zip([1, 5, 10]) {
        let seen = max_in_flight(stage);
        assert!(
            seen <= limit,
            "stage {} ran {seen} at once (max {limit})",
            stage["name"]
        );
        assert!(seen >= 1);
        for c in stage["clusters"].as_array().unwrap() {
            assert_eq!(c["state"], "Succeeded", "{c}");
        }
    }
    // the canary soaked for a second before the next stage
    let canary_done = at(&stages[0]["finishedAt"]);
    let canary_started = at(&stages[0]["startedAt"]);
    assert!(canary_done - canary_started >= chrono::Duration::seconds(3));

    let op = app
        .get(&format!(
            "/v1/operations/{}",
            done["operationId"].as_str().unwrap()
        ))
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(op.body["status"], "Succeeded");
    let changes = version_changes(&app).await;
    assert_eq!(changes.len(), 50);
    for (cluster, list) in &changes {
        assert_eq!(
            list,
            &vec![(
                format!("rollout:{id}"),
                "1.27.1".to_string(),
                "1.28.2".to_string()
            )],
            "{cluster}"
        );
    }
    reconciler.stop().await;
    for a in agents {
        a.stop().await;
    }
}

/// Twelve clusters in three stages; ztunnel cannot be applied in three of
/// stage two's six clusters. Returns when the failure policy paused it.
async fn failing_stage_two(action: &str) -> (TestApp, Vec<RunningAgent>, Running, String, Value) {
    let app = TestApp::spawn().await;
    let agents = fleet(&app, 12, "1.27.1", |i| {
        let ring = match i {
            0..=1 => "canary",
            2..=7 => "two",
            _ => "three",
        };
        json!({"env": "prod", "ring": ring})
    })
    .await;
    for a in &agents[2..5] {
        a.sim.fail_apply(
            "DaemonSet",
            "ztunnel",
            "admission webhook \"policy.example\" denied the request",
        );
    }
    let reconciler = run(&app.reconciler().await);
    let body = json!({"name": "risky", "targetVersion": "1.28.2", "selector": "env=prod",
        "stages": [
            {"name": "canary", "selector": "ring=canary", "maxConcurrency": 2},
            {"name": "two", "selector": "ring=two", "maxConcurrency": 6},
            {"name": "three", "maxConcurrency": 6}],
        "failurePolicy": {"maxFailedClusters": 1, "action": action},
        "progressDeadlineSeconds": 120});
    let id = start(&app, &body).await["id"].as_str().unwrap().to_string();
    let paused = wait_rollout(&app, &id, "a pause by the failure threshold", |r| {
        r["pauseReason"] == "FailureThreshold"
    })
    .await;
    assert_eq!(paused["state"], "Paused");
    assert_eq!(paused["stages"][2]["state"], "Pending");
    (app, agents, reconciler, id, paused)
}

#[tokio::test]
async fn failures_in_stage_two_pause_the_rollout_by_itself() {
    let (app, agents, reconciler, id, _) = failing_stage_two("pause").await;
    // in-flight clusters finish; nothing new starts
    let settled = wait_rollout(&app, &id, "stage two settled", |r| {
        r["counts"]["inProgress"] == 0
    })
    .await;
    assert_eq!(settled["state"], "Paused");
    assert_eq!(settled["stages"][1]["state"], "Failed");
    let failed: Vec<&str> = settled["stages"][1]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "Failed")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["c02", "c03", "c04"]);
    for c in settled["stages"][2]["clusters"].as_array().unwrap() {
        assert_eq!(c["state"], "Pending", "{c}");
    }
    action(&app, &id, "resume").await.problem(409);
    let changes = version_changes(&app).await;
    assert!((8..12).all(|i| !changes.contains_key(&format!("c{i:02}"))));
    reconciler.stop().await;
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn failures_in_stage_two_with_rollback_return_that_stage_to_its_version() {
    let (app, agents, reconciler, id, _) = failing_stage_two("rollback").await;
    // the fault was the new version's: the old one applies again
    for a in &agents[2..5] {
        a.sim.clear_failures();
    }
    let done = wait_rollout(&app, &id, "RolledBack", |r| r["state"] == "RolledBack").await;
    let stages = done["stages"].as_array().unwrap();
    assert_eq!(stages[0]["state"], "Succeeded");
    assert_eq!(stages[1]["state"], "RolledBack");
    assert_eq!(
        stages[2]["state"], "Pending",
        "stage three was never touched"
    );
    for c in stages[1]["clusters"].as_array().unwrap() {
        assert_eq!(c["state"], "RolledBack", "{c}");
    }
    for c in stages[2]["clusters"].as_array().unwrap() {
        assert_eq!(c["state"], "Pending", "{c}");
    }
    for i in 2..8 {
        let name = format!("c{i:02}");
        let c = wait_status(&app, &name, "back on 1.27.1 and Healthy", |s| {
            s["health"] == "Healthy"
                && s["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["desiredVersion"].is_string())
                    .all(|c| c["observedVersion"] == "1.27.1")
        })
        .await;
        assert_eq!(c["desiredVersion"], "1.27.1");
    }
    let changes = version_changes(&app).await;
    for i in 8..12 {
        assert!(
            !changes.contains_key(&format!("c{i:02}")),
            "stage three untouched"
        );
    }
    assert_eq!(
        changes["c02"].len(),
        2,
        "up once, back once: {:?}",
        changes["c02"]
    );
    let op = app
        .get(&format!(
            "/v1/operations/{}",
            done["operationId"].as_str().unwrap()
        ))
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(op.body["status"], "Failed");
    assert!(op.body["error"]["detail"].as_str().unwrap().contains("two"));
    reconciler.stop().await;
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn approval_gates_pause_resume_and_cancel_do_what_they_say() {
    let app = TestApp::spawn().await;
    let agents = fleet(
        &app,
        6,
        "1.27.1",
        |i| json!({"env": "prod", "ring": if i < 2 { "canary" } else { "main" }}),
    )
    .await;
    let reconciler = run(&app.reconciler().await);
    let body = json!({"name": "gated", "targetVersion": "1.28.2",
        "stages": [
            {"name": "canary", "selector": "ring=canary", "maxConcurrency": 2},
            {"name": "main", "maxConcurrency": 1, "requireApproval": true}]});
    let id = start(&app, &body).await["id"].as_str().unwrap().to_string();
    let waiting = wait_rollout(&app, &id, "WaitingForApproval", |r| {
        r["state"] == "WaitingForApproval"
    })
    .await;
    assert_eq!(waiting["stages"][0]["state"], "Succeeded");
    assert_eq!(waiting["stages"][1]["state"], "WaitingForApproval");
    assert_eq!(waiting["counts"]["pending"], 4);
    action(&app, &id, "resume").await.problem(409);

    let paused = action(&app, &id, "pause").await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.body["state"], "Paused");
    assert_eq!(paused.body["pauseReason"], "User");
    action(&app, &id, "approve").await.problem(409);
    assert_eq!(action(&app, &id, "resume").await.status, 200);
    wait_rollout(&app, &id, "waiting again", |r| {
        r["state"] == "WaitingForApproval"
    })
    .await;
    let approved = action(&app, &id, "approve").await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    // one cluster at a time: cancel once the first is in flight or done
    wait_rollout(&app, &id, "the main stage started", |r| {
        r["counts"]["pending"].as_u64().unwrap() < 4
    })
    .await;
    let cancelled = action(&app, &id, "cancel").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.body["state"], "Cancelled");
    let done = wait_rollout(&app, &id, "nothing in flight", |r| {
        r["counts"]["inProgress"] == 0
    })
    .await;
    assert!(
        done["counts"]["skipped"].as_u64().unwrap() >= 1,
        "{}",
        done["counts"]
    );
    action(&app, &id, "resume").await.problem(409);
    let op_id = done["operationId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let op = app
            .get(&format!("/v1/operations/{op_id}"))
            .token(&app.owner("acme"))
            .send()
            .await;
        if op.body["status"] == "Cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "{}", op.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reconciler.stop().await;
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn a_rollout_holds_its_clusters_versions_and_refuses_what_it_cannot_do() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    for (name, version) in [("a1", "1.27.1"), ("a2", "1.27.1"), ("old", "1.26.2")] {
        let mut body = cluster_body(version);
        body["labels"] = json!({"env": "prod", "name": name});
        app.create("acme", name, &body).await;
    }
    let post = |body: Value| {
        let app = &app;
        let t = t.clone();
        async move {
            app.req(Method::POST, "/v1/rollouts")
                .token(&t)
                .json(&body)
                .send()
                .await
        }
    };
    let stage = json!([{"name": "all", "maxConcurrency": 1}]);
    let unknown = post(json!({"name": "x", "targetVersion": "1.99.0", "stages": stage})).await;
    assert_eq!(
        unknown.problem(422)["errors"][0]["pointer"],
        "/targetVersion"
    );
    let none = post(
        json!({"name": "x", "targetVersion": "1.28.2", "selector": "env=nowhere", "stages": stage}),
    )
    .await;
    assert_eq!(none.problem(422)["errors"][0]["pointer"], "/selector");
    let skip = post(json!({"name": "x", "targetVersion": "1.28.2", "stages": stage})).await;
    let errors = skip.problem(422)["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["pointer"], "/clusters/old");
    assert!(
        errors[0]["detail"]
            .as_str()
            .unwrap()
            .contains("one minor at a time")
    );

    // no reconciler runs: the rollout stays Running with its clusters held
    let r = post(json!({"name": "hold", "targetVersion": "1.28.2", "selector": "name in (a1,a2)", "stages": stage})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let other = post(json!({"name": "second", "targetVersion": "1.28.2", "selector": "name=a2", "stages": stage})).await;
    let detail = other.problem(409)["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("hold") && detail.contains(&id), "{detail}");

    let pinned = app
        .patch("/v1/clusters/a1")
        .token(&t)
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.0"}}}))
        .send()
        .await;
    let detail = pinned.problem(409)["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("hold"), "{detail}");
    let labels = app
        .patch("/v1/clusters/a1")
        .token(&t)
        .merge_patch(&json!({"labels": {"team": "payments"}}))
        .send()
        .await;
    assert_eq!(
        labels.status, 200,
        "other fields may change: {}",
        labels.text
    );

    let list = app.get("/v1/rollouts?state=Running").token(&t).send().await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["counts"]["total"], 2);
    let reader = app.token("other-tenant", &[meshfleet_tests::TestRole::Owner]);
    app.get(&format!("/v1/rollouts/{id}"))
        .token(&reader)
        .send()
        .await
        .problem(404);

    assert_eq!(action(&app, &id, "cancel").await.status, 200);
    let freed = app
        .patch("/v1/clusters/a1")
        .token(&t)
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.0"}}}))
        .send()
        .await;
    assert_eq!(
        freed.status, 200,
        "a cancelled rollout holds nothing: {}",
        freed.text
    );
}

#[tokio::test]
async fn two_reconcilers_share_a_rollout_and_a_killed_one_leaves_nothing_half_done() {
    let app = TestApp::spawn().await;
    let agents = fleet(&app, 20, "1.27.1", |_| json!({"env": "prod"})).await;
    let first = run(&app.reconciler().await);
    let second = run(&app.reconciler().await);
    let body = json!({"name": "shared", "targetVersion": "1.28.2",
        "stages": [
            {"name": "one", "percent": 50, "maxConcurrency": 3},
            {"name": "two", "maxConcurrency": 3}]});
    let id = start(&app, &body).await["id"].as_str().unwrap().to_string();
    wait_rollout(&app, &id, "mid-stage", |r| {
        r["counts"]["succeeded"].as_u64().unwrap() >= 4
    })
    .await;
    first.kill();
    let done = wait_rollout(&app, &id, "Succeeded", |r| r["state"] == "Succeeded").await;
    assert_eq!(done["counts"]["succeeded"], 20);
    let changes = version_changes(&app).await;
    assert_eq!(changes.len(), 20);
    for (cluster, list) in &changes {
        assert_eq!(list.len(), 1, "{cluster} changed more than once: {list:?}");
    }
    second.stop().await;
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn reports_from_one_cluster_in_flight_do_not_keep_a_rollout_from_seeing_anothers_deadline() {
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::spawn_at(&clock).await;
    let mut agents = fleet(&app, 2, "1.27.1", |_| json!({"env": "prod"})).await;
    // c01's agent has reported and goes quiet: only a full look sees its deadline
    agents.pop().unwrap().stop().await;
    let reconciler = app.reconciler().await;
    let body = json!({"name": "long-soak", "targetVersion": "1.28.2",
        "stages": [{"name": "all", "maxConcurrency": 2, "soakSeconds": 3600}],
        "progressDeadlineSeconds": 60});
    let id = start(&app, &body).await["id"].as_str().unwrap().to_string();
    reconciler.sweep_rollouts(Hints::default()).await.unwrap();
    let c00 = app
        .get("/v1/clusters/c00")
        .token(&app.owner("acme"))
        .send()
        .await
        .body;
    let generation = c00["generation"].as_i64().unwrap();
    wait_status(&app, "c00", "Healthy on the target", |s| {
        s["health"] == "Healthy" && s["observedGeneration"].as_i64() == Some(generation)
    })
    .await;
    let c00_id: uuid::Uuid = c00["id"].as_str().unwrap().parse().unwrap();

    // c00 keeps reporting (soaking) more often than the rollout is due
    let mut failed = None;
    for _ in 0..60 {
        clock.advance(chrono::Duration::milliseconds(1500));
        reconciler
            .sweep_rollouts(Hints::reported("acme", &[c00_id]))
            .await
            .unwrap();
        let r = rollout(&app, &id).await;
        let clusters = r["stages"][0]["clusters"].as_array().unwrap().clone();
        assert_eq!(clusters[0]["name"], "c00");
        assert_eq!(clusters[0]["state"], "Soaking", "{}", clusters[0]);
        if clusters[1]["state"] == "Failed" {
            failed = Some(clusters[1].clone());
            break;
        }
        assert_eq!(clusters[1]["state"], "Upgrading", "{}", clusters[1]);
    }
    let failed = failed.expect("c01's progress deadline never fired");
    assert_eq!(
        failed["reason"], "not converged on 1.28.2 within 60s",
        "{failed}"
    );
    for a in agents {
        a.stop().await;
    }
}
