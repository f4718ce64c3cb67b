//! Release data: what an Istio release ships as text rather than as code —
//! the CRDs (with their validation schemas) and istiod's injection templates
//! (among them the `waypoint` template from which istiod's gateway deployment
//! controller builds every waypoint's ServiceAccount, Deployment and Service).
//!
//! The renderer ([`crate::render`]) and the ownership rules
//! ([`crate::ownership`]) read release data only through [`Bundle`]. Today the
//! desired state names the bundle of its version: a *development bundle* the
//! agent builds itself ([`Bundle::development`], written by this project
//! from the facts of upstream's charts, see `fleet-agent/README.md`), or an
//! *imported* one (upstream's own files) that the agent fetches from the
//! service once per digest and verifies ([`Bundle::from_document`]), which
//! fills the same type through [`Bundle::from_parts`], without touching the
//! rendering or the rules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ownership::CrdKey;

/// Annotation with the Istio release of an Istio CRD the agent installed.
pub const CRD_RELEASE_ANNOTATION: &str = "meshfleet.dev/release";
/// The Gateway API's own annotation with the version of its CRD bundle.
pub const GATEWAY_API_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";
/// The Gateway API's own annotation with the channel of its CRD bundle.
pub const GATEWAY_API_CHANNEL_ANNOTATION: &str = "gateway.networking.k8s.io/channel";
/// API group of the Gateway API.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOrigin {
    /// Rendered by this project ([`Bundle::development`]).
    Development,
    /// Imported from upstream's release artifacts and fetched from the
    /// service; `digest` is what it was verified against.
    Imported { digest: String },
}

/// Who publishes a CRD, which decides how its version is read and when it
/// may be installed (see [`crate::ownership`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrdFamily {
    /// `*.istio.io`: versioned by the Istio release
    /// ([`CRD_RELEASE_ANNOTATION`]).
    Istio,
    /// `gateway.networking.k8s.io`: versioned by the Gateway API bundle
    /// ([`GATEWAY_API_VERSION_ANNOTATION`]); installed only when the cluster
    /// has none.
    GatewayApi,
}

impl CrdFamily {
    /// The family of a CRD's API group.
    pub fn of_group(group: &str) -> Option<CrdFamily> {
        if group == GATEWAY_API_GROUP {
            Some(CrdFamily::GatewayApi)
        } else if group.ends_with(".istio.io") {
            Some(CrdFamily::Istio)
        } else {
            None
        }
    }

    /// The annotation that carries a CRD's version in this family.
    pub fn version_annotation(self) -> &'static str {
        match self {
            CrdFamily::Istio => CRD_RELEASE_ANNOTATION,
            CrdFamily::GatewayApi => GATEWAY_API_VERSION_ANNOTATION,
        }
    }
}

/// One CRD of a bundle, with the version the ownership rules compare.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleCrd {
    pub family: CrdFamily,
    /// The Istio release (Istio CRDs) or the Gateway API version (`v1.4.0`).
    pub version: String,
    /// The CRD as released (no meshfleet labels yet; the renderer adds them).
    pub crd: Arc<CustomResourceDefinition>,
}

impl BundleCrd {
    pub fn name(&self) -> &str {
        self.crd.metadata.name.as_deref().unwrap_or_default()
    }

    /// What the ownership rules need of it.
    pub fn key(&self) -> CrdKey {
        CrdKey {
            name: self.name().to_string(),
            family: self.family,
            version: self.version.clone(),
        }
    }
}

/// The release data of one Istio version.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub istio_version: String,
    pub origin: BundleOrigin,
    crds: Vec<BundleCrd>,
    /// istiod's injection templates by name (`waypoint`, …): Go templates
    /// istiod executes, with per-install settings under `.Values`.
    templates: BTreeMap<String, String>,
}

/// The Gateway API version Istio documents (and builds against) for each
/// Istio minor of the catalog.
pub fn gateway_api_version(istio_version: &str) -> &'static str {
    let minor = istio_version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    match minor {
        0..=24 => "v1.2.0",
        25 => "v1.2.1",
        26 | 27 => "v1.3.0",
        _ => "v1.4.0",
    }
}

