//! Spans exported over real OTLP/HTTP with protobuf bodies
//! (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, the default) to an
//! in-process receiver; a test binary of its own, since the process's
//! subscriber is installed once.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use meshfleet_telemetry::{OtelArgs, OtlpProtocol, parse_resource_attributes};
use meshfleet_tests::otlp::{Harness, find, random_hex};
use meshfleet_tests::{TestApp, cluster_body};

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        Harness::start(
            OtlpProtocol::HttpProtobuf,
            OtelArgs {
                resource_attributes: Some(
                    parse_resource_attributes("service.name=meshfleet-eu,region=eu%2Dwest")
                        .unwrap(),
                ),
                ..OtelArgs::default()
            },
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_http_protobuf_collector_at_v1_traces_with_the_resource_attributes() {
    tokio::task::spawn_blocking(harness).await.unwrap();
    let app = TestApp::spawn().await;
    let trace = random_hex(16);
    let r = app
        .put("/v1/clusters/http-1")
        .token(&app.owner("acme"))
        .header("traceparent", &format!("00-{trace}-{}-01", random_hex(8)))
        .json(&cluster_body("1.27.1"))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let t = trace.clone();
    let (request, create) = harness()
        .wait_for("the PUT request's spans over HTTP", move |spans| {
            let request = find(spans, &t, "PUT /v1/clusters/{name}")?;
            let create = find(spans, &t, "desired_state.create")?;
            Some((request.clone(), create.clone()))
        })
        .await;
    assert_eq!(request.attr("http.response.status_code"), Some("201"));
    assert_eq!(request.attr("cluster"), Some("http-1"));
    assert_eq!(create.parent_span_id, request.span_id);
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some("meshfleet-eu")
    );
    assert_eq!(
        request.resource.get("region").map(String::as_str),
        Some("eu-west")
    );
}
