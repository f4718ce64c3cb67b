//! End to end with the real `terraform` binary (on PATH; offline through a
//! `dev_overrides` CLI config, no `terraform init`), this package's provider
//! binary, and the real app: the API on port 0 over a fresh PostgreSQL
//! database, a reconciler, and a real agent over a simulated cluster that is
//! installed with the bootstrap token Terraform issued.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshfleet_agent::{SimCluster, SimOptions};
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET};
use meshfleet_tests::TestApp;
use meshfleet_tests::agents::{self, RunningAgent};
use reqwest::Method;
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../../examples/terraform/main.tf");
const TENANT: &str = "acme";

/// The imported cluster's configuration, as its API body below.
const IMPORTED: &str = r#"
resource "meshfleet_cluster" "imported" {
  name   = "imported-1"
  labels = { env = "staging" }
  mesh = {
    upgrade   = { mode = "manual", version = "1.26.2" }
    uninstall = { purge_crds = true }
  }
}
"#;

/// A rollout of the staging clusters that waits for its end.
const WAITING_ROLLOUT: &str = r#"
resource "meshfleet_rollout" "staging" {
  target_version      = "1.27.1"
  selector            = "env=staging"
  stages              = [{ name = "all" }]
  wait_for_completion = true
  timeouts            = { create = "2m" }
}
"#;

/// A working directory with a CLI config whose dev_overrides point
/// `meshfleet/meshfleet` at the provider binary cargo built for this test.
struct Terraform {
    dir: PathBuf,
    cli_config: PathBuf,
    token: String,
}

struct Run {
    code: i32,
    out: String,
}

impl Run {
    /// Whether the output says `text` (Terraform wraps long lines).
    fn has(&self, text: &str) -> bool {
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        flat(&self.out).contains(&flat(text))
    }

    fn errors(&self) -> usize {
        self.out.matches("Error: ").count()
    }
}

impl Terraform {
    fn new(token: &str) -> Terraform {
        let dir = std::env::temp_dir().join(format!(
            "meshfleet-terraform-e2e-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let provider_dir = PathBuf::from(env!("CARGO_BIN_EXE_terraform-provider-meshfleet"))
            .parent()
            .unwrap()
            .to_path_buf();
        let cli_config = dir.join("cli.tfrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  dev_overrides {{\n    \"meshfleet/meshfleet\" = {:?}\n  }}\n  direct {{}}\n}}\n",
                provider_dir.display().to_string()
            ),
        )
        .unwrap();
        Terraform {
            dir,
            cli_config,
            token: token.to_string(),
        }
    }

    fn write(&self, config: &str) {
        std::fs::write(self.dir.join("main.tf"), config).unwrap();
    }

    async fn run_with(&self, args: &[&str], token: &str) -> Run {
        self.run_env(args, token, &[]).await
    }

    async fn run_env(&self, args: &[&str], token: &str, env: &[(&str, &str)]) -> Run {
        let output = tokio::process::Command::new("terraform")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_VAR_token", token)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_LOG")
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run `terraform` (it must be on PATH): {e}"));
        Run {
            code: output.status.code().unwrap_or(-1),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &self.token).await
    }

    /// Runs and insists on the exit code.
    async fn expect(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args).await;
        assert_eq!(
            run.code,
            code,
            "terraform {} exited {} (expected {code}):\n{}",
            args.join(" "),
            run.code,
            run.out
        );
        run
    }

    async fn apply(&self) -> Run {
        self.expect(&["apply", "-auto-approve", "-no-color", "-input=false"], 0)
            .await
    }

    async fn plan(&self, code: i32) -> Run {
        self.expect(
            &["plan", "-detailed-exitcode", "-no-color", "-input=false"],
            code,
        )
        .await
    }

    async fn output(&self, name: &str) -> String {
        self.expect(&["output", "-raw", name], 0).await.out
    }

    /// `terraform show -json`: the values in the state.
    async fn state(&self) -> Value {
        serde_json::from_str(&self.expect(&["show", "-json"], 0).await.out).unwrap()
    }
}

