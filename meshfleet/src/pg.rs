//! A private PostgreSQL started from the machine's own binaries, for
//! `meshfleet up` (data kept in a project-local folder) and for the tests
//! (throw-away data). It listens on a Unix socket inside its data folder only.
//!
//! PostgreSQL refuses to run as root; when we are root it runs as the
//! `postgres` system user (or `nobody`), which then owns the data folder.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

pub const SUPERUSER: &str = "meshfleet";
const PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL binaries found: put initdb/postgres on PATH or install them under /usr/lib/postgresql/<version>/bin (Debian: apt-get install postgresql), or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("initdb failed ({status}). Last lines of {log}:\n{tail}")]
    Initdb {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("PostgreSQL did not become ready: {reason}. Last lines of {log}:\n{tail}")]
    NotReady {
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "another meshfleet is using the data folder {dir} ({holder}); stop it first, or pass another --data-dir"
    )]
    Busy { dir: PathBuf, holder: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

/// Finds the directory holding `initdb` and `postgres`.
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|d| has_both(d))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or(PgError::NoBinaries)
}

/// The unprivileged user to run PostgreSQL as, when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Option<RunAs> {
    use std::os::unix::fs::MetadataExt;
    // We are root exactly when /proc/self is owned by uid 0.
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                Some(RunAs {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            } else {
                None
            }
        })
    };
    find("postgres").or_else(|| find("nobody"))
}

/// The outermost folder on the way to `path` (itself included) that `runner`
/// cannot pass through, if any: PostgreSQL, running as that user, could not
/// reach its files there (typically a 0700 home folder when we are root).
fn blocking_ancestor(path: &Path, runner: RunAs) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut blocked = None;
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let can_pass = if meta.uid() == runner.uid {
            mode & 0o100 != 0
        } else if meta.gid() == runner.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_pass {
            // keep the outermost one: that is the folder the user must know about
            blocked = Some(dir.to_path_buf());
        }
    }
    blocked
}

/// Where PostgreSQL keeps the files of a data folder it cannot reach: a
/// per-folder directory under this root, owned by the postgres user, 0700.
pub const RELOCATED_ROOT: &str = "/var/lib/meshfleet";

fn relocated_dir(root: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    Path::new(RELOCATED_ROOT).join(format!("pg-{}", hex::encode(&digest[..8])))
}

/// Holds the data folder against a second user; released when dropped.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(root: &Path) -> Result<DataDirLock, PgError> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(root)
            .map_err(io(format!("cannot create data folder {}", root.display())))?;
        let path = root.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        if file.try_lock().is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(PgError::Busy {
                dir: root.to_path_buf(),
                holder,
            });
        }
        file.set_len(0).map_err(io("cannot write the lock file"))?;
        file.rewind().map_err(io("cannot write the lock file"))?;
        write!(file, "{}", std::process::id()).map_err(io("cannot write the lock file"))?;
        Ok(DataDirLock { _file: file })
    }
}

/// Options for [`EmbeddedPg::start`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The folder that holds `pg/` (the cluster) and `postgres.log`.
    pub root: PathBuf,
    /// Trade durability for speed (tests): no fsync.
    pub ephemeral: bool,
}

/// A running private PostgreSQL; stopped (fast shutdown) when dropped.
pub struct EmbeddedPg {
    data_dir: PathBuf,
    /// Set when PostgreSQL's files live outside the data folder, with the
    /// folder the postgres user could not pass through.
    relocated_because: Option<PathBuf>,
    log: PathBuf,
    child: Option<Child>,
}

