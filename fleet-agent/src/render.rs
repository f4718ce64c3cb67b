//! Renders a [`DesiredState`] and the release data of its version (a
//! [`Bundle`]) into ordered steps of Kubernetes objects.
//!
//! The steps follow the upstream ambient install/upgrade order (DESIGN §4);
//! `fleet-agent/README.md` has the object-by-object parity table against
//! upstream's charts.
//!
//! 1. `crds` — the bundle's Istio CRDs and Gateway API standard-channel CRDs,
//!    with their validation schemas. Whether each is applied is decided per
//!    pass by [`crate::ownership::plan_crds`] (absent or older only, never
//!    over another field manager, Gateway API only when the cluster has none).
//! 2. `istiod` — the `istio-system` namespace (only if the agent creates it)
//!    and one *revision* of the control plane, named by revision so that
//!    during an upgrade the new revision runs beside the old one: its
//!    ServiceAccount, ClusterRoles (discovery, gateway deployment controller)
//!    and bindings, namespaced Role/RoleBinding, mesh ConfigMap
//!    `istio-<revision>`, injection-template ConfigMap
//!    `istio-sidecar-injector-<revision>` (with the bundle's `waypoint`
//!    template), Service, Deployment, PodDisruptionBudget (more than one
//!    replica), optional HorizontalPodAutoscaler, revision-labelled
//!    validating webhook.
//! 3. `istio-cni` — the `istio-cni-config` ConfigMap and the `istio-cni-node`
//!    DaemonSet, upgraded in place.
//! 4. `ztunnel` — the `ztunnel` DaemonSet, upgraded in place one node at a time
//!    (`maxUnavailable: 1`, `maxSurge: 0`), pointed at the new revision.
//! 5. `waypoints` — the `default` revision tag (moved to the new revision
//!    only now, after istiod, CNI and ztunnel), then a Gateway API `Gateway`
//!    per waypoint, labelled `istio.io/rev: default` so that it follows the
//!    tag across upgrades.
//! 6. `namespaces` — the enrolment labels on the enrolled namespaces.
//! 7. `policies` — mesh-wide `PeerAuthentication` for `mtls: strict`.
//!
//! Every object carries [`MANAGED_BY_LABEL`], [`COMPONENT_LABEL`] (the step)
//! and [`CLUSTER_ID_LABEL`]; workloads also carry [`VERSION_LABEL`], from which
//! the observed version is read back. Each step also says what "ready" means
//! for it ([`RenderedStep::checks`]).
//!
//! `mode: disabled` renders nothing: [`plan_uninstall`] removes what the agent
//! owns, in the reverse step order, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use meshfleet_model::{
    COMPONENT_LABEL, DesiredState, DesiredWaypoint, LogLevel, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    MeshMode, MtlsMode, TrafficType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::backend::{ObjectRef, OwnedObject, kind_rank};
use crate::bundle::Bundle;
use crate::error::{Error, Result};

/// Label with the cluster's id, on every object the agent owns.
pub const CLUSTER_ID_LABEL: &str = "meshfleet.dev/cluster-id";
/// Label with the Istio version, on the workloads the agent owns.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// Istio's revision label.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Namespace of the control plane, CNI and ztunnel.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// Ambient enrolment label on namespaces.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Namespace label pointing at the waypoint its services use.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Gateway label: which traffic a waypoint handles.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// Label of a revision-tag webhook naming its tag.
pub const TAG_LABEL: &str = "istio.io/tag";
/// The revision tag the agent manages; waypoints select it.
pub const DEFAULT_TAG: &str = "default";
/// Gateway class of waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// A step of the install, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Crds,
    Istiod,
    IstioCni,
    Ztunnel,
    Waypoints,
    Namespaces,
    Policies,
}

impl Step {
    /// All steps in apply order.
    pub const ALL: [Step; 7] = [
        Step::Crds,
        Step::Istiod,
        Step::IstioCni,
        Step::Ztunnel,
        Step::Waypoints,
        Step::Namespaces,
        Step::Policies,
    ];

    /// The component name, as reported and as the value of [`COMPONENT_LABEL`].
    pub fn name(self) -> &'static str {
        match self {
            Step::Crds => "crds",
            Step::Istiod => "istiod",
            Step::IstioCni => "istio-cni",
            Step::Ztunnel => "ztunnel",
            Step::Waypoints => "waypoints",
            Step::Namespaces => "namespaces",
            Step::Policies => "policies",
        }
    }

    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One object to apply: typed k8s-openapi structs for the built-in kinds,
/// [`DynamicObject`] for the Gateway API `Gateway` and Istio's
/// `PeerAuthentication`.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    CustomResourceDefinition(LabelledCrd),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    DaemonSet(DaemonSet),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    Dynamic(DynamicObject),
}

/// A CRD of the bundle with the agent's labels. The CRD itself (schemas
/// included, the bulk of a rendering) is shared with the bundle, not copied:
/// a fleet simulator renders for thousands of clusters at once.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledCrd {
    pub crd: Arc<CustomResourceDefinition>,
    /// Added to the CRD's own labels.
    pub labels: BTreeMap<String, String>,
}

impl LabelledCrd {
    fn all_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.crd.metadata.labels.clone().unwrap_or_default();
        l.extend(self.labels.clone());
        l
    }

    pub(crate) fn to_json(&self) -> Result<Value> {
        let mut v = serde_json::to_value(&*self.crd)?;
        v["metadata"]["labels"] = serde_json::to_value(self.all_labels())?;
        Ok(v)
    }
}

macro_rules! typed_dispatch {
    ($self:expr, $o:ident => $body:expr, $crd:ident => $cbody:expr, $dyn:ident => $dbody:expr) => {
        match $self {
            Object::CustomResourceDefinition($crd) => $cbody,
            Object::Namespace($o) => $body,
            Object::ServiceAccount($o) => $body,
            Object::ClusterRole($o) => $body,
            Object::ClusterRoleBinding($o) => $body,
            Object::Role($o) => $body,
            Object::RoleBinding($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::Service($o) => $body,
            Object::Deployment($o) => $body,
            Object::PodDisruptionBudget($o) => $body,
            Object::HorizontalPodAutoscaler($o) => $body,
            Object::DaemonSet($o) => $body,
            Object::ValidatingWebhookConfiguration($o) => $body,
            Object::MutatingWebhookConfiguration($o) => $body,
            Object::Dynamic($dyn) => $dbody,
        }
    };
}

fn typed_ref<K: Resource<DynamicType = ()>>(o: &K) -> ObjectRef {
    ObjectRef {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        namespace: o.meta().namespace.clone(),
        name: o.meta().name.clone().unwrap_or_default(),
    }
}

impl Object {
    /// Which object this is.
    pub fn reference(&self) -> ObjectRef {
        typed_dispatch!(self, o => typed_ref(o), c => typed_ref(&*c.crd), d => {
            let types = d.types.clone().unwrap_or_default();
            ObjectRef {
                api_version: types.api_version,
                kind: types.kind,
                namespace: d.metadata.namespace.clone(),
                name: d.metadata.name.clone().unwrap_or_default(),
            }
        })
    }

    /// The labels of the object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        typed_dispatch!(self, o => o.meta().labels.clone().unwrap_or_default(),
            c => c.all_labels(),
            d => d.metadata.labels.clone().unwrap_or_default())
    }

    /// The object as the JSON body of a server-side apply (with `apiVersion`
    /// and `kind`).
    pub fn to_json(&self) -> Result<Value> {
        Ok(
            typed_dispatch!(self, o => serde_json::to_value(o)?, c => c.to_json()?,
            d => serde_json::to_value(d)?),
        )
    }
}

/// What "ready" means for one thing a step rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A Deployment or DaemonSet the agent applied: rolled out (for a
    /// DaemonSet: desired == updated == ready, i.e. on every node it
    /// schedules to; with `operator: Exists` tolerations, every node).
    Rollout(ObjectRef),
    /// A waypoint: istiod has programmed its `Gateway` (`Programmed=True`)
    /// and the Deployment istiod built for it has its ready replicas.
    Waypoint {
        gateway: ObjectRef,
        deployment: ObjectRef,
    },
    /// istiod's validating webhook answers: istiod has patched its serving
    /// CA into every webhook of the configuration, which it does once its
    /// webhook server runs (the closest the API shows without calling it).
    WebhookServing(ObjectRef),
}

