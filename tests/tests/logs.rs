//! Log lines: JSON lines carry the request id, tenant, cluster and trace id,
//! and no token or credential ever appears in one, nor in an event, a
//! problem detail, a metric, a stored row or PostgreSQL's log. The process's subscriber
//! is installed once by `meshfleet::telemetry::init` (as the binary does, with
//! MESHFLEET_LOG_FORMAT=json), writing into a buffer, so this is a test binary
//! of its own.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meshfleet_agent::{AgentConfig, SimCluster, SimOptions};
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET};
use meshfleet_telemetry::{LogFormat, OtelArgs};
use meshfleet_tests::agents::{start_agent, wait_status};
use meshfleet_tests::{TestApp, cluster_body};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Everything logged in this process, at `debug` (more than production logs).
fn captured() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let telemetry = meshfleet::telemetry::init(
            "debug,sqlx=warn,h2=info,hyper_util=info,rustls=info",
            LogFormat::Json,
            &OtelArgs::default(),
            move || writer.clone(),
        )
        .unwrap();
        assert!(!telemetry.exporting(), "no endpoint: no spans exported");
        logs
    })
}

/// Every row of every table of the app's database, as JSON lines.
async fn every_stored_row(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        tables
            .iter()
            .any(|t| t == "agent_credentials" || t == "bootstrap_tokens"),
        "{tables:?}"
    );
    let mut out = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(row_to_json(t)::text, E'\\n') FROM \"{table}\" t"
        )))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        out.push_str(&rows.unwrap_or_default());
        out.push('\n');
    }
    out
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_bootstrap_token_or_agent_credential_appears_in_logs_events_problems_metrics_or_the_database()
 {
    let logs = captured();
    let app = TestApp::spawn().await;
    let owner = app.owner("acme");
    let mut secrets: Vec<String> = vec![owner.clone()];

    // A tenant's requests with a bearer token, good and bad.
    app.create("acme", "quiet-1", &cluster_body("1.27.1")).await;
    app.get("/v1/clusters/quiet-1").token(&owner).send().await;
    let forged = format!("{owner}x");
    secrets.push(forged.clone());
    let r = app.get("/v1/clusters").token(&forged).send().await;
    assert_eq!(r.status, 401);
    // Every answer the service gave: problems must not echo what was sent.
    let mut answers: Vec<String> = vec![r.text.clone()];
    for header in ["www-authenticate", "retry-after"] {
        answers.extend(r.header(header).map(str::to_string));
    }

    // Bootstrap tokens: issued, in a manifest, registered, replayed, unknown.
    let issued = app
        .req(Method::POST, "/v1/clusters/quiet-1/bootstrap-tokens")
        .token(&owner)
        .send()
        .await;
    let token = issued.body["token"].as_str().unwrap().to_string();
    secrets.push(token.clone());
    let manifest = app
        .get("/v1/clusters/quiet-1/agent-manifest")
        .token(&owner)
        .send()
        .await;
    assert_eq!(manifest.status, 200);
    let in_manifest = manifest
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    secrets.push(in_manifest);
    let register = |token: String| {
        app.req(Method::POST, "/v1/agent/register")
            .json(&json!({"bootstrapToken": token, "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3}}))
            .send()
    };
    let registered = register(token.clone()).await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let credential = registered.body["credential"].as_str().unwrap().to_string();
    secrets.push(credential.clone());
    let replayed = register(token.clone()).await;
    assert_eq!(replayed.status, 401, "used once");
    answers.push(replayed.text);
    let unknown = altered(&token);
    secrets.push(unknown.clone());
    let refused = register(unknown).await;
    assert_eq!(refused.status, 401);
    answers.push(refused.text);

    // The agent's credential on its routes, a wrong one, and a rotation.
    let ds = app
        .get("/v1/agent/desired-state")
        .token(&credential)
        .send()
        .await;
    assert_eq!(ds.status, 200, "{}", ds.text);
    let status = json!({"observedGeneration": 1, "components": [],
        "facts": {"kubernetesVersion": "v1.31.2", "nodeCount": 3, "agentVersion": "0.1.0"}});
    let put = app
        .put("/v1/agent/status")
        .token(&credential)
        .json(&status)
        .send()
        .await;
    assert_eq!(put.status, 204, "{}", put.text);
    let wrong = altered(&credential);
    secrets.push(wrong.clone());
    let refused = app
        .get("/v1/agent/desired-state")
        .token(&wrong)
        .send()
        .await;
    assert_eq!(refused.status, 401);
    answers.push(refused.text);
    let rotated = app
        .req(Method::POST, "/v1/agent/credential/rotate")
        .token(&credential)
        .send()
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    secrets.push(rotated.body["credential"].as_str().unwrap().to_string());
    // A user token on an agent route and a credential on a user route.
    let crossed = app
        .get("/v1/agent/desired-state")
        .token(&owner)
        .send()
        .await;
    assert_eq!(crossed.status, 401);
    answers.push(crossed.text);
    let crossed = app.get("/v1/clusters").token(&credential).send().await;
    assert_eq!(crossed.status, 401);
    answers.push(crossed.text);
    // A secret in the body of a bad request.
    let bad = app
        .put("/v1/clusters/quiet-1")
        .token(&owner)
        .json(&json!({"labels": {"env": credential}, "mesh": 7}))
        .send()
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    answers.push(bad.text);

    // A real agent registering over a simulated cluster, and running a while.
    app.create("acme", "quiet-2", &cluster_body("1.27.1")).await;
    let issued = app
        .req(Method::POST, "/v1/clusters/quiet-2/bootstrap-tokens")
        .token(&owner)
        .send()
        .await;
    let agent_token = issued.body["token"].as_str().unwrap().to_string();
    secrets.push(agent_token.clone());
    let sim = SimCluster::new(SimOptions {
        ready_after: Duration::from_millis(30),
        ..SimOptions::default()
    });
    sim.set_bootstrap(
        AGENT_NAMESPACE,
        BOOTSTRAP_SECRET,
        &agent_token,
        Some(&app.base),
    );
    let mut config = AgentConfig::fast(&app.base);
    config.rotate_before = Duration::from_secs(365 * 24 * 3600); // rotate at once, and again
    let agent = start_agent(sim, config);
    wait_status(&app, "quiet-2", "Healthy at generation 1", |s| {
        s["health"] == "Healthy" && s["observedGeneration"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sim = agent.stop().await;
    let stored = sim
        .secret(AGENT_NAMESPACE, meshfleet_model::CREDENTIAL_SECRET)
        .and_then(|d| d.get("credential").cloned())
        .unwrap();
    secrets.push(stored);

    // A traced request: its lines carry the caller's trace id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = app
        .get("/v1/clusters/quiet-1")
        .token(&owner)
        .header("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await;
    let traced_id = traced.header("x-request-id").unwrap().to_string();

    let text = logs.text();
    let parsed = lines(&text);
    assert!(parsed.len() > 20, "too few log lines to judge: {text}");
    let metrics = app.get("/metrics").send().await.text;
    let events = app
        .get("/v1/events?limit=500")
        .token(&owner)
        .send()
        .await
        .text;
    assert!(events.contains("agent.registered"), "{events}");
    let stored = every_stored_row(&app).await;
    assert!(stored.contains("quiet-2"), "the dump has the clusters");
    let pg_log = meshfleet_tests::database_server_log()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .unwrap_or_default();
    let places = [
        ("the logs", text.clone()),
        ("an answer", answers.join("\n")),
        ("/metrics", metrics),
        ("the events", events),
        ("a stored row (secrets are stored hashed)", stored),
        ("PostgreSQL's log", pg_log),
    ];
    for secret in &secrets {
        // Every secret, and its random part (the last dot-separated piece).
        let tail = secret.rsplit('.').next().unwrap();
        assert!(tail.len() >= 20, "{secret}");
        for needle in [secret.as_str(), tail] {
            for (place, written) in &places {
                assert!(
                    !written.contains(needle),
                    "a secret appears in {place}: {needle}\n{}",
                    written
                        .lines()
                        .filter(|l| l.contains(needle))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }

    // The lines of the traced request carry its request id, tenant, cluster
    // and trace id.
    let served = parsed
        .iter()
        .find(|l| l["message"] == "request served" && l["span"]["request_id"] == traced_id)
        .unwrap_or_else(|| panic!("no `request served` line for {traced_id}: {text}"));
    assert_eq!(served["span"]["tenant"], "acme", "{served}");
    assert_eq!(served["span"]["cluster"], "quiet-1", "{served}");
    assert_eq!(served["span"]["trace_id"], trace, "{served}");
    assert_eq!(
        served["span"]["http.route"], "/v1/clusters/{name}",
        "{served}"
    );
    // An agent's request names its cluster (from the credential) too.
    assert!(
        parsed
            .iter()
            .any(|l| l["span"]["http.route"] == "/v1/agent/status"
                && l["span"]["cluster"] == "quiet-2"
                && l["span"]["tenant"] == "acme"),
        "{text}"
    );
}

/// The secret with its last character changed: a different secret of the same shape. (Replacing it with a
/// fixed character gave back the same secret whenever it already ended in that character.)
fn altered(secret: &str) -> String {
    let last = secret.chars().last().expect("a secret is never empty");
    let other = if last == '0' { '1' } else { '0' };
    format!("{}{other}", &secret[..secret.len() - last.len_utf8()])
}
