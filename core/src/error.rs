//! The core crate's one error enum. Its variants say what went wrong in
//! domain terms; the api chooses the HTTP status at its edge.

use meshfleet_model::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The change is invalid; one entry per invalid field.
    #[error("{} field(s) are invalid", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    /// The change does not fit the current state (e.g. a rollout holds the version).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` / `If-None-Match` failed.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