impl Check {
    pub fn subject(&self) -> &ObjectRef {
        match self {
            Check::Rollout(r) | Check::WebhookServing(r) => r,
            Check::Waypoint { gateway, .. } => gateway,
        }
    }
}

/// The objects of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedStep {
    pub step: Step,
    pub objects: Vec<Object>,
}

impl RenderedStep {
    /// The Deployments and DaemonSets of the step, whose rollout is awaited.
    pub fn workloads(&self) -> Vec<ObjectRef> {
        self.objects
            .iter()
            .map(Object::reference)
            .filter(ObjectRef::is_workload)
            .collect()
    }

    /// What must hold before the step counts as ready, in order: rollouts,
    /// then waypoints, then webhooks.
    pub fn checks(&self) -> Vec<Check> {
        let refs: Vec<ObjectRef> = self.objects.iter().map(Object::reference).collect();
        let mut out: Vec<Check> = refs
            .iter()
            .filter(|r| r.is_workload())
            .cloned()
            .map(Check::Rollout)
            .collect();
        out.extend(
            refs.iter()
                .filter(|r| r.kind == "Gateway" && r.api_version.starts_with("gateway.networking"))
                .map(|g| Check::Waypoint {
                    gateway: g.clone(),
                    // istiod names a waypoint's Deployment after its Gateway.
                    deployment: ObjectRef::deployment(
                        g.namespace.as_deref().unwrap_or_default(),
                        &g.name,
                    ),
                }),
        );
        out.extend(
            refs.iter()
                .filter(|r| r.kind == "ValidatingWebhookConfiguration")
                .cloned()
                .map(Check::WebhookServing),
        );
        out
    }
}

/// istiod's HorizontalPodAutoscaler bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Autoscale {
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// Fields of the desired-state document the agent understands beyond
/// [`DesiredState`] (which has no place for them yet). The service sends
/// none of them today; each defaults to the safe behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directives {
    /// `mode: disabled` also deletes the CRDs the agent installed — and with
    /// them every custom resource of their kinds in the cluster. Default
    /// `false`: CRDs stay.
    #[serde(default)]
    pub purge_crds: bool,
    /// With `purge_crds`, delete the CRDs even while custom resources of
    /// their kinds that the agent did not create exist. Without it such
    /// CRDs are kept ([`PruneAction::PurgeCrdIfUnused`]).
    #[serde(default)]
    pub force_purge_crds: bool,
    /// Scale istiod with an HPA between these bounds instead of the fixed
    /// `istiodReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod_autoscale: Option<Autoscale>,
}

impl Directives {
    /// The directives of a desired-state document (unknown fields ignored,
    /// malformed ones fall back to the defaults).
    pub fn from_document(document: &Value) -> Directives {
        serde_json::from_value(document.clone()).unwrap_or_default()
    }
}

/// Renders the desired state into its steps, in apply order, with the
/// development bundle of its version and no directives. Empty for
/// `mode: disabled`.
pub fn render(desired: &DesiredState) -> Result<Vec<RenderedStep>> {
    render_with(
        desired,
        &Bundle::development_shared(&desired.version),
        &Directives::default(),
    )
}

/// Renders the desired state with the release data of `bundle`.
pub fn render_with(
    desired: &DesiredState,
    bundle: &Bundle,
    directives: &Directives,
) -> Result<Vec<RenderedStep>> {
    if desired.mode == MeshMode::Disabled {
        return Ok(Vec::new());
    }
    let r = Renderer {
        d: desired,
        bundle,
        directives,
    };
    Step::ALL
        .into_iter()
        .map(|step| {
            let objects = match step {
                Step::Crds => r.crds()?,
                Step::Istiod => r.istiod()?,
                Step::IstioCni => r.istio_cni()?,
                Step::Ztunnel => r.ztunnel()?,
                Step::Waypoints => r.waypoints()?,
                Step::Namespaces => r.namespaces()?,
                Step::Policies => r.policies()?,
            };
            Ok(RenderedStep { step, objects })
        })
        .collect()
}

/// The references of every object of a rendering.
pub fn desired_refs(steps: &[RenderedStep]) -> BTreeSet<ObjectRef> {
    steps
        .iter()
        .flat_map(|s| s.objects.iter().map(Object::reference))
        .collect()
}

/// What pruning does with an owned object that is no longer desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum PruneAction {
    /// Delete the object.
    Delete {
        reference: ObjectRef,
        component: Option<String>,
    },
    /// An enrolled namespace that is no longer enrolled: never deleted (it
    /// belongs to its users), but re-applied bare so that server-side apply
    /// removes the labels the agent set on it.
    Release { reference: ObjectRef },
    /// A namespace the agent created (`istio-system`): deleted if it holds
    /// nothing but the mesh's residue once everything else is gone,
    /// otherwise released.
    DeleteIfEmpty { reference: ObjectRef },
    /// A CRD the agent installed, purged on request: deleted only if no
    /// custom resource of its kind is left that the agent did not create
    /// (they would go with it), otherwise kept and reported.
    PurgeCrdIfUnused {
        reference: ObjectRef,
        component: Option<String>,
    },
}

/// What an uninstall does with the CRDs the agent installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdPurge {
    /// Keep them (the default).
    Keep,
    /// Delete those no foreign custom resource uses.
    IfUnused,
    /// Delete them all, and with them every custom resource of their kinds.
    Force,
}

impl Directives {
    pub fn crd_purge(&self) -> CrdPurge {
        match (self.purge_crds, self.force_purge_crds) {
            (false, _) => CrdPurge::Keep,
            (true, false) => CrdPurge::IfUnused,
            (true, true) => CrdPurge::Force,
        }
    }
}

impl PruneAction {
    pub fn reference(&self) -> &ObjectRef {
        match self {
            PruneAction::Delete { reference, .. }
            | PruneAction::Release { reference }
            | PruneAction::DeleteIfEmpty { reference }
            | PruneAction::PurgeCrdIfUnused { reference, .. } => reference,
        }
    }
}

fn is_crd(r: &ObjectRef) -> bool {
    r.kind == "CustomResourceDefinition"
}

/// Plans the pruning of owned objects that are not in `desired`: by component
/// in reverse step order (policies first, CRDs last; unknown components first),
/// and inside a component in reverse [`crate::backend::MANAGED_KINDS`] order
/// (workloads before their RBAC, a Namespace after what it holds).
///
/// CRDs are never pruned: deleting one deletes every custom resource of its
/// kind in the cluster. Only [`plan_uninstall`] with a [`CrdPurge`] does.
pub fn plan_prune(desired: &BTreeSet<ObjectRef>, owned: &[OwnedObject]) -> Vec<PruneAction> {
    sorted_stale(desired, owned)
        .into_iter()
        .filter(|o| !is_crd(&o.reference))
        .map(|o| {
            if o.reference.kind == "Namespace"
                && o.component.as_deref() == Some(Step::Namespaces.name())
            {
                PruneAction::Release {
                    reference: o.reference.clone(),
                }
            } else {
                PruneAction::Delete {
                    reference: o.reference.clone(),
                    component: o.component.clone(),
                }
            }
        })
        .collect()
}

fn sorted_stale<'a>(
    desired: &BTreeSet<ObjectRef>,
    owned: &'a [OwnedObject],
) -> Vec<&'a OwnedObject> {
    let mut stale: Vec<&OwnedObject> = owned
        .iter()
        .filter(|o| !desired.contains(&o.reference))
        .collect();
    let step_rank = |o: &OwnedObject| {
        // Higher ranks are deleted first: later steps before earlier ones,
        // objects of unknown components before all.
        match o.component.as_deref().and_then(Step::parse) {
            Some(s) => Step::ALL.iter().position(|x| *x == s).unwrap_or(0) + 1,
            None => Step::ALL.len() + 1,
        }
    };
    stale.sort_by(|a, b| {
        step_rank(b)
            .cmp(&step_rank(a))
            .then_with(|| {
                kind_rank(&b.reference.api_version, &b.reference.kind)
                    .cmp(&kind_rank(&a.reference.api_version, &a.reference.kind))
            })
            .then_with(|| a.reference.cmp(&b.reference))
    });
    stale.dedup();
    stale
}

