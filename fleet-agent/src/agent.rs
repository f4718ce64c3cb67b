//! The agent loop.
//!
//! ```text
//! connect:  credential Secret ──(none / rejected)──▶ bootstrap Secret ─▶ POST register
//!           └─ stores the credential in the credential Secret
//! session:  long-poll desired state (If-None-Match) ─▶ reconcile pass on change
//!           resync timer (jittered) ─▶ re-apply, drift reported as `Drifted`
//!           heartbeat timer / pass finished ─▶ PUT status
//!           rotation timer ─▶ rotate the credential when < 7 days remain
//!           401 on the credential ─▶ back to connect
//! ```
//!
//! Restart-safe: everything that matters lives in the cluster (the credential
//! Secret, the objects) or at the service (the desired state); a restarted
//! agent re-reads both and re-applies, which is a no-op when nothing changed.
//!
//! While the service is unreachable the agent leaves the cluster exactly as it
//! is (no new pass, no prune) and retries with capped, fully jittered
//! exponential backoff.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use meshfleet_model::{
    AGENT_NAMESPACE, BOOTSTRAP_SECRET, CREDENTIAL_SECRET, ClusterFacts, ComponentStatus, Condition,
    DesiredState, MeshMode, StatusReport, bundle::BundleOrigin,
};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, Span, debug, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::backend::{ClusterBackend, SecretData};
use crate::bundle::Bundle;
use crate::client::{Backoff, Poll, ServiceClient};
use crate::error::{Error, Result};
use crate::reconcile::{
    Outcome, ReconcileOptions, Trigger, condition, not_started, reconcile_with,
};
use crate::render::Directives;

/// Everything the agent loop needs to know. [`AgentConfig::new`] gives the
/// production defaults; tests and the fleet simulator set fields directly.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the meshfleet service; `None` reads the `url` key of the
    /// bootstrap Secret.
    pub url: Option<String>,
    /// Namespace of the agent's Secrets.
    pub namespace: String,
    pub bootstrap_secret: String,
    pub credential_secret: String,
    /// `waitSeconds` of the long poll (whole seconds, at most 60).
    pub poll_wait: Duration,
    /// Period of the drift re-apply (jittered ±20%).
    pub resync: Duration,
    /// Status is sent at least this often.
    pub heartbeat: Duration,
    /// Delay before retrying a pass that did not converge.
    pub retry: Duration,
    /// First and largest backoff delay when the service is unreachable.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Rotate the credential when less than this remains before it expires.
    pub rotate_before: Duration,
    /// How often the credential's expiry is checked.
    pub rotation_check: Duration,
    pub reconcile: ReconcileOptions,
    /// Shared HTTP client (the fleet simulator runs many agents over one);
    /// `None` builds one.
    pub http: Option<reqwest::Client>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            url: None,
            namespace: AGENT_NAMESPACE.to_string(),
            bootstrap_secret: BOOTSTRAP_SECRET.to_string(),
            credential_secret: CREDENTIAL_SECRET.to_string(),
            poll_wait: Duration::from_secs(55),
            resync: Duration::from_secs(300),
            heartbeat: Duration::from_secs(30),
            retry: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            rotate_before: Duration::from_secs(7 * 24 * 3600),
            rotation_check: Duration::from_secs(3600),
            reconcile: ReconcileOptions::default(),
            http: None,
        }
    }
}

impl AgentConfig {
    /// Production defaults talking to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        AgentConfig {
            url: Some(url.into()),
            ..AgentConfig::default()
        }
    }

    /// Short timers for tests and simulations: 1 s long polls, 100 ms
    /// heartbeats, 500 ms resync, 10 ms–500 ms backoff, 5 ms rollout polling
    /// with a 5 s rollout timeout.
    pub fn fast(url: impl Into<String>) -> Self {
        AgentConfig {
            url: Some(url.into()),
            poll_wait: Duration::from_secs(1),
            resync: Duration::from_millis(500),
            heartbeat: Duration::from_millis(100),
            retry: Duration::from_millis(100),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            rotation_check: Duration::from_millis(200),
            reconcile: ReconcileOptions {
                poll_interval: Duration::from_millis(5),
                ready_timeout: Duration::from_secs(5),
            },
            ..AgentConfig::default()
        }
    }
}

