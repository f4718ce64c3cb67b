//! The one middleware: request id, tracing span (continuing an incoming W3C
//! `traceparent`), metrics with labels from closed sets, this process's route
//! counters (`route_stats`), the time limit, and a problem body for every
//! error response.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use meshfleet_model::LONG_POLL_PATH;
use meshfleet_telemetry::{TRACEPARENT, parse_traceparent, record_trace_id};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::AppConfig;
use crate::error::{PROBLEM_JSON, problem_response};
use crate::http::{BODY_LIMIT, HEADER_LIMIT, header_bytes, with_header};
use crate::request_id::{CURRENT_REQUEST_ID, REQUEST_ID, acceptable_request_id};
use crate::route_stats::{RouteStats, method_label};

/// The `route` label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// What [`request_context`] takes of the app's state.
#[derive(Clone)]
pub struct ContextState {
    pub config: Arc<AppConfig>,
    pub route_stats: Arc<RouteStats>,
}

/// The only middleware (one layer, so a request waiting in a long poll holds
/// one middleware future, not one per concern): assigns the request id
/// (keeping a sane incoming `x-request-id`), opens the `request` span every
/// log line of the request is in (continuing an incoming W3C `traceparent`),
/// records metrics and the route counters of `route_stats` (every answer, the
/// time-limit 503s included), and gives every error response a problem body.
pub async fn request_context(
    axum::extract::State(ContextState {
        config,
        route_stats,
    }): axum::extract::State<ContextState>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let id = parts
        .headers
        .get(REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID, v);
    }
    let method = method_label(&parts.method);
    // the route template (shared, not copied: the request may wait a minute)
    let matched = parts.extensions.get::<MatchedPath>().cloned();
    let route = matched
        .as_ref()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    // The cluster a tenant's route is about (`/v1/clusters/{name}...`); the
    // agent routes record theirs once the credential is checked.
    let cluster = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(params) => params
            .iter()
            .find(|(k, _)| *k == "name")
            .filter(|_| route.contains("/clusters/"))
            .map(|(_, v)| v.to_string()),
        Err(_) => None,
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id = %id,
        http.request.method = method,
        http.route = %route,
        url.path = %parts.uri.path(),
        http.response.status_code = tracing::field::Empty,
        tenant = tracing::field::Empty,
        cluster = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(cluster) = &cluster {
        span.record("cluster", cluster.as_str());
    }
    let incoming = parts
        .headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    if let Some(parent) = &incoming {
        // Without an exporter there is no OpenTelemetry layer: nothing to set.
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
    }
    // The trace id in every log line: this span's when traced, else the caller's.
    if !record_trace_id(&span)
        && let Some(parent) = &incoming
    {
        span.record("trace_id", tracing::field::display(parent.trace_id()));
    }
    let header_size = header_bytes(&parts.headers);
    let req = Request::from_parts(parts, body);
    let started = Instant::now();
    let limit = if req.uri().path() == LONG_POLL_PATH {
        config.long_poll_timeout
    } else {
        config.request_timeout
    };
    // The rest of the stack, boxed: the request is then kept in one future,
    // not copied into each async block below (a long poll holds them all).
    let mut inner = (header_size <= HEADER_LIMIT).then(|| Box::pin(next.run(req)));
    let work = async move {
        let response = match tokio::time::timeout(limit, async {
            let Some(inner) = inner.as_mut() else {
                return problem_response(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!(
                        "the request's headers take {header_size} bytes; at most {HEADER_LIMIT} are accepted"
                    ),
                    None,
                );
            };
            let response = inner.await;
            if response.status().is_client_error() || response.status().is_server_error() {
                // boxed: reading an error's body would size every request's future
                Box::pin(problemize(response)).await
            } else {
                response
            }
        })
        .await
        {
            Ok(response) => response,
            Err(_) => problem_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {}s and was cancelled; retry",
                    limit.as_secs()
                ),
                None,
            ),
        };
        let elapsed = started.elapsed();
        let status = response.status();
        let code = status.as_u16();
        let elapsed_ms = elapsed.as_millis() as u64;
        let current = tracing::Span::current();
        current.record("http.response.status_code", code);
        if status.is_server_error() {
            current.record("otel.status_code", "ERROR");
            tracing::warn!(status = code, elapsed_ms, "request failed");
        } else {
            tracing::info!(status = code, elapsed_ms, "request served");
        }
        let route = matched
            .as_ref()
            .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        route_stats.record(method, route, code);
        let route = route.to_string();
        metrics::counter!("meshfleet_http_requests_total",
            "method" => method, "route" => route.clone(), "status" => code.to_string())
        .increment(1);
        if status.is_client_error() || status.is_server_error() {
            let class = if status.is_server_error() {
                "server"
            } else {
                "client"
            };
            metrics::counter!("meshfleet_http_request_errors_total",
                "method" => method, "route" => route.clone(), "class" => class)
            .increment(1);
        }
        metrics::histogram!("meshfleet_http_request_duration_seconds",
            "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
        response
    };
    let response = CURRENT_REQUEST_ID
        .scope(id.clone(), tracing::Instrument::instrument(work, span))
        .await;
    with_header(response, header::HeaderName::from_static(REQUEST_ID), &id)
}

/// Error responses made by axum or tower (405, 408, 413, ...) come without a
/// problem body; give them one.
async fn problemize(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource".to_string(),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE if text.is_empty() => {
            "the request took too long and was cancelled".to_string()
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body exceeds {BODY_LIMIT} bytes"),
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = problem_response(status, detail, None);
    for (name, value) in parts.headers.iter() {
        if name == header::ALLOW || name == header::WWW_AUTHENTICATE || name == header::RETRY_AFTER
        {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
