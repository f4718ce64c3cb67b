//! The outermost middleware: request id, tracing span, metrics, the time
//! limit, and a problem body for every error response.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use meshfleet_model::LONG_POLL_PATH;

use crate::config::AppConfig;
use crate::error::{PROBLEM_JSON, problem_response};
use crate::http::{BODY_LIMIT, with_header};
use crate::request_id::{CURRENT_REQUEST_ID, REQUEST_ID, acceptable_request_id};

/// Outermost middleware: assigns the request id (keeping a sane incoming
/// `x-request-id`), opens the tracing span every log line of the request is
/// in, records metrics, and gives every error response a problem body.
pub async fn request_context(
    axum::extract::State(config): axum::extract::State<std::sync::Arc<AppConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!("request", request_id = %id, %method, uri = %req.uri());
    let started = Instant::now();
    let limit = if req.uri().path() == LONG_POLL_PATH {
        config.long_poll_timeout
    } else {
        config.request_timeout
    };
    let work = async move {
        let response = match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => problemize(response).await,
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
        let status = response.status().as_u16();
        let elapsed_ms = elapsed.as_millis() as u64;
        if response.status().is_server_error() {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request served");
        }
        metrics::counter!("meshfleet_http_requests_total",
            "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
        metrics::histogram!("meshfleet_http_request_duration_seconds",
            "method" => method.to_string(), "route" => route)
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
