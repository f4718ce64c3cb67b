//! One reconcile pass: apply the rendered steps in order, wait for each
//! step's workloads to roll out, prune what is no longer desired, and describe
//! the result per component.
//!
//! Decisions (DESIGN §4):
//! - Steps are applied strictly in order; a step starts only when the
//!   Deployments/DaemonSets of the previous ones are ready. During an upgrade
//!   the new istiod revision (new object names) is therefore running before
//!   istio-cni and ztunnel move, while they still talk to the old revision.
//! - The first failure stops the pass: that component is reported failed with
//!   the API's message, the later ones pending. Nothing is pruned then.
//! - Pruning (owned objects that are no longer rendered, such as the previous
//!   istiod revision) happens only after every step is ready.
//! - `mode: disabled` prunes everything owned in reverse step order.
//! - A periodic re-apply ([`Trigger::Resync`]) that changes a live object has
//!   corrected drift; the objects are returned in [`Outcome::drifted`].

use std::time::Duration;

use chrono::Utc;
use meshfleet_model::{ComponentStatus, Condition, DesiredState, MeshMode};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backend::{ClusterBackend, ObjectRef, OwnedObject};
use crate::error::Error;
use crate::render::{self, PruneAction, RenderedStep, Step, bare_namespace, plan_prune};

/// Timing of a reconcile pass.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// How often workload status is read while waiting for a rollout.
    pub poll_interval: Duration,
    /// How long one step's rollout may take before the pass gives up (it is
    /// retried later).
    pub ready_timeout: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            poll_interval: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The desired state changed (or the agent just started).
    Changed,
    /// The periodic re-apply of an unchanged desired state: changes are drift.
    Resync,
    /// A retry after a pass that did not converge.
    Retry,
}

/// What a pass did and found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The generation of the desired state this pass applied.
    pub generation: i64,
    /// Every step applied and ready, and pruning done.
    pub converged: bool,
    /// One per step, in step order.
    pub components: Vec<ComponentStatus>,
    /// Objects a [`Trigger::Resync`] pass found changed and re-applied.
    pub drifted: Vec<ObjectRef>,
    /// Objects deleted (or released) by pruning.
    pub pruned: Vec<ObjectRef>,
    /// Why the pass did not converge (also on the failing component).
    pub error: Option<String>,
    /// The reason of the failure: `ApplyFailed`, `RolloutTimeout`, `PruneFailed`.
    pub reason: Option<&'static str>,
}

pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: Option<String>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message,
        last_transition_time: Some(Utc::now()),
    }
}

fn pending(step: Step, version: Option<&str>, after: Option<Step>) -> ComponentStatus {
    let message = match after {
        Some(prev) => format!("waiting for {}", prev.name()),
        None => "pending".to_string(),
    };
    ComponentStatus {
        name: step.name().to_string(),
        desired_version: version.map(str::to_string),
        observed_version: None,
        ready: false,
        desired_replicas: None,
        ready_replicas: None,
        conditions: vec![condition(
            "Ready",
            "Unknown",
            "Pending",
            Some(message.clone()),
        )],
        message: Some(message),
    }
}

fn fail(c: &mut ComponentStatus, reason: &str, message: String) {
    c.ready = false;
    c.conditions = vec![condition("Ready", "False", reason, Some(message.clone()))];
    c.message = Some(message);
}

fn publish(progress: Option<&watch::Sender<Vec<ComponentStatus>>>, components: &[ComponentStatus]) {
    if let Some(p) = progress {
        p.send_replace(components.to_vec());
    }
}