impl Bundle {
    /// A bundle from its parts (a fetched, digest-verified upstream bundle).
    /// Every CRD must belong to a known family; its version is read from its
    /// family's annotation, or is `istio_version` for Istio CRDs without one.
    pub fn from_parts(
        istio_version: &str,
        origin: BundleOrigin,
        crds: Vec<CustomResourceDefinition>,
        templates: BTreeMap<String, String>,
    ) -> Result<Bundle> {
        let crds = crds
            .into_iter()
            .map(|crd| {
                let name = crd.metadata.name.clone().unwrap_or_default();
                let family = CrdFamily::of_group(&crd.spec.group).ok_or_else(|| {
                    Error::UnsupportedKind(format!("CRD {name} of group {}", crd.spec.group))
                })?;
                let annotated = crd
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(family.version_annotation()))
                    .cloned();
                let version = match (family, annotated) {
                    (_, Some(v)) => v,
                    (CrdFamily::Istio, None) => istio_version.to_string(),
                    (CrdFamily::GatewayApi, None) => {
                        return Err(Error::UnsupportedKind(format!(
                            "Gateway API CRD {name} without {GATEWAY_API_VERSION_ANNOTATION}"
                        )));
                    }
                };
                Ok(BundleCrd {
                    family,
                    version,
                    crd: Arc::new(crd),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Bundle {
            istio_version: istio_version.to_string(),
            origin,
            crds,
            templates,
        })
    }

    /// A bundle fetched from the service: `bytes` must hash to `digest`
    /// (`sha256:<hex>`) and be the canonical document of `istio_version`'s
    /// bundle (`meshfleet_model::BundleDocument`).
    pub fn from_document(istio_version: &str, digest: &str, bytes: &[u8]) -> Result<Bundle> {
        let fail = |detail: String| Error::Bundle {
            digest: digest.to_string(),
            detail,
        };
        let actual = meshfleet_model::bundle::digest_of(bytes);
        if actual != digest {
            return Err(fail(format!(
                "the downloaded content hashes to {actual}; nothing applied"
            )));
        }
        let document: meshfleet_model::BundleDocument = serde_json::from_slice(bytes)
            .map_err(|e| fail(format!("not a bundle document: {e}")))?;
        if document.version != istio_version {
            return Err(fail(format!(
                "it is the bundle of {}, not of {istio_version}",
                document.version
            )));
        }
        let crds = document
            .crds
            .into_iter()
            .enumerate()
            .map(|(i, crd)| {
                serde_json::from_value::<CustomResourceDefinition>(crd)
                    .map_err(|e| fail(format!("CRD {i} is not a CustomResourceDefinition: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Bundle::from_parts(
            istio_version,
            BundleOrigin::Imported {
                digest: digest.to_string(),
            },
            crds,
            document.templates,
        )
        .map_err(|e| fail(e.to_string()))
    }

    /// The development bundle of `istio_version`: this project's own
    /// rendering of the CRDs and templates of that release (see the module
    /// docs).
    pub fn development(istio_version: &str) -> Bundle {
        let gw = gateway_api_version(istio_version);
        let crds = CRDS
            .iter()
            .map(|spec| {
                let family = CrdFamily::of_group(spec.group).unwrap_or(CrdFamily::Istio);
                let version = match family {
                    CrdFamily::Istio => istio_version.to_string(),
                    CrdFamily::GatewayApi => gw.to_string(),
                };
                BundleCrd {
                    family,
                    crd: Arc::new(spec.build(family, &version)),
                    version,
                }
            })
            .collect();
        let mut templates = BTreeMap::new();
        templates.insert("waypoint".to_string(), WAYPOINT_TEMPLATE.to_string());
        Bundle {
            istio_version: istio_version.to_string(),
            origin: BundleOrigin::Development,
            crds,
            templates,
        }
    }

    /// [`Bundle::development`], built once per version and shared (a fleet
    /// simulator runs thousands of agents in one process).
    pub fn development_shared(istio_version: &str) -> Arc<Bundle> {
        static CACHE: OnceLock<Mutex<BTreeMap<String, Arc<Bundle>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(istio_version.to_string())
            .or_insert_with(|| Arc::new(Bundle::development(istio_version)))
            .clone()
    }

    pub fn crds(&self) -> &[BundleCrd] {
        &self.crds
    }

    /// The injection template `name`, if the bundle has it.
    pub fn template(&self, name: &str) -> Option<&str> {
        self.templates.get(name).map(String::as_str)
    }

    /// The `config` key of istiod's injection-template ConfigMap: the
    /// injection policy and every template of the bundle.
    ///
    /// The policy is `disabled`: the mesh is ambient, and no `sidecar`
    /// template is shipped, so a pod is never injected unless it asks by name.
    pub fn injection_config(&self) -> Result<String> {
        // JSON is YAML; istiod parses the key as YAML.
        let config = json!({
            "policy": "disabled",
            "defaultTemplates": ["sidecar"],
            "alwaysInjectSelector": [],
            "neverInjectSelector": [],
            "injectedAnnotations": {},
            "templates": self.templates,
        });
        Ok(crate::render::json_text(&config)?)
    }
}

/// One CRD of the development bundle.
struct CrdSpec {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    /// Served versions.
    versions: &'static [&'static str],
    /// The storage version (as upstream stores it).
    storage: &'static str,
    namespaced: bool,
    /// The `spec` schema.
    spec: fn() -> Value,
    /// Required fields of `spec`.
    required: &'static [&'static str],
}

const NETWORKING: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SECURITY: &[&str] = &["v1beta1", "v1"];
const GATEWAY_V1: &[&str] = &["v1", "v1beta1"];

// Schema helpers: the development bundle's schemas validate the fields a
// tenant gets wrong (types, enums, required fields, ranges) and keep the deep
// parts of routing rules open (`x-kubernetes-preserve-unknown-fields`), where
// istiod's validating webhook checks them.
fn string() -> Value {
    json!({ "type": "string" })
}
fn bounded_string(min: u32, max: u32) -> Value {
    json!({ "type": "string", "minLength": min, "maxLength": max })
}
fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}
fn int(min: i64, max: i64) -> Value {
    json!({ "type": "integer", "format": "int32", "minimum": min, "maximum": max })
}
fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}
fn string_map() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" } })
}
fn open() -> Value {
    json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}
fn open_list() -> Value {
    json!({ "type": "array", "items": open() })
}
fn object(properties: Value) -> Value {
    json!({ "type": "object", "properties": properties })
}
fn object_required(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}
fn selector() -> Value {
    object(json!({ "matchLabels": string_map() }))
}
fn policy_target() -> Value {
    object_required(
        json!({
            "group": string(), "kind": bounded_string(1, 63),
            "name": bounded_string(1, 253), "namespace": string()
        }),
        &["kind", "name"],
    )
}
fn policy_targets() -> Value {
    json!({ "type": "array", "maxItems": 16, "items": policy_target() })
}
fn mtls_mode() -> Value {
    one_of(&["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
}

fn destination_rule() -> Value {
    object(json!({
        "host": string(), "trafficPolicy": open(),
        "subsets": { "type": "array", "items": object_required(
            json!({ "name": string(), "labels": string_map(), "trafficPolicy": open() }), &["name"]) },
        "exportTo": strings(), "workloadSelector": selector()
    }))
}
fn istio_gateway() -> Value {
    object(json!({ "selector": string_map(), "servers": open_list() }))
}
fn service_entry() -> Value {
    object(json!({
        "hosts": { "type": "array", "minItems": 1, "items": string() },
        "addresses": strings(),
        "ports": { "type": "array", "items": object_required(json!({
            "number": int(1, 65535), "protocol": string(), "name": string(), "targetPort": int(1, 65535)
        }), &["number", "name"]) },
        "location": one_of(&["MESH_EXTERNAL", "MESH_INTERNAL"]),
        "resolution": one_of(&["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]),
        "endpoints": open_list(), "workloadSelector": selector(),
        "exportTo": strings(), "subjectAltNames": strings()
    }))
}
fn sidecar() -> Value {
    object(json!({
        "workloadSelector": selector(), "ingress": open_list(), "egress": open_list(),
        "inboundConnectionPool": open(), "outboundTrafficPolicy": open()
    }))
}
fn virtual_service() -> Value {
    object(json!({
        "hosts": strings(), "gateways": strings(), "http": open_list(),
        "tls": open_list(), "tcp": open_list(), "exportTo": strings()
    }))
}
fn workload_entry_props() -> Value {
    json!({
        "address": bounded_string(0, 256), "ports": { "type": "object", "additionalProperties": int(0, 4294967295_i64) },
        "labels": string_map(), "network": string(), "locality": string(),
        "weight": int(0, 4294967295_i64), "serviceAccount": string()
    })
}
fn workload_entry() -> Value {
    object(workload_entry_props())
}
fn workload_group() -> Value {
    object_required(
        json!({
            "metadata": object(json!({ "labels": string_map(), "annotations": string_map() })),
            "template": object(workload_entry_props()),
            "probe": open()
        }),
        &["template"],
    )
}
fn envoy_filter() -> Value {
    object(json!({
        "workloadSelector": object(json!({ "labels": string_map() })),
        "targetRefs": policy_targets(), "configPatches": open_list(), "priority": int(i64::from(i32::MIN), i64::from(i32::MAX))
    }))
}
fn proxy_config() -> Value {
    object(json!({
        "selector": selector(), "concurrency": json!({ "type": "integer", "nullable": true }),
        "environmentVariables": string_map(), "image": open()
    }))
}
fn authorization_policy() -> Value {
    object(json!({
        "selector": selector(), "targetRef": policy_target(), "targetRefs": policy_targets(),
        "rules": { "type": "array", "maxItems": 512, "items": object(json!({
            "from": open_list(), "to": open_list(), "when": open_list()
        })) },
        "action": one_of(&["ALLOW", "DENY", "AUDIT", "CUSTOM"]),
        "provider": object(json!({ "name": string() }))
    }))
}
fn peer_authentication() -> Value {
    object(json!({
        "selector": selector(),
        "mtls": object(json!({ "mode": mtls_mode() })),
        "portLevelMtls": { "type": "object", "minProperties": 1,
            "additionalProperties": object(json!({ "mode": mtls_mode() })) }
    }))
}
fn request_authentication() -> Value {
    object(json!({
        "selector": selector(), "targetRef": policy_target(), "targetRefs": policy_targets(),
        "jwtRules": { "type": "array", "maxItems": 4096, "items": object_required(json!({
            "issuer": bounded_string(1, 1024), "audiences": strings(), "jwksUri": bounded_string(0, 2048),
            "jwks": string(), "fromHeaders": open_list(), "fromParams": strings(),
            "fromCookies": strings(), "outputPayloadToHeader": string(),
            "forwardOriginalToken": { "type": "boolean" }, "outputClaimToHeaders": open_list(),
            "timeout": string()
        }), &["issuer"]) }
    }))
}
fn telemetry() -> Value {
    object(json!({
        "selector": selector(), "targetRef": policy_target(), "targetRefs": policy_targets(),
        "tracing": open_list(), "metrics": open_list(), "accessLogging": open_list()
    }))
}
fn wasm_plugin() -> Value {
    object_required(
        json!({
            "selector": selector(), "targetRef": policy_target(), "targetRefs": policy_targets(),
            "url": { "type": "string", "minLength": 1 }, "sha256": string(),
            "imagePullPolicy": one_of(&["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]),
            "imagePullSecret": string(), "pluginConfig": open(), "pluginName": string(),
            "phase": one_of(&["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]),
            "priority": json!({ "type": "integer", "nullable": true }),
            "failStrategy": one_of(&["FAIL_CLOSE", "FAIL_OPEN"]),
            "vmConfig": open(), "match": open_list(),
            "type": one_of(&["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"])
        }),
        &["url"],
    )
}

fn parent_refs() -> Value {
    json!({ "type": "array", "maxItems": 32, "items": object_required(json!({
        "group": bounded_string(0, 253), "kind": bounded_string(1, 63),
        "namespace": bounded_string(1, 63), "name": bounded_string(1, 253),
        "sectionName": bounded_string(1, 253), "port": int(1, 65535)
    }), &["name"]) })
}
fn gateway_class() -> Value {
    object(json!({
        "controllerName": { "type": "string", "minLength": 1, "maxLength": 253,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9\\/\\-._~%!$&'()*+,;=:]+$",
            "x-kubernetes-validations": [{ "message": "Value is immutable", "rule": "self == oldSelf" }] },
        "parametersRef": object_required(json!({
            "group": bounded_string(0, 253), "kind": bounded_string(1, 63),
            "name": bounded_string(1, 253), "namespace": bounded_string(1, 63)
        }), &["group", "kind", "name"]),
        "description": bounded_string(0, 64)
    }))
}
fn gateway() -> Value {
    object(json!({
        "gatewayClassName": bounded_string(1, 253),
        "listeners": { "type": "array", "minItems": 1, "maxItems": 64,
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": object_required(json!({
                "name": { "type": "string", "minLength": 1, "maxLength": 253,
                          "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" },
                "hostname": bounded_string(1, 253), "port": int(1, 65535),
                "protocol": { "type": "string", "minLength": 1, "maxLength": 255 },
                "tls": open(), "allowedRoutes": open()
            }), &["name", "port", "protocol"]) },
        "addresses": { "type": "array", "maxItems": 16, "items": object_required(json!({
            "type": bounded_string(1, 253), "value": bounded_string(1, 253) }), &["value"]) },
        "infrastructure": object(json!({
            "labels": { "type": "object", "maxProperties": 8, "additionalProperties": { "type": "string", "maxLength": 63 } },
            "annotations": { "type": "object", "maxProperties": 8, "additionalProperties": { "type": "string", "maxLength": 4096 } },
            "parametersRef": object_required(json!({
                "group": bounded_string(0, 253), "kind": bounded_string(1, 63), "name": bounded_string(1, 253)
            }), &["group", "kind", "name"])
        }))
    }))
}
fn route(with_hostnames: bool) -> Value {
    let mut props = json!({ "parentRefs": parent_refs(),
        "rules": { "type": "array", "maxItems": 16, "items": open() } });
    if with_hostnames {
        props["hostnames"] =
            json!({ "type": "array", "maxItems": 16, "items": bounded_string(1, 253) });
    }
    object(props)
}
fn http_route() -> Value {
    route(true)
}
fn grpc_route() -> Value {
    route(true)
}
fn reference_grant() -> Value {
    let peer = |with_ns: bool| {
        let mut p = json!({ "group": bounded_string(0, 253), "kind": bounded_string(1, 63) });
        if with_ns {
            p["namespace"] = bounded_string(1, 63);
        } else {
            p["name"] = bounded_string(1, 253);
        }
        json!({ "type": "array", "minItems": 1, "maxItems": 16, "items": object_required(p,
            if with_ns { &["group", "kind", "namespace"] } else { &["group", "kind"] }) })
    };
    object_required(
        json!({ "from": peer(true), "to": peer(false) }),
        &["from", "to"],
    )
}

/// The CRDs of the development bundle: the 14 Istio CRDs of upstream's base
/// chart and the Gateway API standard channel that Istio documents for
/// ambient (without BackendTLSPolicy, which no ambient feature uses).
const CRDS: &[CrdSpec] = &[
    CrdSpec {
        group: "extensions.istio.io",
        kind: "WasmPlugin",
        plural: "wasmplugins",
        short_names: &[],
        versions: &["v1alpha1"],
        storage: "v1alpha1",
        namespaced: true,
        spec: wasm_plugin,
        required: &["url"],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: destination_rule,
        required: &["host"],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        short_names: &[],
        versions: &["v1alpha3"],
        storage: "v1alpha3",
        namespaced: true,
        spec: envoy_filter,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: istio_gateway,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "ProxyConfig",
        plural: "proxyconfigs",
        short_names: &[],
        versions: &["v1beta1"],
        storage: "v1beta1",
        namespaced: true,
        spec: proxy_config,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: service_entry,
        required: &["hosts"],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: sidecar,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: virtual_service,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: workload_entry,
        required: &[],
    },
    CrdSpec {
        group: "networking.istio.io",
        kind: "WorkloadGroup",
        plural: "workloadgroups",
        short_names: &["wg"],
        versions: NETWORKING,
        storage: "v1",
        namespaced: true,
        spec: workload_group,
        required: &["template"],
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        versions: SECURITY,
        storage: "v1",
        namespaced: true,
        spec: authorization_policy,
        required: &[],
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
        versions: SECURITY,
        storage: "v1",
        namespaced: true,
        spec: peer_authentication,
        required: &[],
    },
    CrdSpec {
        group: "security.istio.io",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
        versions: SECURITY,
        storage: "v1",
        namespaced: true,
        spec: request_authentication,
        required: &[],
    },
    CrdSpec {
        group: "telemetry.istio.io",
        kind: "Telemetry",
        plural: "telemetries",
        short_names: &["telemetry"],
        versions: &["v1alpha1", "v1"],
        storage: "v1alpha1",
        namespaced: true,
        spec: telemetry,
        required: &[],
    },
    CrdSpec {
        group: GATEWAY_API_GROUP,
        kind: "GatewayClass",
        plural: "gatewayclasses",
        short_names: &["gc"],
        versions: GATEWAY_V1,
        storage: "v1",
        namespaced: false,
        spec: gateway_class,
        required: &["controllerName"],
    },
    CrdSpec {
        group: GATEWAY_API_GROUP,
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gtw"],
        versions: GATEWAY_V1,
        storage: "v1",
        namespaced: true,
        spec: gateway,
        required: &["gatewayClassName", "listeners"],
    },
    CrdSpec {
        group: GATEWAY_API_GROUP,
        kind: "HTTPRoute",
        plural: "httproutes",
        short_names: &[],
        versions: GATEWAY_V1,
        storage: "v1",
        namespaced: true,
        spec: http_route,
        required: &[],
    },
    CrdSpec {
        group: GATEWAY_API_GROUP,
        kind: "GRPCRoute",
        plural: "grpcroutes",
        short_names: &[],
        versions: &["v1"],
        storage: "v1",
        namespaced: true,
        spec: grpc_route,
        required: &[],
    },
    CrdSpec {
        group: GATEWAY_API_GROUP,
        kind: "ReferenceGrant",
        plural: "referencegrants",
        short_names: &["refgrant"],
        versions: &["v1beta1"],
        storage: "v1beta1",
        namespaced: true,
        spec: reference_grant,
        required: &["from", "to"],
    },
];

impl CrdSpec {
    fn build(&self, family: CrdFamily, version: &str) -> CustomResourceDefinition {
        let name = format!("{}.{}", self.plural, self.group);
        let mut spec = (self.spec)();
        if !self.required.is_empty() {
            spec["required"] = json!(self.required);
        }
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": spec,
                "status": open(),
            },
            "required": ["spec"],
        });
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|v| {
                json!({
                    "name": v,
                    "served": true,
                    "storage": *v == self.storage,
                    "schema": { "openAPIV3Schema": schema },
                    "subresources": { "status": {} }
                })
            })
            .collect();
        let mut annotations = json!({ family.version_annotation(): version });
        if family == CrdFamily::GatewayApi {
            annotations[GATEWAY_API_CHANNEL_ANNOTATION] = "standard".into();
        }
        let categories: &[&str] = match family {
            CrdFamily::Istio => &["istio-io"],
            CrdFamily::GatewayApi => &["gateway-api"],
        };
        let value = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": name, "annotations": annotations },
            "spec": {
                "group": self.group,
                "names": {
                    "kind": self.kind,
                    "listKind": format!("{}List", self.kind),
                    "plural": self.plural,
                    "singular": self.kind.to_lowercase(),
                    "shortNames": self.short_names,
                    "categories": categories,
                },
                "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
                "versions": versions,
            }
        });
        // The schema literals above are this module's own: a failure is a bug
        // caught by the unit tests.
        serde_json::from_value(value).unwrap_or_default()
    }
}