impl EmbeddedPg {
    pub fn start(opts: &PgOptions) -> Result<EmbeddedPg, PgError> {
        let bin = find_bin_dir()?;
        let runner = run_as();
        let mut data_dir = opts.root.join("pg");
        let log = opts.root.join("postgres.log");
        std::fs::create_dir_all(&opts.root)
            .map_err(io(format!("cannot create {}", opts.root.display())))?;
        let mut relocated_because = None;
        if let Some(r) = runner
            && let Some(blocked) = opts.root.parent().and_then(|p| blocking_ancestor(p, r))
        {
            // The postgres user cannot reach a folder under `blocked` (a 0700
            // home, say): keep the cluster where it can, private to it, and
            // remember the way in the data folder.
            let outside = relocated_dir(&opts.root);
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(RELOCATED_ROOT)
                .map_err(io(format!("cannot create {RELOCATED_ROOT}")))?;
            std::fs::set_permissions(RELOCATED_ROOT, std::fs::Permissions::from_mode(0o711))
                .map_err(io(format!("cannot chmod {RELOCATED_ROOT}")))?;
            let _ = std::fs::write(
                opts.root.join("pg-location"),
                format!("{}\n", outside.display()),
            );
            data_dir = outside;
            relocated_because = Some(blocked);
        } else if runner.is_some() {
            // The postgres user must be able to reach its data folder inside ours.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&opts.root)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o755);
            std::fs::set_permissions(&opts.root, std::fs::Permissions::from_mode(mode | 0o711))
                .map_err(io(format!("cannot chmod {}", opts.root.display())))?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            init_cluster(&bin, &data_dir, &log, runner, opts.ephemeral)?;
        } else if let Some(r) = runner {
            std::os::unix::fs::chown(&data_dir, Some(r.uid), Some(r.gid))
                .map_err(io(format!("cannot chown {}", data_dir.display())))?;
        }
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("cannot open {}", log.display())))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data_dir)
            .arg("-k")
            .arg(&data_dir)
            .args([
                "-p",
                &PORT.to_string(),
                "-c",
                "listen_addresses=",
                "-c",
                "max_connections=300",
            ])
            .args([
                "-c",
                "unix_socket_permissions=0777",
                "-c",
                "shared_buffers=128MB",
            ]);
        if opts.ephemeral {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(io("cannot share the log file"))?,
            )
            .stderr(log_file);
        let child = spawn_supervised(cmd, runner)?;
        let mut pg = EmbeddedPg {
            data_dir,
            relocated_because,
            log,
            child: Some(child),
        };
        pg.wait_ready(Duration::from_secs(60))?;
        Ok(pg)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), PgError> {
        let started = Instant::now();
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.not_ready(format!("postgres exited with {status}")));
            }
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && text.lines().nth(7).is_some_and(|l| l.trim() == "ready")
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready(format!("not ready after {}s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, reason: String) -> PgError {
        PgError::NotReady {
            reason,
            log: self.log.clone(),
            tail: log_tail(&self.log),
        }
    }

    /// Connection options for `database` over the private socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.data_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// PostgreSQL's own log (its messages, errors with their statements).
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Where PostgreSQL keeps its files.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// When PostgreSQL's files live outside the data folder: why (the folder
    /// its user cannot pass through).
    pub fn relocated_because(&self) -> Option<&Path> {
        self.relocated_because.as_deref()
    }

    /// A `psql` command line for humans.
    pub fn psql_hint(&self, database: &str) -> String {
        format!(
            "psql \"host={} port={PORT} user={SUPERUSER} dbname={database}\"",
            self.data_dir.display()
        )
    }

    /// Stops the server (fast shutdown: open sessions are ended, data is kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), Signal::Interrupt);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            signal(child.id(), Signal::Quit);
            let _ = child.wait();
        }
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn init_cluster(
    bin: &Path,
    data_dir: &Path,
    log: &Path,
    runner: Option<RunAs>,
    ephemeral: bool,
) -> Result<(), PgError> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let _ = std::fs::remove_dir_all(data_dir);
    std::fs::create_dir_all(data_dir)
        .map_err(io(format!("cannot create {}", data_dir.display())))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("cannot chmod {}", data_dir.display())))?;
    if let Some(r) = runner {
        std::os::unix::fs::chown(data_dir, Some(r.uid), Some(r.gid))
            .map_err(io(format!("cannot chown {}", data_dir.display())))?;
    }
    let log_file = File::create(log).map_err(io(format!("cannot create {}", log.display())))?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"])
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(io("cannot share the log file"))?,
        )
        .stderr(log_file);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    if let Some(r) = runner {
        cmd.uid(r.uid).gid(r.gid);
    }
    let status = cmd.status().map_err(io("cannot run initdb"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(PgError::Initdb {
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log),
        });
    }
    Ok(())
}

/// Spawns `postgres` in its own process group (a Ctrl-C in the terminal
/// reaches only us; we then stop it in order) from a thread that lives as
/// long as the process, with the parent-death signal set so that it shuts
/// down even if we are killed.
fn spawn_supervised(mut cmd: Command, runner: Option<RunAs>) -> Result<Child, PgError> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    if let Some(r) = runner {
        cmd.uid(r.uid).gid(r.gid);
    }
    set_parent_death_signal(&mut cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-supervisor".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            // PR_SET_PDEATHSIG fires when the spawning *thread* exits: keep it.
            loop {
                std::thread::park();
            }
        })
        .map_err(io("cannot start the postgres supervisor thread"))?;
    rx.recv()
        .map_err(|_| PgError::Io {
            what: "postgres supervisor thread died".into(),
            source: std::io::Error::other("no result"),
        })?
        .map_err(io("cannot start postgres"))
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

enum Signal {
    Interrupt,
    Quit,
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: Signal) {
    let sig = match sig {
        Signal::Interrupt => libc::SIGINT,
        Signal::Quit => libc::SIGQUIT,
    };
    // SAFETY: kill(2) with a pid we spawned and still hold the handle of.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
