//! The kube-rs backend against a mock API server (wiremock): the exact
//! requests it makes — server-side apply parameters and bodies, their order,
//! readiness read from Deployment/DaemonSet status, a waypoint Gateway's
//! `Programmed` condition and istiod's webhook CA, pruning DELETEs — for a
//! whole reconcile pass; and what it never sends: a forced apply of a CRD
//! another manager owns, a DELETE of a CRD or of an object without its label
//! — nor, on a purge, of a CRD that holds custom resources it did not create.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfleet_agent::backend::{ClusterBackend, SecretData};
use meshfleet_agent::render::{Directives, render};
use meshfleet_agent::testing::desired;
use meshfleet_agent::{Bundle, KubeBackend, ReconcileOptions, Trigger, reconcile, reconcile_with};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A tiny in-memory API server: objects by path, SSA patches stored as sent
/// (with the field manager in `managedFields`), label-selector lists, and
/// Deployment/DaemonSet status that turns ready after `not_ready_reads`
/// reads. As istiod would: a waypoint Gateway gets its Deployment when
/// applied and `Programmed=True` after `not_programmed_reads` reads; a
/// validating webhook configuration gets its `caBundle`.
#[derive(Clone, Default)]
struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    status_reads: Arc<Mutex<HashMap<String, u32>>>,
    not_ready_reads: u32,
    not_programmed_reads: u32,
    next_rv: Arc<Mutex<u64>>,
}

struct Path {
    prefix: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

fn parse(path: &str) -> Path {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = if segs[0] == "api" {
        (format!("/api/{}", segs[1]), &segs[2..])
    } else {
        (format!("/apis/{}/{}", segs[1], segs[2]), &segs[3..])
    };
    let s = |i: usize| rest.get(i).map(|s| s.to_string());
    match rest.len() {
        4 => Path {
            prefix,
            namespace: s(1),
            plural: rest[2].into(),
            name: s(3),
        },
        3 => Path {
            prefix,
            namespace: s(1),
            plural: rest[2].into(),
            name: None,
        },
        2 => Path {
            prefix,
            namespace: None,
            plural: rest[0].into(),
            name: s(1),
        },
        _ => Path {
            prefix,
            namespace: None,
            plural: rest[0].into(),
            name: None,
        },
    }
}

fn not_found(name: &str) -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("\"{name}\" not found"), "reason": "NotFound", "code": 404
    }))
}

impl FakeApi {
    fn insert(&self, path: &str, object: Value) {
        self.objects
            .lock()
            .unwrap()
            .insert(path.to_string(), object);
    }

    /// How often `path` has been read, this read included.
    fn count_read(&self, path: &str) -> u32 {
        let mut r = self.status_reads.lock().unwrap();
        let n = r.entry(path.to_string()).or_default();
        *n += 1;
        *n
    }