/// The `waypoint` injection template: istiod's gateway deployment controller
/// executes it (Go `text/template` with Sprig) for every Gateway of class
/// `istio-waypoint` it owns, then applies the result, overlaid with the
/// Gateway's `infrastructure.parametersRef` ConfigMap. Per-install settings
/// come from `.Values` (the `values` key of the same ConfigMap, written by
/// the renderer); everything else from istiod's template inputs.
const WAYPOINT_TEMPLATE: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .ServiceAccount | quote }}
  namespace: {{ .Namespace | quote }}
  labels:
    {{- toJsonMap .InfrastructureLabels (strdict "gateway.networking.k8s.io/gateway-name" .Name "gateway.networking.k8s.io/gateway-class-name" .GatewayClass) | nindent 4 }}
  ownerReferences:
  - apiVersion: gateway.networking.k8s.io/v1beta1
    kind: Gateway
    name: {{ .Name | quote }}
    uid: {{ .UID | quote }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .DeploymentName | quote }}
  namespace: {{ .Namespace | quote }}
  labels:
    {{- toJsonMap .InfrastructureLabels (strdict "gateway.networking.k8s.io/gateway-name" .Name "gateway.networking.k8s.io/gateway-class-name" .GatewayClass "gateway.istio.io/managed" .ControllerLabel) | nindent 4 }}
  ownerReferences:
  - apiVersion: gateway.networking.k8s.io/v1beta1
    kind: Gateway
    name: {{ .Name | quote }}
    uid: {{ .UID | quote }}
