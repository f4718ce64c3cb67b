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
//! - The `crds` step applies only what [`crate::ownership::plan_crds`]
//!   allows; CRDs it leaves alone are reported in the `crds` component's
//!   conditions (`CrdOwnership`), not failed.
//! - `istio-system` is applied (labelled) only if it does not exist yet or is
//!   already the agent's: a namespace someone else created is never adopted.
//! - A step is ready when its [`Check`]s hold: rollouts, waypoints
//!   programmed by istiod, istiod's webhook serving.
//! - `mode: disabled` removes what the agent owns in reverse step order
//!   ([`render::plan_uninstall`]) and nothing else.
//! - A periodic re-apply ([`Trigger::Resync`]) that changes a live object has
//!   corrected drift; the objects are returned in [`Outcome::drifted`].

use std::time::Duration;

use chrono::Utc;
use meshfleet_model::{ComponentStatus, Condition, DesiredState, MeshMode};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use serde_json::Value;

use crate::backend::{ClusterBackend, ObjectRef, OwnedObject};
use crate::bundle::Bundle;
use crate::error::Error;
use crate::ownership::{self, CrdDecision};
use crate::render::{
    self, Check, CrdPurge, Directives, ISTIO_NAMESPACE, PruneAction, RenderedStep, Step,
    bare_namespace, plan_prune,
};

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
    /// Why an uninstall kept what it would otherwise have deleted (a
    /// namespace holding others' objects).
    pub kept: Vec<String>,
    /// CRDs a purge kept because custom resources of their kinds that the
    /// agent did not create exist, each with what holds it.
    pub kept_crds: Vec<String>,
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

/// Runs one pass with the development bundle of the desired version and no
/// directives. Never panics on cluster errors: they end up in the outcome.
pub async fn reconcile<B: ClusterBackend>(
    backend: &B,
    desired: &DesiredState,
    trigger: Trigger,
    opts: &ReconcileOptions,
    progress: Option<&watch::Sender<Vec<ComponentStatus>>>,
) -> Outcome {
    let bundle = Bundle::development_shared(&desired.version);
    reconcile_with(
        backend,
        desired,
        &bundle,
        &Directives::default(),
        trigger,
        opts,
        progress,
    )
    .await
}

/// Runs one pass with the release data of `bundle` and the document's
/// `directives`.
/// The outcome of a pass that applied nothing: every component pending, the
/// first failed with `reason` (e.g. `RenderFailed`, `BundleUnavailable`).
pub fn not_started(desired: &DesiredState, reason: &'static str, message: String) -> Outcome {
    let mut components: Vec<ComponentStatus> = Step::ALL
        .into_iter()
        .map(|s| pending(s, Some(&desired.version), None))
        .collect();
    if let Some(c) = components.first_mut() {
        fail(c, reason, message.clone());
    }
    Outcome {
        generation: desired.generation,
        converged: false,
        components,
        drifted: Vec::new(),
        pruned: Vec::new(),
        kept: Vec::new(),
        kept_crds: Vec::new(),
        error: Some(message),
        reason: Some(reason),
    }
}