/// Runs one pass. Never panics on cluster errors: they end up in the outcome.
pub async fn reconcile<B: ClusterBackend>(
    backend: &B,
    desired: &DesiredState,
    trigger: Trigger,
    opts: &ReconcileOptions,
    progress: Option<&watch::Sender<Vec<ComponentStatus>>>,
) -> Outcome {
    let mut out = Outcome {
        generation: desired.generation,
        converged: false,
        components: Vec::new(),
        drifted: Vec::new(),
        pruned: Vec::new(),
        error: None,
        reason: None,
    };
    if desired.mode == MeshMode::Disabled {
        uninstall(backend, &mut out).await;
        publish(progress, &out.components);
        return out;
    }
    let steps = match render::render(desired) {
        Ok(s) => s,
        Err(e) => {
            let message = e.to_string();
            out.components = Step::ALL
                .into_iter()
                .map(|s| pending(s, Some(&desired.version), None))
                .collect();
            if let Some(c) = out.components.first_mut() {
                fail(c, "RenderFailed", message.clone());
            }
            out.error = Some(message);
            out.reason = Some("RenderFailed");
            return out;
        }
    };
    let version = desired.version.as_str();
    out.components = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            pending(
                s.step,
                Some(version),
                i.checked_sub(1).map(|p| steps[p].step),
            )
        })
        .collect();
    publish(progress, &out.components);

    for (i, step) in steps.iter().enumerate() {
        if let Err((reason, message)) =
            run_step(backend, step, trigger, opts, &mut out, i, progress).await
        {
            warn!(component = step.step.name(), %message, "reconcile stopped");
            fail(&mut out.components[i], reason, message.clone());
            out.error = Some(message);
            out.reason = Some(reason);
            publish(progress, &out.components);
            return out;
        }
        publish(progress, &out.components);
    }

    // Every step is ready: prune what is no longer desired.
    let desired_refs = render::desired_refs(&steps);
    if let Err((component, message)) =
        prune(backend, |owned| plan_prune(&desired_refs, owned), &mut out).await
    {
        let idx = component
            .and_then(|c| out.components.iter().position(|s| s.name == c))
            .unwrap_or(out.components.len().saturating_sub(1));
        if let Some(c) = out.components.get_mut(idx) {
            fail(c, "PruneFailed", message.clone());
        }
        out.error = Some(message);
        out.reason = Some("PruneFailed");
        publish(progress, &out.components);
        return out;
    }
    out.converged = true;
    publish(progress, &out.components);
    info!(
        generation = desired.generation,
        drifted = out.drifted.len(),
        pruned = out.pruned.len(),
        "reconciled"
    );
    out
}

async fn run_step<B: ClusterBackend>(
    backend: &B,
    step: &RenderedStep,
    trigger: Trigger,
    opts: &ReconcileOptions,
    out: &mut Outcome,
    idx: usize,
    progress: Option<&watch::Sender<Vec<ComponentStatus>>>,
) -> Result<(), (&'static str, String)> {
    let name = step.step.name();
    for object in &step.objects {
        let reference = object.reference();
        match backend.apply(object).await {
            Ok(applied) => {
                debug!(component = name, object = %reference, changed = applied.changed, "applied");
                if applied.changed && trigger == Trigger::Resync {
                    warn!(component = name, object = %reference, "drift corrected");
                    out.drifted.push(reference);
                }
            }
            Err(e) => {
                metrics::counter!("meshfleet_agent_apply_errors_total").increment(1);
                return Err(("ApplyFailed", format!("applying {reference}: {e}")));
            }
        }
    }
    let workloads = step.workloads();
    let version = out.components[idx].desired_version.clone();
    if workloads.is_empty() {
        let c = &mut out.components[idx];
        c.ready = true;
        c.observed_version = version;
        c.message = None;
        c.conditions = vec![condition("Ready", "True", "Applied", None)];
        return Ok(());
    }
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        let mut all_ready = true;
        let (mut desired_n, mut ready_n) = (0, 0);
        let mut observed = Vec::new();
        let mut detail = None;
        for w in &workloads {
            match backend.workload_status(w).await {
                Ok(Some(s)) => {
                    desired_n += s.desired;
                    ready_n += s.ready;
                    observed.push(s.version.clone());
                    if !s.is_ready() {
                        all_ready = false;
                        detail.get_or_insert_with(|| format!("{w}: {}", s.summary()));
                    }
                }
                Ok(None) => {
                    all_ready = false;
                    detail.get_or_insert_with(|| format!("{w} does not exist"));
                }
                Err(e) => {
                    all_ready = false;
                    detail.get_or_insert_with(|| format!("reading {w}: {e}"));
                }
            }
        }
        let c = &mut out.components[idx];
        c.desired_replicas = Some(desired_n);
        c.ready_replicas = Some(ready_n);
        if all_ready {
            c.ready = true;
            // Every workload of the step runs one version once rolled out.
            c.observed_version = observed.into_iter().next().flatten().or(version);
            c.message = None;
            c.conditions = vec![condition("Ready", "True", "RolledOut", None)];
            return Ok(());
        }
        let detail = detail.unwrap_or_default();
        if Instant::now() >= deadline {
            let e = Error::NotReady {
                what: name.to_string(),
                after: opts.ready_timeout,
                detail,
            };
            return Err(("RolloutTimeout", e.to_string()));
        }
        c.message = Some(format!("rolling out: {detail}"));
        c.conditions = vec![condition(
            "Ready",
            "False",
            "Progressing",
            c.message.clone(),
        )];
        publish(progress, &out.components);
        tokio::time::sleep(opts.poll_interval).await;
    }
}