spec:
  selector:
    matchLabels:
      {{ .GatewayNameLabel | quote }}: {{ .Name | quote }}
  template:
    metadata:
      annotations:
        {{- toJsonMap (strdict "istio.io/rev" (.Revision | default "default") "prometheus.io/path" "/stats/prometheus" "prometheus.io/port" "15020" "prometheus.io/scrape" "true") | nindent 8 }}
      labels:
        {{- toJsonMap (strdict "sidecar.istio.io/inject" "false" "istio.io/dataplane-mode" "none" "service.istio.io/canonical-name" .DeploymentName "service.istio.io/canonical-revision" "latest") .InfrastructureLabels (strdict "gateway.networking.k8s.io/gateway-name" .Name "gateway.networking.k8s.io/gateway-class-name" .GatewayClass "gateway.istio.io/managed" .ControllerLabel) | nindent 8 }}
    spec:
      serviceAccountName: {{ .ServiceAccount | quote }}
      terminationGracePeriodSeconds: 2
      containers:
      - name: istio-proxy
        image: {{ .Values.global.proxy.image | quote }}
        args:
        - proxy
        - waypoint
        - --domain
        - $(POD_NAMESPACE).svc.{{ .Values.global.proxy.clusterDomain }}
        - --serviceCluster
        - {{ .ServiceAccount }}.$(POD_NAMESPACE)
        - --proxyLogLevel
        - {{ .Values.global.proxy.logLevel | quote }}
        - --proxyComponentLogLevel
        - {{ .Values.global.proxy.componentLogLevel | quote }}
        - --log_output_level
        - {{ .Values.global.logging.level | quote }}
        env:
        - name: ISTIO_META_SERVICE_ACCOUNT
          valueFrom: { fieldRef: { fieldPath: spec.serviceAccountName } }
        - name: ISTIO_META_NODE_NAME
          valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
        - name: PILOT_CERT_PROVIDER
          value: {{ .Values.global.pilotCertProvider | quote }}
        - name: CA_ADDR
          value: {{ .Values.global.caAddress | quote }}
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
        - name: POD_NAMESPACE
          valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
        - name: INSTANCE_IP
          valueFrom: { fieldRef: { fieldPath: status.podIP } }
        - name: SERVICE_ACCOUNT
          valueFrom: { fieldRef: { fieldPath: spec.serviceAccountName } }
        - name: HOST_IP
          valueFrom: { fieldRef: { fieldPath: status.hostIP } }
        - name: ISTIO_CPU_LIMIT
          valueFrom: { resourceFieldRef: { resource: limits.cpu } }
        - name: PROXY_CONFIG
          value: |
                 {{ protoToJSON .ProxyConfig }}
        - name: GOMEMLIMIT
          valueFrom: { resourceFieldRef: { resource: limits.memory } }
        - name: GOMAXPROCS
          valueFrom: { resourceFieldRef: { resource: limits.cpu } }
        - name: ISTIO_META_CLUSTER_ID
          value: {{ .Values.global.multiCluster.clusterName | quote }}
        - name: ISTIO_META_INTERCEPTION_MODE
          value: REDIRECT
        - name: ISTIO_META_WORKLOAD_NAME
          value: {{ .DeploymentName | quote }}
        - name: ISTIO_META_OWNER
          value: kubernetes://apis/apps/v1/namespaces/{{ .Namespace }}/deployments/{{ .DeploymentName }}
        - name: ISTIO_META_MESH_ID
          value: {{ .MeshConfig.TrustDomain | default "cluster.local" | quote }}
        - name: TRUST_DOMAIN
          value: {{ .MeshConfig.TrustDomain | default "cluster.local" | quote }}
        ports:
        - { containerPort: 15020, name: metrics, protocol: TCP }
        - { containerPort: 15021, name: status-port, protocol: TCP }
        - { containerPort: 15090, name: http-envoy-prom, protocol: TCP }
        resources:
          requests: { cpu: 100m, memory: 128Mi }
          limits: { cpu: "2", memory: 1Gi }
        startupProbe:
          httpGet: { path: /healthz/ready, port: 15021, scheme: HTTP }
          failureThreshold: 30
          initialDelaySeconds: 1
          periodSeconds: 1
          timeoutSeconds: 1
        readinessProbe:
          httpGet: { path: /healthz/ready, port: 15021, scheme: HTTP }
          failureThreshold: 4
          periodSeconds: 15
          timeoutSeconds: 1
        securityContext:
          privileged: false
          runAsUser: 1337
          runAsGroup: 1337
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: { drop: [ALL] }
        volumeMounts:
        - { name: workload-socket, mountPath: /var/run/secrets/workload-spiffe-uds }
        - { name: istiod-ca-cert, mountPath: /var/run/secrets/istio }
        - { name: istio-data, mountPath: /var/lib/istio/data }
        - { name: istio-envoy, mountPath: /etc/istio/proxy }
        - { name: istio-token, mountPath: /var/run/secrets/tokens }
        - { name: istio-podinfo, mountPath: /etc/istio/pod }
      volumes:
      - { name: workload-socket, emptyDir: {} }
      - { name: istio-envoy, emptyDir: { medium: Memory } }
      - { name: istio-data, emptyDir: {} }
      - name: istio-podinfo
        downwardAPI:
          items:
          - { path: labels, fieldRef: { fieldPath: metadata.labels } }
          - { path: annotations, fieldRef: { fieldPath: metadata.annotations } }
      - name: istio-token
        projected:
          sources:
          - serviceAccountToken: { audience: istio-ca, expirationSeconds: 43200, path: istio-token }
      - name: istiod-ca-cert
        configMap: { name: istio-ca-root-cert }
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .DeploymentName | quote }}
  namespace: {{ .Namespace | quote }}
  annotations:
    networking.istio.io/traffic-distribution: PreferClose
  labels:
    {{- toJsonMap .InfrastructureLabels (strdict "gateway.networking.k8s.io/gateway-name" .Name "gateway.networking.k8s.io/gateway-class-name" .GatewayClass) | nindent 4 }}
  ownerReferences:
  - apiVersion: gateway.networking.k8s.io/v1beta1
    kind: Gateway
    name: {{ .Name | quote }}
    uid: {{ .UID | quote }}
