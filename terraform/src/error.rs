//! The provider's one error enum: what can go wrong talking to meshfleet.
//! Each variant becomes one Terraform diagnostic (`crate::diag`).

use meshfleet_model::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither the provider block nor `MESHFLEET_URL` names the service, or
    /// the value is not an http(s) URL.
    #[error("{0}")]
    Config(String),
    /// Connection refused, DNS failure, TLS failure, time-out: nothing answered.
    #[error("cannot reach meshfleet at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// Something answered, but not the meshfleet API (no problem document,
    /// an unexpected body).
    #[error("{endpoint} does not look like the meshfleet API: {what}")]
    NotMeshfleet { endpoint: String, what: String },
    /// 401: the token is missing, expired, or for another service.
    #[error("meshfleet refused the token (401): {0}")]
    Unauthorized(String),
    /// 403: the token's role does not allow this.
    #[error("the token is not allowed to do this (403): {0}")]
    Forbidden(String),
    /// 502/503/504: the service is there but cannot serve now.
    #[error("meshfleet is unavailable ({status}): {detail}")]
    Unavailable { status: u16, detail: String },
    /// 412: `If-Match`/`If-None-Match` did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// Any other problem+json answer (400, 404, 409, 422, ...).
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// Long-running work that ended badly or took too long.
    #[error("{0}")]
    Operation(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The API's problem document, when the service answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP status of a problem answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem(p) => Some(p.status),
            Error::Unauthorized(_) => Some(401),
            Error::Forbidden(_) => Some(403),
            Error::PreconditionFailed(_) => Some(412),
            Error::Unavailable { status, .. } => Some(*status),
            _ => None,
        }
    }
}
