//! Database faults under the real app: PostgreSQL down and back (a server of
//! the test's own, which it stops), the LISTEN connection lost, a statement
//! timeout, a pool with no free connection. Requests answer 503 problem+json
//! with `Retry-After` within their time limit, nothing is half-written, the
//! service recovers by itself, and no change is missed by a waiting agent.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use meshfleet_core::notify::LISTENER_APPLICATION_NAME;
use meshfleet_core::store as db;
use meshfleet_tests::agents::{agent_for, spec, wait_status};
use meshfleet_tests::own_pg::OwnPg;
use meshfleet_tests::{AppConfig, Reply, TestApp, cluster_body, fresh_database_options};
use serde_json::json;
use sqlx::Connection;

/// The time limit of ordinary requests in these tests.
const LIMIT: Duration = Duration::from_secs(10);

fn config() -> AppConfig {
    AppConfig {
        request_timeout: LIMIT,
        ..meshfleet_tests::test_config()
    }
}

/// A 503 problem with `Retry-After`, answered within the request time limit.
#[track_caller]
fn unavailable(r: &Reply, took: Duration) -> String {
    let detail = r.problem(503)["detail"].as_str().unwrap().to_string();
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After on a 503")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After: {retry}");
    assert!(
        took < LIMIT,
        "took {took:?}: longer than the request time limit"
    );
    detail
}

async fn timed(req: meshfleet_tests::Req) -> (Reply, Duration) {
    let started = Instant::now();
    let r = req.send().await;
    (r, started.elapsed())
}

