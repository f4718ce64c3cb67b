//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the variable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The Kubernetes API refused or failed a request. `message` is the API's
    /// own message (the `message` of its `Status`), reported verbatim.
    #[error("{message}")]
    Kube { code: Option<u16>, message: String },

    /// A kind the agent does not manage.
    #[error("the agent does not manage {0}")]
    UnsupportedKind(String),

    /// Rendering the desired state failed (a bug, not an input problem).
    #[error("rendering {what}: {source}")]
    Render {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The meshfleet service could not be reached, timed out, or answered 5xx.
    /// Retried with backoff; the cluster is left as it is meanwhile.
    #[error("meshfleet service unavailable: {0}")]
    Unavailable(String),

    /// The service is shedding load (429, or 503 while its database is
    /// unavailable) and said when to come back (`Retry-After`). Like
    /// [`Error::Unavailable`], but the next try waits at least `after`.
    #[error("meshfleet service asked to retry in {}: {detail}", humantime::format_duration(*.after))]
    RetryLater { detail: String, after: Duration },

    /// The service rejected the credential or bootstrap token (401).
    #[error("meshfleet service rejected the credential: {0}")]
    Unauthorized(String),

    /// Any other answer of the service (4xx), with the problem's `detail`.
    #[error("meshfleet service answered {status}: {detail}")]
    Service { status: u16, detail: String },

    /// A workload did not become ready in time.
    #[error("{what} not ready after {}: {detail}", humantime::format_duration(*.after))]
    NotReady {
        what: String,
        after: Duration,
        detail: String,
    },

    /// A release bundle fetched from the service is not what its digest
    /// says, or not a bundle the agent can use; nothing is applied.
    #[error("release bundle {digest}: {detail}")]
    Bundle { digest: String, detail: String },

    #[error(transparent)]
    Json(#[from] serde_json::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the error means "the service is not there right now": retry with
    /// backoff and leave the cluster alone.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::RetryLater { .. })
    }

    /// How long the service asked to be left alone (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RetryLater { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// A Kubernetes 404.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Kube {
                code: Some(404),
                ..
            }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