pub async fn reconcile_with<B: ClusterBackend>(
    backend: &B,
    desired: &DesiredState,
    bundle: &Bundle,
    directives: &Directives,
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
        kept: Vec::new(),
        kept_crds: Vec::new(),
        error: None,
        reason: None,
    };
    if desired.mode == MeshMode::Disabled {
        uninstall(backend, directives.crd_purge(), &mut out).await;
        publish(progress, &out.components);
        return out;
    }
    let steps = match render::render_with(desired, bundle, directives) {
        Ok(s) => s,
        Err(e) => return not_started(desired, "RenderFailed", e.to_string()),
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
    let mut notices = Vec::new();
    let skip = match step.step {
        Step::Crds => crds_to_skip(backend, step, &mut notices).await?,
        Step::Istiod => foreign_namespace(backend, step).await?,
        _ => Vec::new(),
    };
    for object in &step.objects {
        let reference = object.reference();
        if skip.contains(&reference) {
            continue;
        }
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
    let checks = step.checks();
    let version = out.components[idx].desired_version.clone();
    let ready_condition = |reason: &str| {
        let mut c = vec![condition("Ready", "True", reason, None)];
        c.extend(notices.iter().cloned());
        c
    };
    if checks.is_empty() {
        let c = &mut out.components[idx];
        c.ready = true;
        c.observed_version = version;
        c.message = notices.first().and_then(|n| n.message.clone());
        c.conditions = ready_condition("Applied");
        return Ok(());
    }
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        let mut all_ready = true;
        let (mut desired_n, mut ready_n) = (0, 0);
        let mut observed = Vec::new();
        let mut detail = None;
        for check in &checks {
            let state = check_state(backend, check).await;
            desired_n += state.desired;
            ready_n += state.ready;
            if let Some(v) = state.version {
                observed.push(v);
            }
            if let Some(d) = state.waiting {
                all_ready = false;
                detail.get_or_insert(d);
            }
        }
        let c = &mut out.components[idx];
        let before = (c.desired_replicas, c.ready_replicas);
        c.desired_replicas = Some(desired_n);
        c.ready_replicas = Some(ready_n);
        if all_ready {
            c.ready = true;
            // Every workload of the step runs one version once rolled out.
            c.observed_version = observed.into_iter().next().or(version);
            c.message = notices.first().and_then(|n| n.message.clone());
            c.conditions = ready_condition("RolledOut");
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
        let message = format!("rolling out: {detail}");
        // Published when what it says moved: most polls of a rollout in
        // progress read the same replica counts.
        if c.message.as_deref() != Some(message.as_str())
            || before != (c.desired_replicas, c.ready_replicas)
        {
            c.message = Some(message);
            c.conditions = vec![condition(
                "Ready",
                "False",
                "Progressing",
                c.message.clone(),
            )];
            publish(progress, &out.components);
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

/// What one readiness check found.
#[derive(Debug, Default)]
struct CheckState {
    desired: i32,
    ready: i32,
    version: Option<String>,
    /// Why it is not ready yet; `None` when ready.
    waiting: Option<String>,
}

fn condition_of<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

async fn check_state<B: ClusterBackend>(backend: &B, check: &Check) -> CheckState {
    match check {
        Check::Rollout(w) => rollout_state(backend, w).await,
        Check::Waypoint {
            gateway,
            deployment,
        } => {
            let programmed = match backend.get_object(gateway).await {
                Ok(Some(gw)) => match condition_of(&gw, "Programmed") {
                    Some(c) if c["status"] == "True" => None,
                    Some(c) => Some(format!(
                        "{gateway} not programmed: {}",
                        c["message"].as_str().or(c["reason"].as_str()).unwrap_or("")
                    )),
                    None => Some(format!("{gateway} not yet programmed by istiod")),
                },
                Ok(None) => Some(format!("{gateway} does not exist")),
                Err(e) => Some(format!("reading {gateway}: {e}")),
            };
            let mut state = rollout_state(backend, deployment).await;
            // The waypoint's proxies run the proxy image, not a version the
            // agent labelled.
            state.version = None;
            if let Some(p) = programmed {
                state.waiting = Some(p);
            }
            state
        }
        Check::WebhookServing(r) => {
            let waiting = match backend.get_object(r).await {
                Ok(Some(w)) => {
                    let hooks = w["webhooks"].as_array().cloned().unwrap_or_default();
                    let served = !hooks.is_empty()
                        && hooks.iter().all(|h| {
                            h.pointer("/clientConfig/caBundle")
                                .and_then(Value::as_str)
                                .is_some_and(|b| !b.is_empty())
                        });
                    (!served).then(|| {
                        format!("{r}: istiod has not patched in its CA yet (webhook not serving)")
                    })
                }
                Ok(None) => Some(format!("{r} does not exist")),
                Err(e) => Some(format!("reading {r}: {e}")),
            };
            CheckState {
                waiting,
                ..CheckState::default()
            }
        }
    }
}

async fn rollout_state<B: ClusterBackend>(backend: &B, w: &ObjectRef) -> CheckState {
    match backend.workload_status(w).await {
        Ok(Some(s)) => CheckState {
            desired: s.desired,
            ready: s.ready,
            version: s.version.clone(),
            waiting: (!s.is_ready()).then(|| format!("{w}: {}", s.summary())),
        },
        Ok(None) => CheckState {
            waiting: Some(format!("{w} does not exist")),
            ..CheckState::default()
        },
        Err(e) => CheckState {
            waiting: Some(format!("reading {w}: {e}")),
            ..CheckState::default()
        },
    }
}

/// The CRDs of the step the ownership rules leave alone; each reported as a
/// `CrdOwnership` condition.
async fn crds_to_skip<B: ClusterBackend>(
    backend: &B,
    step: &RenderedStep,
    notices: &mut Vec<Condition>,
) -> Result<Vec<ObjectRef>, (&'static str, String)> {
    let live = backend
        .list_crds()
        .await
        .map_err(|e| ("ApplyFailed", format!("listing CRDs: {e}")))?;
    let wanted: Vec<ownership::CrdKey> = step
        .objects
        .iter()
        .filter_map(|o| match o {
            render::Object::CustomResourceDefinition(c) => {
                let crd = &c.crd;
                let family = crate::bundle::CrdFamily::of_group(&crd.spec.group)?;
                let version = crd
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(family.version_annotation())?
                    .clone();
                Some(ownership::CrdKey {
                    name: crd.metadata.name.clone()?,
                    family,
                    version,
                })
            }
            _ => None,
        })
        .collect();
    let mut skipped = Vec::new();
    let mut by_reason: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    for (name, decision) in ownership::plan_crds(&wanted, &live) {
        if decision.applies() {
            continue;
        }
        let what = match &decision {
            CrdDecision::OwnedByOthers { managers } => {
                format!("{name} (managed by {})", managers.join(", "))
            }
            CrdDecision::KeepNewer { live } => format!("{name} ({live} in the cluster)"),
            CrdDecision::ProvidedByCluster { version } => match version {
                Some(v) => format!("{name} (the cluster's Gateway API {v})"),
                None => format!("{name} (the cluster's Gateway API)"),
            },
            _ => name.clone(),
        };
        if let Some(reason) = decision.reason() {
            by_reason.entry(reason).or_default().push(what);
        }
        skipped.push(ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &name,
        ));
    }
    for (reason, items) in by_reason {
        let message = match reason {
            "OwnedByOtherManager" => format!(
                "not applied, another field manager owns them: {}",
                items.join("; ")
            ),
            "NewerInCluster" => format!("kept, never downgraded: {}", items.join("; ")),
            _ => format!(
                "not installed, the cluster provides them: {}",
                items.join("; ")
            ),
        };
        info!(%reason, %message, "CRDs left alone");
        // Another manager's CRD is something to look at; a newer or
        // platform-provided one is how it should be.
        let status = if reason == "OwnedByOtherManager" {
            "False"
        } else {
            "True"
        };
        notices.push(condition("CrdOwnership", status, reason, Some(message)));
    }
    Ok(skipped)
}

/// `istio-system` when it exists and is not the agent's: never adopted.
async fn foreign_namespace<B: ClusterBackend>(
    backend: &B,
    step: &RenderedStep,
) -> Result<Vec<ObjectRef>, (&'static str, String)> {
    let ns = ObjectRef::new("v1", "Namespace", None, ISTIO_NAMESPACE);
    if !step.objects.iter().any(|o| o.reference() == ns) {
        return Ok(Vec::new());
    }
    let live = backend
        .get_object(&ns)
        .await
        .map_err(|e| ("ApplyFailed", format!("reading {ns}: {e}")))?;
    let ours = |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(|l| l.get(meshfleet_model::MANAGED_BY_LABEL))
            .and_then(Value::as_str)
            == Some(meshfleet_model::MANAGED_BY_VALUE)
    };
    Ok(match live {
        Some(v) if !ours(&v) => vec![ns],
        _ => Vec::new(),
    })
}

/// How many of the custom resources holding a CRD a refused purge names.
const FOREIGN_SAMPLE: u32 = 3;

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
                release(backend, reference, Step::Namespaces).await
            }
            PruneAction::PurgeCrdIfUnused {
                reference,
                component,
            } => {
                let held = backend
                    .foreign_custom_resources(&reference.name, FOREIGN_SAMPLE + 1)
                    .await
                    .map_err(|e| {
                        (
                            component.clone(),
                            format!("listing custom resources of {reference}: {e}"),
                        )
                    })?;
                if held.is_empty() {
                    info!(crd = %reference.name, "purging a CRD");
                    backend
                        .delete(reference)
                        .await
                        .map_err(|e| (component.clone(), format!("deleting {reference}: {e}")))
                } else {
                    let shown: Vec<String> = held
                        .iter()
                        .take(FOREIGN_SAMPLE as usize)
                        .map(|r| match &r.namespace {
                            Some(ns) => format!("{ns}/{}", r.name),
                            None => r.name.clone(),
                        })
                        .collect();
                    let note = format!(
                        "{} ({}{})",
                        reference.name,
                        shown.join(", "),
                        if held.len() > shown.len() {
                            ", …"
                        } else {
                            ""
                        }
                    );
                    info!(crd = %reference.name, held = %note, "CRD kept: purge refused");
                    out.kept_crds.push(note);
                    continue;
                }
            }
            PruneAction::DeleteIfEmpty { reference } => {
                let component = Some(Step::Istiod.name().to_string());
                let contents = backend
                    .namespace_contents(&reference.name)
                    .await
                    .map_err(|e| (component.clone(), format!("listing {reference}: {e}")))?;
                let foreign = ownership::foreign_objects(&contents);
                if foreign.is_empty() {
                    info!(namespace = %reference.name, "deleting the namespace the agent created");
                    backend
                        .delete(reference)
                        .await
                        .map_err(|e| (component, format!("deleting {reference}: {e}")))
                } else {
                    let held: Vec<String> = foreign.iter().take(5).map(|r| r.to_string()).collect();
                    let note = format!(
                        "{reference} kept: it holds {} object(s) the agent does not own ({}{})",
                        foreign.len(),
                        held.join(", "),
                        if foreign.len() > held.len() {
                            ", …"
                        } else {
                            ""
                        }
                    );
                    info!(%note, "namespace kept");
                    out.kept.push(note);
                    release(backend, reference, Step::Istiod).await
                }
            }
        };
        result?;
        out.pruned.push(action.reference().clone());
    }
    Ok(())
}