/// What uninstalling does (`mode: disabled`, and so every cluster deletion):
/// delete what the agent owns (its label), in reverse order, and nothing
/// else. Enrolled namespaces are released (the agent's labels removed); the
/// namespace the agent created is deleted only if it ends up empty of
/// anything else ([`PruneAction::DeleteIfEmpty`]). CRDs stay — and with them
/// the customer's policies and other controllers' Gateways — unless purged
/// ([`CrdPurge`]); then the agent's own CRDs go last, after the agent's own
/// custom resources (waypoint Gateways).
pub fn plan_uninstall(owned: &[OwnedObject], purge: CrdPurge) -> Vec<PruneAction> {
    let mut plan: Vec<PruneAction> = plan_prune(&BTreeSet::new(), owned)
        .into_iter()
        .map(|action| match action {
            PruneAction::Delete { reference, .. } if reference.kind == "Namespace" => {
                PruneAction::DeleteIfEmpty { reference }
            }
            other => other,
        })
        .collect();
    if purge != CrdPurge::Keep {
        plan.extend(
            sorted_stale(&BTreeSet::new(), owned)
                .into_iter()
                .filter(|o| is_crd(&o.reference))
                .map(|o| {
                    let reference = o.reference.clone();
                    let component = o.component.clone();
                    if purge == CrdPurge::Force {
                        PruneAction::Delete {
                            reference,
                            component,
                        }
                    } else {
                        PruneAction::PurgeCrdIfUnused {
                            reference,
                            component,
                        }
                    }
                }),
        );
    }
    plan
}

/// JSON text (pretty, keys sorted) for a ConfigMap the agent renders.
pub fn json_text(value: &Value) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&meshfleet_model::sorted_keys(value))
}

/// A bare Namespace (name only), applied to release the agent's labels.
pub fn bare_namespace(name: &str) -> Object {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    Object::Namespace(ns)
}

fn typed<T: DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Render {
        what: what.to_string(),
        source,
    })
}

fn log_level(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

fn traffic_type(t: TrafficType) -> &'static str {
    match t {
        TrafficType::Service => "service",
        TrafficType::Workload => "workload",
        TrafficType::All => "all",
    }
}

