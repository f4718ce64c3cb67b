//! Real fleet agents over simulated clusters, registered against a [`TestApp`].

use std::time::{Duration, Instant};

use meshfleet_agent::{Agent, AgentConfig, SimCluster, SimOptions};
use meshfleet_model::{AGENT_NAMESPACE, BOOTSTRAP_SECRET};
use serde_json::{Value, json};

use crate::TestApp;

pub struct RunningAgent {
    pub sim: SimCluster,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    pub async fn stop(mut self) -> SimCluster {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.sim
    }
}

pub fn start_agent(sim: SimCluster, config: AgentConfig) -> RunningAgent {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let agent = Agent::new(config, sim.clone());
    let task = tokio::spawn(async move {
        let _ = agent
            .run(async move {
                let _ = rx.await;
            })
            .await;
    });
    RunningAgent {
        sim,
        stop: Some(stop),
        task,
    }
}

/// The one HTTP client of a simulated fleet (`AgentConfig::http` of every
/// agent, and the bench's own calls). Each agent holds a long poll, so the
/// pool has a connection per agent; the idle ones beyond 256 (left over
/// from bursts of status reports) are closed instead of each keeping its
/// ~27 KiB of hyper buffers.
pub fn fleet_http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build()
        .expect("an HTTP client without TLS settings builds")
}

/// Long polls of 30 s: only a NOTIFY can wake the agent quickly.
pub fn config(base: &str) -> AgentConfig {
    let mut c = AgentConfig::fast(base);
    c.poll_wait = Duration::from_secs(30);
    c.resync = Duration::from_secs(3600);
    c.heartbeat = Duration::from_millis(200);
    c
}

pub fn spec(version: &str) -> Value {
    json!({
        "labels": {"env": "prod"},
        "mesh": {
            "upgrade": {"mode": "manual", "version": version},
            "enrolledNamespaces": ["shop"],
            "waypoints": [{"namespace": "shop", "name": "shop-waypoint"}]
        }
    })
}

/// Creates a cluster and a simulated cluster holding its bootstrap Secret.
pub async fn cluster_with_agent(app: &TestApp, name: &str, version: &str) -> RunningAgent {
    app.create("acme", name, &spec(version)).await;
    agent_for(app, "acme", name).await
}

/// Starts a real agent over a new simulated cluster for an existing cluster.
pub async fn agent_for(app: &TestApp, tenant: &str, name: &str) -> RunningAgent {
    let token = app.bootstrap_token(tenant, name).await;
    let sim = SimCluster::new(SimOptions {
        ready_after: Duration::from_millis(30),
        ..SimOptions::default()
    });
    sim.set_bootstrap(AGENT_NAMESPACE, BOOTSTRAP_SECRET, &token, Some(&app.base));
    start_agent(sim, config(&app.base))
}

/// Waits until the cluster's status satisfies `done`; panics with the last status.
pub async fn wait_status(
    app: &TestApp,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = app.owner("acme");
    loop {
        let c = app
            .get(&format!("/v1/clusters/{name}"))
            .token(&t)
            .send()
            .await;
        if done(&c.body["status"]) {
            return c.body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            c.body["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
