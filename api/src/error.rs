//! The api crate's one error enum, and its mapping to `application/problem+json`
//! at the HTTP edge.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshfleet_model::{FieldError, Problem};

use crate::request_id::current_request_id;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Syntactically bad request: malformed JSON, bad query parameter, bad header.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials at all (RFC 6750: the challenge carries no error code).
    #[error("missing bearer token")]
    MissingCredentials,
    /// Invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials lacking the role.
    #[error("{0}")]
    Forbidden(String),
    /// Missing, or not the caller's (the two are indistinguishable on purpose).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` / `If-None-Match` failed.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Semantically invalid body, with one entry per invalid field.
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A request limit: wait `retry_after_secs`, then retry.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// A passing condition of the database (down, out of connections or
    /// disk, statement timeout, conflict): 503 with `Retry-After`; the
    /// message is the problem's detail, so it names no SQL.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.pointer, one.detail),
            many => format!("{} fields are invalid; see `errors`", many.len()),
        };
        ApiError::Unprocessable { detail, errors }
    }

    pub fn invalid_field(pointer: &str, detail: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(pointer, detail)])
    }

    pub fn cluster_not_found(name: &str) -> Self {
        ApiError::NotFound(format!("cluster `{name}` not found"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::MissingCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Seconds a client should wait before retrying a 503 (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Maps a constraint violation to 409 (the one place for all of them: every
/// `?` on a sqlx error comes through here); anything else stays a database error.
pub fn on_constraint(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && let Some(code) = db.code()
    {
        // Class 22: a value the database cannot take (e.g. a NUL character) is the client's.
        if code.starts_with("22") {
            return ApiError::BadRequest(
                "the request contains a value that cannot be stored (for example a NUL character)"
                    .into(),
            );
        }
    }
    // The database is down, full, out of connections, too slow, or the
    // request collided with a concurrent one: 503, the client may retry.
    if let Some(detail) = meshfleet_core::error::unavailable_detail(&e) {
        return ApiError::Unavailable(detail);
    }
    if let sqlx::Error::Database(db) = &e
        && let Some(constraint) = db.constraint()
        && (db.is_unique_violation() || db.is_check_violation() || db.is_foreign_key_violation())
    {
        tracing::info!(%constraint, "constraint violation answered with 409");
        return ApiError::Conflict(conflict_detail(constraint));
    }
    ApiError::Database(e)
}

/// What a violated constraint means to the caller (no SQL names leak).
fn conflict_detail(constraint: &str) -> String {
    match constraint {
        "clusters_pkey" => "a cluster of that name exists already".into(),
        "clusters_id_unique" => "a cluster with that id exists already".into(),
        c if c.ends_with("_fkey") => "the cluster was deleted while this request ran; retry".into(),
        _ => "the request conflicts with the current state; read it again and retry".into(),
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        on_constraint(e)
    }
}

/// The core's errors, given their HTTP meaning.
impl From<meshfleet_core::Error> for ApiError {
    fn from(e: meshfleet_core::Error) -> Self {
        use meshfleet_core::Error as E;
        match e {
            E::Invalid(errors) => ApiError::invalid(errors),
            E::NotFound(detail) => ApiError::NotFound(detail),
            E::Conflict(detail) => ApiError::Conflict(detail),
            E::PreconditionFailed(detail) => ApiError::PreconditionFailed(detail),
            E::Database(e) => on_constraint(e),
            E::Unavailable(detail) => ApiError::Unavailable(detail),
            E::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// Builds a problem response; used for our own errors and for the bodies
/// that axum or tower layers produce without one.
pub fn problem_response(
    status: StatusCode,
    detail: String,
    errors: Option<Vec<FieldError>>,
) -> Response {
    let problem = Problem {
        type_: format!("https://meshfleet.dev/problems/{}", slug(status)),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        instance: current_request_id(),
        errors,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

fn slug(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut www_authenticate = None;
        let mut retry_after = None;
        let (detail, errors) = match self {
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                (
                    "internal error; quote the request id when reporting it".to_string(),
                    None,
                )
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (
                    "internal error; quote the request id when reporting it".to_string(),
                    None,
                )
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "unavailable");
                (detail, None)
            }
            ApiError::Unprocessable { detail, errors } => (detail, Some(errors)),
            ApiError::TooManyRequests {
                detail,
                retry_after_secs,
            } => {
                retry_after = Some(retry_after_secs);
                (detail, None)
            }
            ApiError::MissingCredentials => {
                // RFC 6750 §3.1: no error code when no credentials were sent.
                www_authenticate = Some("Bearer realm=\"meshfleet\"".to_string());
                (ApiError::MissingCredentials.to_string(), None)
            }
            ApiError::Unauthorized(detail) => {
                let escaped = detail.replace('"', "'");
                www_authenticate = Some(format!(
                    "Bearer realm=\"meshfleet\", error=\"invalid_token\", error_description=\"{escaped}\""
                ));
                (detail, None)
            }
            other => (other.to_string(), None),
        };
        let mut response = problem_response(status, detail, errors);
        if let Some(value) = www_authenticate.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_row_is_a_database_error_not_a_conflict() {
        assert!(matches!(
            ApiError::from(sqlx::Error::RowNotFound),
            ApiError::Database(_)
        ));
        assert_eq!(
            ApiError::from(sqlx::Error::PoolTimedOut).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn an_unavailable_database_is_a_503_with_retry_after() {
        let r = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn conflict_details_name_no_sql() {
        assert!(conflict_detail("bootstrap_tokens_tenant_id_cluster_id_fkey").contains("deleted"));
        assert!(!conflict_detail("whatever_constraint").contains("whatever"));
    }
}
