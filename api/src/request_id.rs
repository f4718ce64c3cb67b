//! The request id: kept from a sane incoming `x-request-id` or made, and
//! available to everything that runs inside the request (error bodies, logs).

use axum::http::HeaderValue;

pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    pub static CURRENT_REQUEST_ID: String;
}

/// The id of the request being served, if called inside one.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

pub fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}
