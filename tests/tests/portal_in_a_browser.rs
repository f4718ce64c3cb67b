//! The portal in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started by the test on a free port) against the real app,
//! real agents over simulated clusters and a reconciler running, as in
//! `meshfleet up`. Screenshots of the overview, a cluster page and a rollout
//! are saved in `target/portal-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them);
//! without them the test fails and says how to install them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use meshfleet_api::auth::DevSigner;
use meshfleet_tests::agents::{RunningAgent, agent_for, spec, wait_status};
use meshfleet_tests::reconciler::run;
use meshfleet_tests::{TestApp, TestRole};
use reqwest::Method;
use serde_json::{Value, json};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";
/// Longest wait for anything the page should show (it polls every 2.5 s).
const PATIENCE: Duration = Duration::from_secs(30);

/// `$env`, else the first of `names` on `PATH`.
fn program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|n| path.split(':').map(move |d| Path::new(d).join(n)))
        .find(|p| p.is_file())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("portal-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, in its own process group so that
/// the browsers it starts go with it.
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = std::env::temp_dir().join(format!(
            "meshfleet-portal-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let log = profile.with_extension("log");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e}; install with `{INSTALL}`",
                        chromedriver.display()
                    )
                })
        };
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(self.profile.with_extension("log"));
    }
}

/// The browser, with waits that poll the page until a deadline.
struct Browser {
    client: Client,
    shots: PathBuf,
}

impl Browser {
    async fn open(driver: &Driver, chromium: &Path) -> Browser {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1400",
                    format!("--user-data-dir={}", driver.profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // The workspace builds rustls with both aws-lc-rs and ring (through
        // other crates), so the process's provider is named, not guessed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session (is `{INSTALL}` done?): {e}"));
        Browser {
            client,
            shots: screenshot_dir(),
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(name), png).unwrap();
    }

    /// What `js` (a function body) returns, as JSON.
    async fn eval(&self, js: &str) -> Value {
        self.client.execute(js, vec![]).await.unwrap_or(Value::Null)
    }

    /// The text of the first element matching `css`, if there is one.
    async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.attr(name).await.ok().flatten()
    }

    /// Why the test fails: a screenshot and what the page shows.
    async fn failure(&self, what: &str) -> String {
        let file = format!(
            "failed-{}.png",
            what.replace(|c: char| !c.is_alphanumeric(), "-")
        );
        self.screenshot(&file).await;
        let page = self.text("body").await.unwrap_or_default();
        let url = self.client.current_url().await.map(|u| u.to_string());
        format!(
            "timed out waiting for {what} at {url:?}; screenshot {file}; the page says:\n{page}"
        )
    }

