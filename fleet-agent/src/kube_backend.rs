//! The real [`ClusterBackend`]: kube-rs against the cluster's API server.
//!
//! Every apply is a server-side apply (`PATCH` with
//! `application/apply-patch+yaml`, `fieldManager=meshfleet-agent`,
//! `force=true` — but never `force` for a CRD: a field another manager owns
//! makes the apply fail rather than change hands), preceded by a `GET` so that the agent can tell whether the
//! live object changed (drift) — comparing the objects without `status`,
//! `resourceVersion`, `generation` and `managedFields`, so that status updates of a
//! Deployment do not count as drift.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, ResourceExt};
use meshfleet_model::{
    COMPONENT_LABEL, ClusterFacts, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use serde_json::Value;
use tracing::debug;

use crate::backend::{
    Applied, ClusterBackend, MANAGED_KINDS, ManagedKind, NAMESPACE_CONTENT_KINDS, ObjectRef,
    OwnedObject, SecretData, WorkloadStatus,
};
use crate::error::{Error, Result};
use crate::ownership::{LiveCrd, NamespaceObject};
use crate::render::{Object, VERSION_LABEL};

/// A [`ClusterBackend`] over a kube-rs [`Client`].
#[derive(Clone)]
pub struct KubeBackend {
    client: Client,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend").finish_non_exhaustive()
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => Error::Kube {
                code: Some(status.code),
                message: if status.message.is_empty() {
                    format!("{} ({})", status.reason, status.code)
                } else {
                    status.message.clone()
                },
            },
            other => Error::Kube {
                code: None,
                message: other.to_string(),
            },
        }
    }
}

fn api_resource(kind: &ManagedKind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind),
        kind.plural,
    )
}

/// The parts of an object that say what it is, not what happened to it.
fn comparable(o: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
            // Moves with the spec, which is compared itself.
            meta.remove("generation");
        }
    }
    v
}

