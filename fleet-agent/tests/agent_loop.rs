//! The whole agent over a simulated cluster, against a fake meshfleet
//! service that speaks the agent protocol (register, long poll with ETag,
//! status, rotate, 401 on unknown credentials, 503 when "down").
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use meshfleet_agent::testing::{SAMPLE_CLUSTER_ID, desired};
use meshfleet_agent::{Agent, AgentConfig, AgentState, ObjectRef, SimCluster, SimOp, SimOptions};
use meshfleet_model::{AgentCredential, DesiredState, RegisterRequest, StatusReport};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NS: &str = "meshfleet-system";

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    credentials: HashSet<String>,
    issued: u32,
    registrations: u32,
    rotations: u32,
    reports: Vec<StatusReport>,
    down: bool,
    credential_ttl_days: i64,
    /// What the desired-state route answers instead of the state.
    desired_fault: Option<DesiredFault>,
    /// How many answers it gave with that fault.
    faulty_answers: u32,
    /// When it gave them.
    faulty_at: Vec<tokio::time::Instant>,
    /// The status route answers 429 with this `Retry-After` (seconds).
    status_throttled: Option<u64>,
    /// When it refused a report so, and the report's observed generation.
    refused_at: Vec<(tokio::time::Instant, Option<i64>)>,
}

#[derive(Clone, Copy, Debug)]
enum DesiredFault {
    /// 200 with a body that is not JSON (a proxy's error page, say).
    Garbage,
    /// 200 with JSON that is not a desired state.
    WrongShape,
    /// 500 with a problem.
    ServerError,
    /// 429 with `Retry-After` (seconds), as meshfleet's rate limit answers.
    Throttled(u64),
}

struct Fake {
    inner: Mutex<Inner>,
    desired: watch::Sender<(DesiredState, String)>,
}

type Shared = Arc<Fake>;

/// meshfleet's answer over an agent's rate limit.
fn throttled(retry_after_secs: u64) -> Response {
    let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "agent rate limit");
    r.headers_mut().insert(
        header::RETRY_AFTER,
        retry_after_secs.to_string().parse().unwrap(),
    );
    r
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(json!({ "type": "about:blank", "title": "error", "status": status.as_u16(), "detail": detail })),
    )
        .into_response()
}

impl Fake {
    /// The error response, if the call is not allowed.
    fn check(&self, headers: &HeaderMap) -> Option<Response> {
        let inner = self.inner.lock().unwrap();
        if inner.down {
            return Some(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "down for maintenance",
            ));
        }
        let cred = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if inner.credentials.contains(cred) {
            None
        } else {
            Some(problem(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked credential",
            ))
        }
    }

    fn issue(&self, inner: &mut Inner) -> AgentCredential {
        inner.issued += 1;
        let credential = format!("mfac_{}", inner.issued);
        inner.credentials.insert(credential.clone());
        AgentCredential {
            cluster_name: "prod-eu-1".into(),
            cluster_id: SAMPLE_CLUSTER_ID,
            credential,
            expires_at: Utc::now() + chrono::Duration::days(inner.credential_ttl_days),
        }
    }
}

async fn register(State(f): State<Shared>, Json(req): Json<RegisterRequest>) -> Response {
    let mut inner = f.inner.lock().unwrap();
    if inner.down {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "down");
    }
    if !inner.tokens.remove(&req.bootstrap_token) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "bootstrap token used, expired or unknown",
        );
    }
    assert_eq!(req.facts.kubernetes_version.as_deref(), Some("v1.33.1"));
    inner.registrations += 1;
    let cred = f.issue(&mut inner);
    (StatusCode::CREATED, Json(cred)).into_response()
}