    fn with_status(&self, path: &str, plural: &str, mut obj: Value) -> Value {
        let reads = self.count_read(path);
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        let ready = reads > self.not_ready_reads;
        obj["status"] = match plural {
            "deployments" => {
                let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                if ready {
                    json!({ "observedGeneration": generation, "replicas": want, "readyReplicas": want, "updatedReplicas": want })
                } else {
                    json!({ "observedGeneration": generation - 1, "replicas": want, "readyReplicas": 0, "updatedReplicas": 0,
                            "conditions": [{ "type": "Available", "status": "False", "message": "Deployment does not have minimum availability." }] })
                }
            }
            _ => {
                if ready {
                    json!({ "observedGeneration": generation, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                            "numberMisscheduled": 0, "numberReady": 2, "updatedNumberScheduled": 2 })
                } else {
                    json!({ "observedGeneration": generation, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                            "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 1 })
                }
            }
        };
        obj
    }
}

impl Respond for FakeApi {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let path = req.url.path().to_string();
        if path == "/version" {
            return ResponseTemplate::new(200).set_body_json(json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
            }));
        }
        let p = parse(&path);
        match req.method.as_str() {
            "GET" if p.name.is_none() => {
                // `key=value` or `key!=value`: (key, value, equal).
                let selector: Option<(String, String, bool)> = req
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "labelSelector")
                    .and_then(|(_, v)| match v.split_once("!=") {
                        Some((a, b)) => Some((a.to_string(), b.to_string(), false)),
                        None => v
                            .split_once('=')
                            .map(|(a, b)| (a.to_string(), b.to_string(), true)),
                    });
                let objects = self.objects.lock().unwrap();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| {
                        let q = parse(k);
                        q.prefix == p.prefix && q.plural == p.plural && (p.namespace.is_none() || q.namespace == p.namespace)
                    })
                    .filter(|(_, o)| match &selector {
                        Some((k, v, equal)) => {
                            (o["metadata"]["labels"][k.as_str()] == v.as_str()) == *equal
                        }
                        None => true,
                    })
                    .map(|(_, o)| json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"] }))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items
                }))
            }
            "GET" => {
                let obj = self.objects.lock().unwrap().get(&path).cloned();
                match obj {
                    None => not_found(p.name.as_deref().unwrap_or_default()),
                    Some(o) if p.plural == "deployments" || p.plural == "daemonsets" => {
                        ResponseTemplate::new(200)
                            .set_body_json(self.with_status(&path, &p.plural, o))
                    }
                    Some(mut o)
                        if p.plural == "gateways" && p.prefix.contains("gateway.networking") =>
                    {
                        let reads = self.count_read(&path);
                        let programmed = if reads > self.not_programmed_reads {
                            "True"
                        } else {
                            "False"
                        };
                        o["status"] = json!({ "conditions": [
                            { "type": "Accepted", "status": "True", "reason": "Accepted", "message": "" },
                            { "type": "Programmed", "status": programmed, "reason": "Pending",
                              "message": "Deployment waiting for replicas" }
                        ] });
                        ResponseTemplate::new(200).set_body_json(o)
                    }
                    Some(mut o) if p.plural == "validatingwebhookconfigurations" => {
                        // istiod patches its CA in (under its own manager).
                        for h in o["webhooks"].as_array_mut().into_iter().flatten() {
                            h["clientConfig"]["caBundle"] = "ZmFrZSBDQQ==".into();
                        }
                        self.objects.lock().unwrap().insert(path.clone(), o.clone());
                        ResponseTemplate::new(200).set_body_json(o)
                    }
                    Some(o) => ResponseTemplate::new(200).set_body_json(o),
                }
            }
            "PATCH" => {
                let mut body: Value = serde_json::from_slice(&req.body).unwrap();
                let manager = req
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "fieldManager")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let rv = {
                    let mut n = self.next_rv.lock().unwrap();
                    *n += 1;
                    *n
                };
                let mut objects = self.objects.lock().unwrap();
                // Like the API server: an apply that changes nothing writes
                // nothing; `generation` moves only when the spec does.
                let strip = |v: &Value| {
                    let mut v = v.clone();
                    v.as_object_mut().unwrap().remove("status");
                    let m = v["metadata"].as_object_mut().unwrap();
                    m.remove("resourceVersion");
                    m.remove("generation");
                    m.remove("managedFields");
                    v
                };
                let previous = objects.get(&path).cloned();
                // The managers: the previous ones plus this one.
                let mut managers: Vec<Value> = previous
                    .as_ref()
                    .and_then(|p| p["metadata"]["managedFields"].as_array().cloned())
                    .unwrap_or_default();
                if !managers.iter().any(|m| m["manager"] == manager.as_str()) {
                    managers.push(
                        json!({ "manager": manager, "operation": "Apply", "apiVersion": "v1" }),
                    );
                }
                body["metadata"]["managedFields"] = Value::Array(managers);
                // Server-side apply keeps the fields other managers own.
                if p.plural == "validatingwebhookconfigurations"
                    && let Some(prev) = &previous
                {
                    for (i, h) in body["webhooks"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        if let Some(ca) = prev["webhooks"][i]["clientConfig"].get("caBundle") {
                            h["clientConfig"]["caBundle"] = ca.clone();
                        }
                    }
                }
                if let Some(prev) = &previous
                    && strip(prev) == strip(&body)
                {
                    return ResponseTemplate::new(200).set_body_json(prev);
                }
                if p.plural == "gateways" && body["spec"]["gatewayClassName"] == "istio-waypoint" {
                    // istiod's gateway deployment controller.
                    let ns = p.namespace.clone().unwrap_or_default();
                    let name = p.name.clone().unwrap_or_default();
                    objects.insert(
                        format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
                        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": { "name": name, "namespace": ns, "generation": 1,
                                              "labels": { "gateway.networking.k8s.io/gateway-name": name },
                                              "managedFields": [{ "manager": "pilot-discovery", "operation": "Apply" }] },
                                "spec": { "replicas": 2 } }),
                    );
                }
                let generation = match &previous {
                    None => 1,
                    Some(prev) => {
                        let g = prev["metadata"]["generation"].as_i64().unwrap_or(1);
                        if prev.get("spec") == body.get("spec") {
                            g
                        } else {
                            g + 1
                        }
                    }
                };
                body["metadata"]["resourceVersion"] = rv.to_string().into();
                body["metadata"]["generation"] = generation.into();
                objects.insert(path, body.clone());
                ResponseTemplate::new(200).set_body_json(body)
            }
            "DELETE" => {
                self.objects.lock().unwrap().remove(&path);
                ResponseTemplate::new(200).set_body_json(json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200
                }))
            }
            _ => ResponseTemplate::new(405),
        }
    }
}