fn env(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn env_field(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

fn env_resource(name: &str, resource: &str) -> Value {
    json!({ "name": name, "valueFrom": { "resourceFieldRef": { "resource": resource, "divisor": "1" } } })
}

/// Tolerations of the node agents (istio-cni, ztunnel), as upstream: every
/// `NoSchedule` and `NoExecute` taint and `CriticalAddonsOnly`.
fn node_agent_tolerations() -> Value {
    json!([
        { "effect": "NoSchedule", "operator": "Exists" },
        { "key": "CriticalAddonsOnly", "operator": "Exists" },
        { "effect": "NoExecute", "operator": "Exists" }
    ])
}

const RBAC: &str = "rbac.authorization.k8s.io";
const CRUD: &[&str] = &[
    "get", "watch", "list", "update", "patch", "create", "delete",
];

struct Renderer<'a> {
    d: &'a DesiredState,
    bundle: &'a Bundle,
    directives: &'a Directives,
}

impl Renderer<'_> {
    fn rev(&self) -> &str {
        &self.d.revision
    }

    fn istiod_name(&self) -> String {
        format!("istiod-{}", self.rev())
    }

    fn istiod_address(&self) -> String {
        format!("{}.{ISTIO_NAMESPACE}.svc:15012", self.istiod_name())
    }

    fn labels(&self, step: Step, extra: &[(&str, &str)]) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        m.insert(COMPONENT_LABEL.into(), step.name().into());
        m.insert(
            CLUSTER_ID_LABEL.into(),
            self.d.cluster_id.to_string().into(),
        );
        for (k, v) in extra {
            m.insert((*k).into(), (*v).into());
        }
        Value::Object(m)
    }

    fn meta(
        &self,
        step: Step,
        name: &str,
        namespace: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Value {
        let mut m = json!({ "name": name, "labels": self.labels(step, extra) });
        if let Some(ns) = namespace {
            m["namespace"] = ns.into();
        }
        m
    }

    /// The bundle's CRDs with the agent's labels added (the family's version
    /// annotation comes with the bundle).
    fn crds(&self) -> Result<Vec<Object>> {
        self.bundle
            .crds()
            .iter()
            .map(|c| {
                Ok(Object::CustomResourceDefinition(LabelledCrd {
                    crd: c.crd.clone(),
                    labels: typed("crd labels", self.labels(Step::Crds, &[]))?,
                }))
            })
            .collect()
    }

    fn rbac_rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
        json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
    }

    /// istiod's cluster-wide permissions in ambient mode (upstream's
    /// `istiod-clusterrole`, with `pilotCertProvider: istiod`, no analysis,
    /// no node taint controller).
    fn istiod_cluster_rules() -> Value {
        let rule = Self::rbac_rule;
        let read = &["get", "watch", "list"][..];
        let istio_groups = &[
            "config.istio.io",
            "security.istio.io",
            "networking.istio.io",
            "authentication.istio.io",
            "rbac.istio.io",
            "telemetry.istio.io",
            "extensions.istio.io",
        ][..];
        json!([
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &["get", "list", "watch", "update", "patch"]
            ),
            rule(
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
                &["get", "list", "watch", "update"]
            ),
            rule(istio_groups, &["*"], read),
            rule(&["networking.istio.io"], &["workloadentries"], CRUD),
            rule(
                &["networking.istio.io"],
                &["workloadentries/status", "serviceentries/status"],
                CRUD
            ),
            rule(
                &["security.istio.io"],
                &["authorizationpolicies/status"],
                CRUD
            ),
            rule(&[""], &["services/status"], CRUD),
            rule(
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                &["get", "list", "watch"]
            ),
            rule(
                &[""],
                &["pods", "nodes", "services", "namespaces", "endpoints"],
                &["get", "list", "watch"]
            ),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["get", "list", "watch"]
            ),
            rule(
                &["networking.k8s.io"],
                &["ingresses", "ingressclasses"],
                &["get", "list", "watch"]
            ),
            rule(
                &["networking.k8s.io"],
                &["ingresses/status"],
                &["get", "update", "patch"]
            ),
            rule(
                &[""],
                &["configmaps"],
                &["create", "get", "list", "watch", "update"]
            ),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"]
            ),
            rule(
                &["gateway.networking.k8s.io", "gateway.networking.x-k8s.io"],
                &["*"],
                read
            ),
            rule(
                &["gateway.networking.x-k8s.io"],
                &["xbackendtrafficpolicies/status", "xlistenersets/status"],
                &["update", "patch"]
            ),
            rule(
                &["gateway.networking.k8s.io"],
                &[
                    "backendtlspolicies/status",
                    "gatewayclasses/status",
                    "gateways/status",
                    "grpcroutes/status",
                    "httproutes/status",
                    "referencegrants/status",
                    "tcproutes/status",
                    "tlsroutes/status",
                    "udproutes/status",
                ],
                &["update", "patch"]
            ),
            rule(
                &["gateway.networking.k8s.io"],
                &["gatewayclasses"],
                &["create", "update", "patch", "delete"]
            ),
            rule(&["inference.networking.k8s.io"], &["inferencepools"], read),
            rule(
                &["inference.networking.k8s.io"],
                &["inferencepools/status"],
                &["update", "patch"]
            ),
            rule(&[""], &["secrets"], read),
            rule(
                &["multicluster.x-k8s.io"],
                &["serviceexports"],
                &["get", "watch", "list", "create", "delete"]
            ),
            rule(&["multicluster.x-k8s.io"], &["serviceimports"], read),
        ])
    }

    /// What istiod's gateway deployment controller writes for every waypoint
    /// (from the `waypoint` template), in the waypoints' namespaces.
    fn gateway_controller_rules() -> Value {
        let rule = Self::rbac_rule;
        json!([
            rule(&["apps"], &["deployments"], CRUD),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], CRUD),
            rule(&["policy"], &["poddisruptionbudgets"], CRUD),
            rule(&[""], &["services"], CRUD),
            rule(&[""], &["serviceaccounts"], CRUD),
        ])
    }

    /// A ClusterRole and its binding to `subject` (a ServiceAccount in
    /// `istio-system`).
    fn cluster_role(
        &self,
        step: Step,
        name: &str,
        subject: &str,
        labels: &[(&str, &str)],
        rules: Value,
    ) -> Result<[Object; 2]> {
        Ok([
            Object::ClusterRole(typed(
                name,
                json!({ "apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRole",
                        "metadata": self.meta(step, name, None, labels), "rules": rules }),
            )?),
            Object::ClusterRoleBinding(typed(
                name,
                json!({
                    "apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRoleBinding",
                    "metadata": self.meta(step, name, None, labels),
                    "roleRef": { "apiGroup": RBAC, "kind": "ClusterRole", "name": name },
                    "subjects": [{ "kind": "ServiceAccount", "name": subject, "namespace": ISTIO_NAMESPACE }]
                }),
            )?),
        ])
    }

    fn istiod(&self) -> Result<Vec<Object>> {
        let s = Step::Istiod;
        let rev = self.rev();
        let name = self.istiod_name();
        let rev_labels: &[(&str, &str)] = &[(REVISION_LABEL, rev), ("app", "istiod")];
        let mut out = Vec::new();

        out.push(Object::Namespace(typed(
            "namespace istio-system",
            json!({ "apiVersion": "v1", "kind": "Namespace",
                    "metadata": self.meta(s, ISTIO_NAMESPACE, None, &[]) }),
        )?));
        out.push(Object::ServiceAccount(typed(
            "istiod service account",
            json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), rev_labels) }),
        )?));
        out.extend(self.cluster_role(
            s,
            &format!("istiod-clusterrole-{rev}-{ISTIO_NAMESPACE}"),
            &name,
            rev_labels,
            Self::istiod_cluster_rules(),
        )?);
        out.extend(self.cluster_role(
            s,
            &format!("istiod-gateway-controller-{rev}-{ISTIO_NAMESPACE}"),
            &name,
            rev_labels,
            Self::gateway_controller_rules(),
        )?);
        let rule = Self::rbac_rule;
        out.push(Object::Role(typed(
            "istiod role",
            json!({
                "apiVersion": format!("{RBAC}/v1"), "kind": "Role",
                "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), rev_labels),
                "rules": [
                    // The readiness probe of its webhook: a server dry-run create.
                    rule(&["networking.istio.io"], &["gateways"], &["create"]),
                    // Its self-signed CA (istio-ca-secret).
                    rule(&[""], &["secrets"], &["create", "get", "watch", "list", "update", "delete"]),
                    // The status controller's distribution report.
                    rule(&[""], &["configmaps"], &["delete"]),
                    // Leader election of its controllers.
                    rule(&["coordination.k8s.io"], &["leases"], &["get", "update", "patch", "create"])
                ]
            }),
        )?));
        out.push(Object::RoleBinding(typed(
            "istiod role binding",
            json!({
                "apiVersion": format!("{RBAC}/v1"), "kind": "RoleBinding",
                "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), rev_labels),
                "roleRef": { "apiGroup": RBAC, "kind": "Role", "name": name },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ISTIO_NAMESPACE }]
            }),
        )?));
        out.push(Object::ConfigMap(typed(
            "istio mesh config",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": self.meta(s, &format!("istio-{rev}"), Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev)]),
                "data": { "mesh": self.mesh_config()?, "meshNetworks": "networks: {}" }
            }),
        )?));
        out.push(Object::ConfigMap(typed(
            "istiod injection templates",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": self.meta(s, &format!("istio-sidecar-injector-{rev}"), Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev)]),
                "data": {
                    "config": self.bundle.injection_config()?,
                    "values": self.injection_values()?
                }
            }),
        )?));
        out.push(Object::Service(typed(
            "istiod service",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev), ("app", "istiod"), ("istio", "pilot")]),
                "spec": {
                    "selector": { "app": "istiod", REVISION_LABEL: rev },
                    "ports": [
                        { "name": "grpc-xds", "port": 15010, "protocol": "TCP" },
                        { "name": "https-dns", "port": 15012, "protocol": "TCP" },
                        { "name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP" },
                        { "name": "http-monitoring", "port": 15014, "protocol": "TCP" }
                    ]
                }
            }),
        )?));
        out.push(Object::Deployment(typed(
            "istiod deployment",
            self.istiod_deployment()?,
        )?));
        let autoscale = self.directives.istiod_autoscale;
        let min_replicas = autoscale.map_or(self.d.istiod_replicas, |a| a.min_replicas);
        if min_replicas > 1 {
            // Upstream renders the PDB only then: with one replica
            // `minAvailable: 1` would block every node drain.
            out.push(Object::PodDisruptionBudget(typed(
                "istiod pod disruption budget",
                json!({
                    "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev), ("app", "istiod"), ("istio", "pilot")]),
                    "spec": {
                        "minAvailable": 1,
                        "selector": { "matchLabels": { "app": "istiod", REVISION_LABEL: rev } }
                    }
                }),
            )?));
        }
        if let Some(a) = autoscale {
            out.push(Object::HorizontalPodAutoscaler(typed(
                "istiod autoscaler",
                json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), rev_labels),
                    "spec": {
                        "minReplicas": a.min_replicas,
                        "maxReplicas": a.max_replicas.max(a.min_replicas),
                        "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
                        "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                            "target": { "type": "Utilization", "averageUtilization": 80 } } }]
                    }
                }),
            )?));
        }
        out.push(Object::ValidatingWebhookConfiguration(typed(
            "istiod validating webhook",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": self.meta(s, &format!("istio-validator-{rev}-{ISTIO_NAMESPACE}"), None, &[(REVISION_LABEL, rev), ("app", "istiod")]),
                "webhooks": [{
                    "name": format!("rev.validation.{rev}.istio.io"),
                    "clientConfig": { "service": { "name": name, "namespace": ISTIO_NAMESPACE, "path": "/validate", "port": 443 } },
                    "rules": [{
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
                        "apiVersions": ["*"],
                        "resources": ["*"]
                    }],
                    "objectSelector": { "matchExpressions": [{ "key": REVISION_LABEL, "operator": "In", "values": [rev] }] },
                    // istiod patches in its CA bundle; until then (and during
                    // a revision change) an unreachable webhook must not block writes.
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"]
                }]
            }),
        )?));
        Ok(out)
    }

    fn istiod_deployment(&self) -> Result<Value> {
        let rev = self.rev();
        let name = self.istiod_name();
        let version = self.d.version.as_str();
        let pod_labels = json!({ "app": "istiod", "istio": "pilot", REVISION_LABEL: rev, VERSION_LABEL: version,
                                 "sidecar.istio.io/inject": "false" });
        let mut spec = json!({
            "selector": { "matchLabels": { "app": "istiod", REVISION_LABEL: rev } },
            "strategy": { "rollingUpdate": { "maxSurge": "100%", "maxUnavailable": "25%" } },
            "template": {
                "metadata": { "labels": pod_labels, "annotations": { "prometheus.io/port": "15014", "prometheus.io/scrape": "true" } },
                "spec": {
                    "serviceAccountName": name,
                    // Scheduled before istio-cni is ready on a node.
                    "tolerations": [{ "key": "cni.istio.io/not-ready", "operator": "Exists" }],
                    "securityContext": { "fsGroup": 1337 },
                    "containers": [{
                        "name": "discovery",
                        "image": self.d.images.istiod,
                        "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
                                 "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                        "ports": [
                            { "containerPort": 8080, "name": "http-debug", "protocol": "TCP" },
                            { "containerPort": 15010, "name": "grpc-xds", "protocol": "TCP" },
                            { "containerPort": 15012, "name": "tls-xds", "protocol": "TCP" },
                            { "containerPort": 15017, "name": "https-webhooks", "protocol": "TCP" },
                            { "containerPort": 15014, "name": "http-monitoring", "protocol": "TCP" }
                        ],
                        "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 },
                                            "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5 },
                        "env": [
                            env("REVISION", rev),
                            env("PILOT_CERT_PROVIDER", "istiod"),
                            env_field("POD_NAME", "metadata.name"),
                            env_field("POD_NAMESPACE", "metadata.namespace"),
                            env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                            env("KUBECONFIG", "/var/run/secrets/remote/config"),
                            env("CA_TRUSTED_NODE_ACCOUNTS", &format!("{ISTIO_NAMESPACE}/ztunnel")),
                            env("PILOT_ENABLE_AMBIENT", "true"),
                            env("ISTIOD_CUSTOM_HOST", &format!("{name}.{ISTIO_NAMESPACE}.svc")),
                            env("PILOT_ENABLE_ANALYSIS", "false"),
                            env("CLUSTER_ID", "Kubernetes"),
                            env_resource("GOMEMLIMIT", "limits.memory"),
                            env_resource("GOMAXPROCS", "limits.cpu"),
                            env("PLATFORM", "")
                        ],
                        "resources": { "requests": { "cpu": "500m", "memory": "2048Mi" } },
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                            "capabilities": { "drop": ["ALL"] }
                        },
                        "volumeMounts": [
                            { "name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true },
                            { "name": "local-certs", "mountPath": "/var/run/secrets/istio-dns" },
                            { "name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": true },
                            { "name": "istio-kubeconfig", "mountPath": "/var/run/secrets/remote", "readOnly": true }
                        ]
                    }],
                    "volumes": [
                        { "name": "local-certs", "emptyDir": { "medium": "Memory" } },
                        { "name": "istio-token", "projected": { "sources": [{ "serviceAccountToken": {
                            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token" } }] } },
                        // A plug-in CA, if the operator provides one.
                        { "name": "cacerts", "secret": { "secretName": "cacerts", "optional": true } },
                        { "name": "istio-kubeconfig", "secret": { "secretName": "istio-kubeconfig", "optional": true } }
                    ]
                }
            }
        });
        // With an HPA the replica count is the HPA's: not applied, so that
        // server-side apply does not fight it.
        if self.directives.istiod_autoscale.is_none() {
            spec["replicas"] = self.d.istiod_replicas.into();
        }
        Ok(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": self.meta(Step::Istiod, &name, Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev), ("app", "istiod"), ("istio", "pilot"), (VERSION_LABEL, version)]),
            "spec": spec
        }))
    }

    /// The `values` key of the injection-template ConfigMap: the per-install
    /// settings the bundle's templates read as `.Values` (upstream's value
    /// names).
    fn injection_values(&self) -> Result<String> {
        let values = json!({
            "revision": self.rev(),
            "global": {
                "istioNamespace": ISTIO_NAMESPACE,
                "caAddress": self.istiod_address(),
                "pilotCertProvider": "istiod",
                "logging": { "level": "default:info" },
                "multiCluster": { "clusterName": "Kubernetes" },
                "proxy": {
                    "image": self.d.images.proxy,
                    "clusterDomain": "cluster.local",
                    "logLevel": "warning",
                    "componentLogLevel": "misc:error"
                }
            }
        });
        Ok(json_text(&values)?)
    }

    /// The mesh config istiod reads from `istio-<revision>` (JSON, which is YAML).
    fn mesh_config(&self) -> Result<String> {
        let mc = &self.d.mesh_config;
        let mut m = json!({
            "rootNamespace": ISTIO_NAMESPACE,
            "trustDomain": "cluster.local",
            "defaultConfig": { "discoveryAddress": self.istiod_address() },
        });
        if let Some(v) = &mc.access_log_file {
            m["accessLogFile"] = v.clone().into();
        }
        if let Some(v) = &mc.access_log_encoding {
            m["accessLogEncoding"] = serde_json::to_value(v)?;
        }
        if let Some(v) = mc.enable_tracing {
            m["enableTracing"] = v.into();
        }
        if let Some(v) = &mc.outbound_traffic_policy {
            m["outboundTrafficPolicy"] = serde_json::to_value(v)?;
        }
        Ok(json_text(&m)?)
    }

    /// The minor of the desired version (`1.26.2` → 26).
    fn minor(&self) -> u32 {
        self.d
            .version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(u32::MAX)
    }

    /// istio-cni's settings (its container's environment), under the key
    /// names of the desired version's chart: `EXCLUDED_NAMESPACES` became
    /// `EXCLUDE_NAMESPACES` in 1.26; the enablement selector, Istio-owned CNI
    /// config and native nftables keys exist from 1.27.
    fn cni_config(&self) -> Value {
        let minor = self.minor();
        let mut data = json!({
            "CURRENT_AGENT_VERSION": self.d.version,
            "AMBIENT_ENABLED": "true",
            "AMBIENT_DNS_CAPTURE": "true",
            "AMBIENT_IPV6": "true",
            "CHAINED_CNI_PLUGIN": "true",
            "REPAIR_ENABLED": "true",
            "REPAIR_LABEL_PODS": "false",
            "REPAIR_DELETE_PODS": "false",
            "REPAIR_REPAIR_PODS": "true",
            "REPAIR_INIT_CONTAINER_NAME": "istio-validation",
            "REPAIR_BROKEN_POD_LABEL_KEY": "cni.istio.io/uninitialized",
            "REPAIR_BROKEN_POD_LABEL_VALUE": "true"
        });
        let excluded = if minor >= 26 {
            "EXCLUDE_NAMESPACES"
        } else {
            "EXCLUDED_NAMESPACES"
        };
        data[excluded] = "kube-system".into();
        if minor >= 25 {
            data["AMBIENT_RECONCILE_POD_RULES_ON_STARTUP"] = "false".into();
        }
        if minor >= 27 {
            data["AMBIENT_ENABLEMENT_SELECTOR"] = "- podSelector:\n    matchLabels:\n      istio.io/dataplane-mode: ambient\n- podSelector:\n    matchExpressions:\n    - key: istio.io/dataplane-mode\n      operator: NotIn\n      values:\n      - none\n  namespaceSelector:\n    matchLabels:\n      istio.io/dataplane-mode: ambient\n".into();
            data["ISTIO_OWNED_CNI_CONFIG"] = "false".into();
            data["NATIVE_NFTABLES"] = "false".into();
        }
        data
    }

    fn istio_cni(&self) -> Result<Vec<Object>> {
        let s = Step::IstioCni;
        let version = self.d.version.as_str();
        let name = "istio-cni";
        let app: &[(&str, &str)] = &[("app", "istio-cni-node")];
        let rule = Self::rbac_rule;
        let mut out = vec![Object::ServiceAccount(typed(
            "istio-cni service account",
            json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": self.meta(s, name, Some(ISTIO_NAMESPACE), app) }),
        )?)];
        // Upstream's three ClusterRoles (base, repair, ambient) in one.
        out.extend(self.cluster_role(
            s,
            name,
            name,
            app,
            json!([
                rule(&[""], &["pods", "nodes", "namespaces"], &["get", "list", "watch"]),
                rule(&[""], &["events"], &["create", "patch"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                { "apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["istio-cni-node"], "verbs": ["get"] }
            ]),
        )?);
        out.push(Object::ConfigMap(typed(
            "istio-cni config",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": self.meta(s, "istio-cni-config", Some(ISTIO_NAMESPACE), app),
                "data": self.cni_config()
            }),
        )?));
        out.push(Object::DaemonSet(typed(
            "istio-cni daemonset",
            json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": self.meta(s, "istio-cni-node", Some(ISTIO_NAMESPACE), &[("app", "istio-cni-node"), (VERSION_LABEL, version)]),
                "spec": {
                    "selector": { "matchLabels": { "app": "istio-cni-node" } },
                    // In place, never canaried (DESIGN §4).
                    "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
                    "template": {
                        "metadata": {
                            "labels": { "app": "istio-cni-node", VERSION_LABEL: version, "sidecar.istio.io/inject": "false",
                                        "istio.io/dataplane-mode": "none" },
                            "annotations": { "sidecar.istio.io/inject": "false",
                                             "prometheus.io/port": "15014", "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                             "container.apparmor.security.beta.kubernetes.io/install-cni": "unconfined" }
                        },
                        "spec": {
                            "serviceAccountName": name,
                            "nodeSelector": { "kubernetes.io/os": "linux" },
                            "priorityClassName": "system-node-critical",
                            "tolerations": node_agent_tolerations(),
                            "terminationGracePeriodSeconds": 5,
                            "containers": [{
                                "name": "install-cni",
                                "image": self.d.images.cni,
                                "command": ["install-cni"],
                                "args": ["--log_output_level=info"],
                                "envFrom": [{ "configMapRef": { "name": "istio-cni-config" } }],
                                "env": [
                                    env_field("REPAIR_NODE_NAME", "spec.nodeName"),
                                    env("REPAIR_RUN_AS_DAEMON", "true"),
                                    env("REPAIR_SIDECAR_ANNOTATION", "sidecar.istio.io/status"),
                                    env("ALLOW_SWITCH_TO_HOST_NS", "true"),
                                    env_field("NODE_NAME", "spec.nodeName"),
                                    env_resource("GOMEMLIMIT", "limits.memory"),
                                    env_resource("GOMAXPROCS", "limits.cpu"),
                                    env_field("POD_NAME", "metadata.name"),
                                    env_field("POD_NAMESPACE", "metadata.namespace")
                                ],
                                "ports": [{ "containerPort": 15014, "name": "metrics", "protocol": "TCP" }],
                                "readinessProbe": { "httpGet": { "path": "/readyz", "port": 8000 } },
                                "resources": { "requests": { "cpu": "100m", "memory": "100Mi" } },
                                "securityContext": {
                                    "privileged": false, "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
                                    "capabilities": { "drop": ["ALL"],
                                                      "add": ["NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_ADMIN", "DAC_OVERRIDE"] }
                                },
                                "volumeMounts": [
                                    { "name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin" },
                                    { "name": "cni-host-procfs", "mountPath": "/host/proc", "readOnly": true },
                                    { "name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d" },
                                    { "name": "cni-socket-dir", "mountPath": "/var/run/istio-cni" },
                                    { "name": "cni-netns-dir", "mountPath": "/host/var/run/netns", "mountPropagation": "HostToContainer" },
                                    { "name": "cni-ztunnel-sock-dir", "mountPath": "/var/run/ztunnel" }
                                ]
                            }],
                            "volumes": [
                                { "name": "cni-bin-dir", "hostPath": { "path": "/opt/cni/bin" } },
                                { "name": "cni-host-procfs", "hostPath": { "path": "/proc", "type": "Directory" } },
                                { "name": "cni-ztunnel-sock-dir", "hostPath": { "path": "/var/run/ztunnel", "type": "DirectoryOrCreate" } },
                                { "name": "cni-net-dir", "hostPath": { "path": "/etc/cni/net.d" } },
                                { "name": "cni-socket-dir", "hostPath": { "path": "/var/run/istio-cni" } },
                                { "name": "cni-netns-dir", "hostPath": { "path": "/var/run/netns", "type": "DirectoryOrCreate" } }
                            ]
                        }
                    }
                }
            }),
        )?));
        Ok(out)
    }

    fn ztunnel(&self) -> Result<Vec<Object>> {
        let s = Step::Ztunnel;
        let version = self.d.version.as_str();
        let res = &self.d.ztunnel_resources;
        let requests = json!({
            "cpu": res.cpu.as_deref().unwrap_or("200m"),
            "memory": res.memory.as_deref().unwrap_or("512Mi"),
        });
        let ca = self.istiod_address();
        Ok(vec![
            Object::ServiceAccount(typed(
                "ztunnel service account",
                json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": self.meta(s, "ztunnel", Some(ISTIO_NAMESPACE), &[("app", "ztunnel")]) }),
            )?),
            Object::DaemonSet(typed(
                "ztunnel daemonset",
                json!({
                    "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": self.meta(s, "ztunnel", Some(ISTIO_NAMESPACE), &[("app", "ztunnel"), (VERSION_LABEL, version)]),
                    "spec": {
                        "selector": { "matchLabels": { "app": "ztunnel" } },
                        // An upgrade resets long-lived connections on a node:
                        // roll node by node (DESIGN §4).
                        "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1, "maxSurge": 0 } },
                        "template": {
                            "metadata": {
                                "labels": { "app": "ztunnel", VERSION_LABEL: version, "sidecar.istio.io/inject": "false",
                                            "istio.io/dataplane-mode": "none" },
                                "annotations": { "sidecar.istio.io/inject": "false", REVISION_LABEL: self.rev() }
                            },
                            "spec": {
                                "serviceAccountName": "ztunnel",
                                "nodeSelector": { "kubernetes.io/os": "linux" },
                                "priorityClassName": "system-node-critical",
                                "tolerations": node_agent_tolerations(),
                                "terminationGracePeriodSeconds": 30,
                                "containers": [{
                                    "name": "istio-proxy",
                                    "image": self.d.images.ztunnel,
                                    "args": ["proxy", "ztunnel"],
                                    "env": [
                                        env("CA_ADDRESS", &ca),
                                        env("XDS_ADDRESS", &ca),
                                        env("RUST_LOG", log_level(self.d.ztunnel_log_level)),
                                        env("RUST_BACKTRACE", "1"),
                                        env("ISTIO_META_CLUSTER_ID", "Kubernetes"),
                                        env("INPOD_ENABLED", "true"),
                                        env("TERMINATION_GRACE_PERIOD_SECONDS", "30"),
                                        env_field("POD_NAME", "metadata.name"),
                                        env_field("POD_NAMESPACE", "metadata.namespace"),
                                        env_field("NODE_NAME", "spec.nodeName"),
                                        env_field("INSTANCE_IP", "status.podIP"),
                                        env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                                        json!({ "name": "ZTUNNEL_CPU_LIMIT", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } })
                                    ],
                                    "ports": [{ "containerPort": 15020, "name": "ztunnel-stats", "protocol": "TCP" }],
                                    "readinessProbe": { "httpGet": { "path": "/healthz/ready", "port": 15021 } },
                                    "resources": { "requests": requests },
                                    "securityContext": {
                                        // Upstream allows escalation (for setns); ztunnel
                                        // runs as root with only these capabilities.
                                        "allowPrivilegeEscalation": true, "privileged": false,
                                        "readOnlyRootFilesystem": true, "runAsGroup": 1337, "runAsNonRoot": false, "runAsUser": 0,
                                        "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"] }
                                    },
                                    "volumeMounts": [
                                        { "name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio" },
                                        { "name": "istio-token", "mountPath": "/var/run/secrets/tokens" },
                                        { "name": "cni-ztunnel-sock-dir", "mountPath": "/var/run/ztunnel" },
                                        { "name": "tmp", "mountPath": "/tmp" }
                                    ]
                                }],
                                "volumes": [
                                    { "name": "istio-token", "projected": { "sources": [{ "serviceAccountToken": {
                                        "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token" } }] } },
                                    { "name": "istiod-ca-cert", "configMap": { "name": "istio-ca-root-cert" } },
                                    { "name": "cni-ztunnel-sock-dir", "hostPath": { "path": "/var/run/ztunnel", "type": "DirectoryOrCreate" } },
                                    { "name": "tmp", "emptyDir": {} }
                                ]
                            }
                        }
                    }
                }),
            )?),
        ])
    }

    /// The `default` revision tag: istiod counts a Gateway labelled
    /// `istio.io/rev: default` (or unlabelled) as its own while this
    /// webhook configuration's `istio.io/rev` names its revision. It holds no
    /// webhook (the mesh is ambient: pods are never injected), so it never
    /// intercepts a pod.
    fn revision_tag(&self) -> Result<Object> {
        Ok(Object::MutatingWebhookConfiguration(typed(
            "revision tag",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": self.meta(Step::Waypoints, &format!("istio-revision-tag-{DEFAULT_TAG}"), None,
                    &[(TAG_LABEL, DEFAULT_TAG), (REVISION_LABEL, self.rev()), ("app", "sidecar-injector")]),
                "webhooks": []
            }),
        )?))
    }

    fn waypoints(&self) -> Result<Vec<Object>> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
            "gateways",
        );
        let mut wps: Vec<&DesiredWaypoint> = self.d.waypoints.iter().collect();
        wps.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        wps.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
        let mut out = vec![self.revision_tag()?];
        for w in wps {
            let params = format!("{}-waypoint-params", w.name);
            // Istio reads Deployment overrides for the waypoint it deploys
            // from the ConfigMap named by `infrastructure.parametersRef`.
            let overlay = serde_json::to_string(&json!({ "spec": { "replicas": w.replicas } }))?;
            out.push(Object::ConfigMap(typed(
                "waypoint parameters",
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": self.meta(Step::Waypoints, &params, Some(&w.namespace), &[]),
                    "data": { "deployment": overlay }
                }),
            )?));
            let meta = self.meta(
                Step::Waypoints,
                &w.name,
                Some(&w.namespace),
                &[
                    (WAYPOINT_FOR_LABEL, traffic_type(w.traffic_type)),
                    // Follows the tag, so an upgrade moves it to the new
                    // revision when the tag moves.
                    (REVISION_LABEL, DEFAULT_TAG),
                ],
            );
            let mut gw = DynamicObject::new(&w.name, &ar).within(&w.namespace).data(json!({
                "spec": {
                    "gatewayClassName": WAYPOINT_CLASS,
                    "infrastructure": { "parametersRef": { "group": "", "kind": "ConfigMap", "name": params } },
                    "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }]
                }
            }));
            gw.metadata.labels = Some(typed("waypoint labels", meta["labels"].clone())?);
            out.push(Object::Dynamic(gw));
        }
        Ok(out)
    }

    /// Enrolled namespaces get `istio.io/dataplane-mode=ambient`. A namespace
    /// with exactly one waypoint also gets `istio.io/use-waypoint=<name>`, so
    /// its traffic goes through it; with several waypoints the choice is the
    /// tenant's (they label services or pods themselves), so none is set.
    fn namespaces(&self) -> Result<Vec<Object>> {
        let names: BTreeSet<&str> = self
            .d
            .enrolled_namespaces
            .iter()
            .map(String::as_str)
            .collect();
        let mut waypoints: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for w in &self.d.waypoints {
            waypoints
                .entry(w.namespace.as_str())
                .or_default()
                .insert(w.name.as_str());
        }
        names
            .into_iter()
            .map(|ns| {
                let mut extra = vec![(DATAPLANE_MODE_LABEL, "ambient")];
                if let Some(w) = waypoints.get(ns)
                    && w.len() == 1
                    && let Some(name) = w.first()
                {
                    extra.push((USE_WAYPOINT_LABEL, name));
                }
                Ok(Object::Namespace(typed(
                    "enrolled namespace",
                    json!({ "apiVersion": "v1", "kind": "Namespace",
                            "metadata": self.meta(Step::Namespaces, ns, None, &extra) }),
                )?))
            })
            .collect()
    }

    fn policies(&self) -> Result<Vec<Object>> {
        if self.d.mtls != MtlsMode::Strict {
            return Ok(Vec::new());
        }
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("security.istio.io", "v1", "PeerAuthentication"),
            "peerauthentications",
        );
        let mut pa = DynamicObject::new("default", &ar)
            .within(ISTIO_NAMESPACE)
            .data(json!({ "spec": { "mtls": { "mode": "STRICT" } } }));
        pa.metadata.labels = Some(typed("policy labels", self.labels(Step::Policies, &[]))?);
        Ok(vec![Object::Dynamic(pa)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::desired;

    #[test]
    fn steps_come_in_upstream_order_and_everything_is_labelled() {
        let d = desired("1.28.2");
        let steps = render(&d).unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.step.name()).collect();
        assert_eq!(
            names,
            [
                "crds",
                "istiod",
                "istio-cni",
                "ztunnel",
                "waypoints",
                "namespaces",
                "policies"
            ]
        );
        for s in &steps {
            for o in &s.objects {
                let l = o.labels();
                assert_eq!(
                    l.get(MANAGED_BY_LABEL).map(String::as_str),
                    Some(MANAGED_BY_VALUE)
                );
                assert_eq!(
                    l.get(COMPONENT_LABEL).map(String::as_str),
                    Some(s.step.name())
                );
                assert_eq!(l.get(CLUSTER_ID_LABEL), Some(&d.cluster_id.to_string()));
            }
        }
    }

    #[test]
    fn istiod_objects_are_named_by_revision_and_ztunnel_points_at_it() {
        let d = desired("1.28.2");
        let steps = render(&d).unwrap();
        let istiod = &steps[1];
        assert_eq!(
            istiod.workloads(),
            vec![ObjectRef::deployment(ISTIO_NAMESPACE, "istiod-1-28-2")]
        );
        let zt = steps[3]
            .objects
            .iter()
            .find(|o| o.reference().kind == "DaemonSet")
            .unwrap();
        let j = zt.to_json().unwrap();
        let envs = &j["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            envs.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "CA_ADDRESS"
                    && e["value"] == "istiod-1-28-2.istio-system.svc:15012"),
            "{envs}"
        );
        assert_eq!(
            j["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
    }

    #[test]
    fn disabled_renders_nothing_and_uninstalls_in_reverse_step_order_keeping_crds() {
        let mut d = desired("1.28.2");
        let owned: Vec<OwnedObject> = crate::testing::owned_objects(&render(&d).unwrap());
        d.mode = MeshMode::Disabled;
        assert!(render(&d).unwrap().is_empty());
        let plan = plan_uninstall(&owned, CrdPurge::Keep);
        let crds = owned.iter().filter(|o| is_crd(&o.reference)).count();
        assert!(crds > 0);
        assert_eq!(plan.len(), owned.len() - crds, "everything but the CRDs");
        assert!(plan.iter().all(|a| !is_crd(a.reference())));
        let components: Vec<String> = plan
            .iter()
            .map(|a| match a {
                PruneAction::Delete { component, .. }
                | PruneAction::PurgeCrdIfUnused { component, .. } => component.clone().unwrap(),
                PruneAction::Release { .. } => "namespaces".to_string(),
                PruneAction::DeleteIfEmpty { .. } => "istiod".to_string(),
            })
            .collect();
        let mut order: Vec<String> = components.clone();
        order.dedup();
        assert_eq!(
            order,
            [
                "policies",
                "namespaces",
                "waypoints",
                "ztunnel",
                "istio-cni",
                "istiod",
            ]
        );
        // Inside istiod: the Deployment goes before its ServiceAccount, the
        // Namespace last — and only if it is empty by then.
        let istiod: Vec<&PruneAction> = plan
            .iter()
            .filter(|a| {
                matches!(a, PruneAction::Delete { component: Some(c), .. } if c == "istiod")
                    || matches!(a, PruneAction::DeleteIfEmpty { .. })
            })
            .collect();
        assert_eq!(
            istiod.last(),
            Some(&&PruneAction::DeleteIfEmpty {
                reference: ObjectRef::new("v1", "Namespace", None, ISTIO_NAMESPACE)
            })
        );
        let dep = istiod
            .iter()
            .position(|a| a.reference().kind == "Deployment")
            .unwrap();
        let sa = istiod
            .iter()
            .position(|a| a.reference().kind == "ServiceAccount")
            .unwrap();
        assert!(dep < sa);
        // Enrolled namespaces are released, never deleted.
        assert!(plan.iter().all(|a| match a {
            PruneAction::Delete { reference, .. } => reference.kind != "Namespace",
            PruneAction::Release { reference } | PruneAction::DeleteIfEmpty { reference } =>
                reference.kind == "Namespace",
            PruneAction::PurgeCrdIfUnused { .. } => false,
        }));
        // Purging adds the agent's CRDs, last: checked for foreign custom
        // resources first, unless forced.
        let purge = plan_uninstall(&owned, CrdPurge::IfUnused);
        assert_eq!(purge.len(), owned.len());
        assert!(purge[plan.len()..].iter().all(|a| matches!(a,
            PruneAction::PurgeCrdIfUnused { reference, .. } if is_crd(reference))));
        let forced = plan_uninstall(&owned, CrdPurge::Force);
        assert_eq!(forced.len(), owned.len());
        assert!(forced[plan.len()..].iter().all(|a| matches!(a,
            PruneAction::Delete { reference, .. } if is_crd(reference))));
    }

    #[test]
    fn pruning_never_deletes_a_crd() {
        let d = desired("1.28.2");
        let owned: Vec<OwnedObject> = crate::testing::owned_objects(&render(&d).unwrap());
        // A CRD the bundle no longer has, and a stale Deployment.
        let mut owned = owned;
        owned.push(OwnedObject {
            reference: ObjectRef::new(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "old.networking.istio.io",
            ),
            component: Some("crds".into()),
        });
        owned.push(OwnedObject {
            reference: ObjectRef::deployment(ISTIO_NAMESPACE, "istiod-1-27-1"),
            component: Some("istiod".into()),
        });
        let plan = plan_prune(&desired_refs(&render(&d).unwrap()), &owned);
        assert_eq!(
            plan,
            [PruneAction::Delete {
                reference: ObjectRef::deployment(ISTIO_NAMESPACE, "istiod-1-27-1"),
                component: Some("istiod".into())
            }]
        );
    }

    #[test]
    fn istiod_has_its_role_pdb_injection_templates_and_an_optional_hpa() {
        let d = desired("1.28.2");
        let steps = render(&d).unwrap();
        let refs: Vec<ObjectRef> = steps[1].objects.iter().map(Object::reference).collect();
        let has = |kind: &str, name: &str| refs.iter().any(|r| r.kind == kind && r.name == name);
        assert!(has("Role", "istiod-1-28-2") && has("RoleBinding", "istiod-1-28-2"));
        assert!(has("PodDisruptionBudget", "istiod-1-28-2"));
        assert!(has("ConfigMap", "istio-sidecar-injector-1-28-2"));
        assert!(has(
            "ClusterRole",
            "istiod-gateway-controller-1-28-2-istio-system"
        ));
        assert!(!refs.iter().any(|r| r.kind == "HorizontalPodAutoscaler"));
        let cm = steps[1]
            .objects
            .iter()
            .find(|o| o.reference().name == "istio-sidecar-injector-1-28-2")
            .unwrap()
            .to_json()
            .unwrap();
        let config: Value = serde_json::from_str(cm["data"]["config"].as_str().unwrap()).unwrap();
        assert!(
            config["templates"]["waypoint"]
                .as_str()
                .unwrap()
                .contains("kind: Deployment")
        );
        let values: Value = serde_json::from_str(cm["data"]["values"].as_str().unwrap()).unwrap();
        assert_eq!(
            values["global"]["proxy"]["image"],
            "docker.io/istio/proxyv2:1.28.2"
        );
        assert_eq!(
            values["global"]["caAddress"],
            "istiod-1-28-2.istio-system.svc:15012"
        );

        // One replica: no PDB (it would block node drains).
        let mut one = d.clone();
        one.istiod_replicas = 1;
        let steps = render(&one).unwrap();
        assert!(
            !steps[1]
                .objects
                .iter()
                .any(|o| o.reference().kind == "PodDisruptionBudget")
        );

        // With an HPA the Deployment leaves the replica count to it.
        let directives = Directives {
            istiod_autoscale: Some(Autoscale {
                min_replicas: 2,
                max_replicas: 5,
            }),
            ..Directives::default()
        };
        let steps = render_with(&one, &Bundle::development("1.28.2"), &directives).unwrap();
        let hpa = steps[1]
            .objects
            .iter()
            .find(|o| o.reference().kind == "HorizontalPodAutoscaler")
            .unwrap()
            .to_json()
            .unwrap();
        assert_eq!(hpa["spec"]["maxReplicas"], 5);
        let dep = steps[1]
            .objects
            .iter()
            .find(|o| o.reference().kind == "Deployment")
            .unwrap()
            .to_json()
            .unwrap();
        assert!(dep["spec"].get("replicas").is_none(), "{}", dep["spec"]);
        assert!(
            steps[1]
                .objects
                .iter()
                .any(|o| o.reference().kind == "PodDisruptionBudget")
        );
    }

    #[test]
    fn waypoints_follow_the_default_tag_and_wait_for_istiod() {
        let d = desired("1.28.2");
        let steps = render(&d).unwrap();
        let wp = &steps[4];
        let tag = wp.objects[0].to_json().unwrap();
        assert_eq!(tag["kind"], "MutatingWebhookConfiguration");
        assert_eq!(tag["metadata"]["labels"][TAG_LABEL], DEFAULT_TAG);
        assert_eq!(tag["metadata"]["labels"][REVISION_LABEL], "1-28-2");
        assert_eq!(tag["webhooks"], json!([]));
        let gw = wp
            .objects
            .iter()
            .find(|o| o.reference().kind == "Gateway")
            .unwrap();
        assert_eq!(gw.labels()[REVISION_LABEL], DEFAULT_TAG);
        assert_eq!(
            wp.checks(),
            vec![Check::Waypoint {
                gateway: gw.reference(),
                deployment: ObjectRef::deployment("shop", "shop-waypoint"),
            }]
        );
        // istiod's step waits for its rollout, then for its webhook.
        let checks = steps[1].checks();
        assert!(matches!(&checks[0], Check::Rollout(r) if r.name == "istiod-1-28-2"));
        assert!(
            matches!(&checks[1], Check::WebhookServing(r) if r.kind == "ValidatingWebhookConfiguration")
        );
    }

    #[test]
    fn the_cni_config_uses_the_key_names_of_the_version() {
        let cni = |v: &str| {
            let steps = render(&desired(v)).unwrap();
            steps[2]
                .objects
                .iter()
                .find(|o| o.reference().name == "istio-cni-config")
                .unwrap()
                .to_json()
                .unwrap()["data"]
                .clone()
        };
        let old = cni("1.25.2");
        assert_eq!(old["EXCLUDED_NAMESPACES"], "kube-system");
        assert!(old.get("EXCLUDE_NAMESPACES").is_none());
        assert!(old.get("AMBIENT_ENABLEMENT_SELECTOR").is_none());
        let new = cni("1.28.2");
        assert_eq!(new["EXCLUDE_NAMESPACES"], "kube-system");
        assert!(new.get("EXCLUDED_NAMESPACES").is_none());
        assert!(
            new["AMBIENT_ENABLEMENT_SELECTOR"]
                .as_str()
                .unwrap()
                .contains("istio.io/dataplane-mode")
        );
    }

    #[test]
    fn directives_come_from_the_desired_state_document() {
        let doc = json!({ "clusterName": "c", "purgeCrds": true,
                          "istiodAutoscale": { "minReplicas": 2, "maxReplicas": 4 } });
        let d = Directives::from_document(&doc);
        assert!(d.purge_crds);
        assert_eq!(
            d.istiod_autoscale,
            Some(Autoscale {
                min_replicas: 2,
                max_replicas: 4
            })
        );
        assert_eq!(
            Directives::from_document(&json!({ "clusterName": "c" })),
            Directives::default()
        );
    }

    #[test]
    fn use_waypoint_is_set_only_for_a_namespace_with_exactly_one_waypoint() {
        let mut d = desired("1.28.2");
        d.enrolled_namespaces = vec!["a".into(), "b".into(), "c".into()];
        d.waypoints = vec![
            DesiredWaypoint {
                namespace: "a".into(),
                name: "wa".into(),
                traffic_type: TrafficType::Service,
                replicas: 1,
            },
            DesiredWaypoint {
                namespace: "b".into(),
                name: "w1".into(),
                traffic_type: TrafficType::All,
                replicas: 1,
            },
            DesiredWaypoint {
                namespace: "b".into(),
                name: "w2".into(),
                traffic_type: TrafficType::Workload,
                replicas: 2,
            },
        ];
        let steps = render(&d).unwrap();
        let ns: BTreeMap<String, BTreeMap<String, String>> = steps[5]
            .objects
            .iter()
            .map(|o| (o.reference().name, o.labels()))
            .collect();
        assert_eq!(
            ns["a"].get(USE_WAYPOINT_LABEL).map(String::as_str),
            Some("wa")
        );
        assert_eq!(ns["b"].get(USE_WAYPOINT_LABEL), None);
        assert_eq!(ns["c"].get(USE_WAYPOINT_LABEL), None);
        assert!(
            ns.values()
                .all(|l| l.get(DATAPLANE_MODE_LABEL).map(String::as_str) == Some("ambient"))
        );
    }

    #[test]
    fn permissive_mtls_has_no_peer_authentication() {
        let mut d = desired("1.28.2");
        d.mtls = MtlsMode::Permissive;
        let steps = render(&d).unwrap();
        assert!(steps[6].objects.is_empty());
    }
}
