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
    /// A passing condition of the database (see [`unavailable_detail`]), with
    /// the detail to show; the api answers 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When `e` is a passing condition of the database rather than a problem of
/// the request (down, restarting, out of connections or disk, a statement
/// past the statement timeout, a collision with a concurrent transaction):
/// what to tell the client, who may retry. The transaction was rolled back,
/// so nothing was written. Names no SQL.
pub fn unavailable_detail(e: &sqlx::Error) -> Option<String> {
    let code = match e {
        sqlx::Error::PoolTimedOut => {
            return Some("the database has no free connection for this request; retry".into());
        }
        sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            return Some("the database is unavailable; retry later".into());
        }
        sqlx::Error::Database(db) => db.code()?,
        _ => return None,
    };
    let detail = code_detail(&code)?;
    Some(format!("{detail} ({code})"))
}

/// What an SQLSTATE that is no one's mistake but a passing condition of the
/// database (or of the service's access to it) means to the caller.
fn code_detail(code: &str) -> Option<&'static str> {
    let detail = match code {
        "57014" => {
            "the database did not finish in time (statement timeout); nothing was written; retry"
        }
        "55P03" => "the data is locked by another transaction; nothing was written; retry",
        "53100" => "the database is out of disk space; nothing was written; retry later",
        "53300" => "the database has no free connections; nothing was written; retry",
        "25006" => "the database is read-only right now; nothing was written; retry later",
        c if c.starts_with("40") => "conflict with a concurrent request; retry",
        c if c.starts_with("53") => {
            "the database is out of resources; nothing was written; retry later"
        }
        // 08: connection exceptions; 57P: shutdown, crash recovery, starting up; 58: I/O
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("58") => {
            "the database is unavailable; retry later"
        }
        // 28: the database refused the service's own login (a new pool
        // connection): the service's outage, not the caller's mistake
        c if c.starts_with("28") => "the database refuses the service's login; retry later",
        _ => return None,
    };
    Some(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_or_busy_database_is_a_passing_condition_and_a_missing_row_is_not() {
        assert!(unavailable_detail(&sqlx::Error::PoolTimedOut).is_some());
        assert!(unavailable_detail(&sqlx::Error::Io(std::io::Error::other("gone"))).is_some());
        assert!(unavailable_detail(&sqlx::Error::RowNotFound).is_none());
        assert!(unavailable_detail(&sqlx::Error::Protocol("bad".into())).is_none());
    }

    #[test]
    fn a_refused_login_of_the_service_itself_is_an_outage_and_a_bad_value_is_not() {
        assert!(code_detail("28000").is_some(), "role may not log in");
        assert!(code_detail("28P01").is_some(), "password refused");
        assert!(code_detail("57P01").is_some(), "shutdown");
        assert!(code_detail("22021").is_none(), "bad byte sequence");
        assert!(code_detail("23505").is_none(), "unique violation");
    }
}
