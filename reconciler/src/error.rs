//! The reconciler's one error enum.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] meshfleet_core::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Core(meshfleet_core::Error::Invalid(_)) => "invalid",
            Error::Core(meshfleet_core::Error::Conflict(_)) => "conflict",
            Error::Core(_) => "core",
            Error::Database(_) => "database",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
