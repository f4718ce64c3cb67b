//! The meshfleet fleet agent.
//!
//! One agent runs in each registered cluster. It exchanges a one-time
//! bootstrap token for a per-cluster credential, long-polls the service for the
//! cluster's desired mesh state, installs and upgrades Istio ambient with
//! server-side apply in the upstream order, prunes what it owns and no longer
//! needs, corrects drift, and reports per-component status as a heartbeat.
//!
//! Layout:
//! - [`config`]: environment/CLI configuration ([`config::Cli`]) and the
//!   in-code [`AgentConfig`].
//! - [`bundle`]: release data (CRDs, injection templates) behind one type.
//! - [`render`]: desired state + bundle → ordered steps of typed Kubernetes objects.
//! - [`ownership`]: what the agent may install, upgrade and delete.
//! - [`backend`]: the narrow [`ClusterBackend`] trait; [`kube_backend`] is the
//!   kube-rs implementation, [`sim`] a simulated cluster.
//! - [`reconcile`]: one apply/wait/prune pass and its per-component outcome.
//! - [`client`]: the agent protocol over HTTP, with backoff.
//! - [`agent`]: the loop that ties them together ([`Agent::run`]).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`telemetry`]: log lines and spans (OTLP when configured).

pub mod agent;
pub mod backend;
pub mod bundle;
pub mod client;
pub mod config;
pub mod error;
pub mod health;
pub mod kube_backend;
pub mod ownership;
pub mod reconcile;
pub mod render;
pub mod sim;
pub mod telemetry;
pub mod testing;

pub use agent::{Agent, AgentConfig, AgentState};
pub use backend::{Applied, ClusterBackend, ObjectRef, OwnedObject, WorkloadStatus};
pub use bundle::Bundle;
pub use error::{Error, Result};
pub use kube_backend::KubeBackend;
pub use reconcile::{Outcome, ReconcileOptions, Trigger, reconcile, reconcile_with};
pub use render::{Directives, Object, RenderedStep, Step, render, render_with};
pub use sim::{SimCluster, SimOp, SimOptions};

/// This agent's version, reported in the cluster facts.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
