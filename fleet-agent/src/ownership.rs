//! What the agent may touch in a cluster that is not only its own.
//!
//! CRDs (decided per pass by [`plan_crds`], before the `crds` step applies):
//! - installed when absent, upgraded when the live CRD is the agent's and
//!   older than the bundle's (or carries no version the agent wrote),
//!   re-applied when equal (drift), **never downgraded**;
//! - never applied over a CRD another field manager owns (the platform, a
//!   previous Istio install, `kubectl`): reported in the `crds` component's
//!   conditions instead;
//! - Gateway API CRDs only when the cluster has none the agent did not
//!   install (cloud platforms often provide and manage them).
//!
//! Uninstall ([`crate::render::plan_uninstall`]) deletes only objects that
//! carry the agent's label, keeps CRDs (and so every custom resource) unless
//! purging is asked for, and deletes `istio-system` only if the agent created
//! it and it holds nothing else ([`namespace_is_empty`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use meshfleet_model::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use serde::{Deserialize, Serialize};

use crate::backend::ObjectRef;
use crate::bundle::CrdFamily;

/// A CRD as it is in the cluster (metadata only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveCrd {
    pub name: String,
    /// `spec.group`, when known; otherwise derived from the name.
    pub group: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The field managers of the object's main resource (`managedFields`
    /// entries not for the `status` subresource).
    pub managers: Vec<String>,
}

impl LiveCrd {
    /// A CRD from its name, with the group taken from the name.
    pub fn named(name: &str) -> LiveCrd {
        LiveCrd {
            name: name.to_string(),
            group: name
                .split_once('.')
                .map(|(_, g)| g.to_string())
                .unwrap_or_default(),
            ..LiveCrd::default()
        }
    }

    /// Carries the agent's managed-by label.
    pub fn labelled_ours(&self) -> bool {
        self.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
    }

    /// Field managers other than the agent's. An object with no managed
    /// fields at all (created before server-side apply tracked them) that does
    /// not carry the agent's label is someone else's (`unknown`).
    pub fn other_managers(&self) -> Vec<String> {
        let mut others: Vec<String> = self
            .managers
            .iter()
            .filter(|m| m.as_str() != FIELD_MANAGER)
            .cloned()
            .collect();
        others.sort();
        others.dedup();
        if others.is_empty() && self.managers.is_empty() && !self.labelled_ours() {
            others.push("unknown".to_string());
        }
        others
    }

    /// Installed by the agent and by nobody else.
    pub fn is_ours(&self) -> bool {
        self.labelled_ours() && self.other_managers().is_empty()
    }
}

/// A CRD of the bundle as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdKey {
    pub name: String,
    pub family: CrdFamily,
    /// The Istio release or Gateway API version the bundle carries.
    pub version: String,
}

/// What to do with one CRD of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdDecision {
    /// Absent: install.
    Install,
    /// The agent's and older (or unversioned): upgrade.
    Upgrade { from: Option<String> },
    /// The agent's, same version: re-apply (corrects drift, changes nothing).
    Current,
    /// The agent's but newer than the bundle: never downgraded.
    KeepNewer { live: String },
    /// Another field manager owns it: not applied, reported.
    OwnedByOthers { managers: Vec<String> },
    /// A Gateway API CRD while the cluster already has Gateway API CRDs the
    /// agent did not install: not applied.
    ProvidedByCluster { version: Option<String> },
}

impl CrdDecision {
    /// The agent applies the CRD.
    pub fn applies(&self) -> bool {
        matches!(
            self,
            CrdDecision::Install | CrdDecision::Upgrade { .. } | CrdDecision::Current
        )
    }

    /// The reason reported in the `crds` component's conditions for a CRD the
    /// agent leaves alone.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            CrdDecision::KeepNewer { .. } => Some("NewerInCluster"),
            CrdDecision::OwnedByOthers { .. } => Some("OwnedByOtherManager"),
            CrdDecision::ProvidedByCluster { .. } => Some("ProvidedByCluster"),
            _ => None,
        }
    }
}

/// Compares two release versions (`1.28.2`, `v1.4.0`, `1.4.0-rc.1`) by their
/// numeric parts; `None` if either has none.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    fn parts(v: &str) -> Option<Vec<u64>> {
        let core = v.trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or(core);
        core.split('.').map(|p| p.parse().ok()).collect()
    }
    let (a, b) = (parts(a)?, parts(b)?);
    Some(a.cmp(&b))
}