async fn setup(fake: FakeApi) -> (MockServer, KubeBackend) {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(fake).mount(&server).await;
    let config = kube::Config::new(server.uri().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    (server, KubeBackend::new(client))
}

/// The API path of a rendered object.
fn path_of(r: &meshfleet_agent::ObjectRef) -> String {
    let kind = r.managed_kind().unwrap();
    let prefix = if kind.group().is_empty() {
        format!("/api/{}", kind.version())
    } else {
        format!("/apis/{}", kind.api_version)
    };
    match &r.namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{}/{}", kind.plural, r.name),
        None => format!("{prefix}/{}/{}", kind.plural, r.name),
    }
}

fn owned_labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "meshfleet-agent",
        "meshfleet.dev/component": component,
    })
}

fn opts() -> ReconcileOptions {
    ReconcileOptions {
        poll_interval: Duration::from_millis(5),
        ready_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_pass_is_server_side_apply_in_order_then_readiness_then_pruning() {
    let fake = FakeApi {
        not_ready_reads: 2,
        ..FakeApi::default()
    };
    // The previous revision, owned; and an object someone else owns.
    let old = "/apis/apps/v1/namespaces/istio-system/deployments/istiod-1-27-3";
    fake.insert(old, json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "istiod-1-27-3", "namespace": "istio-system", "labels": owned_labels("istiod"), "generation": 1 },
        "spec": { "replicas": 2 }
    }));
    let old_sa = "/api/v1/namespaces/istio-system/serviceaccounts/istiod-1-27-3";
    fake.insert(old_sa, json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "istiod-1-27-3", "namespace": "istio-system", "labels": owned_labels("istiod") }
    }));
    let foreign = "/apis/apps/v1/namespaces/istio-system/deployments/someone-elses";
    fake.insert(foreign, json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "someone-elses", "namespace": "istio-system", "labels": { "app": "x" }, "generation": 1 },
        "spec": { "replicas": 1 }
    }));
    let (server, backend) = setup(fake.clone()).await;

    let d = desired("1.28.2");
    let out = reconcile(&backend, &d, Trigger::Changed, &opts(), None).await;
    assert!(out.converged, "{out:#?}");
    assert!(out.components.iter().all(|c| c.ready));

    let requests = server.received_requests().await.unwrap();
    let patches: Vec<&Request> = requests
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .collect();

    // 1. Every write is a server-side apply under our field manager,
    //    forced — except for CRDs, which are never forced.
    for p in &patches {
        let q: HashMap<String, String> = p.url.query_pairs().into_owned().collect();
        assert_eq!(
            q.get("fieldManager").map(String::as_str),
            Some("meshfleet-agent"),
            "{}",
            p.url
        );
        let is_crd = p.url.path().contains("/customresourcedefinitions/");
        assert_eq!(
            q.get("force").map(String::as_str),
            if is_crd { None } else { Some("true") },
            "{}",
            p.url
        );
        assert_eq!(
            p.headers.get("content-type").unwrap().to_str().unwrap(),
            "application/apply-patch+yaml"
        );
    }

    // 2. In render order, with exactly the rendered bodies.
    let rendered: Vec<(String, Value)> = render(&d)
        .unwrap()
        .iter()
        .flat_map(|s| {
            s.objects
                .iter()
                .map(|o| (path_of(&o.reference()), o.to_json().unwrap()))
        })
        .collect();
    let sent: Vec<(String, Value)> = patches
        .iter()
        .map(|p| (p.url.path().to_string(), p.body_json::<Value>().unwrap()))
        .collect();
    assert_eq!(sent.len(), rendered.len());
    for ((sp, sb), (rp, rb)) in sent.iter().zip(&rendered) {
        assert_eq!(sp, rp);
        assert_eq!(sb, rb, "body of {sp}");
    }

    // 3. Each apply is preceded by a GET of the object (drift detection).
    let index = |method: &str, path: &str| {
        requests
            .iter()
            .position(|r| r.method.as_str() == method && r.url.path() == path)
            .unwrap_or_else(|| panic!("no {method} {path}"))
    };
    let istiod = "/apis/apps/v1/namespaces/istio-system/deployments/istiod-1-28-2";
    assert!(index("GET", istiod) < index("PATCH", istiod));

    // 4. Readiness comes from the Deployment's status: it is read until ready
    //    (two not-ready answers) before istio-cni is touched.
    let cni_first = index(
        "PATCH",
        "/api/v1/namespaces/istio-system/serviceaccounts/istio-cni",
    );
    let istiod_patch = index("PATCH", istiod);
    let status_reads = requests[istiod_patch..cni_first]
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == istiod)
        .count();
    assert_eq!(status_reads, 3, "two not ready, then ready");
    let ztunnel = "/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel";
    let zt_patch = index("PATCH", ztunnel);
    let gw_patch = index(
        "PATCH",
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/shop-waypoint",
    );
    assert!(
        requests[zt_patch..gw_patch]
            .iter()
            .filter(|r| r.method.as_str() == "GET" && r.url.path() == ztunnel)
            .count()
            >= 3
    );

    // 5. Pruning after the last apply: owned objects listed by label, the old
    //    revision deleted (Deployment before its ServiceAccount), with
    //    background propagation; the unlabelled object is left alone.
    let last_patch = requests
        .iter()
        .rposition(|r| r.method.as_str() == "PATCH")
        .unwrap();
    let lists: Vec<&Request> = requests
        .iter()
        .filter(|r| {
            r.method.as_str() == "GET" && r.url.query_pairs().any(|(k, _)| k == "labelSelector")
        })
        .collect();
    assert!(!lists.is_empty());
    for l in &lists {
        let sel = l
            .url
            .query_pairs()
            .find(|(k, _)| k == "labelSelector")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(sel, "app.kubernetes.io/managed-by=meshfleet-agent");
    }
    let deletes: Vec<(usize, &Request)> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method.as_str() == "DELETE")
        .collect();
    let deleted: Vec<&str> = deletes.iter().map(|(_, r)| r.url.path()).collect();
    assert_eq!(deleted, [old, old_sa]);
    assert!(deletes.iter().all(|(i, _)| *i > last_patch));
    for (_, r) in &deletes {
        let body: Value = r.body_json().unwrap();
        assert_eq!(body["propagationPolicy"], "Background", "{body}");
    }
    assert!(fake.objects.lock().unwrap().contains_key(foreign));
    assert_eq!(out.pruned.len(), 2);
}

