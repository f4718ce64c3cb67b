//! Test harness: the real app on 127.0.0.1:0 against a fresh PostgreSQL
//! database per test, cloned from a migrated template database.
//!
//! One private PostgreSQL serves the whole test process (started from the
//! machine's binaries on first use, stopped when the process exits). Set
//! `MESHFLEET_TEST_DATABASE_URL` to an admin URL to use another server.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use meshfleet::pg::{EmbeddedPg, PgOptions};
use meshfleet::telemetry::metrics_handle;
use meshfleet_api::app::Server;
use meshfleet_api::auth::{DevSigner, Role};
pub use meshfleet_api::config::AppConfig;
use meshfleet_api::state::AppState;
use meshfleet_core::clock::{self, ManualClock, SharedClock};
use meshfleet_core::store as db;
use meshfleet_reconciler::Reconciler;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::OnceCell;

pub mod agents;
pub mod bench;
pub mod otlp;
pub mod own_pg;
pub mod reconciler;
pub mod up;

const TEMPLATE: &str = "meshfleet_template";

enum DbServer {
    Embedded(EmbeddedPg),
    External(PgConnectOptions),
}

impl DbServer {
    fn options(&self, database: &str) -> PgConnectOptions {
        match self {
            DbServer::Embedded(pg) => pg.connect_options(database),
            DbServer::External(o) => o.clone().database(database),
        }
    }
}

pub(crate) fn remove_stale_dirs(prefix: &str) {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(prefix)
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The log of the tests' private PostgreSQL (none with MESHFLEET_TEST_DATABASE_URL).
pub fn database_server_log() -> Option<PathBuf> {
    match server() {
        DbServer::Embedded(pg) => Some(pg.log_file().to_path_buf()),
        DbServer::External(_) => None,
    }
}

fn server() -> &'static DbServer {
    static SERVER: OnceLock<DbServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("MESHFLEET_TEST_DATABASE_URL") {
            return DbServer::External(
                PgConnectOptions::from_str(&url).expect("MESHFLEET_TEST_DATABASE_URL"),
            );
        }
        let prefix = "meshfleet-test-pg-";
        remove_stale_dirs(prefix);
        let root = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        let pg = EmbeddedPg::start(&PgOptions {
            root,
            ephemeral: true,
        })
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
        DbServer::Embedded(pg)
    })
}

async fn admin() -> PgPool {
    let opts = tokio::task::spawn_blocking(|| server().options("postgres"))
        .await
        .expect("server start");
    db::connect(opts, 1)
        .await
        .expect("connect to the test PostgreSQL")
}

/// Creates the migrated template database once per process.
async fn template() {
    static READY: OnceCell<()> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let admin = admin().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {TEMPLATE}"
            )))
            .execute(&admin)
            .await
            .expect("drop template");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
                .execute(&admin)
                .await
                .expect("create template");
            let pool = db::connect(server().options(TEMPLATE), 1)
                .await
                .expect("connect template");
            db::MIGRATOR.run(&pool).await.expect("migrate template");
            pool.close().await;
            admin.close().await;
        })
        .await;
}

/// A fresh database cloned from the template.
pub async fn fresh_database() -> PgPool {
    let options = fresh_database_options().await;
    db::connect(options, 20)
        .await
        .expect("connect test database")
}

/// Creates a fresh database cloned from the template; its connect options.
pub async fn fresh_database_options() -> PgConnectOptions {
    template().await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
    )))
    .execute(&admin)
    .await
    .expect("create test database");
    admin.close().await;
    server().options(&name)
}

/// The app under test.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub signer: Arc<DevSigner>,
    pub pool: PgPool,
    /// The clock the api (and [`TestApp::reconciler`]) read.
    pub clock: SharedClock,
    pub config: AppConfig,
    options: PgConnectOptions,
    running: Option<Running>,
}

/// The serving half of a [`TestApp`], which can be stopped and started again.
struct Running {
    state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    listener: tokio::task::JoinHandle<()>,
}

async fn serve(addr: std::net::SocketAddr, state: AppState) -> (std::net::SocketAddr, Running) {
    let server = Server::bind(addr, &state).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let listener = state.spawn_listener();
    // Ready (`/readyz`) once its LISTEN connection is up.
    assert!(
        state.wait_listening(Duration::from_secs(30)).await,
        "the app's listener did not connect"
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    (
        addr,
        Running {
            state,
            stop,
            task,
            listener,
        },
    )
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> String {
        self.header("etag").expect("ETag header").to_string()
    }

    /// Asserts a problem response with this status, and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "error {status} is not problem+json: {}",
            self.text
        );
        assert_eq!(self.body["status"], status, "{}", self.text);
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "no detail: {}",
            self.text
        );
        assert!(
            self.body["title"].is_string() && self.body["type"].is_string(),
            "{}",
            self.text
        );
        assert_eq!(
            self.body["instance"].as_str(),
            self.header("x-request-id"),
            "instance is the request id"
        );
        &self.body
    }
}

/// A request being built against a [`TestApp`].
pub struct Req {
    builder: reqwest::RequestBuilder,
}

impl Req {
    pub fn token(mut self, token: &str) -> Self {
        self.builder = self.builder.bearer_auth(token);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.builder = self
            .builder
            .header("content-type", "application/json")
            .body(body.to_string());
        self
    }

    pub fn merge_patch(mut self, body: &Value) -> Self {
        self.builder = self
            .builder
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        self
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }

    pub async fn send(self) -> Reply {
        let response = self.builder.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }
}