/// What the agent shares with its health endpoints (and with tests).
#[derive(Debug, Default)]
pub struct AgentState {
    has_credential: AtomicBool,
    talked: AtomicBool,
    passes: AtomicU64,
    last_sync: Mutex<Option<DateTime<Utc>>>,
    last_report: Mutex<Option<StatusReport>>,
    /// The generation of the last new desired state received, and when.
    received: Mutex<Option<(i64, DateTime<Utc>)>>,
    /// Why the agent has stopped applying (its credential was refused).
    stopped: Mutex<Option<String>>,
    /// Imported bundles fetched and verified, by digest (each is fetched once).
    bundles: Mutex<BTreeMap<String, Arc<Bundle>>>,
}

impl AgentState {
    /// Ready once it holds a credential and has talked to the service, and
    /// not after the service refused its credential.
    pub fn is_ready(&self) -> bool {
        self.has_credential.load(Ordering::Relaxed)
            && self.talked.load(Ordering::Relaxed)
            && self.stopped().is_none()
    }

    /// Why the agent has stopped applying, if it has: the service refused
    /// its credential (revoked, or expired) and no new bootstrap token
    /// worked yet. `/readyz` says so.
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_stopped(&self, why: Option<String>) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    pub fn has_credential(&self) -> bool {
        self.has_credential.load(Ordering::Relaxed)
    }

    /// Reconcile passes finished.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// When the last pass converged.
    pub fn last_sync(&self) -> Option<DateTime<Utc>> {
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation of the last new desired state the agent received,
    /// and when it arrived (before the pass that applies it).
    pub fn received(&self) -> Option<(i64, DateTime<Utc>)> {
        *self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last status report the agent built (sent or not).
    pub fn last_report(&self) -> Option<StatusReport> {
        self.last_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The fleet agent over a cluster backend.
pub struct Agent<B> {
    config: AgentConfig,
    backend: B,
    state: Arc<AgentState>,
}

/// A credential and the service it works with.
struct Session {
    client: ServiceClient,
    credential: String,
    expires_at: Option<DateTime<Utc>>,
}

enum End {
    Shutdown,
    /// The service rejected this credential (with the service's detail).
    Unauthorized {
        credential: String,
        detail: String,
    },
}

type PollFuture = Pin<Box<dyn Future<Output = Result<Poll>> + Send>>;
/// A finished pass, with its span (the status report it prompts is its child).
type PassHandle = JoinHandle<(Trigger, Outcome, Option<ClusterFacts>, Span)>;

/// The release bundle of a desired state: the development bundle when it
/// names none or a `development` one (and for an uninstall, which installs
/// nothing), otherwise the imported bundle, fetched from the service once per
/// digest and verified against it. On failure, the status reason and why.
async fn release_bundle(
    state: &AgentState,
    client: &ServiceClient,
    credential: &str,
    desired: &DesiredState,
) -> std::result::Result<Arc<Bundle>, (&'static str, Error)> {
    let reference = match &desired.bundle {
        Some(r) if r.origin == BundleOrigin::Imported && desired.mode != MeshMode::Disabled => r,
        _ => return Ok(Bundle::development_shared(&desired.version)),
    };
    let cached = state
        .bundles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&reference.digest)
        .cloned();
    if let Some(bundle) = cached {
        return Ok(bundle);
    }
    let bytes = client
        .fetch_bundle(credential, &reference.url)
        .await
        .map_err(|e| ("BundleUnavailable", e))?;
    let bundle = Bundle::from_document(&desired.version, &reference.digest, &bytes)
        .map_err(|e| ("BundleInvalid", e))?;
    info!(digest = %reference.digest, crds = bundle.crds().len(), "release bundle fetched and verified");
    let bundle = Arc::new(bundle);
    state
        .bundles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(reference.digest.clone(), bundle.clone());
    Ok(bundle)
}

/// A long poll after `delay`, in its own `agent.poll` span (a root that
/// follows from the session), whose `traceparent` the request carries.
fn poll_after(
    client: &ServiceClient,
    credential: &str,
    etag: Option<&str>,
    wait: Duration,
    delay: Duration,
    session: &Span,
) -> PollFuture {
    let client = client.clone();
    let credential = credential.to_string();
    let etag = etag.map(str::to_string);
    let session = session.clone();
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let span = tracing::info_span!(
            parent: None,
            "agent.poll",
            otel.kind = "client",
            cluster = tracing::field::Empty,
            wait_seconds = wait.as_secs(),
            result = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        span.follows_from(&session);
        meshfleet_telemetry::record_trace_id(&span);
        let polled = client
            .desired_state(&credential, etag.as_deref(), wait)
            .instrument(span.clone())
            .await;
        let result = match &polled {
            Ok(Poll::Changed { state, .. }) => {
                span.record("cluster", state.cluster_name.as_str());
                "changed"
            }
            Ok(Poll::NotModified) => "not_modified",
            Err(_) => "error",
        };
        span.record("result", result);
        metrics::counter!("meshfleet_agent_polls_total", "result" => result).increment(1);
        polled
    })
}

fn jittered(period: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..=1.2);
    period.mul_f64(f)
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn carry_transitions(prev: &[Condition], next: &mut [Condition]) {
    for c in next {
        if let Some(p) = prev
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = p.last_transition_time;
        }
    }
}

fn carry_component_transitions(prev: &[ComponentStatus], next: &mut [ComponentStatus]) {
    for c in next {
        if let Some(p) = prev.iter().find(|p| p.name == c.name) {
            carry_transitions(&p.conditions, &mut c.conditions);
        }
    }
}

impl<B: ClusterBackend> Agent<B> {
    pub fn new(config: AgentConfig, backend: B) -> Self {
        Agent {
            config,
            backend,
            state: Arc::new(AgentState::default()),
        }
    }