async fn release<B: ClusterBackend>(
    backend: &B,
    reference: &ObjectRef,
    step: Step,
) -> Result<(), (Option<String>, String)> {
    backend
        .apply(&bare_namespace(&reference.name))
        .await
        .map(|_| ())
        .map_err(|e| {
            (
                Some(step.name().to_string()),
                format!("releasing {reference}: {e}"),
            )
        })
}

async fn uninstall<B: ClusterBackend>(backend: &B, purge: CrdPurge, out: &mut Outcome) {
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
    match prune(backend, |owned| render::plan_uninstall(owned, purge), out).await {
        Ok(()) => {
            out.converged = true;
            if let (Some(note), Some(c)) = (
                out.kept.first().cloned(),
                out.components
                    .iter_mut()
                    .find(|c| c.name == Step::Istiod.name()),
            ) {
                c.message = Some(note.clone());
                c.conditions.push(condition(
                    "NamespaceKept",
                    "True",
                    "HoldsOthersObjects",
                    Some(note),
                ));
            }
            if !out.kept_crds.is_empty()
                && let Some(c) = out
                    .components
                    .iter_mut()
                    .find(|c| c.name == Step::Crds.name())
            {
                let note = format!(
                    "purge refused for {} CRD(s), kept because the cluster holds custom resources \
                     of their kinds that meshfleet did not create (set mesh.uninstall.force to \
                     delete them with their CRDs): {}",
                    out.kept_crds.len(),
                    out.kept_crds.join("; ")
                );
                c.message = Some(note.clone());
                c.conditions.push(condition(
                    "CrdsKept",
                    "True",
                    "CustomResourcesExist",
                    Some(note),
                ));
            }
        }
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
    use crate::bundle::Bundle;
    use crate::render::Directives;
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

    fn disabled(d: &DesiredState) -> DesiredState {
        let mut d = d.clone();
        d.mode = MeshMode::Disabled;
        d.generation += 1;
        d
    }

    fn crd_ref(name: &str) -> ObjectRef {
        ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            name,
        )
    }

    #[tokio::test]
    async fn disabled_uninstalls_in_reverse_order_and_releases_namespaces() {
        let sim = sim();
        let d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        // A namespace label someone else set stays.
        let ns = ObjectRef::new("v1", "Namespace", None, "shop");
        sim.mutate(&ns, |v| v["metadata"]["labels"]["team"] = "payments".into());
        sim.clear_ops();
        let out = reconcile(&sim, &disabled(&d), Trigger::Changed, &fast(), None).await;
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
        let system = position(
            &ops,
            |op| matches!(op, SimOp::Delete { reference } if reference.kind == "Namespace" && reference.name == "istio-system"),
        );
        assert!(
            pa < gw && gw < zt && zt < cni && cni < istiod && istiod < system,
            "{ops:#?}"
        );
        // CRDs (and so every custom resource in the cluster) stay; the
        // enrolled namespaces lose only the agent's labels; istio-system,
        // which the agent created and which is empty now, goes.
        assert!(
            !ops.iter().any(|op| matches!(op, SimOp::Delete { reference }
                if reference.kind == "CustomResourceDefinition"
                    || (reference.kind == "Namespace" && reference.name != "istio-system"))),
            "{ops:#?}"
        );
        let snap = sim.snapshot();
        let left: Vec<&str> = snap
            .keys()
            .filter(|r| r.kind != "CustomResourceDefinition")
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(left, ["payments", "shop"], "{:#?}", snap.keys());
        assert!(snap.keys().any(|r| r.kind == "CustomResourceDefinition"));
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
    async fn uninstalling_creates_nothing_and_deletes_only_what_the_agent_owns() {
        let sim = sim();
        // Nothing installed: nothing to do, nothing created.
        let d = desired("1.28.2");
        let out = reconcile(&sim, &disabled(&d), Trigger::Changed, &fast(), None).await;
        assert!(out.converged);
        assert!(sim.ops().is_empty(), "{:#?}", sim.ops());
        assert!(sim.snapshot().is_empty());

        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        // The customer's policy, another controller's Gateway and a plug-in
        // CA in istio-system.
        let policy = ObjectRef::new(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            Some("shop"),
            "allow-frontend",
        );
        sim.insert(policy.clone(), serde_json::json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "allow-frontend", "namespace": "shop" }, "spec": { "action": "ALLOW" } }));
        let ingress = ObjectRef::new(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            Some("edge"),
            "public",
        );
        sim.insert(ingress.clone(), serde_json::json!({ "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": { "name": "public", "namespace": "edge" },
            "spec": { "gatewayClassName": "gke-l7-global-external-managed", "listeners": [{ "name": "http", "port": 80, "protocol": "HTTP" }] } }));
        let cacerts = ObjectRef::new("v1", "ConfigMap", Some("istio-system"), "customer-settings");
        sim.insert(
            cacerts.clone(),
            serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "customer-settings", "namespace": "istio-system" } }),
        );
        sim.clear_ops();
        let out = reconcile(&sim, &disabled(&d), Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        let ops = sim.ops();
        for op in &ops {
            match op {
                SimOp::Delete { reference } => {
                    assert_ne!(reference.kind, "CustomResourceDefinition");
                    assert_ne!(
                        reference.kind, "Namespace",
                        "istio-system holds someone's object"
                    );
                }
                // The only applies are the bare namespaces that release labels.
                SimOp::Apply { reference, .. } => assert_eq!(reference.kind, "Namespace"),
            }
        }
        let snap = sim.snapshot();
        for kept in [&policy, &ingress, &cacerts] {
            assert!(snap.contains_key(kept), "{kept} stays");
        }
        let system = ObjectRef::new("v1", "Namespace", None, "istio-system");
        assert!(snap.contains_key(&system));
        assert!(
            snap[&system]["metadata"].get("labels").is_none(),
            "released: {}",
            snap[&system]
        );
        assert!(snap.keys().any(|r| r.kind == "CustomResourceDefinition"));
        let istiod = out.components.iter().find(|c| c.name == "istiod").unwrap();
        assert!(
            istiod
                .message
                .as_deref()
                .unwrap()
                .contains("customer-settings"),
            "{istiod:?}"
        );
    }

    /// Uninstalls `d` with a CRD purge, forced or not.
    async fn purge(sim: &SimCluster, d: &DesiredState, force: bool) -> Outcome {
        let directives = Directives {
            purge_crds: true,
            force_purge_crds: force,
            ..Directives::default()
        };
        let bundle = Bundle::development(&d.version);
        let off = disabled(d);
        reconcile_with(
            sim,
            &off,
            &bundle,
            &directives,
            Trigger::Changed,
            &fast(),
            None,
        )
        .await
    }

    #[tokio::test]
    async fn a_purge_deletes_the_agents_crds_but_those_holding_the_customers_resources_unless_forced()
     {
        let sim = sim();
        let d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        let policy = ObjectRef::new(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            Some("shop"),
            "deny-all",
        );
        sim.insert(
            policy.clone(),
            serde_json::json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "deny-all", "namespace": "shop" }, "spec": {} }),
        );
        let out = purge(&sim, &d, false).await;
        assert!(out.converged, "the mesh is gone all the same: {out:#?}");
        let ap = crd_ref("authorizationpolicies.security.istio.io");
        let crds: Vec<ObjectRef> = sim
            .snapshot()
            .into_keys()
            .filter(|r| r.kind == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds, vec![ap.clone()], "only the CRD in use stays");
        assert!(sim.get(&policy).is_some());
        assert_eq!(
            out.kept_crds,
            vec!["authorizationpolicies.security.istio.io (shop/deny-all)".to_string()]
        );
        let c = out.components.iter().find(|c| c.name == "crds").unwrap();
        assert!(c.ready);
        assert!(
            c.conditions
                .iter()
                .any(|c| c.type_ == "CrdsKept"
                    && c.reason.as_deref() == Some("CustomResourcesExist"))
        );

        // Forced, it goes (a real API server deletes the policy with it).
        let out = purge(&sim, &d, true).await;
        assert!(out.converged && out.kept_crds.is_empty(), "{out:#?}");
        assert!(
            sim.snapshot()
                .keys()
                .all(|r| r.kind != "CustomResourceDefinition")
        );
    }

    #[tokio::test]
    async fn an_existing_istio_system_is_never_adopted_nor_deleted() {
        let sim = sim();
        let system = ObjectRef::new("v1", "Namespace", None, "istio-system");
        sim.insert(
            system.clone(),
            serde_json::json!({ "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": "istio-system", "labels": { "owner": "platform" } } }),
        );
        let d = desired("1.28.2");
        assert!(
            reconcile(&sim, &d, Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        assert!(!sim.ops().iter().any(|op| op.reference() == &system));
        let out = reconcile(&sim, &disabled(&d), Trigger::Changed, &fast(), None).await;
        assert!(out.converged);
        let live = sim.get(&system).expect("kept");
        assert_eq!(
            live["metadata"]["labels"],
            serde_json::json!({ "owner": "platform" })
        );
    }

    #[tokio::test]
    async fn a_crd_another_manager_owns_is_left_alone_and_reported() {
        let sim = sim();
        let ap = crd_ref("authorizationpolicies.security.istio.io");
        sim.insert_managed_by(ap.clone(), serde_json::json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": ap.name, "labels": { "app": "istio-pilot" } },
            "spec": { "group": "security.istio.io" } }), "helm");
        // The platform's Gateway API.
        let gw = crd_ref("gateways.gateway.networking.k8s.io");
        sim.insert_managed_by(gw.clone(), serde_json::json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": gw.name, "annotations": { "gateway.networking.k8s.io/bundle-version": "v1.3.0" } },
            "spec": { "group": "gateway.networking.k8s.io" } }), "addon-manager");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        let ops = sim.ops();
        assert!(
            !ops.iter().any(|op| op.reference() == &ap),
            "not force-applied"
        );
        assert!(
            !ops.iter()
                .any(|op| op.reference().kind == "CustomResourceDefinition"
                    && op.reference().name.ends_with(".gateway.networking.k8s.io")),
            "no Gateway API CRD while the cluster has some"
        );
        assert!(
            ops.iter()
                .any(|op| op.reference() == &crd_ref("peerauthentications.security.istio.io"))
        );
        let crds = out.components.iter().find(|c| c.name == "crds").unwrap();
        assert!(crds.ready);
        let owned = crds
            .conditions
            .iter()
            .find(|c| c.reason.as_deref() == Some("OwnedByOtherManager"))
            .unwrap();
        assert_eq!(owned.type_, "CrdOwnership");
        assert_eq!(owned.status, "False");
        assert!(
            owned
                .message
                .as_deref()
                .unwrap()
                .contains("authorizationpolicies.security.istio.io (managed by helm)"),
            "{owned:?}"
        );
        let provided = crds
            .conditions
            .iter()
            .find(|c| c.reason.as_deref() == Some("ProvidedByCluster"))
            .unwrap();
        assert!(
            provided.message.as_deref().unwrap().contains("v1.3.0"),
            "{provided:?}"
        );
    }

    #[tokio::test]
    async fn a_newer_crd_is_not_downgraded() {
        let sim = sim();
        assert!(
            reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None)
                .await
                .converged
        );
        sim.clear_ops();
        // A rollback to 1.27.1 keeps the 1.28.2 CRDs.
        let out = reconcile(&sim, &desired("1.27.1"), Trigger::Changed, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        assert!(
            !sim.ops()
                .iter()
                .any(|op| op.reference().kind == "CustomResourceDefinition"
                    && !op.reference().name.ends_with(".gateway.networking.k8s.io"))
        );
        let live = sim
            .get(&crd_ref("authorizationpolicies.security.istio.io"))
            .unwrap();
        assert_eq!(
            live["metadata"]["annotations"]["meshfleet.dev/release"],
            "1.28.2"
        );
        let crds = out.components.iter().find(|c| c.name == "crds").unwrap();
        assert!(
            crds.conditions
                .iter()
                .any(|c| c.reason.as_deref() == Some("NewerInCluster"))
        );
    }

    #[tokio::test]
    async fn a_waypoint_is_ready_only_once_istiod_has_programmed_it() {
        let sim = sim();
        sim.withhold_programmed("shop-waypoint");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(!out.converged);
        assert_eq!(out.reason, Some("RolloutTimeout"));
        let wp = out
            .components
            .iter()
            .find(|c| c.name == "waypoints")
            .unwrap();
        assert!(!wp.ready);
        assert!(
            wp.message.as_deref().unwrap().contains("not programmed"),
            "{wp:?}"
        );
        // istiod built the Deployment, with the replicas of the parameters.
        let dep = sim
            .get(&ObjectRef::deployment("shop", "shop-waypoint"))
            .unwrap();
        assert_eq!(dep["spec"]["replicas"], 2);
        sim.grant_programmed("shop-waypoint");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Retry, &fast(), None).await;
        assert!(out.converged, "{out:#?}");
        let wp = out
            .components
            .iter()
            .find(|c| c.name == "waypoints")
            .unwrap();
        assert_eq!((wp.desired_replicas, wp.ready_replicas), (Some(2), Some(2)));
    }

    #[tokio::test]
    async fn istiod_is_ready_only_once_its_webhook_serves() {
        let sim = sim();
        sim.withhold_programmed("istio-validator-1-28-2-istio-system");
        let out = reconcile(&sim, &desired("1.28.2"), Trigger::Changed, &fast(), None).await;
        assert!(!out.converged);
        let istiod = out.components.iter().find(|c| c.name == "istiod").unwrap();
        assert!(
            istiod
                .message
                .as_deref()
                .unwrap()
                .contains("webhook not serving"),
            "{istiod:?}"
        );
        assert!(
            sim.find("DaemonSet", Some("istio-system"), "istio-cni-node")
                .is_none()
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