/// The tests' configuration: the defaults without the request limits and
/// the cluster quota (tests that check those set them).
pub fn test_config() -> AppConfig {
    AppConfig {
        tenant_rate: None,
        agent_rate: None,
        max_clusters_per_tenant: None,
        ..AppConfig::default()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: AppConfig) -> TestApp {
        Self::spawn_with_clock(config, clock::system()).await
    }

    /// The app on a clock the test moves ([`ManualClock`]).
    pub async fn spawn_at(clock: &ManualClock) -> TestApp {
        Self::spawn_with_clock(test_config(), Arc::new(clock.clone())).await
    }

    pub async fn spawn_with_clock(config: AppConfig, clock: SharedClock) -> TestApp {
        let options = fresh_database_options().await;
        let signer = Arc::new(DevSigner::generate().expect("dev key"));
        Self::start(options, signer, config, clock).await
    }

    /// The app over a database of the caller's (e.g. on an [`own_pg::OwnPg`]
    /// the test may stop), with these connect options (a statement timeout, say).
    pub async fn spawn_on(options: PgConnectOptions, config: AppConfig) -> TestApp {
        let signer = Arc::new(DevSigner::generate().expect("dev key"));
        Self::start(options, signer, config, clock::system()).await
    }

    /// A second api replica over the same database (its own pool and
    /// listener), with this one's configuration and clock.
    pub async fn replica(&self) -> TestApp {
        Self::start(
            self.options.clone(),
            self.signer.clone(),
            self.config.clone(),
            self.clock.clone(),
        )
        .await
    }

    async fn start(
        options: PgConnectOptions,
        signer: Arc<DevSigner>,
        config: AppConfig,
        clock: SharedClock,
    ) -> TestApp {
        let pool = db::connect(options.clone(), 20)
            .await
            .expect("connect test database");
        let state = AppState::new(
            pool.clone(),
            signer.verifier(),
            config.clone(),
            metrics_handle(),
            clock.clone(),
        );
        let (addr, running) = serve("127.0.0.1:0".parse().expect("addr"), state).await;
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            signer,
            pool,
            clock,
            config,
            options,
            running: Some(running),
        }
    }

    /// A reconciler over this app's database, on its clock and settings
    /// (tests drive it with [`Reconciler::run_once`], or run it).
    pub async fn reconciler(&self) -> Reconciler {
        let pool = db::connect(self.options.clone(), 10)
            .await
            .expect("connect test database");
        Reconciler::new(
            pool,
            meshfleet_reconciler::Config {
                settings: self.config.settings.clone(),
                ..meshfleet_reconciler::Config::default()
            },
            self.clock.clone(),
        )
    }

    /// The serving app's state (panics while stopped).
    pub fn state(&self) -> &AppState {
        &self.running.as_ref().expect("the app is serving").state
    }

    /// Stops serving (as an outage would): drains, then closes the port.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.state.begin_shutdown();
            let _ = running.stop.send(());
            let _ = running.task.await;
            running.listener.abort();
        }
    }

    /// Serves again on the same address and database.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "stop first");
        let addr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("addr");
        let state = AppState::new(
            self.pool.clone(),
            self.signer.verifier(),
            self.config.clone(),
            metrics_handle(),
            self.clock.clone(),
        );
        let (_, running) = serve(addr, state).await;
        self.running = Some(running);
    }

    /// A token of `tenant` with `roles`, valid for an hour.
    pub fn token(&self, tenant: &str, roles: &[Role]) -> String {
        self.signer.mint(
            &format!("user@{tenant}"),
            tenant,
            roles,
            Duration::from_secs(3600),
        )
    }

    pub fn owner(&self, tenant: &str) -> String {
        self.token(tenant, &[Role::Owner])
    }

    pub fn req(&self, method: Method, path: &str) -> Req {
        Req {
            builder: self.client.request(method, format!("{}{path}", self.base)),
        }
    }

    pub fn get(&self, path: &str) -> Req {
        self.req(Method::GET, path)
    }

    pub fn put(&self, path: &str) -> Req {
        self.req(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> Req {
        self.req(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> Req {
        self.req(Method::DELETE, path)
    }

    /// Creates a cluster with `body` as `tenant`'s owner; panics unless 201.
    pub async fn create(&self, tenant: &str, name: &str, body: &Value) -> Reply {
        let reply = self
            .put(&format!("/v1/clusters/{name}"))
            .token(&self.owner(tenant))
            .json(body)
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply
    }

    /// A fresh bootstrap token for `tenant`'s cluster `name`; panics unless 201.
    pub async fn bootstrap_token(&self, tenant: &str, name: &str) -> String {
        let r = self
            .req(
                Method::POST,
                &format!("/v1/clusters/{name}/bootstrap-tokens"),
            )
            .token(&self.owner(tenant))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        r.body["token"].as_str().expect("token").to_string()
    }

    /// Registers an agent with a bootstrap token (any answer).
    pub async fn register_with(&self, token: &str) -> Reply {
        self.req(Method::POST, "/v1/agent/register")
            .json(&serde_json::json!({"bootstrapToken": token, "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3}}))
            .send()
            .await
    }

    /// Creates a cluster and registers its agent; returns the credential.
    pub async fn registered(&self, tenant: &str, name: &str) -> String {
        self.create(tenant, name, &cluster_body("1.27.1")).await;
        self.register_agent(tenant, name).await
    }

    /// Registers an agent for the existing cluster; returns the credential.
    pub async fn register_agent(&self, tenant: &str, name: &str) -> String {
        let token = self.bootstrap_token(tenant, name).await;
        let r = self.register_with(&token).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["clusterName"], name);
        r.body["credential"]
            .as_str()
            .expect("credential")
            .to_string()
    }
}

/// A valid cluster body pinned to `version`.
pub fn cluster_body(version: &str) -> Value {
    serde_json::json!({
        "labels": {"env": "prod"},
        "mesh": {"upgrade": {"mode": "manual", "version": version}}
    })
}

pub use meshfleet_api::auth::Role as TestRole;