async fn desired_state(
    State(f): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, u64>>,
) -> Response {
    if let Some(r) = f.check(&headers) {
        return r;
    }
    {
        let mut inner = f.inner.lock().unwrap();
        if let Some(fault) = inner.desired_fault {
            inner.faulty_answers += 1;
            inner.faulty_at.push(tokio::time::Instant::now());
            let etag = [(header::ETAG, "\"g99\"")];
            return match fault {
                DesiredFault::Garbage => {
                    (etag, "<html><body>502 Bad Gateway</body></html>").into_response()
                }
                DesiredFault::WrongShape => {
                    (etag, Json(json!({"mesh": null, "prune": "everything"}))).into_response()
                }
                DesiredFault::ServerError => {
                    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
                DesiredFault::Throttled(secs) => throttled(secs),
            };
        }
    }
    let mut rx = f.desired.subscribe();
    let seen = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let wait = Duration::from_secs(q.get("waitSeconds").copied().unwrap_or(0).min(60));
    let current = rx.borrow_and_update().1.clone();
    if seen.as_deref() == Some(current.as_str())
        && tokio::time::timeout(wait, rx.changed()).await.is_err()
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let (state, etag) = rx.borrow().clone();
    ([(header::ETAG, etag)], Json(state)).into_response()
}

async fn status(
    State(f): State<Shared>,
    headers: HeaderMap,
    Json(report): Json<StatusReport>,
) -> Response {
    if let Some(r) = f.check(&headers) {
        return r;
    }
    let mut inner = f.inner.lock().unwrap();
    if let Some(secs) = inner.status_throttled {
        let generation = report.observed_generation;
        inner
            .refused_at
            .push((tokio::time::Instant::now(), generation));
        return throttled(secs);
    }
    inner.reports.push(report);
    StatusCode::NO_CONTENT.into_response()
}

async fn rotate(State(f): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = f.check(&headers) {
        return r;
    }
    let old = headers[header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let mut inner = f.inner.lock().unwrap();
    inner.rotations += 1;
    inner.credentials.remove(&old);
    inner.credential_ttl_days = 30;
    let cred = f.issue(&mut inner);
    Json(cred).into_response()
}

struct Harness {
    fake: Shared,
    url: String,
    sim: SimCluster,
    /// Stops the fake service (the port then refuses connections).
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// Serves the fake on `listener` until the returned sender fires.
fn serve_fake(
    fake: Shared,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/v1/agent/register", post(register))
        .route("/v1/agent/desired-state", get(desired_state))
        .route("/v1/agent/status", put(status))
        .route("/v1/agent/credential/rotate", post(rotate))
        .with_state(fake);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    (tx, task)
}

impl Harness {
    async fn start() -> Harness {
        let d = desired("1.27.3");
        let (tx, _) = watch::channel((d, "\"g1\"".to_string()));
        let fake = Arc::new(Fake {
            inner: Mutex::new(Inner {
                tokens: HashSet::from(["mfbt_first".to_string()]),
                credential_ttl_days: 90,
                ..Inner::default()
            }),
            desired: tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = Mutex::new(Some(serve_fake(fake.clone(), listener)));
        let sim = SimCluster::new(SimOptions {
            ready_after: Duration::from_millis(10),
            ..SimOptions::default()
        });
        sim.set_bootstrap(NS, "meshfleet-bootstrap", "mfbt_first", Some(&url));
        Harness {
            fake,
            url,
            sim,
            server,
        }
    }

    /// The service goes away: its port refuses connections.
    async fn go_away(&self) {
        let (stop, task) = self.server.lock().unwrap().take().expect("serving");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// The service comes back on the same address.
    async fn come_back(&self) {
        let addr = self.url.trim_start_matches("http://");
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        *self.server.lock().unwrap() = Some(serve_fake(self.fake.clone(), listener));
    }

    fn config(&self) -> AgentConfig {
        // The URL comes from the bootstrap Secret, as in a real install.
        AgentConfig {
            url: None,
            ..AgentConfig::fast(&self.url)
        }
    }

    fn spawn_agent(&self) -> (oneshot::Sender<()>, JoinHandle<()>) {
        self.spawn_agent_with(self.config()).0
    }

    fn spawn_agent_with(
        &self,
        config: AgentConfig,
    ) -> ((oneshot::Sender<()>, JoinHandle<()>), Arc<AgentState>) {
        let agent = Agent::new(config, self.sim.clone());
        let state = agent.state();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            agent
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        ((tx, handle), state)
    }

    fn set_desired(&self, d: DesiredState) {
        let etag = format!("\"g{}\"", d.generation);
        self.fake.desired.send_replace((d, etag));
    }

    fn reports(&self) -> Vec<StatusReport> {
        self.fake.inner.lock().unwrap().reports.clone()
    }

    /// Waits (up to 10 s) for a report that satisfies `f`.
    async fn wait_report(&self, what: &str, f: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.reports().into_iter().rev().find(|r| f(r)) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last report: {:#?}",
                self.reports().last()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn converged(generation: i64) -> impl Fn(&StatusReport) -> bool {
    move |r| {
        r.observed_generation == Some(generation)
            && !r.components.is_empty()
            && r.components.iter().all(|c| c.ready)
    }
}

async fn stop(agent: (oneshot::Sender<()>, JoinHandle<()>)) {
    agent.0.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent.1)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bootstraps_converges_reports_and_survives_a_restart() {
    let h = Harness::start().await;
    let agent = h.spawn_agent();
    let r = h.wait_report("convergence", converged(1)).await;
    assert_eq!(r.facts.kubernetes_version.as_deref(), Some("v1.33.1"));
    assert_eq!(r.facts.node_count, Some(3));
    assert_eq!(
        r.facts.agent_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let zt = r.components.iter().find(|c| c.name == "ztunnel").unwrap();
    assert_eq!(zt.observed_version.as_deref(), Some("1.27.3"));
    assert!(
        r.conditions
            .iter()
            .any(|c| c.type_ == "Reconciled" && c.status == "True")
    );
    // The credential is kept in its Secret.
    let stored = h.sim.secret(NS, "meshfleet-agent-credential").unwrap();
    assert_eq!(stored["credential"], "mfac_1");
    assert!(stored.contains_key("expiresAt"));

    // Heartbeats continue while nothing changes.
    let before = h.reports().len();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(h.reports().len() >= before + 2, "heartbeats every 100 ms");
    stop(agent).await;

    // A restart finds the credential (no second registration) and changes
    // nothing in the cluster.
    h.sim.clear_ops();
    let reports_before = h.reports().len();
    let agent = h.spawn_agent();
    h.wait_report("a report after the restart", |r| {
        r.observed_generation == Some(1)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.reports().len() <= reports_before || h.sim.ops().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.wait_report("convergence after restart", converged(1))
        .await;
    stop(agent).await;
    assert_eq!(h.fake.inner.lock().unwrap().registrations, 1);
    assert!(
        h.sim
            .ops()
            .iter()
            .all(|op| matches!(op, SimOp::Apply { changed: false, .. })),
        "{:#?}",
        h.sim.ops()
    );
}

#[tokio::test]
async fn upgrades_when_the_desired_state_changes_and_corrects_drift() {
    let h = Harness::start().await;
    let agent = h.spawn_agent();
    h.wait_report("convergence", converged(1)).await;

    let mut d = desired("1.28.2");
    d.generation = 2;
    h.set_desired(d);
    let r = h.wait_report("the upgrade", converged(2)).await;
    assert!(
        r.components
            .iter()
            .all(|c| c.observed_version.as_deref() == Some("1.28.2")),
        "{r:#?}"
    );
    assert!(
        h.sim
            .get(&ObjectRef::deployment("istio-system", "istiod-1-27-3"))
            .is_none()
    );

    // Someone edits ztunnel; the next resync puts it back and says so.
    let zt = ObjectRef::daemon_set("istio-system", "ztunnel");
    h.sim.mutate(&zt, |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/ztunnel:latest".into()
    });
    let r = h
        .wait_report("Drifted", |r| {
            r.conditions
                .iter()
                .any(|c| c.type_ == "Drifted" && c.status == "True")
        })
        .await;
    let drifted = r.conditions.iter().find(|c| c.type_ == "Drifted").unwrap();
    assert_eq!(drifted.reason.as_deref(), Some("Corrected"));
    assert!(
        drifted
            .message
            .as_deref()
            .unwrap()
            .contains("DaemonSet istio-system/ztunnel"),
        "{drifted:?}"
    );
    let live = h.sim.get(&zt).unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/istio/ztunnel:1.28.2"
    );
    stop(agent).await;
}

#[tokio::test]
async fn an_injected_failure_is_reported_with_the_apis_message() {
    let h = Harness::start().await;
    h.sim.fail_apply("DaemonSet", "ztunnel", "DaemonSet.apps \"ztunnel\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value");
    let agent = h.spawn_agent();
    let r = h
        .wait_report("a failed ztunnel", |r| {
            r.components.iter().any(|c| {
                c.name == "ztunnel"
                    && !c.ready
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("is invalid"))
            })
        })
        .await;
    assert_eq!(r.observed_generation, None);
    let zt = r.components.iter().find(|c| c.name == "ztunnel").unwrap();
    assert_eq!(zt.conditions[0].reason.as_deref(), Some("ApplyFailed"));
    let wp = r.components.iter().find(|c| c.name == "waypoints").unwrap();
    assert!(!wp.ready);
    assert!(
        r.conditions
            .iter()
            .any(|c| c.type_ == "Reconciled" && c.status == "False")
    );
    // Fixed: the retry converges.
    h.sim.clear_failures();
    h.wait_report("convergence", converged(1)).await;
    stop(agent).await;
}

#[tokio::test]
async fn an_unreachable_service_leaves_the_cluster_as_it_is() {
    let h = Harness::start().await;
    let agent = h.spawn_agent();
    h.wait_report("convergence", converged(1)).await;

    h.fake.inner.lock().unwrap().down = true;
    tokio::time::sleep(Duration::from_millis(1200)).await; // the long poll (1 s) fails
    h.sim.clear_ops();
    let r = ObjectRef::deployment("istio-system", "istiod-1-27-3");
    h.sim.mutate(&r, |v| v["spec"]["replicas"] = 5.into());
    // Several resync periods pass: nothing is applied or pruned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.sim.ops().is_empty(), "{:#?}", h.sim.ops());
    assert_eq!(h.sim.get(&r).unwrap()["spec"]["replicas"], 5);

    // Back: the drift is corrected.
    h.fake.inner.lock().unwrap().down = false;
    h.wait_report("Drifted after reconnecting", |r| {
        r.conditions
            .iter()
            .any(|c| c.type_ == "Drifted" && c.status == "True")
    })
    .await;
    assert_eq!(h.sim.get(&r).unwrap()["spec"]["replicas"], 2);
    stop(agent).await;
}

/// `/readyz` of the agent's health listener: status and body.
async fn readyz(state: &Arc<AgentState>) -> (u16, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(meshfleet_agent::health::serve(
        listener,
        state.clone(),
        None,
        async {
            let _ = rx.await;
        },
    ));
    let r = reqwest::get(url).await.unwrap();
    let out = (r.status().as_u16(), r.text().await.unwrap());
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn a_revoked_credential_stops_applying_says_why_in_readyz_and_a_new_bootstrap_token_resumes()
{
    let h = Harness::start().await;
    let (agent, state) = h.spawn_agent_with(h.config());
    h.wait_report("convergence", converged(1)).await;
    assert_eq!(readyz(&state).await.0, 200);

    // Revoked, and no new token yet: the agent stops applying, says why in
    // its readiness, and keeps trying without crashing.
    h.fake.inner.lock().unwrap().credentials.clear();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while state.stopped().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, body) = readyz(&state).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("refused this agent's credential")
            && body.contains("revoked")
            && body.contains("Secret meshfleet-system/meshfleet-bootstrap"),
        "{body}"
    );
    h.sim.clear_ops();
    let r = ObjectRef::deployment("istio-system", "istiod-1-27-3");
    h.sim.mutate(&r, |v| v["spec"]["replicas"] = 5.into());
    // Several resync periods (500 ms) pass: nothing is applied or pruned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.sim.ops().is_empty(), "{:#?}", h.sim.ops());
    assert_eq!(h.fake.inner.lock().unwrap().registrations, 1);
    assert!(state.stopped().is_some());

    // A new bootstrap token appears in the Secret: the agent registers again.
    h.fake
        .inner
        .lock()
        .unwrap()
        .tokens
        .insert("mfbt_second".into());
    h.sim
        .set_bootstrap(NS, "meshfleet-bootstrap", "mfbt_second", Some(&h.url));
    let before = h.reports().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.fake.inner.lock().unwrap().registrations < 2 || h.reports().len() <= before {
        assert!(tokio::time::Instant::now() < deadline, "no re-registration");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.sim.secret(NS, "meshfleet-agent-credential").unwrap()["credential"],
        "mfac_2"
    );
    assert_eq!(state.stopped(), None);
    assert_eq!(readyz(&state).await.0, 200);
    // Applying again: the drift is corrected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.sim.get(&r).unwrap()["spec"]["replicas"] != 2 {
        assert!(tokio::time::Instant::now() < deadline, "not applied again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(agent).await;
}

#[tokio::test]
async fn a_credential_close_to_expiry_is_rotated() {
    let h = Harness::start().await;
    h.fake.inner.lock().unwrap().credential_ttl_days = 2;
    let agent = h.spawn_agent();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.fake.inner.lock().unwrap().rotations < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no rotation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The new credential is stored and used.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.sim.secret(NS, "meshfleet-agent-credential").unwrap()["credential"] != "mfac_2" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotated credential not stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = h.reports().len();
    h.wait_report("convergence", converged(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.reports().len() > before);
    assert_eq!(
        h.fake.inner.lock().unwrap().rotations,
        1,
        "30 days left: no second rotation"
    );
    stop(agent).await;
}

/// Waits until the fake has answered the desired-state route with its fault
/// `n` times (polls are sequential, so the agent has handled all but the last).
async fn wait_faulty_answers(h: &Harness, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.fake.inner.lock().unwrap().faulty_answers < n {
        assert!(tokio::time::Instant::now() < deadline, "no faulty answers");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn garbage_or_a_500_for_the_desired_state_applies_and_prunes_nothing() {
    let h = Harness::start().await;
    let agent = h.spawn_agent();
    h.wait_report("convergence", converged(1)).await;
    let r = ObjectRef::deployment("istio-system", "istiod-1-27-3");
    for (round, fault) in [
        DesiredFault::Garbage,
        DesiredFault::WrongShape,
        DesiredFault::ServerError,
    ]
    .into_iter()
    .enumerate()
    {
        h.fake.inner.lock().unwrap().faulty_answers = 0;
        h.fake.inner.lock().unwrap().desired_fault = Some(fault);
        wait_faulty_answers(&h, 2).await;
        // A pass started before the first faulty answer has ended by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = h.sim.snapshot();
        h.sim.clear_ops();
        h.sim.mutate(&r, |v| v["spec"]["replicas"] = 5.into());
        // Status reports still go through, but several resync periods
        // (500 ms) pass without a pass: nothing is applied or pruned.
        let reports = h.reports().len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(h.reports().len() > reports, "{fault:?}: heartbeats go on");
        assert!(h.sim.ops().is_empty(), "{fault:?}: {:#?}", h.sim.ops());
        assert_eq!(h.sim.snapshot().len(), before.len(), "{fault:?}");
        assert_eq!(h.sim.get(&r).unwrap()["spec"]["replicas"], 5);

        // Sane again: the next change converges, and the drift is corrected.
        h.fake.inner.lock().unwrap().desired_fault = None;
        let generation = 2 + round as i64;
        let mut d = desired("1.27.3");
        d.generation = generation;
        h.set_desired(d);
        h.wait_report("convergence after the fault", converged(generation))
            .await;
        assert_eq!(h.sim.get(&r).unwrap()["spec"]["replicas"], 2, "{fault:?}");
    }
    stop(agent).await;
}

#[tokio::test]
async fn an_agent_told_to_retry_after_a_while_waits_at_least_that_long_and_then_converges() {
    let h = Harness::start().await;
    let agent = h.spawn_agent();
    h.wait_report("convergence", converged(1)).await;
    // Its backoff alone (10 ms up to 500 ms) would come back sooner.
    h.fake.inner.lock().unwrap().desired_fault = Some(DesiredFault::Throttled(1));
    wait_faulty_answers(&h, 3).await;
    let at = h.fake.inner.lock().unwrap().faulty_at.clone();
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(1), "came back after {gap:?}");
    }
    h.fake.inner.lock().unwrap().desired_fault = None;
    let mut d = desired("1.27.3");
    d.generation = 2;
    h.set_desired(d);
    h.wait_report("convergence after the throttling", converged(2))
        .await;
    stop(agent).await;
}

#[tokio::test]
async fn a_refused_report_with_news_is_sent_again_after_its_retry_after_not_at_the_next_heartbeat()
{
    let h = Harness::start().await;
    // A heartbeat and a long poll's answer far away: only the retry can
    // bring the news in time.
    let config = AgentConfig {
        heartbeat: Duration::from_secs(60),
        poll_wait: Duration::from_secs(60),
        ..h.config()
    };
    let (agent, _) = h.spawn_agent_with(config);
    h.wait_report("convergence", converged(1)).await;
    h.fake.inner.lock().unwrap().status_throttled = Some(1);
    let mut d = desired("1.27.3");
    d.generation = 2;
    h.set_desired(d);
    // The report of generation 2 is refused, then refused twice again, each
    // time at least the Retry-After after the last (a resync pass of
    // generation 1 may have been refused just before: not counted).
    let refused = || -> Vec<tokio::time::Instant> {
        let inner = h.fake.inner.lock().unwrap();
        inner
            .refused_at
            .iter()
            .filter(|(_, generation)| *generation == Some(2))
            .map(|(at, _)| *at)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no refused reports");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at = refused();
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(1), "came back after {gap:?}");
    }
    h.fake.inner.lock().unwrap().status_throttled = None;
    h.wait_report("generation 2 after the refusals", converged(2))
        .await;
    stop(agent).await;
}

#[tokio::test]
async fn a_service_gone_for_hundreds_of_resync_periods_leaves_the_cluster_exactly_as_it_is() {
    let h = Harness::start().await;
    // Short settings stand for a long outage: 3 s are 150 resync periods
    // (20 ms; 12.5 hours at the default 5 min) and 60 backoffs at their cap.
    let config = AgentConfig {
        resync: Duration::from_millis(20),
        retry: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..h.config()
    };
    let (agent, _) = h.spawn_agent_with(config);
    h.wait_report("convergence", converged(1)).await;

    h.go_away().await;
    // The agent's open calls fail; any pass in flight ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = h.sim.snapshot();
    h.sim.clear_ops();
    // Meanwhile the tenant upgrades: the agent cannot know yet.
    let mut d = desired("1.28.2");
    d.generation = 2;
    h.set_desired(d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(h.sim.ops().is_empty(), "{:#?}", h.sim.ops());
    assert_eq!(h.sim.snapshot(), before, "the cluster is exactly as it was");

    // Back: the agent learns the change and converges on it.
    h.come_back().await;
    let r = h
        .wait_report("the upgrade after the outage", converged(2))
        .await;
    assert!(
        r.components
            .iter()
            .all(|c| c.observed_version.as_deref() == Some("1.28.2")),
        "{r:#?}"
    );
    stop(agent).await;
}