#[tokio::test]
async fn a_deployment_that_never_becomes_ready_stops_the_pass() {
    let fake = FakeApi {
        not_ready_reads: u32::MAX,
        ..FakeApi::default()
    };
    let (server, backend) = setup(fake).await;
    let opts = ReconcileOptions {
        poll_interval: Duration::from_millis(5),
        ready_timeout: Duration::from_millis(150),
    };
    let out = reconcile(&backend, &desired("1.28.2"), Trigger::Changed, &opts, None).await;
    assert!(!out.converged);
    assert_eq!(out.reason, Some("RolloutTimeout"));
    let istiod = out.components.iter().find(|c| c.name == "istiod").unwrap();
    assert!(!istiod.ready);
    let msg = istiod.message.as_deref().unwrap();
    assert!(msg.contains("0/2 ready"), "{msg}");
    assert!(
        msg.contains("Deployment does not have minimum availability"),
        "{msg}"
    );
    let requests = server.received_requests().await.unwrap();
    assert!(
        !requests.iter().any(|r| r.url.path().contains("daemonsets")),
        "nothing after istiod is touched"
    );
    assert!(
        !requests.iter().any(|r| r.method.as_str() == "DELETE"),
        "no pruning"
    );
}

#[tokio::test]
async fn drift_is_a_changed_live_object_on_re_apply() {
    let fake = FakeApi::default();
    let (_server, backend) = setup(fake.clone()).await;
    let d = desired("1.28.2");
    let out = reconcile(&backend, &d, Trigger::Changed, &opts(), None).await;
    assert!(out.converged);
    // Unchanged: status and resourceVersion differ, but that is not drift.
    let out = reconcile(&backend, &d, Trigger::Resync, &opts(), None).await;
    assert!(out.converged && out.drifted.is_empty(), "{:?}", out.drifted);
    // Someone scales istiod down behind our back.
    let path = "/apis/apps/v1/namespaces/istio-system/deployments/istiod-1-28-2";
    fake.objects.lock().unwrap().get_mut(path).unwrap()["spec"]["replicas"] = 0.into();
    let out = reconcile(&backend, &d, Trigger::Resync, &opts(), None).await;
    assert!(out.converged);
    assert_eq!(out.drifted.len(), 1);
    assert_eq!(out.drifted[0].name, "istiod-1-28-2");
}

