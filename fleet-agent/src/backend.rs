//! The narrow interface between the agent and a Kubernetes cluster.
//!
//! Two implementations: [`crate::kube_backend::KubeBackend`] (kube-rs, the real
//! thing) and [`crate::sim::SimCluster`] (an in-memory simulated cluster for
//! tests and the fleet simulator).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use meshfleet_model::ClusterFacts;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ownership::{LiveCrd, NamespaceObject};
use crate::render::Object;

/// Identifies one Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    pub fn deployment(namespace: &str, name: &str) -> Self {
        Self::new("apps/v1", "Deployment", Some(namespace), name)
    }

    pub fn daemon_set(namespace: &str, name: &str) -> Self {
        Self::new("apps/v1", "DaemonSet", Some(namespace), name)
    }

    /// Deployments and DaemonSets: the kinds whose rollout the agent waits for.
    pub fn is_workload(&self) -> bool {
        self.api_version == "apps/v1" && (self.kind == "Deployment" || self.kind == "DaemonSet")
    }

    /// The [`ManagedKind`] of this reference, if the agent manages the kind.
    pub fn managed_kind(&self) -> Option<&'static ManagedKind> {
        MANAGED_KINDS
            .iter()
            .find(|k| k.api_version == self.api_version && k.kind == self.kind)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A kind of object the agent renders, with what the API needs to address it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl ManagedKind {
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    pub fn version(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version, |(_, v)| v)
    }
}

/// Every kind the agent renders, in "creation" order: a kind listed earlier is
/// never needed by one listed later, so pruning deletes in the reverse order
/// (workloads before their ServiceAccounts, the Namespace last, CRDs after the
/// custom resources that use them).
pub const MANAGED_KINDS: &[ManagedKind] = &[
    ManagedKind {
        api_version: "apiextensions.k8s.io/v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
    },
    ManagedKind {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    ManagedKind {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    ManagedKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
    },
    ManagedKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
    },
    ManagedKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
    },
    ManagedKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
    },
    ManagedKind {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    ManagedKind {
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    ManagedKind {
        api_version: "apps/v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    },
    ManagedKind {
        api_version: "policy/v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
    },
    ManagedKind {
        api_version: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        namespaced: true,
    },
    ManagedKind {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingWebhookConfiguration",
        plural: "validatingwebhookconfigurations",
        namespaced: false,
    },
    ManagedKind {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "MutatingWebhookConfiguration",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
    },
    ManagedKind {
        api_version: "apps/v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        namespaced: true,
    },
    ManagedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "Gateway",
        plural: "gateways",
        namespaced: true,
    },
    ManagedKind {
        api_version: "security.istio.io/v1",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        namespaced: true,
    },
];

/// The kinds whose objects decide whether a namespace the agent created is
/// empty of anything else ([`crate::ownership::namespace_is_empty`]): the
/// managed kinds, the workloads' pods and ReplicaSets, Secrets, and the
/// custom resources a tenant puts into `istio-system`. Kinds whose CRD is
/// not installed are skipped.
pub const NAMESPACE_CONTENT_KINDS: &[ManagedKind] = &[
    ManagedKind {
        api_version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
    },
    ManagedKind {
        api_version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    ManagedKind {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        namespaced: true,
    },
    ManagedKind {
        api_version: "apps/v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        namespaced: true,
    },
    ManagedKind {
        api_version: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        namespaced: true,
    },
    ManagedKind {
        api_version: "security.istio.io/v1",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        namespaced: true,
    },
    ManagedKind {
        api_version: "telemetry.istio.io/v1",
        kind: "Telemetry",
        plural: "telemetries",
        namespaced: true,
    },
    ManagedKind {
        api_version: "networking.istio.io/v1",
        kind: "Gateway",
        plural: "gateways",
        namespaced: true,
    },
    ManagedKind {
        api_version: "networking.istio.io/v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
        namespaced: true,
    },
    ManagedKind {
        api_version: "networking.istio.io/v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespaced: true,
    },
    ManagedKind {
        api_version: "networking.istio.io/v1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
    },
    ManagedKind {
        api_version: "networking.istio.io/v1alpha3",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        namespaced: true,
    },
];

/// Position of a kind in [`MANAGED_KINDS`] (unknown kinds sort last).
pub fn kind_rank(api_version: &str, kind: &str) -> usize {
    MANAGED_KINDS
        .iter()
        .position(|k| k.api_version == api_version && k.kind == kind)
        .unwrap_or(MANAGED_KINDS.len())
}

/// An object in the cluster that carries the agent's managed-by label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedObject {
    pub reference: ObjectRef,
    /// The value of [`meshfleet_model::COMPONENT_LABEL`], if present.
    pub component: Option<String>,
}

/// What one server-side apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The object did not exist before.
    pub created: bool,
    /// The live object differs from what it was before the apply (ignoring
    /// `status`, `resourceVersion` and `managedFields`). On a periodic
    /// re-apply of an unchanged desired state this means drift was corrected.
    pub changed: bool,
}