/// Decides, for every CRD of the bundle, what the agent does with it given
/// the CRDs in the cluster. Same order as `bundle`.
pub fn plan_crds(bundle: &[CrdKey], live: &[LiveCrd]) -> Vec<(String, CrdDecision)> {
    let by_name: BTreeMap<&str, &LiveCrd> = live.iter().map(|c| (c.name.as_str(), c)).collect();
    // "The cluster has Gateway API CRDs": any CRD of the group the agent did
    // not install.
    let provided: Option<&LiveCrd> = live
        .iter()
        .find(|c| CrdFamily::of_group(&c.group) == Some(CrdFamily::GatewayApi) && !c.is_ours());
    bundle
        .iter()
        .map(|want| {
            let name = want.name.clone();
            let current = by_name.get(name.as_str()).copied();
            let decision = match (want.family, provided, current) {
                (CrdFamily::GatewayApi, Some(p), _) => CrdDecision::ProvidedByCluster {
                    version: p.annotations.get(want.family.version_annotation()).cloned(),
                },
                (_, _, None) => CrdDecision::Install,
                (_, _, Some(c)) => decide_one(want, c),
            };
            (name, decision)
        })
        .collect()
}

fn decide_one(want: &CrdKey, live: &LiveCrd) -> CrdDecision {
    let others = live.other_managers();
    if !others.is_empty() || !live.labelled_ours() {
        return CrdDecision::OwnedByOthers { managers: others };
    }
    let live_version = live
        .annotations
        .get(want.family.version_annotation())
        .cloned();
    match live_version
        .as_deref()
        .and_then(|v| compare_versions(v, &want.version))
    {
        None => CrdDecision::Upgrade { from: live_version },
        Some(Ordering::Less) => CrdDecision::Upgrade { from: live_version },
        Some(Ordering::Equal) => CrdDecision::Current,
        Some(Ordering::Greater) => CrdDecision::KeepNewer {
            live: live_version.unwrap_or_default(),
        },
    }
}

/// An object found in a namespace, for [`namespace_is_empty`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceObject {
    pub reference: ObjectRef,
    pub labels: BTreeMap<String, String>,
}

/// What Kubernetes and Istio put into `istio-system` by themselves and which
/// goes with the mesh: the root-CA ConfigMaps, istiod's self-signed CA
/// Secret, the `default` ServiceAccount, and the pods of the agent's own
/// workloads that are still terminating.
fn is_residue(o: &NamespaceObject) -> bool {
    let r = &o.reference;
    match r.kind.as_str() {
        "ConfigMap" => matches!(r.name.as_str(), "kube-root-ca.crt" | "istio-ca-root-cert"),
        "Secret" => r.name == "istio-ca-secret",
        "ServiceAccount" => r.name == "default",
        "Pod" | "ReplicaSet" => o
            .labels
            .get("app")
            .is_some_and(|a| matches!(a.as_str(), "istiod" | "istio-cni-node" | "ztunnel")),
        _ => false,
    }
}

/// The objects in a namespace that are neither the agent's nor residue of
/// the mesh; the namespace may be deleted only if this is empty.
pub fn foreign_objects(contents: &[NamespaceObject]) -> Vec<&ObjectRef> {
    contents
        .iter()
        .filter(|o| o.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE))
        .filter(|o| !is_residue(o))
        .map(|o| &o.reference)
        .collect()
}