    /// Shared state for the health endpoints and for tests.
    pub fn state(&self) -> Arc<AgentState> {
        self.state.clone()
    }

    /// Runs until `shutdown` completes. Only a configuration problem (the
    /// HTTP client cannot be built) ends it early; everything else is retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        if self.config.poll_wait.as_secs() > meshfleet_model::MAX_WAIT_SECONDS {
            return Err(Error::Config(format!(
                "MESHFLEET_POLL_WAIT must be at most {}s",
                meshfleet_model::MAX_WAIT_SECONDS
            )));
        }
        let http = match &self.config.http {
            Some(h) => h.clone(),
            None => ServiceClient::default_http()?,
        };
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_max);
        let mut tried_tokens: HashSet<String> = HashSet::new();
        let mut rejected: Option<String> = None;
        loop {
            let session = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                s = self.connect(&http, &mut backoff, &mut tried_tokens, rejected.as_deref()) => s,
            };
            self.state.has_credential.store(true, Ordering::Relaxed);
            self.state.set_stopped(None);
            let span = tracing::info_span!(
                parent: None,
                "agent.session",
                cluster = tracing::field::Empty,
                end = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            meshfleet_telemetry::record_trace_id(&span);
            let end = self
                .session(session, &mut shutdown, &mut backoff)
                .instrument(span.clone())
                .await;
            span.record(
                "end",
                match end {
                    End::Shutdown => "shutdown",
                    End::Unauthorized { .. } => "unauthorized",
                },
            );
            drop(span);
            match end {
                End::Shutdown => {
                    info!("agent stopped");
                    return Ok(());
                }
                End::Unauthorized { credential, detail } => {
                    let why = format!(
                        "the meshfleet service refused this agent's credential ({detail}): it was \
                         revoked or has expired; nothing is applied until a new bootstrap token \
                         is put in Secret {}/{}",
                        self.config.namespace, self.config.bootstrap_secret
                    );
                    tracing::error!(%detail, "stopped applying: {why}");
                    self.state.has_credential.store(false, Ordering::Relaxed);
                    self.state.set_stopped(Some(why));
                    rejected = Some(credential);
                }
            }
        }
    }

    /// Finds a usable credential, registering if needed; retries with backoff.
    async fn connect(
        &self,
        http: &reqwest::Client,
        backoff: &mut Backoff,
        tried_tokens: &mut HashSet<String>,
        rejected: Option<&str>,
    ) -> Session {
        loop {
            // One span per attempt: a registration is traced like any request.
            let span = tracing::info_span!(
                parent: None,
                "agent.connect",
                attempt = backoff.attempts(),
                trace_id = tracing::field::Empty,
            );
            meshfleet_telemetry::record_trace_id(&span);
            match self
                .try_connect(http, tried_tokens, rejected)
                .instrument(span)
                .await
            {
                Ok(s) => {
                    backoff.reset();
                    return s;
                }
                Err(e) => {
                    let delay = backoff.delay_after(&e);
                    warn!(error = %e, retry_in = ?delay, "no usable credential yet");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn try_connect(
        &self,
        http: &reqwest::Client,
        tried_tokens: &mut HashSet<String>,
        rejected: Option<&str>,
    ) -> Result<Session> {
        let c = &self.config;
        let bootstrap = self
            .backend
            .get_secret(&c.namespace, &c.bootstrap_secret)
            .await?
            .unwrap_or_default();
        let url = c
            .url
            .clone()
            .or_else(|| {
                bootstrap
                    .get("url")
                    .cloned()
                    .filter(|u| !u.trim().is_empty())
            })
            .ok_or_else(|| {
                Error::Config(format!(
                    "no service URL: set MESHFLEET_URL or the `url` key of Secret {}/{}",
                    c.namespace, c.bootstrap_secret
                ))
            })?;
        let client = ServiceClient::new(http.clone(), url.trim());

        if let Some(stored) = self
            .backend
            .get_secret(&c.namespace, &c.credential_secret)
            .await?
            && let Some(credential) = stored.get("credential").filter(|s| !s.is_empty())
            && Some(credential.as_str()) != rejected
        {
            let expires_at = stored
                .get("expiresAt")
                .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                .map(|e| e.with_timezone(&Utc));
            debug!("using the stored credential");
            return Ok(Session {
                client,
                credential: credential.clone(),
                expires_at,
            });
        }

        let token = bootstrap
            .get("token")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty() && !t.starts_with("REPLACE_WITH_"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "no bootstrap token in Secret {}/{} (key `token`)",
                    c.namespace, c.bootstrap_secret
                ))
            })?;
        if tried_tokens.contains(&token) {
            return Err(Error::Unauthorized(format!(
                "the bootstrap token in Secret {}/{} was already used; waiting for a new one",
                c.namespace, c.bootstrap_secret
            )));
        }
        tried_tokens.insert(token.clone());
        let facts = self.facts().await;
        match client.register(&token, facts).await {
            Ok(cred) => {
                info!(cluster = %cred.cluster_name, cluster_id = %cred.cluster_id, "registered");
                self.store_credential(&cred.credential, cred.expires_at)
                    .await?;
                self.state.talked.store(true, Ordering::Relaxed);
                Ok(Session {
                    client,
                    credential: cred.credential,
                    expires_at: Some(cred.expires_at),
                })
            }
            Err(e) => {
                if e.is_unavailable() {
                    // Not really tried: the service never saw it.
                    tried_tokens.remove(&token);
                }
                Err(e)
            }
        }
    }

    async fn store_credential(&self, credential: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let mut data = SecretData::new();
        data.insert("credential".into(), credential.to_string());
        data.insert("expiresAt".into(), expires_at.to_rfc3339());
        self.backend
            .put_secret(&self.config.namespace, &self.config.credential_secret, data)
            .await
    }

    async fn facts(&self) -> ClusterFacts {
        let mut facts = match self.backend.facts().await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "reading cluster facts");
                ClusterFacts::default()
            }
        };
        facts.agent_version = Some(crate::AGENT_VERSION.to_string());
        facts
    }

    /// Starts a pass in its own `agent.reconcile` span: in the trace of the
    /// change it applies when the service sent one (`change`, see
    /// [`Poll::Changed`]), otherwise a root; it follows from the session.
    fn spawn_pass(
        &self,
        session: &Session,
        desired: DesiredState,
        directives: Directives,
        trigger: Trigger,
        change: Option<&str>,
        progress: &watch::Sender<Vec<ComponentStatus>>,
    ) -> PassHandle {
        let backend = self.backend.clone();
        let state = self.state.clone();
        let client = session.client.clone();
        let credential = session.credential.clone();
        let opts = self.config.reconcile.clone();
        let progress = progress.clone();
        let span = tracing::info_span!(
            parent: None,
            "agent.reconcile",
            cluster = %desired.cluster_name,
            generation = desired.generation,
            version = %desired.version,
            trigger = ?trigger,
            converged = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        if let Some(change) = change.and_then(meshfleet_telemetry::parse_traceparent) {
            let _ = span.set_parent(Context::new().with_remote_span_context(change));
        }
        span.follows_from(Span::current());
        meshfleet_telemetry::record_trace_id(&span);
        debug!(
            generation = desired.generation,
            ?trigger,
            "reconcile pass starts"
        );
        tokio::spawn(
            async move {
                // Release data of the desired version: the development
                // bundle, or the imported one fetched (once) and verified.
                let out = match release_bundle(&state, &client, &credential, &desired).await {
                    Ok(bundle) => {
                        reconcile_with(
                            &backend,
                            &desired,
                            &bundle,
                            &directives,
                            trigger,
                            &opts,
                            Some(&progress),
                        )
                        .await
                    }
                    Err((reason, e)) => {
                        warn!(error = %e, "release bundle unusable; nothing applied");
                        let out = not_started(&desired, reason, e.to_string());
                        let _ = progress.send(out.components.clone());
                        out
                    }
                };
                let facts = backend.facts().await.ok();
                let span = Span::current();
                span.record("converged", out.converged);
                (trigger, out, facts, span)
            }
            .instrument(span),
        )
    }

    async fn session(
        &self,
        mut s: Session,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Backoff,
    ) -> End {
        let c = &self.config;
        let session = Span::current();
        let mut facts = self.facts().await;
        let mut etag: Option<String> = None;
        let mut desired: Option<(DesiredState, Directives)> = None;
        let mut connected = false;
        let mut observed_generation: Option<i64> = None;
        let mut components: Vec<ComponentStatus> = Vec::new();
        let mut conditions: Vec<Condition> = Vec::new();
        let (progress_tx, mut progress_rx) = watch::channel(Vec::<ComponentStatus>::new());
        let mut pass: Option<PassHandle> = None;
        let mut next_pass: Option<(Instant, Trigger)> = None;
        let mut heartbeat = tokio::time::interval(c.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rotation = tokio::time::interval(c.rotation_check);
        rotation.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report_parent: Option<Span> = None;
        // The last report the service took, and when to try again a newer
        // one it refused (sooner than the next heartbeat: a rollout waits
        // for it).
        let mut delivered: Option<StatusReport> = None;
        let mut report_retry: Option<Instant> = None;
        let mut report_backoff = Backoff::new(c.backoff_base, c.heartbeat.max(c.backoff_base));
        let mut poll = poll_after(
            &s.client,
            &s.credential,
            None,
            c.poll_wait,
            Duration::ZERO,
            &session,
        );

        let end = loop {
            let mut send_report = false;
            tokio::select! {
                _ = shutdown.as_mut() => break End::Shutdown,

                res = &mut poll => match res {
                    Ok(Poll::Changed { state, directives, etag: new_etag, change }) => {
                        send_report |= !connected;
                        connected = true;
                        self.state.talked.store(true, Ordering::Relaxed);
                        backoff.reset();
                        etag = new_etag;
                        if desired.as_ref().map(|(d, x)| (d, x)) != Some((&*state, &directives)) {
                            session.record("cluster", state.cluster_name.as_str());
                            info!(generation = state.generation, version = %state.version, "desired state changed");
                            *self.state.received.lock().unwrap_or_else(|e| e.into_inner()) = Some((state.generation, Utc::now()));
                            if let Some(p) = pass.take() {
                                p.abort();
                            }
                            pass = Some(self.spawn_pass(&s, (*state).clone(), directives.clone(), Trigger::Changed, change.as_deref(), &progress_tx));
                            next_pass = None;
                            desired = Some((*state, directives));
                        }
                        poll = poll_after(&s.client, &s.credential, etag.as_deref(), c.poll_wait, Duration::ZERO, &session);
                    }
                    Ok(Poll::NotModified) => {
                        send_report |= !connected;
                        connected = true;
                        self.state.talked.store(true, Ordering::Relaxed);
                        backoff.reset();
                        poll = poll_after(&s.client, &s.credential, etag.as_deref(), c.poll_wait, Duration::ZERO, &session);
                    }
                    Err(Error::Unauthorized(detail)) => {
                        break End::Unauthorized { credential: s.credential.clone(), detail };
                    }
                    Err(e) => {
                        connected = false;
                        metrics::counter!("meshfleet_agent_service_errors_total").increment(1);
                        let delay = backoff.delay_after(&e);
                        warn!(error = %e, retry_in = ?delay, "desired state: service unavailable; leaving the cluster as it is");
                        poll = poll_after(&s.client, &s.credential, etag.as_deref(), c.poll_wait, delay, &session);
                    }
                },

                _ = heartbeat.tick() => send_report = true,

                _ = async {
                    match report_retry {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if report_retry.is_some() => send_report = true,

                _ = async {
                    match next_pass {
                        Some((at, _)) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if pass.is_none() && next_pass.is_some() => {
                    let trigger = next_pass.map_or(Trigger::Resync, |(_, t)| t);
                    match (&desired, connected) {
                        (Some((d, x)), true) => {
                            pass = Some(self.spawn_pass(&s, d.clone(), x.clone(), trigger, None, &progress_tx));
                            next_pass = None;
                        }
                        // Unreachable: leave the cluster as it is, look again later.
                        _ => next_pass = Some((Instant::now() + jittered(c.resync), trigger)),
                    }
                },

                res = async {
                    match pass.as_mut() {
                        Some(h) => h.await,
                        None => std::future::pending().await,
                    }
                }, if pass.is_some() => {
                    pass = None;
                    match res {
                        Ok((trigger, out, new_facts, pass_span)) => {
                            report_parent = Some(pass_span);
                            if let Some(mut f) = new_facts {
                                f.agent_version = Some(crate::AGENT_VERSION.to_string());
                                facts = f;
                            }
                            self.record_outcome(trigger, &out, &mut observed_generation, &mut components, &mut conditions);
                            next_pass = Some(if out.converged {
                                (Instant::now() + jittered(c.resync), Trigger::Resync)
                            } else {
                                (Instant::now() + c.retry, Trigger::Retry)
                            });
                        }
                        Err(e) => {
                            warn!(error = %e, "reconcile pass panicked");
                            next_pass = Some((Instant::now() + c.retry, Trigger::Retry));
                        }
                    }
                    send_report = true;
                },

                Ok(()) = progress_rx.changed() => {
                    let mut next = progress_rx.borrow_and_update().clone();
                    carry_component_transitions(&components, &mut next);
                    components = next;
                },

                _ = rotation.tick() => {
                    match self.maybe_rotate(&mut s).await {
                        Ok(true) => {
                            // Re-issue the long poll with the new credential.
                            poll = poll_after(&s.client, &s.credential, etag.as_deref(), c.poll_wait, Duration::ZERO, &session);
                        }
                        Ok(false) => {}
                        Err(Error::Unauthorized(detail)) => break End::Unauthorized { credential: s.credential.clone(), detail },
                        Err(e) => warn!(error = %e, "credential rotation failed; will retry"),
                    }
                },
            }

            if send_report {
                report_retry = None;
                let report = StatusReport {
                    observed_generation,
                    components: components.clone(),
                    facts: facts.clone(),
                    conditions: conditions.clone(),
                };
                *self
                    .state
                    .last_report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
                // After a pass, in its trace; a heartbeat is a root of its own.
                let span = match report_parent.take() {
                    Some(pass) => tracing::info_span!(parent: &pass, "agent.report",
                        otel.kind = "client", trace_id = tracing::field::Empty),
                    None => {
                        let span = tracing::info_span!(parent: None, "agent.report",
                            otel.kind = "client", trace_id = tracing::field::Empty);
                        span.follows_from(&session);
                        span
                    }
                };
                meshfleet_telemetry::record_trace_id(&span);
                let sent = s
                    .client
                    .report_status(&s.credential, &report)
                    .instrument(span)
                    .await;
                metrics::counter!("meshfleet_agent_status_reports_total",
                    "result" => if sent.is_ok() { "ok" } else { "error" })
                .increment(1);
                match sent {
                    // Not `connected`: that means the desired state could be
                    // read, which alone lets a pass run.
                    Ok(()) => {
                        self.state.talked.store(true, Ordering::Relaxed);
                        report_backoff.reset();
                        delivered = Some(report);
                    }
                    Err(Error::Unauthorized(detail)) => {
                        break End::Unauthorized {
                            credential: s.credential.clone(),
                            detail,
                        };
                    }
                    Err(e) => {
                        if e.is_unavailable() {
                            connected = false;
                        }
                        metrics::counter!("meshfleet_agent_service_errors_total").increment(1);
                        if !e.is_unavailable() || delivered.as_ref() == Some(&report) {
                            warn!(error = %e, "status report failed; will retry on the next heartbeat");
                        } else {
                            // News the service could not take now: again after
                            // the backoff (never before its Retry-After).
                            let delay = report_backoff.delay_after(&e);
                            report_retry = Some(Instant::now() + delay);
                            warn!(error = %e, retry_in = ?delay, "status report failed; will retry");
                        }
                    }
                }
            }
        };
        if let Some(p) = pass.take() {
            p.abort();
        }
        end
    }

    fn record_outcome(
        &self,
        trigger: Trigger,
        out: &Outcome,
        observed_generation: &mut Option<i64>,
        components: &mut Vec<ComponentStatus>,
        conditions: &mut Vec<Condition>,
    ) {
        self.state.passes.fetch_add(1, Ordering::Relaxed);
        let result = if out.converged { "converged" } else { "failed" };
        metrics::counter!("meshfleet_agent_reconciles_total", "result" => result).increment(1);
        if out.converged {
            *observed_generation = Some(out.generation);
            let now = Utc::now();
            *self
                .state
                .last_sync
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(now);
            metrics::gauge!("meshfleet_agent_last_sync_timestamp_seconds")
                .set(now.timestamp() as f64);
        }
        let mut next_components = out.components.clone();
        carry_component_transitions(components, &mut next_components);
        *components = next_components;

        let mut next: Vec<Condition> = Vec::new();
        next.push(match &out.error {
            None => condition("Reconciled", "True", "Converged", None),
            Some(m) => condition(
                "Reconciled",
                "False",
                out.reason.unwrap_or("Failed"),
                Some(m.clone()),
            ),
        });
        if !out.drifted.is_empty() {
            metrics::counter!("meshfleet_agent_drift_corrections_total")
                .increment(out.drifted.len() as u64);
            let list: Vec<String> = out.drifted.iter().map(ToString::to_string).collect();
            next.push(condition(
                "Drifted",
                "True",
                "Corrected",
                Some(format!(
                    "re-applied {} object(s) changed outside meshfleet: {}",
                    list.len(),
                    list.join(", ")
                )),
            ));
        } else if trigger == Trigger::Resync && out.converged {
            next.push(condition("Drifted", "False", "InSync", None));
        } else if let Some(prev) = conditions.iter().find(|c| c.type_ == "Drifted") {
            // Not a drift check: keep what the last one said.
            next.push(prev.clone());
        }
        carry_transitions(conditions, &mut next);
        *conditions = next;
    }

    /// Rotates the credential when it expires within `rotate_before`.
    async fn maybe_rotate(&self, s: &mut Session) -> Result<bool> {
        let Some(expires_at) = s.expires_at else {
            return Ok(false);
        };
        let left = expires_at - Utc::now();
        let limit =
            chrono::Duration::from_std(self.config.rotate_before).unwrap_or(chrono::Duration::MAX);
        if left > limit {
            return Ok(false);
        }
        info!(%expires_at, "rotating the agent credential");
        let cred = s.client.rotate(&s.credential).await?;
        self.store_credential(&cred.credential, cred.expires_at)
            .await?;
        s.credential = cred.credential;
        s.expires_at = Some(cred.expires_at);
        Ok(true)
    }
}