/// The rollout state of a Deployment or DaemonSet, read from its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration` (0 when the controller has not seen it yet).
    pub observed_generation: i64,
    /// Deployment: `spec.replicas`; DaemonSet: `status.desiredNumberScheduled`.
    pub desired: i32,
    /// Deployment: `status.readyReplicas`; DaemonSet: `status.numberReady`.
    pub ready: i32,
    /// Deployment: `status.updatedReplicas`; DaemonSet: `status.updatedNumberScheduled`.
    pub updated: i32,
    /// The `app.kubernetes.io/version` label of the live object.
    pub version: Option<String>,
    /// The message of a failing status condition, if any.
    pub message: Option<String>,
}

impl WorkloadStatus {
    /// The rollout is complete: the controller saw the current spec, every
    /// replica (node) runs it and is ready.
    pub fn is_ready(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.desired
            && self.ready >= self.desired
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}/{} ready, {}/{} updated",
            self.ready, self.desired, self.updated, self.desired
        );
        if self.observed_generation < self.generation {
            s.push_str(&format!(
                ", generation {} not yet observed",
                self.generation
            ));
        }
        if let Some(m) = &self.message {
            s.push_str(": ");
            s.push_str(m);
        }
        s
    }
}

/// String data of a Secret.
pub type SecretData = BTreeMap<String, String>;

/// What the agent needs from a cluster. Implementations are cheap to clone
/// (they share their state) and safe to use from several tasks.
pub trait ClusterBackend: Clone + Send + Sync + 'static {
    /// Server-side apply of `object` under [`meshfleet_model::FIELD_MANAGER`],
    /// forcing ownership of conflicting fields — except for CRDs, which are
    /// never forced (a conflict fails the apply).
    fn apply(&self, object: &Object) -> impl Future<Output = Result<Applied>> + Send;

    /// Deletes an object (background propagation). A missing object is not an error.
    fn delete(&self, reference: &ObjectRef) -> impl Future<Output = Result<()>> + Send;

    /// Every object of the managed kinds that carries
    /// `MANAGED_BY_LABEL=MANAGED_BY_VALUE`.
    fn list_owned(&self) -> impl Future<Output = Result<Vec<OwnedObject>>> + Send;

    /// The rollout state of a Deployment or DaemonSet; `None` if it does not exist.
    fn workload_status(
        &self,
        reference: &ObjectRef,
    ) -> impl Future<Output = Result<Option<WorkloadStatus>>> + Send;

    /// The string data of a Secret; `None` if it does not exist.
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SecretData>>> + Send;

    /// Creates or replaces the data of a Secret.
    fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: SecretData,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A managed-kind object as it is in the cluster (with `status`); `None`
    /// if it does not exist.
    fn get_object(
        &self,
        reference: &ObjectRef,
    ) -> impl Future<Output = Result<Option<serde_json::Value>>> + Send;

    /// Every CRD in the cluster (metadata and field managers).
    fn list_crds(&self) -> impl Future<Output = Result<Vec<LiveCrd>>> + Send;

    /// Custom resources of the CRD named `crd` (in every namespace) that do
    /// not carry the agent's managed-by label, at most `limit` of them.
    /// Empty if the CRD does not exist.
    fn foreign_custom_resources(
        &self,
        crd: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ObjectRef>>> + Send;

    /// The objects of [`MANAGED_KINDS`] and [`NAMESPACE_CONTENT_KINDS`] in
    /// `namespace`, with their labels.
    fn namespace_contents(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<NamespaceObject>>> + Send;

    /// Kubernetes version and node count.
    fn facts(&self) -> impl Future<Output = Result<ClusterFacts>> + Send;
}