#[tokio::test]
async fn secrets_and_facts() {
    let fake = FakeApi::default();
    fake.insert(
        "/api/v1/namespaces/meshfleet-system/secrets/meshfleet-bootstrap",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "meshfleet-bootstrap", "namespace": "meshfleet-system" },
            // "mfbt_abc" and "https://meshfleet.example"
            "data": { "token": "bWZidF9hYmM=", "url": "aHR0cHM6Ly9tZXNoZmxlZXQuZXhhbXBsZQ==" }
        }),
    );
    fake.insert(
        "/api/v1/nodes/a",
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "a" } }),
    );
    fake.insert(
        "/api/v1/nodes/b",
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "b" } }),
    );
    let (server, backend) = setup(fake.clone()).await;

    let b = backend
        .get_secret("meshfleet-system", "meshfleet-bootstrap")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b["token"], "mfbt_abc");
    assert_eq!(b["url"], "https://meshfleet.example");
    assert!(
        backend
            .get_secret("meshfleet-system", "missing")
            .await
            .unwrap()
            .is_none()
    );

    let mut data = SecretData::new();
    data.insert("credential".into(), "mfac_xyz".into());
    data.insert("expiresAt".into(), "2027-01-01T00:00:00+00:00".into());
    backend
        .put_secret("meshfleet-system", "meshfleet-agent-credential", data)
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PATCH")
        .unwrap();
    assert_eq!(
        put.url.path(),
        "/api/v1/namespaces/meshfleet-system/secrets/meshfleet-agent-credential"
    );
    assert!(
        put.url
            .query()
            .unwrap()
            .contains("fieldManager=meshfleet-agent")
    );
    let body: Value = put.body_json().unwrap();
    assert_eq!(body["data"]["credential"], "bWZhY194eXo=");
    assert!(
        body["metadata"].get("labels").is_none(),
        "never pruned: no managed-by label"
    );
    let stored = backend
        .get_secret("meshfleet-system", "meshfleet-agent-credential")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["credential"], "mfac_xyz");

    let facts = backend.facts().await.unwrap();
    assert_eq!(facts.kubernetes_version.as_deref(), Some("v1.33.1"));
    assert_eq!(facts.node_count, Some(2));
}

