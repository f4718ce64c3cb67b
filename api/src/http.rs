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

/// A JSON body as its bytes (content type and size checked like
/// [`JsonBody`]'s), read with [`JsonBytes::parse`] when the handler needs it:
/// a handler that can answer from the bytes alone parses nothing.
pub struct JsonBytes(pub Bytes);

impl JsonBytes {
    /// The body as `T`, with [`JsonBody`]'s rules and errors.
    pub fn parse<T: DeserializeOwned + serde::Serialize>(&self) -> Result<T, ApiError> {
        parse_json(&self.0)
    }
}

/// A JSON merge patch body (`application/merge-patch+json`), as a value.
pub struct MergePatch(pub serde_json::Value);

/// Limit of a release bundle import (upstream's CRD files are large).
pub const BUNDLE_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A JSON body of up to [`BUNDLE_BODY_LIMIT`] bytes (a release bundle import).
pub struct LargeJsonBody<T>(pub T);

async fn read_body(req: Request, accepted: &[&str]) -> Result<Bytes, ApiError> {
    read_body_up_to(req, accepted, BODY_LIMIT).await
}

async fn read_body_up_to(req: Request, accepted: &[&str], limit: usize) -> Result<Bytes, ApiError> {
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
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("the request body exceeds {limit} bytes")))
}

/// Reads a JSON body as `T`: a syntax error is a 400, a body of the wrong
/// shape a 422 naming the field by JSON pointer.
///
/// JSON has one number type: `2.0` is the integer 2 (as JSON Schema says),
/// so integral numbers are read as integers. And an object is an object:
/// serde would also read a struct from an array of its fields, which is
/// refused here.
pub fn parse_json<T: DeserializeOwned + serde::Serialize>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    integral_numbers_as_integers(&mut value);
    let parsed: T = match serde_path_to_error::deserialize(&value) {
        Ok(v) => v,
        Err(e) => {
            let mut pointer = to_pointer(e.path());
            let detail = strip_position(&e.into_inner().to_string());
            // serde names a missing field at its parent; point at the field itself.
            if let Some(field) = detail
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                pointer = format!("{pointer}/{field}");
            }
            return Err(ApiError::invalid_field(&pointer, detail));
        }
    };
    let read = serde_json::to_value(&parsed).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(pointer) = array_for_object(&value, &read) {
        return Err(ApiError::invalid_field(
            &pointer,
            "invalid type: array, expected an object",
        ));
    }
    Ok(parsed)
}

