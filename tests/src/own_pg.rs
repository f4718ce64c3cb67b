//! A private PostgreSQL of one test (or benchmark) that it may stop and
//! start again, unlike the shared server of [`crate::fresh_database`]: for
//! the database faults (restart, outage) and `ALTER ROLE`-sized changes.

use std::path::PathBuf;

use meshfleet::pg::{EmbeddedPg, PgOptions};
use meshfleet_core::store as db;
use sqlx::postgres::PgConnectOptions;

const PREFIX: &str = "meshfleet-own-pg-";

/// A PostgreSQL server of its own, in a folder removed when dropped.
pub struct OwnPg {
    root: PathBuf,
    pg: Option<EmbeddedPg>,
    /// The socket's folder stays the same across restarts.
    options: PgConnectOptions,
    /// Where PostgreSQL keeps its files (owned by its user when we are root).
    data_dir: PathBuf,
    durable: bool,
}

impl OwnPg {
    /// Starts a fresh server; `durable` keeps fsync on (as in production),
    /// otherwise it trades durability for speed like the shared test server.
    pub async fn start(durable: bool) -> OwnPg {
        crate::remove_stale_dirs(PREFIX);
        let root = std::env::temp_dir()
            .join(format!("{PREFIX}{}", std::process::id()))
            .join(uuid::Uuid::new_v4().simple().to_string());
        let pg = Self::boot(root.clone(), durable).await;
        OwnPg {
            options: pg.connect_options("postgres"),
            data_dir: pg.data_dir().to_path_buf(),
            root,
            pg: Some(pg),
            durable,
        }
    }

    async fn boot(root: PathBuf, durable: bool) -> EmbeddedPg {
        tokio::task::spawn_blocking(move || {
            EmbeddedPg::start(&PgOptions {
                root,
                ephemeral: !durable,
            })
        })
        .await
        .expect("postgres start-up")
        .unwrap_or_else(|e| panic!("cannot start a PostgreSQL of our own: {e}"))
    }

    /// Connect options for `database`.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        self.options.clone().database(database)
    }

    /// Where PostgreSQL keeps its files.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The folder of this server (its data, its log), for the caller's files too.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Creates `database` with the migrations applied; its connect options.
    pub async fn database(&self, database: &str) -> PgConnectOptions {
        let admin = db::connect(self.options("postgres"), 1)
            .await
            .expect("connect to our PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let options = self.options(database);
        let pool = db::connect(options.clone(), 1).await.expect("connect");
        db::migrate(&pool).await.expect("migrate");
        pool.close().await;
        options
    }

    /// Fast shutdown (open sessions are ended, committed data is kept).
    pub async fn stop(&mut self) {
        if let Some(mut pg) = self.pg.take() {
            tokio::task::spawn_blocking(move || pg.stop())
                .await
                .expect("postgres stop");
        }
    }

    /// [`OwnPg::stop`] outside async code (in a `Drop`, say).
    pub fn stop_blocking(&mut self) {
        if let Some(mut pg) = self.pg.take() {
            pg.stop();
        }
    }

    /// Starts the stopped server again on the same files and socket.
    pub async fn start_again(&mut self) {
        assert!(self.pg.is_none(), "stop first");
        self.pg = Some(Self::boot(self.root.clone(), self.durable).await);
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        self.stop_blocking();
        let _ = std::fs::remove_dir_all(&self.root);
        // the process's folder, once its last server is gone
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