/// A namespace holds nothing but the agent's objects and mesh residue.
pub fn namespace_is_empty(contents: &[NamespaceObject]) -> bool {
    foreign_objects(contents).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;

    fn ours(name: &str, annotation: Option<(&str, &str)>) -> LiveCrd {
        let mut c = LiveCrd::named(name);
        c.labels
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        c.managers = vec![FIELD_MANAGER.to_string()];
        if let Some((k, v)) = annotation {
            c.annotations.insert(k.into(), v.into());
        }
        c
    }

    fn keys(b: &Bundle) -> Vec<CrdKey> {
        b.crds().iter().map(|c| c.key()).collect()
    }

    fn decision(plan: &[(String, CrdDecision)], name: &str) -> CrdDecision {
        plan.iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap()
    }

    const AP: &str = "authorizationpolicies.security.istio.io";
    const GW: &str = "gateways.gateway.networking.k8s.io";

    #[test]
    fn an_absent_crd_is_installed() {
        let b = Bundle::development("1.28.2");
        let plan = plan_crds(&keys(&b), &[]);
        assert_eq!(plan.len(), b.crds().len());
        assert!(plan.iter().all(|(_, d)| *d == CrdDecision::Install));
    }

    #[test]
    fn an_older_crd_of_the_agent_is_upgraded_and_an_unversioned_one_too() {
        let b = Bundle::development("1.28.2");
        let live = [
            ours(AP, Some(("meshfleet.dev/release", "1.27.1"))),
            ours("peerauthentications.security.istio.io", None),
            ours(
                GW,
                Some((crate::bundle::GATEWAY_API_VERSION_ANNOTATION, "v1.3.0")),
            ),
        ];
        let plan = plan_crds(&keys(&b), &live);
        assert_eq!(
            decision(&plan, AP),
            CrdDecision::Upgrade {
                from: Some("1.27.1".into())
            }
        );
        assert_eq!(
            decision(&plan, "peerauthentications.security.istio.io"),
            CrdDecision::Upgrade { from: None }
        );
        assert_eq!(
            decision(&plan, GW),
            CrdDecision::Upgrade {
                from: Some("v1.3.0".into())
            }
        );
        assert!(decision(&plan, AP).applies());
    }

    #[test]
    fn a_newer_crd_is_never_downgraded_and_an_equal_one_is_re_applied() {
        let b = Bundle::development("1.27.1");
        let live = [
            ours(AP, Some(("meshfleet.dev/release", "1.28.2"))),
            ours(
                "telemetries.telemetry.istio.io",
                Some(("meshfleet.dev/release", "1.27.1")),
            ),
        ];
        let plan = plan_crds(&keys(&b), &live);
        let newer = decision(&plan, AP);
        assert_eq!(
            newer,
            CrdDecision::KeepNewer {
                live: "1.28.2".into()
            }
        );
        assert!(!newer.applies());
        assert_eq!(newer.reason(), Some("NewerInCluster"));
        assert_eq!(
            decision(&plan, "telemetries.telemetry.istio.io"),
            CrdDecision::Current
        );
    }

    #[test]
    fn a_crd_another_manager_owns_is_not_applied() {
        let b = Bundle::development("1.28.2");
        // A previous Istio install by Helm: no label of ours.
        let mut helm = LiveCrd::named(AP);
        helm.managers = vec!["helm".into()];
        // Ours, but someone edited it with kubectl since.
        let mut shared = ours(
            "peerauthentications.security.istio.io",
            Some(("meshfleet.dev/release", "1.27.1")),
        );
        shared.managers.push("kubectl-edit".into());
        // Created long ago, no managed fields, not labelled.
        let legacy = LiveCrd::named("sidecars.networking.istio.io");
        let plan = plan_crds(&keys(&b), &[helm, shared, legacy]);
        assert_eq!(
            decision(&plan, AP),
            CrdDecision::OwnedByOthers {
                managers: vec!["helm".into()]
            }
        );
        assert_eq!(
            decision(&plan, "peerauthentications.security.istio.io"),
            CrdDecision::OwnedByOthers {
                managers: vec!["kubectl-edit".into()]
            }
        );
        assert_eq!(
            decision(&plan, "sidecars.networking.istio.io"),
            CrdDecision::OwnedByOthers {
                managers: vec!["unknown".into()]
            }
        );
        assert!(!decision(&plan, AP).applies());
    }

    #[test]
    fn gateway_api_crds_are_installed_only_when_the_cluster_has_none() {
        let b = Bundle::development("1.28.2");
        // The platform provides Gateway API v1.3.0, though not GRPCRoute.
        let mut platform = LiveCrd::named(GW);
        platform.managers = vec!["addon-manager".into()];
        platform.annotations.insert(
            crate::bundle::GATEWAY_API_VERSION_ANNOTATION.into(),
            "v1.3.0".into(),
        );
        let plan = plan_crds(&keys(&b), &[platform]);
        for (name, d) in &plan {
            if name.ends_with(".gateway.networking.k8s.io") {
                assert_eq!(
                    *d,
                    CrdDecision::ProvidedByCluster {
                        version: Some("v1.3.0".into())
                    },
                    "{name}"
                );
            } else {
                assert_eq!(*d, CrdDecision::Install, "{name}");
            }
        }
        // Gateway API CRDs the agent installed itself are upgraded as usual.
        let plan = plan_crds(
            &keys(&b),
            &[ours(
                GW,
                Some((crate::bundle::GATEWAY_API_VERSION_ANNOTATION, "v1.4.0")),
            )],
        );
        assert_eq!(decision(&plan, GW), CrdDecision::Current);
        assert_eq!(
            decision(&plan, "httproutes.gateway.networking.k8s.io"),
            CrdDecision::Install
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.9.0", "1.10.0"), Some(Ordering::Less));
        assert_eq!(
            compare_versions("v1.4.0", "v1.3.1"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_versions("1.28.2", "1.28.2"), Some(Ordering::Equal));
        assert_eq!(
            compare_versions("v1.4.0-rc.1", "v1.4.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_versions("latest", "1.0"), None);
    }

    #[test]
    fn a_namespace_with_only_mesh_residue_is_empty_and_anything_else_is_not() {
        let obj = |kind: &str, name: &str, labels: &[(&str, &str)]| NamespaceObject {
            reference: ObjectRef::new("v1", kind, Some("istio-system"), name),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut contents = vec![
            obj("ConfigMap", "istio-ca-root-cert", &[]),
            obj("ConfigMap", "kube-root-ca.crt", &[]),
            obj("Secret", "istio-ca-secret", &[]),
            obj("ServiceAccount", "default", &[]),
            obj("Pod", "ztunnel-abcde", &[("app", "ztunnel")]),
            obj(
                "ConfigMap",
                "istio-1-28-2",
                &[(MANAGED_BY_LABEL, MANAGED_BY_VALUE)],
            ),
        ];
        assert!(namespace_is_empty(&contents));
        contents.push(obj("Secret", "cacerts", &[]));
        contents.push(obj("Deployment", "istio-ingressgateway", &[("app", "x")]));
        assert!(!namespace_is_empty(&contents));
        let names: Vec<&str> = foreign_objects(&contents)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["cacerts", "istio-ingressgateway"]);
    }
}
