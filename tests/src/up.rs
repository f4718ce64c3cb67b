//! A release `meshfleet up` in a child process on a throw-away data folder,
//! for the benchmarks that measure the service as users run it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Up {
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data: PathBuf,
}

impl Up {
    /// Starts `bin up --port 0` with `env` set (MESHFLEET_LOG=warn unless
    /// given) and waits for its banner.
    pub async fn start(bin: &Path, name: &str, env: &[(&str, &str)]) -> Up {
        let data = std::env::temp_dir().join(format!(
            "meshfleet-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut cmd = Command::new(bin);
        cmd.args(["up", "--port", "0", "--data-dir"])
            .arg(&data)
            .env("MESHFLEET_LOG", "warn")
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start meshfleet up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut base = None;
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().strip_prefix("API") {
                    base = Some(rest.trim().trim_end_matches("/v1/clusters").to_string());
                }
                if line.contains("export TOKEN=") {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "meshfleet up did not start within 120 s");
        // keep draining its output so that it never blocks on a full pipe
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Up {
            child,
            bin: bin.to_path_buf(),
            base: base.expect("the banner names the API"),
            data,
        }
    }

    /// A dev token of `tenant` with `role` (`meshfleet token`).
    pub async fn token_with(&self, tenant: &str, role: &str) -> String {
        let out = Command::new(&self.bin)
            .args(["token", "--tenant", tenant, "--role", role, "--data-dir"])
            .arg(&self.data)
            .output()
            .await
            .expect("meshfleet token");
        assert!(out.status.success(), "meshfleet token failed");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// An owner's dev token of `tenant`.
    pub async fn token(&self, tenant: &str) -> String {
        self.token_with(tenant, "owner").await
    }

    /// The process id of `up` (for reading its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Ctrl-C, then removes the data (and PostgreSQL's files kept outside it).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        if let Ok(pg) = std::fs::read_to_string(self.data.join("pg-location"))
            && pg.trim().starts_with("/var/lib/meshfleet/pg-")
        {
            let _ = std::fs::remove_dir_all(pg.trim());
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
