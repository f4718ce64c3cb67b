//! The limits of a shared service: request rates per tenant and per agent
//! (429 with `Retry-After`), the cluster quota, header size, and the
//! connection's limits (header read timeout, buffer size).

use std::time::Duration;

use meshfleet_api::app::CONNECTION_BUFFER_LIMIT;
use meshfleet_api::limits::RateLimit;
use meshfleet_tests::{TestApp, cluster_body, test_config};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A limit that refills so slowly that a test never sees a token come back.
fn burst_only(burst: u32) -> Option<RateLimit> {
    RateLimit::new(0.01, burst)
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_other_tenants_do_not() {
    let mut config = test_config();
    config.tenant_rate = burst_only(5);
    let app = TestApp::spawn_with(config).await;
    let noisy = app.owner("noisy");
    let quiet = app.owner("quiet");
    for i in 0..5 {
        let r = app.get("/v1/clusters").token(&noisy).send().await;
        assert_eq!(r.status, 200, "request {i} is within the burst: {}", r.text);
    }
    let asked = std::time::Instant::now();
    let over = app.get("/v1/clusters").token(&noisy).send().await;
    let problem = over.problem(429);
    assert!(
        asked.elapsed() >= std::time::Duration::from_millis(900),
        "a refusal is held for the wait, at most a second: {:?}",
        asked.elapsed()
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("tenant `noisy`"),
        "{}",
        over.text
    );
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After is whole seconds: {retry}");
    // a write is refused too, and writes nothing
    let refused = app
        .put("/v1/clusters/c1")
        .token(&noisy)
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    refused.problem(429);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // another tenant has its own bucket
    let r = app.get("/v1/clusters").token(&quiet).send().await;
    assert_eq!(r.status, 200, "{}", r.text);

    // counted in /metrics by kind only: no tenant name becomes a label value
    let metrics = app.get("/metrics").send().await.text;
    let limited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshfleet_rate_limited_total{kind=\"tenant\"} "))
        .unwrap_or_else(|| panic!("no tenant series in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(limited >= 2.0, "{limited}");
    assert!(!metrics.contains("noisy"), "{metrics}");
}

#[tokio::test]
async fn an_agent_over_its_rate_gets_429_and_neither_other_agents_nor_users_are_affected() {
    let mut config = test_config();
    config.agent_rate = burst_only(3);
    let app = TestApp::spawn_with(config).await;
    let first = app.registered("acme", "c1").await;
    let second = app.registered("acme", "c2").await;
    // registration took one token from each cluster's bucket
    for _ in 0..2 {
        let r = app
            .req(Method::POST, "/v1/agent/credential/rotate")
            .token(&first)
            .send()
            .await;
        // rotation answers 200 once, then 409 for the same credential: both pass the limit
        assert!(r.status == 200 || r.status == 409, "{}", r.text);
    }
    let over = app
        .get("/v1/agent/desired-state")
        .token(&first)
        .send()
        .await;
    over.problem(429);
    assert!(over.header("retry-after").is_some());
    assert!(
        over.body["detail"].as_str().unwrap().contains("`c1`"),
        "{}",
        over.text
    );

    let other = app
        .get("/v1/agent/desired-state")
        .token(&second)
        .send()
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
    let user = app
        .get("/v1/clusters")
        .token(&app.owner("acme"))
        .send()
        .await;
    assert_eq!(user.status, 200, "{}", user.text);
}

#[tokio::test]
async fn a_tenant_at_its_cluster_quota_gets_409_and_nothing_is_written() {
    let mut config = test_config();
    config.max_clusters_per_tenant = Some(2);
    let app = TestApp::spawn_with(config).await;
    app.create("acme", "c1", &cluster_body("1.27.1")).await;
    app.create("acme", "c2", &cluster_body("1.27.1")).await;
    let owner = app.owner("acme");
    let third = app
        .put("/v1/clusters/c3")
        .token(&owner)
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    let problem = third.problem(409);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("quota of 2 clusters"),
        "{}",
        third.text
    );
    app.get("/v1/clusters/c3")
        .token(&owner)
        .send()
        .await
        .problem(404);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = 'acme' AND cluster_name = 'c3'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(events, 0, "the refused creation left no event");
    // an update of an existing cluster is not a creation
    let r = app
        .put("/v1/clusters/c1")
        .token(&owner)
        .json(&cluster_body("1.28.0"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // another tenant has its own quota
    app.create("other", "c3", &cluster_body("1.27.1")).await;
    // a deletion frees a place
    let gone = app.delete("/v1/clusters/c2").token(&owner).send().await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    app.create("acme", "c3", &cluster_body("1.27.1")).await;
}

#[tokio::test]
async fn concurrent_creations_never_exceed_the_quota() {
    let mut config = test_config();
    config.max_clusters_per_tenant = Some(5);
    let app = TestApp::spawn_with(config).await;
    let owner = app.owner("acme");
    let replies = futures::future::join_all((0..20).map(|i| {
        app.put(&format!("/v1/clusters/race-{i}"))
            .token(&owner)
            .json(&cluster_body("1.27.1"))
            .send()
    }))
    .await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for r in replies.iter().filter(|r| r.status != 201) {
        r.problem(409);
    }
    assert_eq!(created, 5, "exactly the quota was created");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters WHERE tenant_id = 'acme'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 5);
    let usage: i64 =
        sqlx::query_scalar("SELECT clusters FROM tenant_usage WHERE tenant_id = 'acme'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(usage, 5, "the usage row agrees with the table");
}

#[tokio::test]
async fn oversized_headers_get_431_problem() {
    let app = TestApp::spawn().await;
    let r = app
        .get("/v1/clusters")
        .token(&app.owner("acme"))
        .header("x-padding", &"a".repeat(40 * 1024))
        .send()
        .await;
    let problem = r.problem(431);
    assert!(
        problem["detail"].as_str().unwrap().contains("at most"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn headers_past_the_connection_buffer_are_refused_with_431() {
    let app = TestApp::spawn().await;
    let r = app
        .get("/v1/clusters")
        .token(&app.owner("acme"))
        .header("x-padding", &"a".repeat(CONNECTION_BUFFER_LIMIT + 1024))
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 431, "{}", r.text);
}

#[tokio::test]
async fn a_connection_that_does_not_finish_its_request_head_in_time_is_closed() {
    let mut config = test_config();
    config.header_read_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let mut conn = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: meshfleet\r\nx-slow: ")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server closes it (without an answer: there is no request to answer);
    // the outer limit only keeps a broken server from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut answer))
        .await
        .expect("the server kept the connection open");
    assert_eq!(read.unwrap(), 0, "{}", String::from_utf8_lossy(&answer));
}