/// `1.0` → `1` (within i64/u64), everywhere in `value`.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                if (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f) {
                    *value = Value::from(f as i64);
                } else if (0.0..1.844_674_407_370_955e19).contains(&f) {
                    *value = Value::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// The pointer of the first place where the body has an array and what was
/// read from it is an object (a struct given as the list of its fields).
/// Walks both trees without allocating; the pointer is written only when
/// such a place is found (every request body passes through here).
fn array_for_object(sent: &serde_json::Value, read: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    enum Step<'a> {
        Index(usize),
        Key(&'a str),
    }
    fn walk<'a>(sent: &'a Value, read: &Value, path: &mut Vec<Step<'a>>) -> bool {
        match (sent, read) {
            (Value::Array(_), Value::Object(_)) => true,
            (Value::Array(s), Value::Array(r)) => s.iter().zip(r).enumerate().any(|(i, (s, r))| {
                path.push(Step::Index(i));
                let found = walk(s, r, path);
                if !found {
                    path.pop();
                }
                found
            }),
            (Value::Object(s), Value::Object(r)) => s.iter().any(|(k, s)| {
                let Some(r) = r.get(k) else { return false };
                path.push(Step::Key(k));
                let found = walk(s, r, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    if !walk(sent, read, &mut path) {
        return None;
    }
    let mut pointer = String::new();
    for step in path {
        pointer.push('/');
        match step {
            Step::Index(i) => pointer.push_str(&i.to_string()),
            Step::Key(k) => pointer.push_str(&k.replace('~', "~0").replace('/', "~1")),
        }
    }
    Some(pointer)
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

impl<S: Send + Sync, T: DeserializeOwned + serde::Serialize> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, &["application/json"]).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, &["application/json"]).await.map(JsonBytes)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + serde::Serialize> FromRequest<S> for LargeJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body_up_to(req, &["application/json"], BUNDLE_BODY_LIMIT).await?;
        parse_json(&bytes).map(LargeJsonBody)
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
        let value = value.trim_matches(' ');
        if value == "*" {
            return Ok(EtagMatch::Any);
        }
        let mut tags = Vec::new();
        for part in value.split(',') {
            let part = part.trim_matches(' ');
            if part.starts_with("W/") {
                return Err("weak ETags cannot be used for writes; send the strong ETag".into());
            }
            let quoted = part
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .filter(|inner| inner.bytes().all(is_etag_char));
            if quoted.is_none() {
                return Err(format!(
                    "`{part}` is not a quoted entity tag (\"...\" of visible ASCII but `\"` and `,`)"
                ));
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

/// RFC 9110 `etagc` less `,` (which separates the tags of a list here).
fn is_etag_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x7e)
}

/// The `If-Match`/`If-None-Match` values accepted: `*`, or a list of strong
/// entity tags (the OpenAPI document states this pattern for both headers).
/// HTTP has already dropped the whitespace around a header's value.
pub const ETAG_LIST_PATTERN: &str = "^(\\*|\"[!#-+\\--~]*\"( *, *\"[!#-+\\--~]*\")*)$";

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
/// returns the cursor of the next page (made by `cursor` from the last row
/// of this page), if any.
pub fn paginate<T>(
    items: &mut Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() as i64 <= limit {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(cursor)
}

/// One field of a page cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorField {
    /// A signed integer, in decimal.
    Int,
    /// Any text, as the lowercase hex of its UTF-8 bytes.
    Text,
    /// A UUID, as 32 lowercase hex digits.
    Uuid,
}

/// A field's value in a page cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorValue {
    Int(i64),
    Text(String),
    Uuid(uuid::Uuid),
}

/// The shape of a list's page cursor: `<kind>.<field>.<field>...`. A cursor
/// is a position in the list's order, so every string of the shape is a
/// valid cursor (a position between rows is as good as one on a row), and
/// the shape is exactly what the OpenAPI document states as its `pattern`.
#[derive(Debug, Clone, Copy)]
pub struct CursorShape {
    pub kind: &'static str,
    pub fields: &'static [CursorField],
}

/// At most 18 digits: every such number fits an i64.
const INT_PATTERN: &str = "-?[0-9]{1,18}";

impl CursorShape {
    pub fn encode(&self, values: &[CursorValue]) -> String {
        let mut out = self.kind.to_string();
        for v in values {
            out.push('.');
            match v {
                CursorValue::Int(n) => out.push_str(&n.to_string()),
                CursorValue::Text(t) => out.push_str(&hex::encode(t.as_bytes())),
                CursorValue::Uuid(u) => out.push_str(&u.simple().to_string()),
            }
        }
        out
    }

    /// Reads a cursor of this shape; anything else is a 400.
    pub fn decode(&self, cursor: &str) -> Result<Vec<CursorValue>, ApiError> {
        let refused = || {
            ApiError::BadRequest(format!(
                "`cursor` is not a cursor of this list (`nextCursor` of a page; the pattern is {})",
                self.pattern()
            ))
        };
        let mut parts = cursor.split('.');
        if parts.next() != Some(self.kind) {
            return Err(refused());
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for field in self.fields {
            let part = parts.next().ok_or_else(refused)?;
            let value = match field {
                CursorField::Int => {
                    let digits = part.strip_prefix('-').unwrap_or(part);
                    if digits.is_empty()
                        || digits.len() > 18
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(refused());
                    }
                    CursorValue::Int(part.parse().map_err(|_| refused())?)
                }
                CursorField::Text => {
                    if part.len() % 2 != 0
                        || !part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    {
                        return Err(refused());
                    }
                    let bytes = hex::decode(part).map_err(|_| refused())?;
                    // A position needs no exact text: bytes that are not UTF-8,
                    // and NUL (which PostgreSQL cannot compare), become U+FFFD.
                    let text = String::from_utf8_lossy(&bytes).replace('\0', "\u{fffd}");
                    CursorValue::Text(text)
                }
                CursorField::Uuid => {
                    if part.len() != 32
                        || !part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    {
                        return Err(refused());
                    }
                    CursorValue::Uuid(uuid::Uuid::try_parse(part).map_err(|_| refused())?)
                }
            };
            values.push(value);
        }
        if parts.next().is_some() {
            return Err(refused());
        }
        Ok(values)
    }

    /// The regular expression of this shape (for the OpenAPI document).
    pub fn pattern(&self) -> String {
        let mut out = format!("^{}", self.kind);
        for field in self.fields {
            out.push_str("\\.");
            out.push_str(match field {
                CursorField::Int => INT_PATTERN,
                CursorField::Text => "([0-9a-f]{2})*",
                CursorField::Uuid => "[0-9a-f]{32}",
            });
        }
        out.push('$');
        out
    }
}

/// The cursor of a list ordered by one id, newest first.
pub fn id_cursor(shape: &CursorShape, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| match shape.decode(c)?.as_slice() {
            [CursorValue::Int(id)] => Ok(*id),
            _ => Err(ApiError::Internal(format!(
                "cursor shape {} is not one id",
                shape.kind
            ))),
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
        #[derive(serde::Deserialize, serde::Serialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            replicas: u32,
        }
        #[derive(serde::Deserialize, serde::Serialize, Debug)]
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

    #[test]
    fn a_struct_sent_as_an_array_is_refused_at_its_pointer() {
        #[derive(serde::Deserialize, serde::Serialize, Debug)]
        struct Inner {
            replicas: u32,
        }
        #[derive(serde::Deserialize, serde::Serialize, Debug)]
        struct Outer {
            #[serde(rename = "a/b~c")]
            items: Vec<Inner>,
        }
        let ok = parse_json::<Outer>(br#"{"a/b~c":[{"replicas":1},{"replicas":2.0}]}"#).unwrap();
        assert_eq!(ok.items[1].replicas, 2);
        match parse_json::<Outer>(br#"{"a/b~c":[{"replicas":1},[3]]}"#) {
            Err(ApiError::Unprocessable { errors, .. }) => {
                assert_eq!(errors[0].pointer, "/a~1b~0c/1");
                assert!(errors[0].detail.contains("array, expected an object"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json::<Outer>(br#"[[{"replicas":1}]]"#),
            Err(ApiError::Unprocessable { errors, .. }) if errors[0].pointer.is_empty()
        ));
    }
}
