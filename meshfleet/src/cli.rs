//! The `meshfleet` commands.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use meshfleet_api::app::{self, Server};
use meshfleet_api::auth::{
    DevSigner, KeyError, Role, Verifier, VerifyKey, refuse_dev_configuration,
};
use meshfleet_api::config::AppConfig;
use meshfleet_api::limits::RateLimit;
use meshfleet_api::state::AppState;
use meshfleet_core::clock;
use meshfleet_core::settings::Settings;
use meshfleet_core::store as db;
use meshfleet_reconciler::Reconciler;
use tokio::sync::watch;

use crate::config::{
    Cli, Command, HttpArgs, MigrateArgs, OpenapiArgs, ReconcileArgs, ReleaseCommand,
    ReleaseImportArgs, ServeArgs, SettingsArgs, TokenArgs, UpArgs,
};
use crate::pg::{DataDirLock, EmbeddedPg, PgError, PgOptions};
use crate::telemetry::metrics_handle;

/// Errors of the commands; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Telemetry(#[from] meshfleet_telemetry::Error),
    #[error("DATABASE_URL is not a PostgreSQL URL: {0}")]
    DatabaseUrl(sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Core(#[from] meshfleet_core::error::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The gRPC exporter needs the runtime; it outlives the telemetry.
    let telemetry = {
        let _entered = runtime.enter();
        match crate::telemetry::init(&cli.log, cli.log_format, &cli.otel, std::io::stderr) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Token(args) => token(args),
            Command::Reconcile(args) => reconcile(args).await,
            Command::Openapi(args) => openapi(args),
            Command::Release(ReleaseCommand::Import(args)) => release_import(args).await,
        }
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A pool on `url`; `statement_timeout` limits every statement (zero: none).
async fn connect_url(url: &str, max: u32, statement_timeout: Duration) -> Result<PgPool, CliError> {
    let options = PgConnectOptions::from_str(url).map_err(CliError::DatabaseUrl)?;
    db::connect(db::with_statement_timeout(options, statement_timeout), max)
        .await
        .map_err(CliError::Connect)
}

async fn migrate(args: MigrateArgs) -> Result<(), CliError> {
    let pool = connect_url(&args.database_url, 2, Duration::ZERO).await?;
    db::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// The files of `--crds`: each file as given, each directory's
/// `*.yaml`/`*.yml`/`*.json` files in name order.
fn crd_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| CliError::Io {
                what: format!("cannot read {}", path.display()),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })
}

/// `meshfleet release import`: the same operation as the ops route, on
/// DATABASE_URL; prints the stored bundle's digest.
async fn release_import(args: ReleaseImportArgs) -> Result<(), CliError> {
    let pool = connect_url(&args.database_url, 2, Duration::ZERO).await?;
    println!("{}", import_release_bundle(&pool, &args).await?);
    Ok(())
}

/// The work of `meshfleet release import` on `pool` (`args.database_url` is
/// not read): reads the files, imports them in one transaction; what to print.
pub async fn import_release_bundle(
    pool: &PgPool,
    args: &ReleaseImportArgs,
) -> Result<String, CliError> {
    use meshfleet_model::{BundleImport, BundleOrigin};
    let mut input = BundleImport {
        origin: if args.development {
            BundleOrigin::Development
        } else {
            BundleOrigin::Imported
        },
        ..BundleImport::default()
    };
    for path in crd_files(&args.crds)? {
        input.crds.push(read_text(&path)?);
    }
    for spec in &args.templates {
        let (name, file) = spec.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--injection-template takes NAME=FILE (e.g. waypoint=waypoint.yaml), not `{spec}`"
            ))
        })?;
        input
            .templates
            .insert(name.to_string(), read_text(Path::new(file))?);
    }
    let mut tx = pool.begin().await?;
    let result = meshfleet_core::ops::bundles::import_bundle(
        &mut tx,
        &args.ops_tenant,
        "meshfleet release import",
        &args.version,
        &input,
    )
    .await;
    let (imported, changed) = match result {
        Ok(r) => r,
        Err(meshfleet_core::error::Error::Invalid(errors)) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("  {}: {}", e.pointer, e.detail))
                .collect();
            return Err(CliError::Usage(format!(
                "the bundle is invalid:\n{}",
                lines.join("\n")
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if changed {
        db::reconcile::schedule_channel_followers(&mut *tx, chrono::Utc::now()).await?;
    }
    tx.commit().await?;
    Ok(format!(
        "release {} bundle {} ({}, {} CRDs, templates: {}){}",
        imported.version,
        imported.bundle.digest,
        imported.bundle.origin.as_str(),
        imported.crds.len(),
        imported.templates.join(", "),
        if changed { "" } else { " — unchanged" }
    ))
}

fn openapi(args: OpenapiArgs) -> Result<(), CliError> {
    let doc = meshfleet_api::openapi::document_json();
    match args.output {
        Some(path) => std::fs::write(&path, doc).map_err(|source| CliError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        }),
        None => {
            print!("{doc}");
            Ok(())
        }
    }
}

fn token(args: TokenArgs) -> Result<(), CliError> {
    if std::env::var_os("MESHFLEET_JWT_KEYS").is_some() {
        return Err(CliError::Usage(
            "refusing to mint a dev token: MESHFLEET_JWT_KEYS is set, so this is a production configuration; \
             get tokens from your identity provider"
                .into(),
        ));
    }
    let mut roles = Vec::new();
    for r in &args.roles {
        roles.push(Role::parse(r.trim()).ok_or_else(|| {
            CliError::Usage(format!(
                "unknown role `{r}`; use reader, contributor, owner or sre"
            ))
        })?);
    }
    let signer = DevSigner::load(&args.data_dir).map_err(|e| match e {
        KeyError::Read { path, .. } => CliError::Usage(format!(
            "no dev key at {}; run `meshfleet up` once to create the data folder, or pass --data-dir",
            path.display()
        )),
        other => other.into(),
    })?;
    println!("{}", signer.mint(&args.sub, &args.tenant, &roles, args.ttl));
    Ok(())
}

fn settings(args: &SettingsArgs) -> Result<Settings, CliError> {
    if args.disconnected_after <= args.stale_after {
        return Err(CliError::Usage(format!(
            "MESHFLEET_DISCONNECTED_AFTER ({}) must be longer than MESHFLEET_STALE_AFTER ({})",
            humantime::format_duration(args.disconnected_after),
            humantime::format_duration(args.stale_after)
        )));
    }
    Ok(Settings {
        stale_after: args.stale_after,
        disconnected_after: args.disconnected_after,
        progress_deadline: args.progress_deadline,
        ..Settings::default()
    })
}

fn app_config(http: &HttpArgs, settings: Settings) -> AppConfig {
    AppConfig {
        request_timeout: http.request_timeout,
        header_read_timeout: http.header_read_timeout,
        bootstrap_ttl: http.bootstrap_ttl,
        agent_image: http.agent_image.clone(),
        public_url: http.public_url.clone(),
        settings,
        tenant_rate: RateLimit::new(http.tenant_rate_limit, http.tenant_rate_burst),
        agent_rate: RateLimit::new(http.agent_rate_limit, http.agent_rate_burst),
        max_clusters_per_tenant: (http.max_clusters_per_tenant > 0)
            .then_some(http.max_clusters_per_tenant),
        ..AppConfig::default()
    }
}

fn reconciler_config(settings: Settings) -> meshfleet_reconciler::Config {
    meshfleet_reconciler::Config {
        settings,
        ..meshfleet_reconciler::Config::default()
    }
}

/// The shutdown signal, which also tells the app (and the reconciler) to stop.
async fn drain_on_signal(state: AppState, stop: watch::Sender<bool>) {
    app::shutdown_signal().await;
    state.begin_shutdown();
    let _ = stop.send(true);
}

/// A reconciler started by [`start_reconciler`].
struct RunningReconciler {
    task: tokio::task::JoinHandle<()>,
    /// True while its sweep loop runs (`up`'s `/readyz` reports on it).
    running: Arc<AtomicBool>,
}

/// Starts a reconciler on `pool` (its sweep and its listener); stops when
/// `stop` turns true.
fn start_reconciler(
    pool: PgPool,
    settings: Settings,
    stop: watch::Receiver<bool>,
) -> RunningReconciler {
    /// Clears the flag however the loop ends (a panic included).
    struct Running(Arc<AtomicBool>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let reconciler = Reconciler::new(pool, reconciler_config(settings), clock::system());
    let listener = reconciler.spawn_listener();
    let running = Arc::new(AtomicBool::new(true));
    let guard = Running(running.clone());
    let task = tokio::spawn(async move {
        let _guard = guard;
        reconciler.run(stop).await;
        listener.abort();
    });
    RunningReconciler { task, running }
}

async fn reconcile(args: ReconcileArgs) -> Result<(), CliError> {
    let settings = settings(&args.settings)?;
    let pool = connect_url(
        &args.database_url,
        args.db_max_connections,
        args.settings.statement_timeout,
    )
    .await?;
    let (stop_tx, stop) = watch::channel(false);
    let reconciler = start_reconciler(pool.clone(), settings, stop);
    tracing::info!("meshfleet reconciler running; Ctrl-C stops it");
    app::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = reconciler.task.await;
    pool.close().await;
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    refuse_dev_configuration(&args.jwt_issuer, &args.jwt_keys)?;
    let keys = args
        .jwt_keys
        .iter()
        .map(|k| VerifyKey::from_spec(k.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = Verifier::new(keys, args.jwt_issuer.clone(), args.jwt_audience.clone())
        .with_ops_tenant(args.http.ops_tenant.clone());
    let settings = settings(&args.settings)?;
    let pool = connect_url(
        &args.database_url,
        args.http.db_max_connections,
        args.settings.statement_timeout,
    )
    .await?;
    if args.migrate {
        db::migrate(&pool).await?;
    }
    let state = AppState::new(
        pool.clone(),
        verifier,
        app_config(&args.http, settings),
        metrics_handle(),
        clock::system(),
    );
    let listener = state.spawn_listener();
    let (stop_tx, _) = watch::channel(false);
    let server = Server::bind(args.listen, &state)
        .await
        .map_err(|source| CliError::Bind {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, "meshfleet serving");
    server
        .run(drain_on_signal(state, stop_tx))
        .await
        .map_err(|source| CliError::Io {
            what: "server failed".into(),
            source,
        })?;
    listener.abort();
    pool.close().await;
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::fs::create_dir_all(path)
        .and_then(|_| path.canonicalize())
        .map_err(|source| CliError::Io {
            what: format!("cannot use data folder {}", path.display()),
            source,
        })
}

/// Makes sure `database` exists in the private server.
async fn ensure_database(pg: &EmbeddedPg, database: &str) -> Result<(), CliError> {
    let admin = db::connect(pg.connect_options("postgres"), 1)
        .await
        .map_err(CliError::Connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&admin)
        .await?;
    }
    admin.close().await;
    Ok(())
}

async fn up(args: UpArgs) -> Result<(), CliError> {
    let settings = settings(&args.settings)?;
    let data_dir = absolute(&args.data_dir)?;
    let _lock = DataDirLock::acquire(&data_dir)?;
    let signer = DevSigner::load_or_create(&data_dir)?;

    let mut embedded = None;
    let pool = match &args.database_url {
        Some(url) => {
            connect_url(
                url,
                args.http.db_max_connections,
                args.settings.statement_timeout,
            )
            .await?
        }
        None => {
            let opts = PgOptions {
                root: data_dir.clone(),
                ephemeral: false,
            };
            println!(
                "starting the private PostgreSQL for {} ...",
                data_dir.display()
            );
            let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&opts))
                .await
                .map_err(|e| CliError::Usage(format!("postgres start-up panicked: {e}")))??;
            ensure_database(&pg, "meshfleet").await?;
            let pool = db::connect(
                db::with_statement_timeout(
                    pg.connect_options("meshfleet"),
                    args.settings.statement_timeout,
                ),
                args.http.db_max_connections,
            )
            .await
            .map_err(CliError::Connect)?;
            embedded = Some(pg);
            pool
        }
    };
    db::migrate(&pool).await?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Bind { addr, source })?;
    let bound = tcp.local_addr().map_err(|source| CliError::Io {
        what: "no local address".into(),
        source,
    })?;
    let base = format!("http://{bound}");
    let mut config = app_config(&args.http, settings.clone());
    config.public_url.get_or_insert_with(|| base.clone());
    let (stop_tx, stop) = watch::channel(false);
    let reconciler = start_reconciler(pool.clone(), settings, stop);
    let reconciler_running = reconciler.running.clone();
    let state = AppState::new(
        pool.clone(),
        signer
            .verifier()
            .with_ops_tenant(args.http.ops_tenant.clone()),
        config,
        metrics_handle(),
        clock::system(),
    )
    .with_readiness_check(move || {
        (!reconciler_running.load(Ordering::Acquire))
            .then(|| "the reconciler of this process is not running".to_string())
    });
    let listener = state.spawn_listener();
    // Up (and ready) once changes can wake the agents' long polls.
    if !state.wait_listening(Duration::from_secs(10)).await {
        tracing::warn!("the LISTEN connection is not up yet; /readyz says so until it is");
    }
    let server = Server::from_listener(tcp, &state);
    let bound = server.local_addr().map_err(|source| CliError::Io {
        what: "no local address".into(),
        source,
    })?;
    let base = format!("http://{bound}");
    let day = Duration::from_secs(24 * 3600);
    let token = signer.mint(
        "demo-owner@meshfleet.local",
        &args.demo_tenant,
        &[Role::Owner],
        day,
    );
    println!();
    println!("meshfleet is up");
    println!("  portal   {base}/  (sign in with a token, or the link below)");
    println!("  API      {base}/v1/clusters");
    println!("  docs     {base}/docs");
    println!("  OpenAPI  {base}/openapi.json");
    println!("  probes   {base}/healthz  {base}/readyz  {base}/metrics");
    println!("  reconciler running in this process (channels, maintenance windows, deletions)");
    if let Some(pg) = &embedded {
        println!("  database {}", pg.psql_hint("meshfleet"));
        if let Some(blocked) = pg.relocated_because() {
            println!(
                "           PostgreSQL's files are in {} (private to the postgres user): it cannot pass through {}",
                pg.data_dir().display(),
                blocked.display()
            );
        }
    }
    println!("  data     {}", data_dir.display());
    println!();
    println!(
        "dev token (tenant `{}`, role owner, valid 24h):",
        args.demo_tenant
    );
    println!("  export TOKEN={token}");
    // The token rides in the fragment, which browsers never send to the server.
    println!("open the portal signed in as that owner:");
    println!("  {base}/#token={token}");
    println!(
        "more tokens: cargo run -q -p meshfleet -- token --tenant {} --role reader",
        args.demo_tenant
    );
    println!(
        "an SRE token (ops routes): cargo run -q -p meshfleet -- token --tenant {} --role sre",
        args.http.ops_tenant
    );
    println!("try:  curl -H \"Authorization: Bearer $TOKEN\" {base}/v1/clusters");
    println!(
        "Ctrl-C stops the API and the private PostgreSQL; the data stays in {}",
        data_dir.display()
    );
    println!();

    let served = server.run(drain_on_signal(state, stop_tx)).await;
    let _ = reconciler.task.await;
    listener.abort();
    pool.close().await;
    if let Some(mut pg) = embedded {
        tokio::task::spawn_blocking(move || pg.stop()).await.ok();
        println!("private PostgreSQL stopped");
    }
    served.map_err(|source| CliError::Io {
        what: "server failed".into(),
        source,
    })
}
