//! `/metrics`: label values come from closed sets, and the service's gauges
//! are there.

use meshfleet_tests::{TestApp, cluster_body};
use reqwest::Method;

/// The label values of `metric` in a Prometheus text exposition.
fn label_values(text: &str, metric: &str, label: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            l.split_once(&format!("{label}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn an_unknown_method_is_counted_as_other_and_an_unmatched_path_as_one_route() {
    let app = TestApp::spawn().await;
    let owner = app.owner("acme");
    app.create("acme", "m1", &cluster_body("1.27.1")).await;
    let made_up = Method::from_bytes(b"BREW").unwrap();
    let r = app
        .req(made_up.clone(), "/v1/clusters/m1")
        .token(&owner)
        .send()
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
    let r = app.req(made_up, "/no/such/path-7f3a9c").send().await;
    assert_eq!(r.status, 404, "{}", r.text);
    app.get("/v1/clusters/unknown-route-segment/zz-e41b")
        .send()
        .await;

    let metrics = app.get("/metrics").send().await.text;
    assert!(
        !metrics.contains("BREW"),
        "a client's method became a label value"
    );
    assert!(
        !metrics.contains("path-7f3a9c") && !metrics.contains("zz-e41b"),
        "a raw path became a label value"
    );
    let methods = label_values(&metrics, "meshfleet_http_requests_total", "method");
    assert!(methods.iter().any(|m| m == "other"), "{methods:?}");
    for m in &methods {
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"
            ]
            .contains(&m.as_str()),
            "{m}"
        );
    }
    let routes = label_values(&metrics, "meshfleet_http_requests_total", "route");
    assert!(routes.iter().any(|r| r == "unmatched"), "{routes:?}");
    for r in &routes {
        assert!(r == "unmatched" || r.starts_with('/'), "{r}");
    }
    // Per-route errors, by class.
    let classes = label_values(&metrics, "meshfleet_http_request_errors_total", "class");
    assert!(classes.iter().any(|c| c == "client"), "{classes:?}");
}

#[tokio::test]
async fn metrics_show_the_pool_the_long_poll_and_the_fleet_by_health_and_connectivity() {
    let app = TestApp::spawn().await;
    app.create("acme", "g1", &cluster_body("1.27.1")).await;
    let metrics = app.get("/metrics").send().await.text;
    for series in [
        "meshfleet_db_pool_connections",
        "meshfleet_db_pool_idle_connections",
        "meshfleet_db_pool_max_connections 20",
        "meshfleet_long_poll_waiting_clusters",
        "meshfleet_reconcile_due_clusters",
        "meshfleet_rollouts{state=\"Running\"}",
        "meshfleet_rollout_clusters{state=\"Upgrading\"}",
        "meshfleet_http_request_duration_seconds_bucket{method=\"PUT\",route=\"/v1/clusters/{name}\"",
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
    // Every health × connectivity pair is a series (zero or not).
    let health = label_values(&metrics, "meshfleet_fleet_clusters", "health");
    let connectivity = label_values(&metrics, "meshfleet_fleet_clusters", "connectivity");
    assert_eq!(health.len(), 15, "{metrics}");
    assert_eq!(connectivity.len(), 15, "{metrics}");
    assert!(!metrics.contains(" -0\n"), "a zero shows as -0: {metrics}");
    assert!(health.iter().all(|h| {
        ["Healthy", "Progressing", "Degraded", "Unhealthy", "Unknown"].contains(&h.as_str())
    }));
}