    /// Waits until `css` exists and its text satisfies `done`; returns the text.
    async fn wait_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(t) = self.text(css).await
                && done(&t)
            {
                return t;
            }
            if Instant::now() > deadline {
                panic!("{}", self.failure(what).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css`'s attribute `name` is one of `values`; returns it.
    async fn wait_attr(&self, css: &str, name: &str, values: &[&str], what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = self.attr(css, name).await
                && values.contains(&v.as_str())
            {
                return v;
            }
            if Instant::now() > deadline {
                panic!("{}", self.failure(what).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css` once it is there (the page redraws as it polls).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && el.click().await.is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("{}", self.failure(&format!("clickable {css}")).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Marks the document; `still_same_page` tells whether it was reloaded since.
    async fn mark_page(&self) {
        self.eval("window.__notReloaded = true; return true;").await;
    }

    async fn still_same_page(&self) -> bool {
        self.eval("return window.__notReloaded === true;").await == Value::Bool(true)
    }
}

fn cluster_spec(version: &str, labels: Value) -> Value {
    let mut body = spec(version);
    body["labels"] = labels;
    body
}

/// acme: prod-eu-1 (env=prod), staging-1..3 (env=staging; staging-1 is the
/// canary), each with a real agent, all Healthy on 1.27.1; edge-1 with no agent.
async fn fleet(app: &TestApp) -> Vec<RunningAgent> {
    let clusters = [
        ("prod-eu-1", json!({"env": "prod", "region": "eu"})),
        ("staging-1", json!({"env": "staging", "ring": "canary"})),
        ("staging-2", json!({"env": "staging", "ring": "main"})),
        ("staging-3", json!({"env": "staging", "ring": "main"})),
    ];
    let mut agents = Vec::new();
    for (name, labels) in &clusters {
        app.create("acme", name, &cluster_spec("1.27.1", labels.clone()))
            .await;
        agents.push(agent_for(app, "acme", name).await);
    }
    app.create(
        "acme",
        "edge-1",
        &cluster_spec("1.27.1", json!({"env": "edge"})),
    )
    .await;
    for (name, _) in &clusters {
        wait_status(app, name, "Healthy", |s| s["health"] == "Healthy").await;
    }
    agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_shows_the_fleet_a_failing_cluster_and_a_moving_rollout_in_headless_chromium() {
    let started = Instant::now();
    let chromium = program("MESHFLEET_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = program("MESHFLEET_CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        panic!(
            "the portal's browser test needs Chromium and ChromeDriver on PATH: `{INSTALL}` \
             (as .ci/run does), or set MESHFLEET_CHROMIUM and MESHFLEET_CHROMEDRIVER"
        );
    };

    let app = TestApp::spawn().await;
    let agents = fleet(&app).await;
    let reconciler = run(&app.reconciler().await);
    let owner = app.owner("acme");
    let driver = Driver::start(&chromedriver).await;
    let b = Browser::open(&driver, &chromium).await;

    // 1. The link `meshfleet up` prints signs in; the token leaves the address.
    b.client
        .goto(&format!("{}/#token={owner}", app.base))
        .await
        .unwrap();
    b.wait_text("[data-card=clusters] .value", "5 clusters", |t| t == "5")
        .await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!(url.fragment(), None, "the token was taken out of {url}");
    assert_eq!(
        b.eval("return sessionStorage.getItem('meshfleet.token');")
            .await,
        json!(owner)
    );
    b.wait_text("#overview-clusters", "every cluster listed", |t| {
        ["prod-eu-1", "staging-1", "staging-2", "staging-3", "edge-1"]
            .iter()
            .all(|n| t.contains(n))
    })
    .await;
    b.wait_attr(
        "[data-chart=health] [data-key=Healthy]",
        "data-count",
        &["4"],
        "4 Healthy in the health chart",
    )
    .await;
    b.wait_text("#attention", "edge-1 needs attention", |t| {
        t.contains("edge-1") && t.contains("no agent has reported")
    })
    .await;
    b.screenshot("overview.png").await;

    // 2. The cluster list, filtered by a label selector; a cluster page from it.
    b.click("#nav a[data-nav=clusters]").await;
    b.wait_text("#cluster-list", "the cluster list", |t| {
        t.contains("staging-3")
    })
    .await;
    b.type_into("#cluster-filters input[name=labelSelector]", "env=prod")
        .await;
    b.click("#cluster-filters button[type=submit]").await;
    b.wait_text("#cluster-list", "only prod clusters", |t| {
        t.contains("prod-eu-1") && !t.contains("staging")
    })
    .await;
    b.click("#cluster-list a[href='/ui/clusters/prod-eu-1']")
        .await;
    b.wait_attr(
        "#components tr[data-component=ztunnel]",
        "data-ready",
        &["true"],
        "ztunnel ready on prod-eu-1",
    )
    .await;
    b.wait_text("#cluster-health", "prod-eu-1 Healthy", |t| t == "Healthy")
        .await;
    b.mark_page().await;

    // The agent's bootstrap token and install command, ready to copy.
    b.click("#issue-token").await;
    b.wait_text("#command-text", "a bootstrap token", |t| {
        t.starts_with("mfbt.")
    })
    .await;
    b.click("#install-command").await;
    b.wait_text("#command-text", "the install command", |t| {
        t.starts_with("kubectl apply -f - <<'EOF'") && t.contains("meshfleet-system")
    })
    .await;

    // The API's validation error shows next to the version field.
    b.type_into("#version-input", "banana").await;
    b.click("#version-save").await;
    let error = b
        .wait_text("#version-error", "the version field's error", |t| {
            !t.is_empty()
        })
        .await;
    assert!(
        error.contains("banana") || error.contains("version"),
        "{error}"
    );
    assert_eq!(
        b.attr("#version-input", "aria-invalid").await.as_deref(),
        Some("true")
    );

    // 3. The cluster refuses ztunnel's new version; the page turns without a reload.
    agents[0].sim.fail_apply(
        "DaemonSet",
        "ztunnel",
        "admission webhook \"policy.example\" denied the request",
    );
    b.type_into("#version-input", "1.28.2").await;
    b.click("#version-save").await;
    b.wait_text("#version-outcome", "the version saved", |t| {
        t.contains("Saved") && t.contains("1.28.2")
    })
    .await;
    b.wait_attr(
        "#components tr[data-component=ztunnel]",
        "data-ready",
        &["false"],
        "ztunnel not ready",
    )
    .await;
    b.wait_text("#cluster-health", "prod-eu-1 unhealthy", |t| {
        t == "Degraded" || t == "Unhealthy"
    })
    .await;
    b.wait_text(
        "#components tr[data-component=ztunnel]",
        "ztunnel's message",
        |t| t.contains("policy.example"),
    )
    .await;
    b.wait_text("#history", "the failure in the timeline", |t| {
        t.contains("Degraded") || t.contains("Unhealthy")
    })
    .await;
    assert!(b.still_same_page().await, "the page reloaded");
    b.screenshot("cluster.png").await;

    // 4. A rollout over the staging clusters: a canary, then the rest after approval.
    let created = app
        .req(Method::POST, "/v1/rollouts")
        .token(&owner)
        .json(&json!({
            "name": "staging-upgrade",
            "targetVersion": "1.28.2",
            "selector": "env=staging",
            "stages": [
                {"name": "canary", "selector": "ring=canary", "maxConcurrency": 1, "soakSeconds": 2},
                {"name": "rest", "maxConcurrency": 2, "soakSeconds": 1, "requireApproval": true}
            ],
            "failurePolicy": {"maxFailedClusters": 1, "action": "pause"}
        }))
        .send()
        .await;
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_string();
    b.click("#nav a[data-nav=rollouts]").await;
    b.click(&format!("#rollout-list tr[data-rollout='{id}'] a"))
        .await;
    b.mark_page().await;
    b.wait_attr(
        "[data-stage=canary]",
        "data-state",
        &["Succeeded"],
        "the canary stage done",
    )
    .await;
    b.wait_attr(
        "[data-stage=rest]",
        "data-state",
        &["WaitingForApproval"],
        "the rest waiting for approval",
    )
    .await;
    b.wait_attr(
        "[data-stage=rest] tr[data-cluster=staging-2]",
        "data-state",
        &["Pending"],
        "staging-2 pending",
    )
    .await;
    b.screenshot("rollout.png").await;
    b.click("#rollout-approve").await;
    b.wait_attr(
        "[data-stage=rest]",
        "data-state",
        &["Running", "Succeeded"],
        "the rest stage moving",
    )
    .await;
    b.wait_attr(
        "#rollout-state",
        "data-state",
        &["Succeeded"],
        "the rollout done",
    )
    .await;
    for name in ["staging-2", "staging-3"] {
        b.wait_attr(
            &format!("[data-stage=rest] tr[data-cluster={name}]"),
            "data-state",
            &["Succeeded"],
            &format!("{name} upgraded"),
        )
        .await;
    }
    assert!(b.still_same_page().await, "the rollout page reloaded");
    b.screenshot("rollout-done.png").await;

    // A second rollout, held at its approval gate: pause, resume, cancel.
    let held = app
        .req(Method::POST, "/v1/rollouts")
        .token(&owner)
        .json(&json!({
            "name": "edge-upgrade",
            "targetVersion": "1.28.2",
            "selector": "env=edge",
            "stages": [{"name": "edge", "requireApproval": true}]
        }))
        .send()
        .await;
    assert_eq!(held.status, 202, "{}", held.text);
    let held = held.body["id"].as_str().unwrap().to_string();
    b.click("#nav a[data-nav=rollouts]").await;
    b.click(&format!("#rollout-list tr[data-rollout='{held}'] a"))
        .await;
    b.wait_attr(
        "#rollout-state",
        "data-state",
        &["WaitingForApproval"],
        "edge-upgrade at its gate",
    )
    .await;
    b.click("#rollout-pause").await;
    b.wait_attr("#rollout-state", "data-state", &["Paused"], "paused")
        .await;
    b.click("#rollout-resume").await;
    b.wait_attr(
        "#rollout-state",
        "data-state",
        &["Running", "WaitingForApproval"],
        "resumed",
    )
    .await;
    b.click("#rollout-cancel").await;
    b.wait_text("#rollout-cancel", "the cancel button asking again", |t| {
        t.contains("again")
    })
    .await;
    b.click("#rollout-cancel").await;
    b.wait_attr("#rollout-state", "data-state", &["Cancelled"], "cancelled")
        .await;

    // 5. A token the server refuses returns to sign-in; pasting one signs in again.
    let stranger = DevSigner::generate().unwrap().mint(
        "user@acme",
        "acme",
        &[TestRole::Owner],
        Duration::from_secs(3600),
    );
    b.eval(&format!(
        "sessionStorage.setItem('meshfleet.token', {}); return true;",
        json!(stranger)
    ))
    .await;
    b.wait_text("#signin-message", "sign-in after a 401", |t| {
        t.contains("Signed out")
    })
    .await;
    b.type_into("#token", &owner).await;
    b.click("#signin-submit").await;
    b.wait_attr(
        "#rollout-state",
        "data-state",
        &["Cancelled"],
        "back on the rollout after signing in",
    )
    .await;

    // 6. An SRE of the operator tenant sees the service: tenants, triage, SLIs.
    let sre = app.token("ops", &[TestRole::Sre]);
    b.client
        .goto(&format!("{}/ui/service#token={sre}", app.base))
        .await
        .unwrap();
    b.wait_text(
        "#tenants tr[data-tenant=acme]",
        "acme in the tenants",
        |t| t.contains('5'),
    )
    .await;
    b.wait_attr(
        "#triage tbody tr",
        "data-cluster",
        &["prod-eu-1"],
        "the failing cluster first in triage",
    )
    .await;
    b.wait_text("#sli [data-sli=heartbeat]", "heartbeat SLI", |t| {
        t.contains("Heartbeat age")
    })
    .await;
    b.screenshot("service.png").await;
    b.click("#triage a[href='/ui/service/clusters/acme/prod-eu-1']")
        .await;
    b.wait_text("#ops-cluster", "prod-eu-1 as the SRE sees it", |t| {
        t.contains("acme / prod-eu-1") && t.contains("policy.example")
    })
    .await;

    b.client.close().await.unwrap();
    drop(driver);
    reconciler.stop().await;
    for a in agents {
        a.stop().await;
    }
    eprintln!("portal browser test took {:?}", started.elapsed());
}