fn crd_path(name: &str) -> String {
    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
}

#[tokio::test]
async fn a_crd_another_manager_owns_is_not_force_applied() {
    let fake = FakeApi::default();
    // A previous Istio install by Helm owns AuthorizationPolicy.
    let ap = crd_path("authorizationpolicies.security.istio.io");
    fake.insert(&ap, json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "authorizationpolicies.security.istio.io", "labels": { "app": "istio-pilot" },
                      "managedFields": [{ "manager": "helm", "operation": "Update", "apiVersion": "apiextensions.k8s.io/v1" }] },
        "spec": { "group": "security.istio.io" }
    }));
    let (server, backend) = setup(fake.clone()).await;
    let out = reconcile(
        &backend,
        &desired("1.28.2"),
        Trigger::Changed,
        &opts(),
        None,
    )
    .await;
    assert!(out.converged, "{out:#?}");
    let requests = server.received_requests().await.unwrap();
    assert!(
        !requests
            .iter()
            .any(|r| r.method.as_str() == "PATCH" && r.url.path() == ap),
        "no apply at all, let alone a forced one"
    );
    let crd_patches: Vec<&Request> = requests
        .iter()
        .filter(|r| {
            r.method.as_str() == "PATCH" && r.url.path().contains("/customresourcedefinitions/")
        })
        .collect();
    assert_eq!(crd_patches.len(), 18, "the other CRDs are installed");
    assert!(
        crd_patches
            .iter()
            .all(|r| !r.url.query().unwrap_or("").contains("force"))
    );
    // The live CRD is untouched and the conflict is in the status.
    assert_eq!(
        fake.objects.lock().unwrap()[&ap]["metadata"]["labels"],
        json!({ "app": "istio-pilot" })
    );
    let crds = out.components.iter().find(|c| c.name == "crds").unwrap();
    let c = crds
        .conditions
        .iter()
        .find(|c| c.type_ == "CrdOwnership")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("OwnedByOtherManager"))
    );
    assert!(
        c.message.as_deref().unwrap().contains("managed by helm"),
        "{c:?}"
    );
}