/// Prunes owned objects that are not desired, in [`plan_prune`] order.
/// On failure returns the component of the object and the message.
async fn prune<B: ClusterBackend>(
    backend: &B,
    plan: impl FnOnce(&[OwnedObject]) -> Vec<PruneAction>,
    out: &mut Outcome,
) -> Result<(), (Option<String>, String)> {
    let owned = backend
        .list_owned()
        .await
        .map_err(|e| (None, format!("listing owned objects: {e}")))?;
    for action in plan(&owned) {
        let result = match &action {
            PruneAction::Delete {
                reference,
                component,
            } => {
                info!(object = %reference, component = component.as_deref().unwrap_or(""), "pruning");
                backend
                    .delete(reference)
                    .await
                    .map_err(|e| (component.clone(), format!("deleting {reference}: {e}")))
            }
            PruneAction::Release { reference } => {
                info!(namespace = %reference.name, "releasing namespace");
                backend
                    .apply(&bare_namespace(&reference.name))
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            Some(Step::Namespaces.name().to_string()),
                            format!("releasing {reference}: {e}"),
                        )
                    })
            }
        };
        result?;
        out.pruned.push(action.reference().clone());
    }
    Ok(())
}

async fn uninstall<B: ClusterBackend>(backend: &B, out: &mut Outcome) {
    out.components = Step::ALL
        .into_iter()
        .map(|s| ComponentStatus {
            name: s.name().to_string(),
            desired_version: None,
            observed_version: None,
            ready: true,
            desired_replicas: None,
            ready_replicas: None,
            conditions: vec![condition(
                "Ready",
                "True",
                "Disabled",
                Some("mesh disabled: not installed".to_string()),
            )],
            message: Some("mesh disabled: not installed".to_string()),
        })
        .collect();
    match prune(backend, render::plan_uninstall, out).await {
        Ok(()) => out.converged = true,
        Err((component, message)) => {
            if let Some(c) = out
                .components
                .iter_mut()
                .find(|c| Some(&c.name) == component.as_ref())
            {
                fail(c, "UninstallFailed", message.clone());
            }
            out.error = Some(message);
            out.reason = Some("PruneFailed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimCluster, SimOp, SimOptions};
    use crate::testing::desired;

    fn fast() -> ReconcileOptions {
        ReconcileOptions {
            poll_interval: Duration::from_millis(2),
            ready_timeout: Duration::from_millis(300),
        }
    }

    fn sim() -> SimCluster {
        SimCluster::new(SimOptions {
            ready_after: Duration::from_millis(10),
            ..SimOptions::default()
        })
    }

    fn position(ops: &[SimOp], f: impl Fn(&SimOp) -> bool) -> usize {
        ops.iter()
            .position(f)
            .unwrap_or_else(|| panic!("no such op in {ops:#?}"))
    }

    fn applied(kind: &'static str, name: &'static str) -> impl Fn(&SimOp) -> bool {
        move |op| matches!(op, SimOp::Apply { reference, .. } if reference.kind == kind && reference.name == name)
    }

    #[tokio::test]
    async fn converges_to_all_ready() {
        let sim = sim();
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        assert!(
            out.components.iter().all(|c| c.ready),
            "{:#?}",
            out.components
        );
        let zt = out.components.iter().find(|c| c.name == "ztunnel").unwrap();
        assert_eq!(zt.observed_version.as_deref(), Some("1.28.2"));
        assert_eq!(zt.desired_replicas, Some(3));
        assert_eq!(zt.ready_replicas, Some(3));
        assert!(out.drifted.is_empty());
        assert!(out.pruned.is_empty());
    }

    #[tokio::test]
    async fn upgrade_runs_the_new_revision_before_cni_and_ztunnel_and_prunes_the_old_one_last() {
        let sim = sim();
        assert!(
            reconcile(&sim, &desired("1.27.3"), Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        sim.clear_ops();
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        let ops = sim.ops();
        let new_istiod = position(&ops, applied("Deployment", "istiod-1-28-2"));
        let cni = position(&ops, applied("DaemonSet", "istio-cni-node"));
        let zt = position(&ops, applied("DaemonSet", "ztunnel"));
        let old_istiod_deleted = position(
            &ops,
            |op| matches!(op, SimOp::Delete { reference } if reference.name == "istiod-1-27-3" && reference.kind == "Deployment"),
        );
        let last_apply = ops
            .iter()
            .rposition(|op| matches!(op, SimOp::Apply { .. }))
            .unwrap();
        assert!(new_istiod < cni && cni < zt, "{ops:#?}");
        assert!(
            old_istiod_deleted > last_apply,
            "old revision pruned only after all steps: {ops:#?}"
        );
        // Every object of the old revision is gone; the new one stays.
        let snap = sim.snapshot();
        assert!(
            snap.keys().all(|r| !r.name.contains("1-27-3")),
            "{:#?}",
            snap.keys()
        );
        assert!(snap.keys().any(|r| r.name == "istiod-1-28-2"));
        let ztunnel = sim
            .get(&ObjectRef::daemon_set("istio-system", "ztunnel"))
            .unwrap();
        assert_eq!(
            ztunnel["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/istio/ztunnel:1.28.2"
        );
    }

    #[tokio::test]
    async fn the_old_revision_survives_while_the_data_plane_is_not_ready() {
        let sim = sim();
        assert!(
            reconcile(&sim, &desired("1.27.3"), Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        sim.break_workload("ztunnel", "0/3 nodes are available");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(!out.converged);
        assert_eq!(out.reason, Some("RolloutTimeout"));
        // ztunnel still points at... the new revision spec, but the old istiod is kept.
        assert!(
            sim.get(&ObjectRef::deployment("istio-system", "istiod-1-27-3"))
                .is_some()
        );
        assert!(
            sim.get(&ObjectRef::deployment("istio-system", "istiod-1-28-2"))
                .is_some()
        );
        let zt = out.components.iter().find(|c| c.name == "ztunnel").unwrap();
        assert!(!zt.ready);
        assert!(
            zt.message
                .as_deref()
                .unwrap()
                .contains("0/3 nodes are available"),
            "{zt:?}"
        );
        let later: Vec<_> = out
            .components
            .iter()
            .skip_while(|c| c.name != "waypoints")
            .collect();
        assert!(
            later
                .iter()
                .all(|c| !c.ready && c.conditions[0].reason.as_deref() == Some("Pending"))
        );
        sim.heal_workload("ztunnel");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Retry, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        assert!(
            sim.get(&ObjectRef::deployment("istio-system", "istiod-1-27-3"))
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_apply_failure_stops_the_pass_with_the_apis_message() {
        let sim = sim();
        sim.fail_apply("DaemonSet", "istio-cni-node", "admission webhook \"policy.example\" denied the request: privileged pods are not allowed");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(!out.converged);
        assert_eq!(out.reason, Some("ApplyFailed"));
        let by_name = |n: &str| out.components.iter().find(|c| c.name == n).unwrap();
        assert!(by_name("istiod").ready);
        let cni = by_name("istio-cni");
        assert!(!cni.ready);
        assert!(
            cni.message
                .as_deref()
                .unwrap()
                .contains("privileged pods are not allowed"),
            "{cni:?}"
        );
        assert_eq!(cni.conditions[0].reason.as_deref(), Some("ApplyFailed"));
        assert_eq!(cni.conditions[0].status, "False");
        assert!(!by_name("ztunnel").ready);
        assert_eq!(
            by_name("ztunnel").message.as_deref(),
            Some("waiting for istio-cni")
        );
        assert!(
            sim.find("DaemonSet", Some("istio-system"), "ztunnel")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_resync_corrects_drift_and_says_so() {
        let sim = sim();
        let d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        let out = reconcile(&sim, &d, Trigger::Resync, &fast(), None).await;
        assert!(out.converged && out.drifted.is_empty(), "{out:#?}");
        let r = ObjectRef::deployment("istio-system", "istiod-1-28-2");
        assert!(sim.mutate(&r, |v| v["spec"]["replicas"] = 0.into()));
        let out = reconcile(&sim, &d, Trigger::Resync, &fast(), None).await;
        assert!(out.converged);
        assert_eq!(out.drifted, vec![r.clone()]);
        assert_eq!(sim.get(&r).unwrap()["spec"]["replicas"], 2);
    }

    #[tokio::test]
    async fn disabled_uninstalls_in_reverse_order_and_releases_namespaces() {
        let sim = sim();
        let mut d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        // A namespace label someone else set stays.
        let ns = ObjectRef::new("v1", "Namespace", None, "shop");
        sim.mutate(&ns, |v| v["metadata"]["labels"]["team"] = "payments".into());
        sim.clear_ops();
        d.mode = MeshMode::Disabled;
        d.generation += 1;
        let out = reconcile(&sim, &d, Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        let ops = sim.ops();
        let pa = position(&ops, |op| op.reference().kind == "PeerAuthentication");
        let gw = position(&ops, |op| op.reference().kind == "Gateway");
        let zt = position(&ops, |op| {
            op.reference().name == "ztunnel" && op.reference().kind == "DaemonSet"
        });
        let cni = position(&ops, |op| op.reference().name == "istio-cni-node");
        let istiod = position(&ops, |op| {
            op.reference().name == "istiod-1-28-2" && op.reference().kind == "Deployment"
        });
        assert!(pa < gw && gw < zt && zt < cni && cni < istiod, "{ops:#?}");
        // CRDs (and so every custom resource in the cluster) stay, and no
        // namespace is deleted: only the agent's labels leave them.
        assert!(
            !ops.iter().any(|op| matches!(op, SimOp::Delete { reference }
                if reference.kind == "CustomResourceDefinition" || reference.kind == "Namespace")),
            "{ops:#?}"
        );
        let snap = sim.snapshot();
        let left: Vec<&str> = snap
            .keys()
            .filter(|r| r.kind != "CustomResourceDefinition")
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            left,
            ["istio-system", "payments", "shop"],
            "{:#?}",
            snap.keys()
        );
        assert!(snap.keys().any(|r| r.kind == "CustomResourceDefinition"));
        assert!(
            snap.keys()
                .filter(|r| r.kind != "CustomResourceDefinition")
                .all(|r| r.kind == "Namespace")
        );
        let labels = snap[&ns]["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["team"], "payments");
        let payments = ObjectRef::new("v1", "Namespace", None, "payments");
        assert!(
            snap[&payments]["metadata"].get("labels").is_none(),
            "{}",
            snap[&payments]
        );
    }

    #[tokio::test]
    async fn switching_to_permissive_prunes_the_peer_authentication() {
        let sim = sim();
        let mut d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        assert!(
            sim.find("PeerAuthentication", Some("istio-system"), "default")
                .is_some()
        );
        d.mtls = meshfleet_model::MtlsMode::Permissive;
        let out = reconcile(&sim, &d, Trigger::Changed, &fast(), None).await;
        assert!(out.converged);
        assert!(
            sim.find("PeerAuthentication", Some("istio-system"), "default")
                .is_none()
        );
        assert_eq!(out.pruned.len(), 1);
    }
}