fn ignore_not_found<T>(r: std::result::Result<T, kube::Error>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl KubeBackend {
    pub fn new(client: Client) -> Self {
        KubeBackend { client }
    }

    /// In-cluster configuration, or the local kubeconfig.
    pub async fn try_default() -> Result<Self> {
        let client = Client::try_default().await?;
        Ok(Self::new(client))
    }

    fn api(&self, reference: &ObjectRef) -> Result<Api<DynamicObject>> {
        let kind = reference.managed_kind().ok_or_else(|| {
            Error::UnsupportedKind(format!("{} {}", reference.api_version, reference.kind))
        })?;
        let ar = api_resource(kind);
        Ok(match (&reference.namespace, kind.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (None, false) => Api::all_with(self.client.clone(), &ar),
            _ => {
                return Err(Error::UnsupportedKind(format!(
                    "{reference}: namespace does not match the scope of {}",
                    kind.kind
                )));
            }
        })
    }
}

impl ClusterBackend for KubeBackend {
    async fn apply(&self, object: &Object) -> Result<Applied> {
        let reference = object.reference();
        let api = self.api(&reference)?;
        let body = object.to_json()?;
        let before = api.get_opt(&reference.name).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if reference.kind != "CustomResourceDefinition" {
            params = params.force();
        }
        let after = api
            .patch(&reference.name, &params, &Patch::Apply(&body))
            .await?;
        let applied = match before {
            None => Applied {
                created: true,
                changed: true,
            },
            Some(before) => Applied {
                created: false,
                changed: comparable(&before) != comparable(&after),
            },
        };
        debug!(object = %reference, changed = applied.changed, "server-side applied");
        Ok(applied)
    }

    async fn delete(&self, reference: &ObjectRef) -> Result<()> {
        let api = self.api(reference)?;
        ignore_not_found(
            api.delete(&reference.name, &DeleteParams::background())
                .await,
        )?;
        Ok(())
    }

    async fn list_owned(&self) -> Result<Vec<OwnedObject>> {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let lp = ListParams::default().labels(&selector);
        let mut owned = Vec::new();
        for kind in MANAGED_KINDS {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &api_resource(kind));
            // A custom kind whose CRD is not installed (yet) owns nothing.
            let Some(list) = ignore_not_found(api.list_metadata(&lp).await)? else {
                continue;
            };
            for item in list.items {
                owned.push(OwnedObject {
                    reference: ObjectRef {
                        api_version: kind.api_version.to_string(),
                        kind: kind.kind.to_string(),
                        namespace: item.namespace(),
                        name: item.name_any(),
                    },
                    component: item.labels().get(COMPONENT_LABEL).cloned(),
                });
            }
        }
        Ok(owned)
    }

    async fn workload_status(&self, reference: &ObjectRef) -> Result<Option<WorkloadStatus>> {
        let ns = reference.namespace.as_deref().unwrap_or_default();
        match reference.kind.as_str() {
            "Deployment" => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                Ok(api
                    .get_opt(&reference.name)
                    .await?
                    .map(|d| deployment_status(&d)))
            }
            "DaemonSet" => {
                let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
                Ok(api
                    .get_opt(&reference.name)
                    .await?
                    .map(|d| daemon_set_status(&d)))
            }
            _ => Err(Error::UnsupportedKind(format!(
                "{reference} has no rollout status"
            ))),
        }
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<SecretData>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(secret) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let mut out: SecretData = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        // stringData is write-only on a real API server; kept for completeness.
        for (k, v) in secret.string_data.unwrap_or_default() {
            out.entry(k).or_insert(v);
        }
        Ok(Some(out))
    }

    async fn put_secret(&self, namespace: &str, name: &str, data: SecretData) -> Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        // Deliberately without the managed-by label: pruning must never delete it.
        let mut secret = Secret {
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            type_: Some("Opaque".to_string()),
            ..Secret::default()
        };
        secret.metadata.name = Some(name.to_string());
        secret.metadata.namespace = Some(namespace.to_string());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(&secret)).await?;
        Ok(())
    }

    async fn get_object(&self, reference: &ObjectRef) -> Result<Option<Value>> {
        let api = self.api(reference)?;
        match api.get_opt(&reference.name).await? {
            Some(o) => Ok(Some(serde_json::to_value(o)?)),
            None => Ok(None),
        }
    }

    async fn list_crds(&self) -> Result<Vec<LiveCrd>> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let list = api.list_metadata(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .map(|item| {
                let name = item.name_any();
                let mut crd = LiveCrd::named(&name);
                crd.labels = item.labels().clone();
                crd.annotations = item.annotations().clone();
                crd.managers = item
                    .metadata
                    .managed_fields
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m.subresource.as_deref().unwrap_or("").is_empty())
                    .filter_map(|m| m.manager)
                    .collect();
                crd
            })
            .collect())
    }

    async fn foreign_custom_resources(&self, crd: &str, limit: u32) -> Result<Vec<ObjectRef>> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let Some(crd) = crds.get_opt(crd).await? else {
            return Ok(Vec::new());
        };
        // Any served version lists every object of the kind; prefer the
        // storage version.
        let versions = &crd.spec.versions;
        let Some(version) = versions
            .iter()
            .find(|v| v.storage && v.served)
            .or_else(|| versions.iter().find(|v| v.served))
        else {
            return Ok(Vec::new());
        };
        let names = &crd.spec.names;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&crd.spec.group, &version.name, &names.kind),
            &names.plural,
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let params = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}!={MANAGED_BY_VALUE}"))
            .limit(limit);
        let Some(list) = ignore_not_found(api.list_metadata(&params).await)? else {
            return Ok(Vec::new());
        };
        Ok(list
            .items
            .into_iter()
            .map(|item| {
                ObjectRef::new(
                    &ar.api_version,
                    &ar.kind,
                    item.metadata.namespace.as_deref(),
                    &item.name_any(),
                )
            })
            .collect())
    }

    async fn namespace_contents(&self, namespace: &str) -> Result<Vec<NamespaceObject>> {
        let mut out = Vec::new();
        for kind in MANAGED_KINDS
            .iter()
            .chain(NAMESPACE_CONTENT_KINDS)
            .filter(|k| k.namespaced)
        {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind));
            let Some(list) = ignore_not_found(api.list_metadata(&ListParams::default()).await)?
            else {
                continue;
            };
            for item in list.items {
                out.push(NamespaceObject {
                    reference: ObjectRef::new(
                        kind.api_version,
                        kind.kind,
                        Some(namespace),
                        &item.name_any(),
                    ),
                    labels: item.labels().clone(),
                });
            }
        }
        Ok(out)
    }

    async fn facts(&self) -> Result<ClusterFacts> {
        let version = self.client.apiserver_version().await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list_metadata(&ListParams::default()).await?;
        Ok(ClusterFacts {
            kubernetes_version: Some(version.git_version),
            node_count: u32::try_from(list.items.len()).ok(),
            agent_version: None,
            platform: None,
        })
    }
}

fn failing_condition<'a>(
    conditions: impl Iterator<Item = (&'a str, &'a str, Option<&'a String>)>,
) -> Option<String> {
    conditions
        .filter(|(_, status, _)| *status == "False")
        .find_map(|(type_, _, message)| message.map(|m| format!("{type_}: {m}")))
}

fn deployment_status(d: &Deployment) -> WorkloadStatus {
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1);
    let conditions = status.conditions.as_deref().unwrap_or_default();
    WorkloadStatus {
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        desired,
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        version: d.labels().get(VERSION_LABEL).cloned(),
        message: failing_condition(conditions.iter().map(|c| {
            (
                c.type_.as_deref().unwrap_or(""),
                c.status.as_deref().unwrap_or(""),
                c.message.as_ref(),
            )
        })),
    }
}

fn daemon_set_status(d: &DaemonSet) -> WorkloadStatus {
    let status = d.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_deref().unwrap_or_default();
    WorkloadStatus {
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        desired: status.desired_number_scheduled,
        ready: status.number_ready,
        updated: status.updated_number_scheduled.unwrap_or(0),
        version: d.labels().get(VERSION_LABEL).cloned(),
        message: failing_condition(conditions.iter().map(|c| {
            (
                c.type_.as_deref().unwrap_or(""),
                c.status.as_deref().unwrap_or(""),
                c.message.as_ref(),
            )
        })),
    }
}