impl Drop for Terraform {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The values of `address` in `terraform show -json`.
fn values(state: &Value, address: &str) -> Value {
    state["values"]["root_module"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in the state: {state}"))["values"]
        .clone()
}

async fn api(app: &TestApp, method: Method, path: &str) -> meshfleet_tests::Reply {
    app.req(method, path).token(&app.owner(TENANT)).send().await
}

/// A merge patch of a cluster through the API, as another pipeline would.
async fn change_through_the_api(app: &TestApp, name: &str, patch: &Value) {
    let path = format!("/v1/clusters/{name}");
    let c = api(app, Method::GET, &path).await;
    let patched = app
        .patch(&path)
        .token(&app.owner(TENANT))
        .header("If-Match", &c.etag())
        .merge_patch(patch)
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = done().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A real agent over a simulated cluster, holding the bootstrap token
/// Terraform issued (what `install_command` would put in the cluster).
fn agent_with(token: &str, base: &str) -> RunningAgent {
    let sim = SimCluster::new(SimOptions {
        ready_after: Duration::from_millis(30),
        ..SimOptions::default()
    });
    sim.set_bootstrap(AGENT_NAMESPACE, BOOTSTRAP_SECRET, token, Some(base));
    agents::start_agent(sim, agents::config(base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_applies_the_example_shows_drift_imports_refuses_and_destroys_through_the_api() {
    let mut app = TestApp::spawn().await;
    let (stop_reconciler, stopped) = tokio::sync::watch::channel(false);
    let reconciler = app.reconciler().await;
    let reconciler = tokio::spawn(async move { reconciler.run(stopped).await });
    let tf = Terraform::new(&app.owner(TENANT));
    let example = EXAMPLE.replace("http://127.0.0.1:8080", &app.base);
    assert_ne!(example, EXAMPLE, "the example names http://127.0.0.1:8080");
    tf.write(&example);

    // 1. apply the example configuration
    tf.apply().await;
    let cluster = api(&app, Method::GET, "/v1/clusters/prod-eu-1").await;
    assert_eq!(cluster.status, 200, "{}", cluster.text);
    let c = &cluster.body;
    assert_eq!(c["id"].as_str().unwrap(), tf.output("cluster_id").await);
    assert_eq!(c["labels"], json!({"env": "prod", "region": "eu"}));
    assert_eq!(c["mesh"]["mtls"], "strict");
    assert_eq!(c["mesh"]["enrolledNamespaces"], json!(["shop"]));
    assert_eq!(
        c["mesh"]["waypoints"],
        json!([{"namespace": "shop", "name": "shop-waypoint", "trafficType": "service", "replicas": 1}])
    );
    assert_eq!(
        c["mesh"]["maintenanceWindow"],
        json!({"slots": [{"day": "saturday", "start": "02:00", "durationMinutes": 240}]})
    );
    let state = tf.state().await;
    let releases = values(&state, "data.meshfleet_releases.all");
    assert!(
        releases["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.28.2")),
        "{releases}"
    );
    let data_cluster = values(&state, "data.meshfleet_cluster.prod_eu");
    assert_eq!(data_cluster["id"], c["id"]);
    assert_eq!(data_cluster["mesh"]["enrolled_namespaces"], json!(["shop"]));
    let summary = values(&state, "data.meshfleet_fleet_summary.mine");
    assert_eq!(summary["clusters"], 1, "{summary}");
    assert_eq!(summary["by_health"]["Unknown"], 1, "{summary}");
    assert_eq!(summary["by_connectivity"]["Disconnected"], 1, "{summary}");
    let install = tf.output("install_command").await;
    assert!(install.contains("kubectl apply -f -"), "{install}");

    // 2. the bootstrap token Terraform issued registers a real agent
    let token = tf.output("bootstrap_token").await;
    let agent = agent_with(&token, &app.base);
    wait_for("the agent to connect", async || {
        let c = api(&app, Method::GET, "/v1/clusters/prod-eu-1").await;
        (c.body["status"]["connectivity"] == "Connected").then_some(c.body)
    })
    .await;

    // 3. the rollout moves the pinned version: drift, until the
    //    configuration follows
    let rollout_id = tf.output("rollout_id").await;
    let rollout = wait_for("the rollout to end", async || {
        let r = api(&app, Method::GET, &format!("/v1/rollouts/{rollout_id}")).await;
        (!matches!(
            r.body["state"].as_str(),
            Some("Running" | "WaitingForApproval")
        ))
        .then_some(r.body)
    })
    .await;
    assert_eq!(rollout["state"], "Succeeded", "{rollout}");
    let c = api(&app, Method::GET, "/v1/clusters/prod-eu-1").await;
    assert_eq!(c.body["desiredVersion"], "1.28.2");
    let plan = tf.plan(2).await;
    assert!(
        plan.has(r#"~ version = "1.28.2" -> "1.27.1""#),
        "{}",
        plan.out
    );
    let example = example.replace(r#"version = "1.27.1""#, r#"version = "1.28.2""#);
    tf.write(&example);
    tf.plan(0).await;

    // 4. a label changed through the API is drift; apply puts it back
    change_through_the_api(&app, "prod-eu-1", &json!({"labels": {"region": "us"}})).await;
    let plan = tf.plan(2).await;
    assert!(plan.has(r#"~ "region" = "us" -> "eu""#), "{}", plan.out);
    assert!(plan.has("1 to change, 0 to destroy"), "{}", plan.out);
    tf.apply().await;
    let c = api(&app, Method::GET, "/v1/clusters/prod-eu-1").await;
    assert_eq!(c.body["labels"], json!({"env": "prod", "region": "eu"}));
    tf.plan(0).await;

    // 5. a write with a stale ETag (no refresh) is refused with a hint to refresh
    change_through_the_api(&app, "prod-eu-1", &json!({"labels": {"team": "payments"}})).await;
    tf.write(&example.replace(
        r#"labels = { env = "prod", region = "eu" }"#,
        r#"labels = { env = "prod", region = "eu", tier = "gold" }"#,
    ));
    let stale = tf
        .expect(
            &[
                "apply",
                "-refresh=false",
                "-auto-approve",
                "-no-color",
                "-input=false",
            ],
            1,
        )
        .await;
    assert!(
        stale.has("Cannot update cluster `prod-eu-1`: it changed since Terraform last read it"),
        "{}",
        stale.out
    );
    assert!(stale.has("terraform plan"), "{}", stale.out);
    tf.write(&example);
    tf.apply().await;
    let c = api(&app, Method::GET, "/v1/clusters/prod-eu-1").await;
    assert_eq!(c.body["labels"], json!({"env": "prod", "region": "eu"}));

    // 6. a cluster created through the API: create refuses and points at
    //    import; import, and the next plan is empty
    app.create(
        TENANT,
        "imported-1",
        &json!({"labels": {"env": "staging"},
                "mesh": {"upgrade": {"mode": "manual", "version": "1.26.2"},
                         "uninstall": {"purgeCrds": true}}}),
    )
    .await;
    let with_imported = format!("{example}{IMPORTED}");
    tf.write(&with_imported);
    let exists = tf
        .expect(&["apply", "-auto-approve", "-no-color", "-input=false"], 1)
        .await;
    assert!(
        exists.has("Cluster `imported-1` already exists"),
        "{}",
        exists.out
    );
    assert!(exists.has("terraform import"), "{}", exists.out);
    tf.expect(
        &[
            "import",
            "-no-color",
            "-input=false",
            "meshfleet_cluster.imported",
            "imported-1",
        ],
        0,
    )
    .await;
    tf.plan(0).await;

    // 7. refused version changes: at plan time when the catalog tells
    //    (one minor at a time), else at apply with the API's message on the
    //    attribute its pointer names
    tf.write(&with_imported.replace(r#"version = "1.26.2" }"#, r#"version = "1.28.2" }"#));
    let refused = tf
        .expect(
            &["plan", "-detailed-exitcode", "-no-color", "-input=false"],
            1,
        )
        .await;
    assert!(
        refused.has("upgrading from 1.26.2 to 1.28.2 skips a minor version"),
        "{}",
        refused.out
    );
    assert!(
        refused.has("attribute: mesh.upgrade.version"),
        "{}",
        refused.out
    );
    assert_eq!(refused.errors(), 1, "{}", refused.out);
    let downgrade = with_imported.replacen(r#"version = "1.28.2" }"#, r#"version = "1.26.2" }"#, 1);
    assert_ne!(downgrade, with_imported);
    tf.write(&downgrade);
    tf.plan(2).await;
    let refused = tf
        .expect(&["apply", "-auto-approve", "-no-color", "-input=false"], 1)
        .await;
    assert!(
        refused.has(
            "downgrading from 1.28.2 to 1.26.2 is not allowed: rollback is only to a version this cluster ran before"
        ),
        "{}",
        refused.out
    );
    assert!(
        refused.has("attribute: mesh.upgrade.version (field /mesh/upgrade/version)"),
        "{}",
        refused.out
    );
    assert_eq!(refused.errors(), 1, "{}", refused.out);
    tf.write(&with_imported);
    tf.plan(0).await;

    // 8. a rollout that waits for completion fails with the rollout's
    //    reason when it pauses (imported-1 has no agent)
    let waiting = format!("{with_imported}{WAITING_ROLLOUT}");
    tf.write(&waiting);
    let paused = tf
        .expect(&["apply", "-auto-approve", "-no-color", "-input=false"], 1)
        .await;
    for expected in [
        "Rollout `upgrade-to-1.27.1` did not succeed",
        "it paused: its failed clusters exceeded the failure policy",
        "imported-1 (Failed): the agent is disconnected",
    ] {
        assert!(paused.has(expected), "{expected}:\n{}", paused.out);
    }
    let rollouts = api(&app, Method::GET, "/v1/rollouts?state=Paused").await;
    assert_eq!(
        rollouts.body["items"][0]["name"], "upgrade-to-1.27.1",
        "{}",
        rollouts.text
    );

    // 9. destroy: prod-eu-1 has an agent, so its deletion is an operation
    //    that ends when the agent has uninstalled the mesh. With the agent
    //    stopped, destroy gives up after `timeouts.delete`; once it runs
    //    again, destroy finishes.
    let sim = agent.stop().await;
    let with_timeout = |delete: &str| {
        with_imported.replacen(
            "  name   = \"prod-eu-1\"\n",
            &format!("  name   = \"prod-eu-1\"\n  timeouts = {{ delete = \"{delete}\" }}\n"),
            1,
        )
    };
    tf.write(&with_timeout("2s"));
    let only_prod = [
        "apply",
        "-target=meshfleet_cluster.prod_eu",
        "-auto-approve",
        "-no-color",
        "-input=false",
    ];
    let timeouts = tf.expect(&only_prod, 0).await;
    assert!(
        timeouts.has("0 added, 1 changed, 0 destroyed"),
        "{}",
        timeouts.out
    );
    let gave_up = tf
        .expect(
            &["destroy", "-auto-approve", "-no-color", "-input=false"],
            1,
        )
        .await;
    assert!(
        gave_up.has("Cannot delete cluster `prod-eu-1`: still deleting after 2s"),
        "{}",
        gave_up.out
    );
    assert!(gave_up.has("force_destroy"), "{}", gave_up.out);
    assert_eq!(gave_up.errors(), 1, "{}", gave_up.out);
    let agent = agents::start_agent(sim, agents::config(&app.base));
    tf.write(&with_timeout("2m"));
    // refreshing would show the uninstall (`mode = "disabled"`) as drift
    tf.expect(
        &[&only_prod[..2], &["-refresh=false"], &only_prod[2..]].concat(),
        0,
    )
    .await;
    tf.expect(
        &["destroy", "-auto-approve", "-no-color", "-input=false"],
        0,
    )
    .await;
    let paused_id = rollouts.body["items"][0]["id"].as_str().unwrap();
    let cancelled = api(&app, Method::GET, &format!("/v1/rollouts/{paused_id}")).await;
    assert_eq!(cancelled.body["state"], "Cancelled", "{}", cancelled.text);
    let list = api(&app, Method::GET, "/v1/clusters").await;
    assert_eq!(list.body["items"], json!([]), "{}", list.text);
    let events = api(&app, Method::GET, "/v1/events?cluster=prod-eu-1").await;
    let items = events.body["items"].as_array().unwrap();
    let started = items
        .iter()
        .find(|e| e["action"] == "cluster.deletion_started")
        .unwrap_or_else(|| panic!("no deletion operation: {}", events.text));
    let op = started["detail"]["operation"].as_str().unwrap();
    let op = api(&app, Method::GET, &format!("/v1/operations/{op}")).await;
    assert_eq!(op.body["status"], "Succeeded", "{}", op.text);
    assert!(
        items.iter().any(|e| e["action"] == "cluster.deleted"),
        "{}",
        events.text
    );
    let sim = agent.stop().await;
    drop(sim);

    // 10. a bad token, a wrong endpoint, a service that is down: one clear
    //    diagnostic each, never a stack
    let no_stack = |run: &Run| {
        assert_eq!(run.errors(), 1, "{}", run.out);
        for stack in ["panicked", "goroutine", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(!run.has(stack), "{}", run.out);
        }
    };
    let bad = tf
        .run_with(&["plan", "-no-color", "-input=false"], "not-a-token")
        .await;
    assert_eq!(bad.code, 1, "{}", bad.out);
    assert!(
        bad.has("meshfleet refused the provider's token"),
        "{}",
        bad.out
    );
    no_stack(&bad);
    tf.write(&with_imported.replace(&app.base, &format!("{}/nothing", app.base)));
    let wrong = tf.expect(&["plan", "-no-color", "-input=false"], 1).await;
    assert!(wrong.has("is not a meshfleet API"), "{}", wrong.out);
    no_stack(&wrong);
    // endpoint and token from MESHFLEET_URL / MESHFLEET_TOKEN
    let from_env = with_imported
        .replace(&format!("endpoint = \"{}\"", app.base), "")
        .replace("token    = var.token", "");
    assert!(!from_env.contains(&app.base), "{from_env}");
    tf.write(&from_env);
    let owner = app.owner(TENANT);
    let env = tf
        .run_env(
            &["plan", "-detailed-exitcode", "-no-color", "-input=false"],
            "unused",
            &[("MESHFLEET_URL", &app.base), ("MESHFLEET_TOKEN", &owner)],
        )
        .await;
    assert_eq!(env.code, 2, "{}", env.out);
    assert!(
        env.has("4 to add, 0 to change, 0 to destroy"),
        "{}",
        env.out
    );
    tf.write(&with_imported);
    app.stop().await;
    let down = tf.expect(&["plan", "-no-color", "-input=false"], 1).await;
    assert!(
        down.has(&format!("Cannot reach meshfleet at {}", app.base)),
        "{}",
        down.out
    );
    no_stack(&down);

    let _ = stop_reconciler.send(true);
    let _ = reconciler.await;
}