/// Waits (up to `within`) until `/readyz` answers `status`; returns the reply.
async fn readyz_becomes(app: &TestApp, status: u16, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = app.get("/readyz").send().await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {} ({}), expected {status}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn while_the_database_is_down_requests_answer_503_with_retry_after_and_the_service_recovers_without_a_restart()
 {
    let mut pg = OwnPg::start(false).await;
    let app = TestApp::spawn_on(pg.database("meshfleet").await, config()).await;
    let owner = app.owner("acme");
    app.create("acme", "before", &cluster_body("1.27.1")).await;
    let credential = app.register_agent("acme", "before").await;
    readyz_becomes(&app, 200, Duration::from_secs(10)).await;

    pg.stop().await;
    let (r, took) = timed(app.get("/v1/clusters/before").token(&owner)).await;
    unavailable(&r, took);
    let (r, took) = timed(app.get("/v1/clusters").token(&owner)).await;
    unavailable(&r, took);
    let (r, took) = timed(
        app.put("/v1/clusters/during")
            .token(&owner)
            .json(&cluster_body("1.27.1")),
    )
    .await;
    unavailable(&r, took);
    let (r, took) = timed(
        app.get("/v1/agent/desired-state?waitSeconds=5")
            .token(&credential),
    )
    .await;
    unavailable(&r, took);
    // (the listener notices its lost connection on its own time)
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = readyz_becomes(&app, 503, LIMIT).await;
        let detail = unavailable(&r, Duration::ZERO);
        if detail.contains("database") && detail.contains("LISTEN") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz names what is down: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pg.start_again().await;
    let back = Instant::now();
    loop {
        let r = app.get("/v1/clusters/before").token(&owner).send().await;
        if r.status == 200 {
            break;
        }
        r.problem(503);
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not recovered 5 s after PostgreSQL returned: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    readyz_becomes(&app, 200, Duration::from_secs(5)).await;
    // The create refused during the outage left nothing behind.
    app.get("/v1/clusters/during")
        .token(&owner)
        .send()
        .await
        .problem(404);
    let r = app
        .get("/v1/events?cluster=during")
        .token(&owner)
        .send()
        .await;
    assert_eq!(r.body["items"], json!([]), "{}", r.text);
}

#[tokio::test]
async fn a_change_made_after_a_database_restart_reaches_the_agent_that_waited_through_it() {
    let mut pg = OwnPg::start(false).await;
    let app = TestApp::spawn_on(pg.database("meshfleet").await, config()).await;
    app.create("acme", "c1", &spec("1.27.1")).await;
    let agent = agent_for(&app, "acme", "c1").await;
    wait_status(&app, "c1", "convergence on generation 1", |s| {
        s["observedGeneration"] == 1 && s["health"] == "Healthy"
    })
    .await;
    readyz_becomes(&app, 200, Duration::from_secs(10)).await;

    pg.stop().await;
    readyz_becomes(&app, 503, LIMIT).await;
    pg.start_again().await;
    readyz_becomes(&app, 200, Duration::from_secs(5)).await;
    let r = app
        .patch("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["generation"], 2, "{}", r.text);
    wait_status(&app, "c1", "the agent applying the change", |s| {
        s["observedGeneration"] == 2 && s["health"] == "Healthy"
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_listener_is_down_and_a_change_made_meanwhile_reaches_the_waiting_long_poll()
 {
    let pg = OwnPg::start(false).await;
    let app = TestApp::spawn_on(pg.database("meshfleet").await, config()).await;
    let mut admin = sqlx::PgConnection::connect_with(&pg.options("postgres"))
        .await
        .unwrap();
    app.create("acme", "c1", &spec("1.27.1")).await;
    let credential = app.register_agent("acme", "c1").await;
    let first = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    readyz_becomes(&app, 200, Duration::from_secs(10)).await;
    // The app's pool filled with idle connections: they keep serving while no
    // new connection can be made (a full pool waits for a free connection
    // instead of making one).
    let max = app.pool.options().get_max_connections();
    let held: Vec<_> = futures::future::join_all((0..max).map(|_| app.pool.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    drop(held);

    // The listener loses its connection and cannot make a new one.
    sqlx::query("ALTER ROLE meshfleet NOLOGIN")
        .execute(&mut admin)
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(LISTENER_APPLICATION_NAME)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one LISTEN connection");
    let r = readyz_becomes(&app, 503, LIMIT).await;
    let detail = unavailable(&r, Duration::ZERO);
    assert!(
        detail.contains("LISTEN") && !detail.contains("database"),
        "only the listener is down: {detail}"
    );

    // An agent waits; its cluster changes while nobody listens.
    let waiting = {
        let poll = app
            .get("/v1/agent/desired-state?waitSeconds=30")
            .token(&credential)
            .header("if-none-match", &first.etag());
        tokio::spawn(timed(poll))
    };
    // (its request has reached the hub once the app counts it as a waiter)
    let deadline = Instant::now() + LIMIT;
    loop {
        let m = app.get("/metrics").send().await.text;
        if m.lines()
            .any(|l| l == "meshfleet_long_poll_waiting_clusters 1")
        {
            break;
        }
        if waiting.is_finished() || Instant::now() >= deadline {
            let finished = waiting.is_finished();
            let answer = if finished {
                let (r, took) = waiting.await.unwrap();
                format!("answered {} after {took:?}: {}", r.status, r.text)
            } else {
                "still running".to_string()
            };
            panic!("the long poll is not waiting: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app
        .patch("/v1/clusters/c1")
        .token(&app.owner("acme"))
        .merge_patch(&json!({"mesh": {"enrolledNamespaces": ["shop", "payments"]}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !waiting.is_finished(),
        "no notification while nobody listens"
    );

    // The listener is back: the waiting poll re-checks and gets the change.
    sqlx::query("ALTER ROLE meshfleet LOGIN")
        .execute(&mut admin)
        .await
        .unwrap();
    readyz_becomes(&app, 200, Duration::from_secs(5)).await;
    let (r, took) = waiting.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["generation"], 2, "{}", r.text);
    assert!(
        took < Duration::from_secs(25),
        "answered by the re-check, not the wait: {took:?}"
    );
}

#[tokio::test]
async fn a_statement_that_outlasts_the_statement_timeout_answers_503_and_writes_nothing() {
    let options = fresh_database_options().await;
    let app = TestApp::spawn_on(
        db::with_statement_timeout(options.clone(), Duration::from_millis(300)),
        config(),
    )
    .await;
    let owner = app.owner("acme");
    let created = app.create("acme", "c1", &cluster_body("1.27.1")).await;

    // Another transaction holds the table.
    let mut side = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let mut tx = side.begin().await.unwrap();
    sqlx::query("LOCK TABLE clusters IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (r, took) = timed(
        app.patch("/v1/clusters/c1")
            .token(&owner)
            .header("if-match", &created.etag())
            .merge_patch(&json!({"labels": {"env": "staging"}})),
    )
    .await;
    let detail = unavailable(&r, took);
    assert!(detail.contains("statement timeout"), "{detail}");
    let (r, took) = timed(app.get("/v1/clusters/c1").token(&owner)).await;
    unavailable(&r, took);
    tx.rollback().await.unwrap();

    let r = app.get("/v1/clusters/c1").token(&owner).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.etag(), created.etag(), "nothing was written");
    assert_eq!(r.body["labels"]["env"], "prod");
    let events = app.get("/v1/events?cluster=c1").token(&owner).send().await;
    let actions: Vec<_> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["cluster.created"]);
}

#[tokio::test]
async fn with_no_free_connection_in_the_pool_requests_answer_503_within_the_time_limit() {
    let app = TestApp::spawn_with(config()).await;
    let owner = app.owner("acme");
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    let max = app.pool.options().get_max_connections();
    let held: Vec<_> = futures::future::join_all((0..max).map(|_| app.pool.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (r, took) = timed(app.get("/v1/clusters/c1").token(&owner)).await;
    let detail = unavailable(&r, took);
    assert!(detail.contains("database"), "{detail}");
    drop(held);
    let r = app.get("/v1/clusters/c1").token(&owner).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
}
