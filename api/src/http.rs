//! HTTP plumbing shared by every route: the request id, turning bare error
//! responses into problems, metrics, the JSON body extractor, and the
//! conditional-request headers.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, PROBLEM_JSON, problem_response};

pub const REQUEST_ID: &str = "x-request-id";
/// The long poll, which gets its own (longer) time limit.
pub const LONG_POLL_PATH: &str = "/v1/agent/desired-state";
/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being served, if called inside one.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

/// Outermost middleware: assigns the request id (keeping a sane incoming
/// `x-request-id`), opens the tracing span every log line of the request is
/// in, records metrics, and gives every error response a problem body.
pub async fn request_context(
    axum::extract::State(config): axum::extract::State<std::sync::Arc<crate::app::AppConfig>>,
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

/// Sets a response header; a value that is not a valid header value (never
/// the case for the ETags, URLs and literals we set) is left out.
pub fn with_header(mut response: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
    response
}

/// Fallback for routes that do not exist.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// A JSON body: checks the media type, the size, and the syntax (400), then
/// the shape (422, naming the field by JSON pointer).
pub struct JsonBody<T>(pub T);

/// A JSON merge patch body (`application/merge-patch+json`), as a value.
pub struct MergePatch(pub serde_json::Value);

async fn read_body(req: Request, accepted: &[&str]) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match content_type {
        Some(ct) if accepted.contains(&ct.as_str()) => {}
        Some(ct) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type `{ct}` is not accepted here; use `{}`",
                accepted[0]
            )));
        }
        None => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "missing Content-Type; use `{}`",
                accepted[0]
            )));
        }
    }
    let body: Body = req.into_body();
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("the request body exceeds {BODY_LIMIT} bytes"))
    })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut pointer = to_pointer(e.path());
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let detail = strip_position(&inner.to_string());
                    // serde names a missing field at its parent; point at the field itself.
                    if let Some(field) = detail
                        .strip_prefix("missing field `")
                        .and_then(|r| r.split('`').next())
                    {
                        pointer = format!("{pointer}/{field}");
                    }
                    Err(ApiError::invalid_field(&pointer, detail))
                }
                _ => Err(ApiError::BadRequest(format!("malformed JSON: {inner}"))),
            }
        }
    }
}

/// Converts a serde path (`mesh.waypoints[0].name`) to a JSON pointer.
fn to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    if out.ends_with("/?") {
        out.truncate(out.len() - 2);
    }
    out
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, &["application/json"]).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync> FromRequest<S> for MergePatch {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, &["application/merge-patch+json", "application/json"]).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::invalid_field(
                "",
                "a merge patch must be a JSON object",
            ));
        }
        Ok(MergePatch(value))
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(target_map) = target {
                for (key, value) in patch_map {
                    if value.is_null() {
                        target_map.remove(key);
                    } else {
                        merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The `If-Match` / `If-None-Match` preconditions of a request.
#[derive(Debug, Default, Clone)]
pub struct Preconditions {
    /// `None`: no `If-Match`. `Some(vec![])` never happens; `*` is `any`.
    pub if_match: Option<EtagMatch>,
    pub if_none_match: Option<EtagMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    Any,
    Tags(Vec<String>),
}

impl EtagMatch {
    fn parse(value: &str) -> Result<EtagMatch, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(EtagMatch::Any);
        }
        let mut tags = Vec::new();
        for part in value.split(',') {
            let part = part.trim();
            if part.starts_with("W/") {
                return Err("weak ETags cannot be used for writes; send the strong ETag".into());
            }
            if part.len() < 2 || !part.starts_with('"') || !part.ends_with('"') {
                return Err(format!("`{part}` is not a quoted entity tag"));
            }
            tags.push(part.to_string());
        }
        Ok(EtagMatch::Tags(tags))
    }

    pub fn matches(&self, etag: &str) -> bool {
        match self {
            EtagMatch::Any => true,
            EtagMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

impl Preconditions {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let read = |name: header::HeaderName| -> Result<Option<EtagMatch>, ApiError> {
            match headers.get(&name) {
                None => Ok(None),
                Some(v) => {
                    let s = v
                        .to_str()
                        .map_err(|_| ApiError::BadRequest(format!("{name} is not valid ASCII")))?;
                    EtagMatch::parse(s)
                        .map(Some)
                        .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
                }
            }
        };
        Ok(Preconditions {
            if_match: read(header::IF_MATCH)?,
            if_none_match: read(header::IF_NONE_MATCH)?,
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Preconditions {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Preconditions::from_headers(&parts.headers)
    }
}

/// Page size from a `limit` parameter: 1 to 500, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=500 => Ok(i64::from(n)),
        n => Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and 500, not {n}"
        ))),
    }
}

/// Turns a fetch of `limit + 1` rows into a page: drops the extra row and
/// returns the opaque cursor (of kind `kind`) of the next page, if any.
pub fn paginate<T>(
    items: &mut Vec<T>,
    limit: i64,
    kind: &str,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    use base64::Engine;
    if items.len() as i64 <= limit {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|last| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{}", key(last)))
    })
}

/// Reads a cursor handed out by [`paginate`] for `kind`.
pub fn decode_cursor(kind: &str, cursor: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix(kind)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::to_string)
        })
        .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this API handed out".into()))
}

/// Reads an optional numeric (id) cursor handed out by [`paginate`] for `kind`.
pub fn decode_id_cursor(kind: &str, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            decode_cursor(kind, c)?.parse::<i64>().map_err(|_| {
                ApiError::BadRequest("`cursor` is not a cursor this API handed out".into())
            })
        })
        .transpose()
}

/// Query string extraction that answers 400 with a problem.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q).map(Query)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::BadRequest("bad query string".into()))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3]}));
        assert_eq!(doc, json!({"a": [3]}));
    }

    #[test]
    fn etag_lists_and_wildcards_parse() {
        assert_eq!(EtagMatch::parse("*").unwrap(), EtagMatch::Any);
        let m = EtagMatch::parse("\"a\", \"b\"").unwrap();
        assert!(m.matches("\"b\""));
        assert!(!m.matches("\"c\""));
        assert!(EtagMatch::parse("W/\"a\"").is_err());
        assert!(EtagMatch::parse("abc").is_err());
    }

    #[test]
    fn type_errors_name_the_field_by_pointer() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            replicas: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        match parse_json::<Outer>(br#"{"items":[{"replicas":1},{"replicas":-1}]}"#) {
            Err(ApiError::Unprocessable { errors, .. }) => {
                assert_eq!(errors[0].pointer, "/items/1/replicas")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json::<Outer>(b"{not json"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
