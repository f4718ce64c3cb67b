//! HTTP plumbing shared by the routes: the JSON and merge-patch body
//! extractors, query strings, the conditional-request headers, paging.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Largest total size of a request's header names and values accepted
/// (a bearer token is about 1 KiB).
pub const HEADER_LIMIT: usize = 32 * 1024;

/// The total size of a request's header names and values.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
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