#[tokio::test]
async fn uninstall_sends_no_delete_for_crds_or_objects_without_the_agents_label() {
    let fake = FakeApi::default();
    let (server, backend) = setup(fake.clone()).await;
    let d = desired("1.28.2");
    assert!(
        reconcile(&backend, &d, Trigger::Changed, &opts(), None)
            .await
            .converged
    );
    // The customer's policy, a foreign Gateway, and a ConfigMap of theirs in
    // istio-system.
    let policy = "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/allow-frontend";
    fake.insert(
        policy,
        json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": { "name": "allow-frontend", "namespace": "shop" }, "spec": {} }),
    );
    let foreign_gw = "/apis/gateway.networking.k8s.io/v1/namespaces/edge/gateways/public";
    fake.insert(foreign_gw, json!({ "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "public", "namespace": "edge" }, "spec": { "gatewayClassName": "other" } }));
    let theirs = "/api/v1/namespaces/istio-system/configmaps/customer-settings";
    fake.insert(
        theirs,
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "customer-settings", "namespace": "istio-system" } }),
    );
    let before = server.received_requests().await.unwrap().len();

    let mut off = d.clone();
    off.mode = meshfleet_model::MeshMode::Disabled;
    let out = reconcile(&backend, &off, Trigger::Changed, &opts(), None).await;
    assert!(out.converged, "{out:#?}");
    let requests = server.received_requests().await.unwrap();
    let deletes: Vec<&str> = requests[before..]
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path())
        .collect();
    assert!(!deletes.is_empty());
    for path in &deletes {
        assert!(!path.contains("/customresourcedefinitions/"), "{path}");
        assert_ne!(
            *path, "/api/v1/namespaces/istio-system",
            "it holds someone's ConfigMap"
        );
        assert!(![policy, foreign_gw, theirs].contains(path), "{path}");
    }
    // Every DELETE was of an object that carried the agent's label: the
    // istiod Deployment among them, and nothing else survived of the agent's.
    assert!(deletes.contains(&"/apis/apps/v1/namespaces/istio-system/deployments/istiod-1-28-2"));
    let objects = fake.objects.lock().unwrap();
    for p in [policy, foreign_gw, theirs] {
        assert!(objects.contains_key(p), "{p} stays");
    }
    assert!(
        objects
            .keys()
            .any(|k| k.contains("/customresourcedefinitions/"))
    );
    assert!(
        objects
            .iter()
            .all(|(k, o)| k.contains("/customresourcedefinitions/")
                || o["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "meshfleet-agent"
                || k.ends_with("/namespaces/shop")
                || k.ends_with("/namespaces/payments")),
        "{:#?}",
        objects.keys()
    );
    // The only writes were bare namespaces releasing the agent's labels.
    for r in requests[before..]
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
    {
        assert!(r.url.path().starts_with("/api/v1/namespaces/"), "{}", r.url);
        let body: Value = r.body_json().unwrap();
        assert!(body["metadata"].get("labels").is_none(), "{body}");
    }
}

/// Uninstalls `d` with a CRD purge, forced or not.
async fn purge(
    backend: &KubeBackend,
    d: &meshfleet_model::DesiredState,
    force: bool,
) -> meshfleet_agent::Outcome {
    let mut off = d.clone();
    off.mode = meshfleet_model::MeshMode::Disabled;
    let directives = Directives {
        purge_crds: true,
        force_purge_crds: force,
        ..Directives::default()
    };
    let bundle = Bundle::development(&d.version);
    reconcile_with(
        backend,
        &off,
        &bundle,
        &directives,
        Trigger::Changed,
        &opts(),
        None,
    )
    .await
}

