//! Spans exported over real OTLP/gRPC to an in-process receiver. The
//! process's subscriber is installed once (as the binary does), so these
//! tests live in a test binary of their own (`otlp_http.rs` for HTTP).

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use meshfleet_core::clock::ManualClock;
use meshfleet_telemetry::{OtelArgs, OtlpProtocol, ResourceAttributes};
use meshfleet_tests::agents::{cluster_with_agent, wait_status};
use meshfleet_tests::otlp::{Harness, find, random_hex};
use meshfleet_tests::{TestApp, TestRole, cluster_body};
use serde_json::json;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        Harness::start(
            OtlpProtocol::Grpc,
            OtelArgs {
                service_name: Some("meshfleet-under-test".into()),
                resource_attributes: Some(ResourceAttributes(vec![(
                    "deployment.environment".into(),
                    "test".into(),
                )])),
                ..OtelArgs::default()
            },
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_continues_the_callers_traceparent_and_its_span_tree_carries_route_status_tenant_and_cluster()
 {
    tokio::task::spawn_blocking(harness).await.unwrap();
    let app = TestApp::spawn().await;
    app.create("acme", "traced-1", &cluster_body("1.27.1"))
        .await;
    let trace = random_hex(16);
    let caller = random_hex(8);
    let r = app
        .patch("/v1/clusters/traced-1")
        .token(&app.owner("acme"))
        .header("traceparent", &format!("00-{trace}-{caller}-01"))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let request_id = r.header("x-request-id").unwrap().to_string();

    let t = trace.clone();
    let (request, write) = harness()
        .wait_for("the PATCH request's span tree", move |spans| {
            let request = find(spans, &t, "PATCH /v1/clusters/{name}")?;
            let write = find(spans, &t, "desired_state.write")?;
            Some((request.clone(), write.clone()))
        })
        .await;

    assert_eq!(
        request.parent_span_id, caller,
        "continues the caller's span"
    );
    assert_eq!(request.attr("http.route"), Some("/v1/clusters/{name}"));
    assert_eq!(request.attr("http.request.method"), Some("PATCH"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert_eq!(request.attr("tenant"), Some("acme"));
    assert_eq!(request.attr("cluster"), Some("traced-1"));
    assert_eq!(request.attr("request_id"), Some(request_id.as_str()));
    assert_eq!(request.attr("trace_id"), Some(trace.as_str()));
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some("meshfleet-under-test")
    );
    assert_eq!(
        request
            .resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );

    assert_eq!(
        write.parent_span_id, request.span_id,
        "a child of the request"
    );
    assert_eq!(write.attr("cluster"), Some("traced-1"));
    assert_eq!(write.attr("version"), Some("1.28.2"));
    assert_eq!(write.attr("generation"), Some("2"));
    assert_eq!(write.attr("actor"), Some("user@acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_change_and_the_agent_applying_it_are_one_trace_joined_at_the_long_poll() {
    tokio::task::spawn_blocking(harness).await.unwrap();
    let app = TestApp::spawn().await;
    let agent = cluster_with_agent(&app, "edge-1", "1.27.1").await;
    wait_status(&app, "edge-1", "Healthy at generation 1", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == 1
    })
    .await;

    let trace = random_hex(16);
    let r = app
        .patch("/v1/clusters/edge-1")
        .token(&app.owner("acme"))
        .header("traceparent", &format!("00-{trace}-{}-01", random_hex(8)))
        .merge_patch(&json!({"mesh": {"upgrade": {"version": "1.28.2"}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_status(&app, "edge-1", "Healthy at generation 2", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == 2
    })
    .await;

    let t = trace.clone();
    let chain = harness()
        .wait_for(
            "the change's trace from the PATCH to the agent's status report",
            move |spans| {
                let request = find(spans, &t, "PATCH /v1/clusters/{name}")?;
                let write = find(spans, &t, "desired_state.write")?;
                let delivered = find(spans, &t, "desired_state.delivered")?;
                let pass = find(spans, &t, "agent.reconcile")?;
                let report = spans
                    .iter()
                    .find(|s| s.name == "agent.report" && s.parent_span_id == pass.span_id)?;
                let status = spans.iter().find(|s| {
                    s.name == "PUT /v1/agent/status" && s.parent_span_id == report.span_id
                })?;
                // The long poll that answered: in the agent's own trace (a child
                // of its `agent.poll` span), linked to the change.
                let poll_request = spans.iter().find(|s| {
                    s.name == "GET /v1/agent/desired-state"
                        && s.links.contains(&(t.clone(), write.span_id.clone()))
                })?;
                let poll = spans
                    .iter()
                    .find(|s| s.span_id == poll_request.parent_span_id && s.name == "agent.poll")?;
                Some(
                    [
                        request,
                        write,
                        delivered,
                        pass,
                        report,
                        status,
                        poll_request,
                        poll,
                    ]
                    .map(Clone::clone),
                )
            },
        )
        .await;
    let [
        request,
        write,
        delivered,
        pass,
        report,
        status,
        poll_request,
        poll,
    ] = chain;

    assert_eq!(write.parent_span_id, request.span_id);
    assert_eq!(
        delivered.parent_span_id, write.span_id,
        "delivered in the writer's trace"
    );
    assert_eq!(delivered.attr("cluster"), Some("edge-1"));
    assert_eq!(delivered.attr("tenant"), Some("acme"));
    assert_eq!(delivered.attr("generation"), Some("2"));
    assert!(
        delivered
            .links
            .contains(&(poll_request.trace_id.clone(), poll_request.span_id.clone())),
        "the delivery links the long poll that carried it"
    );
    assert_eq!(
        pass.parent_span_id, delivered.span_id,
        "the agent continues it"
    );
    assert_eq!(pass.attr("cluster"), Some("edge-1"));
    assert_eq!(pass.attr("generation"), Some("2"));
    assert_eq!(pass.attr("version"), Some("1.28.2"));
    assert_eq!(pass.attr("converged"), Some("true"));
    assert_eq!(
        pass.attr("trace_id"),
        Some(trace.as_str()),
        "the agent's log lines name the change's trace"
    );
    assert_eq!(report.trace_id, trace);
    assert_eq!(status.attr("tenant"), Some("acme"));
    assert_eq!(status.attr("cluster"), Some("edge-1"));
    assert_eq!(poll_request.attr("cluster"), Some("edge-1"));
    assert_eq!(poll_request.attr("http.response.status_code"), Some("200"));
    assert_ne!(
        poll.trace_id, trace,
        "the long poll itself is the agent's trace"
    );
    assert_eq!(poll.attr("result"), Some("changed"));
    assert_eq!(poll.attr("trace_id"), Some(poll.trace_id.as_str()));
    // The registration too: the agent's connect attempt and the api's answer.
    let (connect, register) = harness()
        .wait_for("the agent's registration", |spans| {
            let register = spans.iter().find(|s| s.name == "POST /v1/agent/register")?;
            let connect = spans
                .iter()
                .find(|s| s.span_id == register.parent_span_id && s.name == "agent.connect")?;
            Some((connect.clone(), register.clone()))
        })
        .await;
    assert_eq!(connect.trace_id, register.trace_id);
    assert_eq!(register.attr("http.response.status_code"), Some("201"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_exports_its_steps_and_the_change_it_writes_in_one_trace() {
    tokio::task::spawn_blocking(harness).await.unwrap();
    let clock = ManualClock::at(
        DateTime::parse_from_rfc3339("2026-12-01T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    let app = TestApp::spawn_at(&clock).await;
    // regular's head 1.28.1 is past its end of support: moved at once
    app.create(
        "acme",
        "follower-1",
        &json!({"mesh": {"upgrade": {"mode": "automatic", "channel": "regular"}}}),
    )
    .await;
    let sre = app.token("ops", &[TestRole::Sre]);
    let r = app
        .put("/v1/ops/releases/1.28.3")
        .token(&sre)
        .json(&json!({"channels": ["regular"], "releasedAt": "2026-10-01", "endOfSupport": "2027-01-31"}))
        .send()
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = app
        .put("/v1/ops/releases/1.28.3/bundle")
        .token(&sre)
        .json(&json!({"origin": "development"}))
        .send()
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    app.reconciler().await.run_once().await.unwrap();

    let [reconcile, step, write] = harness()
        .wait_for("the reconcile of follower-1", |spans| {
            let reconcile = spans.iter().find(|s| {
                s.name == "reconcile.cluster" && s.attr("cluster") == Some("follower-1")
            })?;
            let step = spans.iter().find(|s| {
                s.name == "reconcile.follow_channel" && s.parent_span_id == reconcile.span_id
            })?;
            let write = spans
                .iter()
                .find(|s| s.name == "desired_state.write" && s.parent_span_id == step.span_id)?;
            Some([reconcile, step, write].map(Clone::clone))
        })
        .await;
    assert_eq!(reconcile.attr("tenant"), Some("acme"));
    assert_eq!(
        reconcile.attr("trace_id"),
        Some(reconcile.trace_id.as_str())
    );
    assert_eq!(step.trace_id, reconcile.trace_id);
    assert_eq!(write.attr("actor"), Some("reconciler"));
    assert_eq!(write.attr("version"), Some("1.28.3"));
    // The change carries the reconcile's trace to the agent that will apply it.
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT change_traceparent FROM clusters WHERE tenant_id = 'acme' AND name = 'follower-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        Some(format!("00-{}-{}-01", write.trace_id, write.span_id))
    );
}
