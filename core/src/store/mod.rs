//! All SQL of meshfleet, one module per aggregate. Every query on tenant
//! data takes the tenant id and has it in its `WHERE` clause (and in the
//! primary key it uses). Functions that write take `&mut PgConnection` (pass
//! a transaction); reads take any executor.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod agents;
pub mod clusters;
pub mod events;
pub mod fleet;
pub mod gauges;
pub mod operations;
pub mod reconcile;
pub mod releases;
pub mod rollouts;
pub mod status;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// `options` with a server-side limit on every statement (zero: none), so
/// that a statement stuck behind a lock or a slow disk fails (57014, which
/// the api answers with 503) instead of holding its request and connection.
pub fn with_statement_timeout(
    options: PgConnectOptions,
    limit: std::time::Duration,
) -> PgConnectOptions {
    if limit.is_zero() {
        return options;
    }
    options.options([("statement_timeout", format!("{}ms", limit.as_millis()))])
}

/// Applies the migrations on a connection of their own, without the pool's
/// statement timeout (a migration may take longer than a request may).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    let result = MIGRATOR.run(&mut conn).await;
    let _ = sqlx::Connection::close(conn).await;
    result
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    ping_on(pool).await
}

/// A round trip on `db` (e.g. the LISTEN connection: its notifications
/// arrive before the answer; see `notify::Fence`), in the simple protocol:
/// one message each way, no statement to prepare.
pub async fn ping_on<'c>(db: impl sqlx::PgExecutor<'c>) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("SELECT 1").execute(db).await.map(|_| ())
}