#[tokio::test]
async fn a_purge_keeps_a_crd_that_holds_custom_resources_the_agent_did_not_create_unless_forced() {
    let fake = FakeApi::default();
    let (server, backend) = setup(fake.clone()).await;
    let d = desired("1.28.2");
    assert!(
        reconcile(&backend, &d, Trigger::Changed, &opts(), None)
            .await
            .converged
    );
    let ap_crd = crd_path("authorizationpolicies.security.istio.io");
    let pa_crd = crd_path("peerauthentications.security.istio.io");
    assert!(fake.objects.lock().unwrap().contains_key(&ap_crd));
    let policy = "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/allow-frontend";
    fake.insert(
        policy,
        json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": { "name": "allow-frontend", "namespace": "shop" }, "spec": {} }),
    );
    let before = server.received_requests().await.unwrap().len();

    let out = purge(&backend, &d, false).await;
    assert!(out.converged, "{out:#?}");
    let requests = server.received_requests().await.unwrap();
    // The agent asked for the kind's objects without its label ...
    let list = requests[before..]
        .iter()
        .find(|r| {
            r.method.as_str() == "GET"
                && r.url.path() == "/apis/security.istio.io/v1/authorizationpolicies"
        })
        .expect("a cluster-wide list of AuthorizationPolicies");
    let query: HashMap<String, String> = list.url.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io/managed-by!=meshfleet-agent")
    );
    // ... kept that CRD, and purged one that holds nothing.
    let deletes: Vec<&str> = requests[before..]
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path())
        .collect();
    assert!(!deletes.contains(&ap_crd.as_str()), "{deletes:#?}");
    assert!(!deletes.contains(&policy));
    assert!(deletes.contains(&pa_crd.as_str()), "{deletes:#?}");
    let crds = out.components.iter().find(|c| c.name == "crds").unwrap();
    let kept = crds
        .conditions
        .iter()
        .find(|c| c.type_ == "CrdsKept")
        .expect("the refusal is reported");
    assert_eq!(kept.reason.as_deref(), Some("CustomResourcesExist"));
    let message = kept.message.as_deref().unwrap();
    assert!(
        message.contains("authorizationpolicies.security.istio.io (shop/allow-frontend)"),
        "{message}"
    );
    assert!(message.contains("mesh.uninstall.force"), "{message}");

    // Forced: the CRD goes, and the API server takes its objects with it.
    let before = requests.len();
    let out = purge(&backend, &d, true).await;
    assert!(out.converged, "{out:#?}");
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests[before..]
            .iter()
            .any(|r| r.method.as_str() == "DELETE" && r.url.path() == ap_crd)
    );
}

#[tokio::test]
async fn waypoint_readiness_waits_for_the_gateways_programmed_condition() {
    let fake = FakeApi {
        not_programmed_reads: 3,
        ..FakeApi::default()
    };
    let (server, backend) = setup(fake.clone()).await;
    let out = reconcile(
        &backend,
        &desired("1.28.2"),
        Trigger::Changed,
        &opts(),
        None,
    )
    .await;
    assert!(out.converged, "{out:#?}");
    let requests = server.received_requests().await.unwrap();
    let gw = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/shop-waypoint";
    let gw_patch = requests
        .iter()
        .position(|r| r.method.as_str() == "PATCH" && r.url.path() == gw)
        .unwrap();
    let next_step = requests
        .iter()
        .position(|r| r.method.as_str() == "PATCH" && r.url.path() == "/api/v1/namespaces/shop")
        .unwrap();
    let window = &requests[gw_patch..next_step];
    let gw_reads = window
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == gw)
        .count();
    assert_eq!(gw_reads, 4, "three times not programmed, then programmed");
    assert!(
        window.iter().any(|r| r.method.as_str() == "GET"
            && r.url.path() == "/apis/apps/v1/namespaces/shop/deployments/shop-waypoint"),
        "and the Deployment istiod built is read"
    );

    // Never programmed: the pass stops at the waypoints, saying why.
    let fake = FakeApi {
        not_programmed_reads: u32::MAX,
        ..FakeApi::default()
    };
    let (_server, backend) = setup(fake).await;
    let short = ReconcileOptions {
        poll_interval: Duration::from_millis(5),
        ready_timeout: Duration::from_millis(200),
    };
    let out = reconcile(&backend, &desired("1.28.2"), Trigger::Changed, &short, None).await;
    assert_eq!(out.reason, Some("RolloutTimeout"));
    let wp = out
        .components
        .iter()
        .find(|c| c.name == "waypoints")
        .unwrap();
    assert!(!wp.ready);
    assert!(
        wp.message
            .as_deref()
            .unwrap()
            .contains("not programmed: Deployment waiting for replicas"),
        "{wp:?}"
    );
}
