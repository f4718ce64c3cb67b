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

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