spec:
  ipFamilyPolicy: PreferDualStack
  ports:
  {{- range $key, $val := .Ports }}
  - name: {{ $val.Name | quote }}
    port: {{ $val.Port }}
    protocol: TCP
    appProtocol: {{ $val.AppProtocol }}
  {{- end }}
  selector:
    {{ .GatewayNameLabel | quote }}: {{ .Name | quote }}
  type: {{ .ServiceType | quote }}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_bundle_is_used_only_when_it_hashes_to_its_digest_and_is_of_its_version() {
        let dev = Bundle::development("1.28.2");
        let document = meshfleet_model::BundleDocument {
            version: "1.28.2".into(),
            origin: meshfleet_model::BundleOrigin::Imported,
            crds: dev
                .crds()
                .iter()
                .map(|c| serde_json::to_value(&*c.crd).unwrap())
                .collect(),
            templates: dev.templates.clone(),
        };
        let bytes = document.canonical();
        let digest = document.digest();
        let fetched = Bundle::from_document("1.28.2", &digest, &bytes).unwrap();
        assert_eq!(
            fetched.origin,
            BundleOrigin::Imported {
                digest: digest.clone()
            }
        );
        assert_eq!(fetched.crds(), dev.crds());
        assert_eq!(fetched.template("waypoint"), dev.template("waypoint"));

        let mut tampered = bytes.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        let err = Bundle::from_document("1.28.2", &digest, &tampered).unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
        let err = Bundle::from_document("1.27.1", &digest, &bytes).unwrap_err();
        assert!(err.to_string().contains("not of 1.27.1"), "{err}");
    }

    #[test]
    fn the_development_bundle_has_real_schemas_and_version_markers() {
        let b = Bundle::development("1.28.2");
        assert_eq!(b.origin, BundleOrigin::Development);
        assert_eq!(b.crds().len(), CRDS.len());
        for c in b.crds() {
            let name = c.name().to_string();
            assert!(!name.is_empty());
            let versions = &c.crd.spec.versions;
            assert_eq!(
                versions.iter().filter(|v| v.storage).count(),
                1,
                "{name}: one storage version"
            );
            let schema = serde_json::to_value(
                versions[0]
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .unwrap(),
            )
            .unwrap();
            assert!(
                schema["properties"]["spec"]["properties"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()),
                "{name}: a typed spec, not an open object"
            );
            assert_ne!(
                schema.get("x-kubernetes-preserve-unknown-fields"),
                Some(&json!(true)),
                "{name}"
            );
            let annotations = c.crd.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations[c.family.version_annotation()], c.version);
        }
        let pa = b
            .crds()
            .iter()
            .find(|c| c.name() == "peerauthentications.security.istio.io")
            .unwrap();
        let s = serde_json::to_value(&pa.crd.spec.versions[0].schema).unwrap();
        assert_eq!(
            s["openAPIV3Schema"]["properties"]["spec"]["properties"]["mtls"]["properties"]["mode"]
                ["enum"],
            json!(["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
        );
        let gw = b
            .crds()
            .iter()
            .find(|c| c.name() == "gateways.gateway.networking.k8s.io")
            .unwrap();
        assert_eq!(gw.family, CrdFamily::GatewayApi);
        assert_eq!(gw.version, "v1.4.0");
    }

    #[test]
    fn the_gateway_api_version_follows_the_istio_minor() {
        assert_eq!(gateway_api_version("1.24.3"), "v1.2.0");
        assert_eq!(gateway_api_version("1.25.2"), "v1.2.1");
        assert_eq!(gateway_api_version("1.27.1"), "v1.3.0");
        assert_eq!(gateway_api_version("1.28.2"), "v1.4.0");
    }

    #[test]
    fn the_injection_config_carries_the_waypoint_template() {
        let b = Bundle::development("1.28.2");
        let config: Value = serde_json::from_str(&b.injection_config().unwrap()).unwrap();
        let wp = config["templates"]["waypoint"].as_str().unwrap();
        for needle in [
            "kind: Deployment",
            "kind: Service",
            "kind: ServiceAccount",
            "{{ .DeploymentName | quote }}",
            "- waypoint",
            ".Values.global.caAddress",
        ] {
            assert!(wp.contains(needle), "{needle}");
        }
        assert_eq!(config["policy"], "disabled");
    }

    #[test]
    fn a_fetched_bundle_fills_the_same_type() {
        let dev = Bundle::development("1.27.1");
        let crds: Vec<CustomResourceDefinition> =
            dev.crds().iter().map(|c| (*c.crd).clone()).collect();
        let mut templates = BTreeMap::new();
        templates.insert("waypoint".to_string(), "kind: Deployment".to_string());
        let b = Bundle::from_parts(
            "1.27.1",
            BundleOrigin::Imported {
                digest: "sha256:00".into(),
            },
            crds,
            templates,
        )
        .unwrap();
        assert_eq!(b.crds(), dev.crds());
        assert_eq!(b.template("waypoint"), Some("kind: Deployment"));
        let mut foreign = (*dev.crds()[0].crd).clone();
        foreign.spec.group = "example.com".into();
        assert!(
            Bundle::from_parts(
                "1.27.1",
                BundleOrigin::Development,
                vec![foreign],
                BTreeMap::new()
            )
            .is_err()
        );
    }
}
