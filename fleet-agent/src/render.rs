//! Renders a [`DesiredState`] into ordered steps of Kubernetes objects.
//!
//! The steps follow the upstream ambient install/upgrade order (DESIGN §4):
//!
//! 1. `crds` — the Istio CRDs the mesh uses and the Gateway API `Gateway` /
//!    `GatewayClass` CRDs. Their schemas are deliberately permissive
//!    (`x-kubernetes-preserve-unknown-fields: true` on an `object` root): the
//!    agent only needs the types to exist; field validation is left to istiod's
//!    validating webhook. A real deployment would ship the upstream schemas here.
//! 2. `istiod` — the `istio-system` namespace and one *revision* of the control
//!    plane (`istiod-<revision>` and its ServiceAccount, RBAC, mesh ConfigMap
//!    `istio-<revision>`, Service, revision-labelled validating webhook).
//!    Objects are named by revision, so during an upgrade the new revision runs
//!    beside the old one.
//! 3. `istio-cni` — the `istio-cni-node` DaemonSet, upgraded in place.
//! 4. `ztunnel` — the `ztunnel` DaemonSet, upgraded in place one node at a time
//!    (`maxUnavailable: 1`, `maxSurge: 0`), pointed at the new revision.
//! 5. `waypoints` — a Gateway API `Gateway` per waypoint.
//! 6. `namespaces` — the enrolment labels on the enrolled namespaces.
//! 7. `policies` — mesh-wide `PeerAuthentication` for `mtls: strict`.
//!
//! Every object carries [`MANAGED_BY_LABEL`], [`COMPONENT_LABEL`] (the step)
//! and [`CLUSTER_ID_LABEL`]; workloads also carry [`VERSION_LABEL`], from which
//! the observed version is read back.
//!
//! `mode: disabled` renders nothing: everything owned is pruned, in the reverse
//! step order ([`plan_prune`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use meshfleet_model::{
    COMPONENT_LABEL, DesiredState, DesiredWaypoint, LogLevel, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    MeshMode, MtlsMode, TrafficType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::backend::{ObjectRef, OwnedObject, kind_rank};
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
    CustomResourceDefinition(CustomResourceDefinition),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
    Dynamic(DynamicObject),
}

