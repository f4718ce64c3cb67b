//! The `meshfleet` binary as a newcomer uses it: `up` twice on one data
//! folder, Ctrl-C, a restart that keeps the data, and the `token` command.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_meshfleet");

struct Up {
    child: Child,
    base: String,
    token: String,
    /// The banner's link that opens the portal signed in.
    portal_link: String,
}

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshfleet-up-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(dir: &Path) -> Up {
    let mut child = Command::new(BIN)
        .args(["up", "--port", "0", "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut portal_link) = (None, None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("API") {
                base = Some(rest.trim().trim_end_matches("/v1/clusters").to_string());
            }
            if let Some(t) = line.trim().strip_prefix("export TOKEN=") {
                token = Some(t.to_string());
            }
            if line.contains("/#token=") {
                portal_link = Some(line.trim().to_string());
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("`up` printed its banner");
    // keep draining stdout so the child never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up {
        child,
        base: base.expect("base URL"),
        token: token.expect("token"),
        portal_link: portal_link.expect("portal link"),
    }
}

async fn interrupt(mut up: Up) {
    let pid = up.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), up.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "`up` exits cleanly on Ctrl-C: {status}");
}

#[tokio::test]
async fn up_keeps_its_data_across_restarts_and_refuses_a_second_instance() {
    let dir = data_dir();
    let client = reqwest::Client::new();
    let up = start(&dir).await;
    let ready = client
        .get(format!("{}/readyz", up.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        up.portal_link,
        format!("{}/#token={}", up.base, up.token),
        "the portal link signs the dev owner in"
    );
    let page = client.get(format!("{}/", up.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let created = client
        .put(format!("{}/v1/clusters/kept", up.base))
        .bearer_auth(&up.token)
        .header("content-type", "application/json")
        .body(r#"{"mesh":{"upgrade":{"mode":"manual","version":"1.28.2"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let second = Command::new(BIN)
        .args(["up", "--port", "0", "--data-dir"])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another meshfleet is using the data folder"),
        "{err}"
    );

    interrupt(up).await;
    let key = dir.join("dev-jwt-ed25519.pk8");
    assert_eq!(mode_of(&key), 0o600, "the dev key is the owner's only");
    // a key made readable by others is made private again at the next start
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let up = start(&dir).await;
    assert_eq!(mode_of(&key), 0o600);
    let token = Command::new(BIN)
        .args([
            "token",
            "--tenant",
            "demo",
            "--role",
            "reader",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert!(token.status.success());
    let reader = String::from_utf8(token.stdout).unwrap();
    let read = client
        .get(format!("{}/v1/clusters/kept", up.base))
        .bearer_auth(reader.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the cluster survived the restart");
    interrupt(up).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `serve` is production: the dev issuer and the dev key of a data folder
/// (with which anyone on the machine can mint tokens) are refused.
#[tokio::test]
async fn serve_refuses_to_start_with_the_dev_issuer_or_a_dev_key() {
    let run = |issuer: &str, keys: &str| {
        Command::new(BIN)
            .arg("serve")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("MESHFLEET_JWT_ISSUER", issuer)
            .env("MESHFLEET_JWT_AUDIENCE", "meshfleet")
            .env("MESHFLEET_JWT_KEYS", keys)
            .output()
    };
    let dev_issuer = run("meshfleet-dev", "EdDSA:/etc/keys/issuer.pem")
        .await
        .unwrap();
    assert!(!dev_issuer.status.success());
    let err = String::from_utf8_lossy(&dev_issuer.stderr);
    assert!(err.contains("MESHFLEET_JWT_ISSUER"), "{err}");
    assert!(err.contains("development configuration"), "{err}");

    let dev_key = run(
        "https://login.example.com",
        "EdDSA:/root/checkout/.meshfleet/dev-jwt-ed25519.pk8",
    )
    .await
    .unwrap();
    assert!(!dev_key.status.success());
    let err = String::from_utf8_lossy(&dev_key.stderr);
    assert!(err.contains("MESHFLEET_JWT_KEYS"), "{err}");
    assert!(err.contains("dev signing key"), "{err}");
}

#[tokio::test]
async fn configuration_errors_name_the_variable() {
    let serve = Command::new(BIN)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(!serve.status.success());
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(err.contains("DATABASE_URL"), "{err}");

    let bad = Command::new(BIN)
        .args(["up"])
        .env("MESHFLEET_PORT", "eighty")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("MESHFLEET_PORT"));

    let token = Command::new(BIN)
        .args(["token", "--tenant", "t", "--role", "owner"])
        .env("MESHFLEET_JWT_KEYS", "EdDSA:/etc/keys/issuer.pem")
        .output()
        .await
        .unwrap();
    assert!(!token.status.success());
    assert!(String::from_utf8_lossy(&token.stderr).contains("production configuration"));
}

/// A newcomer as root clones into their home (mode 0700), which the
/// `postgres` user cannot pass through: `up` must still start, say where the
/// database files are, and keep the data between runs.
#[tokio::test]
async fn up_works_as_root_from_a_folder_the_postgres_user_cannot_enter() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("not root: PostgreSQL runs as this user, nothing to relocate");
        return;
    }
    let home = data_dir();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = home.join("checkout").join(".meshfleet");
    let client = reqwest::Client::new();

    let up = start(&dir).await;
    let created = client
        .put(format!("{}/v1/clusters/from-home", up.base))
        .bearer_auth(&up.token)
        .header("content-type", "application/json")
        .body(r#"{"mesh":{"upgrade":{"mode":"manual","version":"1.28.2"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    interrupt(up).await;
    let location = std::fs::read_to_string(dir.join("pg-location")).unwrap();
    assert!(
        location.trim().starts_with("/var/lib/meshfleet/"),
        "{location}"
    );

    let up = start(&dir).await;
    let read = client
        .get(format!("{}/v1/clusters/from-home", up.base))
        .bearer_auth(&up.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the cluster survived the restart");
    interrupt(up).await;
    std::fs::remove_dir_all(location.trim()).unwrap();
    std::fs::remove_dir_all(&home).unwrap();
}