macro_rules! typed_dispatch {
    ($self:expr, $o:ident => $body:expr, $dyn:ident => $dbody:expr) => {
        match $self {
            Object::CustomResourceDefinition($o) => $body,
            Object::Namespace($o) => $body,
            Object::ServiceAccount($o) => $body,
            Object::ClusterRole($o) => $body,
            Object::ClusterRoleBinding($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::Service($o) => $body,
            Object::Deployment($o) => $body,
            Object::DaemonSet($o) => $body,
            Object::ValidatingWebhookConfiguration($o) => $body,
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
        typed_dispatch!(self, o => typed_ref(o), d => {
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
            d => d.metadata.labels.clone().unwrap_or_default())
    }

    /// The object as the JSON body of a server-side apply (with `apiVersion`
    /// and `kind`).
    pub fn to_json(&self) -> Result<Value> {
        Ok(typed_dispatch!(self, o => serde_json::to_value(o)?, d => serde_json::to_value(d)?))
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
}

/// Renders the desired state into its steps, in apply order. Empty for
/// `mode: disabled`.
pub fn render(desired: &DesiredState) -> Result<Vec<RenderedStep>> {
    if desired.mode == MeshMode::Disabled {
        return Ok(Vec::new());
    }
    let r = Renderer { d: desired };
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
}

impl PruneAction {
    pub fn reference(&self) -> &ObjectRef {
        match self {
            PruneAction::Delete { reference, .. } | PruneAction::Release { reference } => reference,
        }
    }
}

/// Plans the pruning of owned objects that are not in `desired`: by component
/// in reverse step order (policies first, CRDs last; unknown components first),
/// and inside a component in reverse [`crate::backend::MANAGED_KINDS`] order
/// (workloads before their RBAC, a Namespace after what it holds). With nothing
/// desired (`mode: disabled`) this is the uninstall, in reverse order.
pub fn plan_prune(desired: &BTreeSet<ObjectRef>, owned: &[OwnedObject]) -> Vec<PruneAction> {
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
        .into_iter()
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

/// What uninstalling does (`mode: disabled`, and so every cluster deletion):
/// the prune of everything the agent owns, in reverse order, except what
/// would destroy what others own. CRDs stay: deleting one deletes every
/// custom resource of its kind in the cluster (the customer's policies, other
/// controllers' Gateways). Namespaces are released (the agent's labels
/// removed), never deleted: `istio-system` may hold objects of others.
pub fn plan_uninstall(owned: &[OwnedObject]) -> Vec<PruneAction> {
    plan_prune(&BTreeSet::new(), owned)
        .into_iter()
        .filter_map(|action| match action {
            PruneAction::Delete { reference, .. }
                if reference.kind == "CustomResourceDefinition" =>
            {
                None
            }
            PruneAction::Delete { reference, .. } if reference.kind == "Namespace" => {
                Some(PruneAction::Release { reference })
            }
            other => Some(other),
        })
        .collect()
}

/// A bare Namespace (name only), applied to release the agent's labels.
pub fn bare_namespace(name: &str) -> Object {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    Object::Namespace(ns)
}

/// One CRD the agent installs (permissive schema, see the module docs).
struct CrdSpec {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    /// Served versions; the last one is the storage version.
    versions: &'static [&'static str],
    namespaced: bool,
}

const ISTIO_NETWORKING: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const ISTIO_SECURITY: &[&str] = &["v1beta1", "v1"];
const GATEWAY_API: &[&str] = &["v1beta1", "v1"];

/// Istio's CRDs that istiod watches in ambient mode, and the Gateway API
/// `GatewayClass`/`Gateway` CRDs (waypoints are Gateways).
const CRDS: &[CrdSpec] = &[
    CrdSpec {
        group: "networking.istio.io",
        kind: "DestinationRule",
        plural: "destinationrules",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "Gateway",
        plural: "gateways",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "ServiceEntry",
        plural: "serviceentries",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "Sidecar",
        plural: "sidecars",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "VirtualService",
        plural: "virtualservices",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "WorkloadGroup",
        plural: "workloadgroups",
        versions: ISTIO_NETWORKING,
        namespaced: true,
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        versions: ISTIO_SECURITY,
        namespaced: true,
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        versions: ISTIO_SECURITY,
        namespaced: true,
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        versions: ISTIO_SECURITY,
        namespaced: true,
    },
    CrdSpec {
        group: "telemetry.istio.io",
        kind: "Telemetry",
        plural: "telemetries",
        versions: &["v1alpha1", "v1"],
        namespaced: true,
    },
    CrdSpec {
        group: "gateway.networking.k8s.io",
        kind: "GatewayClass",
        plural: "gatewayclasses",
        versions: GATEWAY_API,
        namespaced: false,
    },
    CrdSpec {
        group: "gateway.networking.k8s.io",
        kind: "Gateway",
        plural: "gateways",
        versions: GATEWAY_API,
        namespaced: true,
    },
];

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

struct Renderer<'a> {
    d: &'a DesiredState,
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

    fn crds(&self) -> Result<Vec<Object>> {
        CRDS.iter()
            .map(|c| {
                let name = format!("{}.{}", c.plural, c.group);
                let storage = c.versions.last().copied().unwrap_or("v1");
                let versions: Vec<Value> = c
                    .versions
                    .iter()
                    .map(|v| {
                        json!({
                            "name": v,
                            "served": true,
                            "storage": *v == storage,
                            "schema": { "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": true
                            }},
                            "subresources": { "status": {} }
                        })
                    })
                    .collect();
                let singular = c.kind.to_lowercase();
                let crd: CustomResourceDefinition = typed(
                    &name,
                    json!({
                        "apiVersion": "apiextensions.k8s.io/v1",
                        "kind": "CustomResourceDefinition",
                        "metadata": self.meta(Step::Crds, &name, None, &[]),
                        "spec": {
                            "group": c.group,
                            "names": {
                                "kind": c.kind,
                                "listKind": format!("{}List", c.kind),
                                "plural": c.plural,
                                "singular": singular,
                            },
                            "scope": if c.namespaced { "Namespaced" } else { "Cluster" },
                            "versions": versions,
                        }
                    }),
                )?;
                Ok(Object::CustomResourceDefinition(crd))
            })
            .collect()
    }

    fn istiod(&self) -> Result<Vec<Object>> {
        let s = Step::Istiod;
        let rev = self.rev();
        let name = self.istiod_name();
        let version = self.d.version.as_str();
        let rev_labels: &[(&str, &str)] = &[(REVISION_LABEL, rev), ("app", "istiod")];
        let cluster_role = format!("{name}-{ISTIO_NAMESPACE}");
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
        out.push(Object::ClusterRole(typed(
            "istiod cluster role",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": self.meta(s, &cluster_role, None, rev_labels),
                "rules": [
                    { "apiGroups": ["", "discovery.k8s.io"],
                      "resources": ["pods", "nodes", "services", "namespaces", "endpoints", "endpointslices", "configmaps"],
                      "verbs": ["get", "list", "watch"] },
                    { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "update", "patch", "delete"] },
                    { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
                    { "apiGroups": [""], "resources": ["services"], "verbs": ["create", "update", "patch", "delete"] },
                    { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
                    { "apiGroups": ["autoscaling", "policy"], "resources": ["horizontalpodautoscalers", "poddisruptionbudgets"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
                    { "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io"],
                      "resources": ["*"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io"],
                      "resources": ["*/status"], "verbs": ["update", "patch"] },
                    { "apiGroups": ["gateway.networking.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch", "update", "patch"] },
                    { "apiGroups": ["admissionregistration.k8s.io"],
                      "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                      "verbs": ["get", "list", "watch", "update", "patch"] },
                    { "apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
                    { "apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"] },
                    { "apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests", "certificatesigningrequests/approval", "certificatesigningrequests/status"],
                      "verbs": ["get", "list", "watch", "create", "update", "delete"] },
                    { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
                    { "apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"] }
                ]
            }),
        )?));
        out.push(Object::ClusterRoleBinding(typed(
            "istiod cluster role binding",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": self.meta(s, &cluster_role, None, rev_labels),
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
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
        out.push(Object::Service(typed(
            "istiod service",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), rev_labels),
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
        let pod_labels = json!({ "app": "istiod", "istio": "pilot", REVISION_LABEL: rev, VERSION_LABEL: version });
        out.push(Object::Deployment(typed(
            "istiod deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": self.meta(s, &name, Some(ISTIO_NAMESPACE), &[(REVISION_LABEL, rev), ("app", "istiod"), (VERSION_LABEL, version)]),
                "spec": {
                    "replicas": self.d.istiod_replicas,
                    "selector": { "matchLabels": { "app": "istiod", REVISION_LABEL: rev } },
                    "strategy": { "rollingUpdate": { "maxSurge": "100%", "maxUnavailable": "25%" } },
                    "template": {
                        "metadata": { "labels": pod_labels },
                        "spec": {
                            "serviceAccountName": name,
                            "securityContext": { "fsGroup": 1337 },
                            "containers": [{
                                "name": "discovery",
                                "image": self.d.images.istiod,
                                "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
                                         "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                                "ports": [
                                    { "containerPort": 8080, "protocol": "TCP" },
                                    { "containerPort": 15010, "protocol": "TCP" },
                                    { "containerPort": 15012, "protocol": "TCP" },
                                    { "containerPort": 15017, "protocol": "TCP" }
                                ],
                                "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 },
                                                    "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5 },
                                "env": [
                                    env("REVISION", rev),
                                    env("PILOT_ENABLE_AMBIENT", "true"),
                                    env("PILOT_CERT_PROVIDER", "istiod"),
                                    env("ISTIOD_CUSTOM_HOST", &format!("{name}.{ISTIO_NAMESPACE}.svc")),
                                    env_field("POD_NAME", "metadata.name"),
                                    env_field("POD_NAMESPACE", "metadata.namespace"),
                                    env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                                    env("KUBECONFIG", "/var/run/secrets/remote/config"),
                                    env("CLUSTER_ID", "Kubernetes")
                                ],
                                "resources": { "requests": { "cpu": "500m", "memory": "2048Mi" } },
                                "securityContext": {
                                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                                    "capabilities": { "drop": ["ALL"] }
                                },
                                "volumeMounts": [
                                    { "name": "config-volume", "mountPath": "/etc/istio/config" },
                                    { "name": "local-certs", "mountPath": "/var/run/secrets/istio-dns" }
                                ]
                            }],
                            "volumes": [
                                { "name": "config-volume", "configMap": { "name": format!("istio-{rev}") } },
                                { "name": "local-certs", "emptyDir": { "medium": "Memory" } }
                            ]
                        }
                    }
                }
            }),
        )?));
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
        Ok(serde_json::to_string_pretty(&m)?)
    }

    fn istio_cni(&self) -> Result<Vec<Object>> {
        let s = Step::IstioCni;
        let version = self.d.version.as_str();
        let name = "istio-cni";
        let app: &[(&str, &str)] = &[("app", "istio-cni-node")];
        Ok(vec![
            Object::ServiceAccount(typed(
                "istio-cni service account",
                json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": self.meta(s, name, Some(ISTIO_NAMESPACE), app) }),
            )?),
            Object::ClusterRole(typed(
                "istio-cni cluster role",
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": self.meta(s, name, None, app),
                    "rules": [
                        { "apiGroups": [""], "resources": ["pods", "nodes", "namespaces"], "verbs": ["get", "list", "watch"] },
                        { "apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"] },
                        { "apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["istio-cni-node"], "verbs": ["get"] }
                    ]
                }),
            )?),
            Object::ClusterRoleBinding(typed(
                "istio-cni cluster role binding",
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": self.meta(s, name, None, app),
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
                    "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ISTIO_NAMESPACE }]
                }),
            )?),
            Object::DaemonSet(typed(
                "istio-cni daemonset",
                json!({
                    "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": self.meta(s, "istio-cni-node", Some(ISTIO_NAMESPACE), &[("app", "istio-cni-node"), (VERSION_LABEL, version)]),
                    "spec": {
                        "selector": { "matchLabels": { "app": "istio-cni-node" } },
                        // In place, never canaried (DESIGN §4).
                        "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
                        "template": {
                            "metadata": { "labels": { "app": "istio-cni-node", VERSION_LABEL: version } },
                            "spec": {
                                "serviceAccountName": name,
                                "hostNetwork": true,
                                "priorityClassName": "system-node-critical",
                                "tolerations": [{ "operator": "Exists" }],
                                "terminationGracePeriodSeconds": 5,
                                "containers": [{
                                    "name": "install-cni",
                                    "image": self.d.images.cni,
                                    "command": ["install-cni"],
                                    "args": ["--log_output_level=info"],
                                    "env": [
                                        env("AMBIENT_ENABLED", "true"),
                                        env("CNI_NET_DIR", "/etc/cni/net.d"),
                                        env("CHAINED_CNI_PLUGIN", "true"),
                                        env("REPAIR_ENABLED", "true"),
                                        env_field("NODE_NAME", "spec.nodeName"),
                                        env_field("POD_NAME", "metadata.name"),
                                        env_field("POD_NAMESPACE", "metadata.namespace")
                                    ],
                                    "readinessProbe": { "httpGet": { "path": "/readyz", "port": 8000 } },
                                    "resources": { "requests": { "cpu": "100m", "memory": "100Mi" } },
                                    "securityContext": { "privileged": true, "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false },
                                    "volumeMounts": [
                                        { "name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin" },
                                        { "name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d" },
                                        { "name": "cni-socket-dir", "mountPath": "/var/run/istio-cni" },
                                        { "name": "cni-netns-dir", "mountPath": "/host/proc", "readOnly": true }
                                    ]
                                }],
                                "volumes": [
                                    { "name": "cni-bin-dir", "hostPath": { "path": "/opt/cni/bin" } },
                                    { "name": "cni-net-dir", "hostPath": { "path": "/etc/cni/net.d" } },
                                    { "name": "cni-socket-dir", "hostPath": { "path": "/var/run/istio-cni" } },
                                    { "name": "cni-netns-dir", "hostPath": { "path": "/proc", "type": "Directory" } }
                                ]
                            }
                        }
                    }
                }),
            )?),
        ])
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
                            "metadata": { "labels": { "app": "ztunnel", VERSION_LABEL: version, "sidecar.istio.io/inject": "false" } },
                            "spec": {
                                "serviceAccountName": "ztunnel",
                                "priorityClassName": "system-node-critical",
                                "tolerations": [{ "operator": "Exists" }],
                                "terminationGracePeriodSeconds": 30,
                                "containers": [{
                                    "name": "istio-proxy",
                                    "image": self.d.images.ztunnel,
                                    "args": ["proxy", "ztunnel"],
                                    "env": [
                                        env("RUST_LOG", log_level(self.d.ztunnel_log_level)),
                                        env("CA_ADDRESS", &ca),
                                        env("XDS_ADDRESS", &ca),
                                        env("ISTIO_META_CLUSTER_ID", "Kubernetes"),
                                        env_field("NODE_NAME", "spec.nodeName"),
                                        env_field("POD_NAME", "metadata.name"),
                                        env_field("POD_NAMESPACE", "metadata.namespace"),
                                        env_field("INSTANCE_IP", "status.podIP"),
                                        env_field("SERVICE_ACCOUNT", "spec.serviceAccountName")
                                    ],
                                    "ports": [{ "containerPort": 15020, "name": "ztunnel-stats", "protocol": "TCP" }],
                                    "readinessProbe": { "httpGet": { "path": "/healthz/ready", "port": 15021 } },
                                    "resources": { "requests": requests },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": false, "privileged": false,
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

    fn waypoints(&self) -> Result<Vec<Object>> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
            "gateways",
        );
        let mut wps: Vec<&DesiredWaypoint> = self.d.waypoints.iter().collect();
        wps.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        wps.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
        let mut out = Vec::new();
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
                    (REVISION_LABEL, self.rev()),
                ],
            );
            let mut gw = DynamicObject::new(&w.name, &ar).within(&w.namespace).data(json!({
                "spec": {
                    "gatewayClassName": "istio-waypoint",
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
    fn disabled_renders_nothing_and_prunes_in_reverse_step_order() {
        let mut d = desired("1.28.2");
        let owned: Vec<OwnedObject> = crate::testing::owned_objects(&render(&d).unwrap());
        d.mode = MeshMode::Disabled;
        assert!(render(&d).unwrap().is_empty());
        let plan = plan_prune(&BTreeSet::new(), &owned);
        assert_eq!(plan.len(), owned.len());
        let components: Vec<String> = plan
            .iter()
            .map(|a| match a {
                PruneAction::Delete { component, .. } => component.clone().unwrap(),
                PruneAction::Release { .. } => "namespaces".to_string(),
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
                "crds"
            ]
        );
        // Inside istiod: the Deployment goes before its ServiceAccount, the
        // Namespace last.
        let istiod: Vec<&ObjectRef> = plan
            .iter()
            .filter(
                |a| matches!(a, PruneAction::Delete { component: Some(c), .. } if c == "istiod"),
            )
            .map(PruneAction::reference)
            .collect();
        assert_eq!(istiod.last().unwrap().kind, "Namespace");
        let dep = istiod.iter().position(|r| r.kind == "Deployment").unwrap();
        let sa = istiod
            .iter()
            .position(|r| r.kind == "ServiceAccount")
            .unwrap();
        assert!(dep < sa);
        // Enrolled namespaces are released, never deleted.
        assert!(plan.iter().all(|a| match a {
            PruneAction::Delete {
                reference,
                component,
            } => reference.kind != "Namespace" || component.as_deref() == Some("istiod"),
            PruneAction::Release { reference } => reference.kind == "Namespace",
        }));
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
