//! `meshfleet_cluster`: one registered cluster and its desired mesh state
//! (`/v1/clusters/{name}`).
//!
//! Create is `PUT` with `If-None-Match: *`; update is a whole-spec `PUT` with
//! `If-Match` carrying the ETag read at refresh (kept in the private state);
//! destroy is `DELETE` (with `If-Match`) and waits for the deletion operation.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use meshfleet_model::{Cluster, ClusterInput, OperationStatus};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::attrs::{
    self, Absent, Attr, Kind, Mode, V, api_body, from_api, get, get_bool, get_str, inputs, plan,
    schema, set, tf_attributes,
};
use crate::client::{Client, Deletion};
use crate::diag;
use crate::error::Error;
use crate::provider::{Ctx, parse_duration};
use crate::versions;

const SLOT: &[Attr] = &[
    Attr::new(
        "day",
        "day",
        Kind::String,
        Mode::Required,
        "Day of the week, UTC: `monday` … `sunday`.",
    ),
    Attr::new(
        "start",
        "start",
        Kind::String,
        Mode::Required,
        "Start time, `HH:MM`, 24-hour, UTC.",
    ),
    Attr::new(
        "duration_minutes",
        "durationMinutes",
        Kind::Number,
        Mode::Required,
        "Length of the slot, 30 to 1440 minutes.",
    ),
];

const WINDOW: &[Attr] = &[Attr::new(
    "slots",
    "slots",
    Kind::ObjectList(SLOT),
    Mode::Required,
    "Weekly UTC slots (at least one; slots may not overlap).",
)];

const UPGRADE: &[Attr] = &[
    Attr::new(
        "mode",
        "mode",
        Kind::String,
        Mode::Required,
        "`manual` (pinned to `version`) or `automatic` (follows `channel` inside the maintenance window).",
    ),
    Attr::new(
        "version",
        "version",
        Kind::String,
        Mode::Optional,
        "The pinned Istio version with `mode = \"manual\"`, e.g. `1.28.2`; must be in the release catalog (`data.meshfleet_releases`), one minor at a time. A fleet rollout moves it too.",
    ),
    Attr::new(
        "channel",
        "channel",
        Kind::String,
        Mode::Optional,
        "The release channel with `mode = \"automatic\"`: `rapid`, `regular` or `stable`.",
    ),
];

const WAYPOINT: &[Attr] = &[
    Attr::new(
        "namespace",
        "namespace",
        Kind::String,
        Mode::Required,
        "Namespace of the waypoint; must be one of `enrolled_namespaces`.",
    ),
    Attr::new(
        "name",
        "name",
        Kind::String,
        Mode::Required,
        "Name of the waypoint's Gateway.",
    ),
    Attr::new(
        "traffic_type",
        "trafficType",
        Kind::String,
        Mode::OptionalComputed,
        "`service` (default), `workload` or `all`.",
    )
    .or(Absent::Str("service")),
    Attr::new(
        "replicas",
        "replicas",
        Kind::Number,
        Mode::OptionalComputed,
        "Replicas of the waypoint proxy, 1 to 10 (default 1).",
    )
    .or(Absent::Num(1)),
];

const ISTIOD: &[Attr] = &[Attr::new(
    "replicas",
    "replicas",
    Kind::Number,
    Mode::OptionalComputed,
    "istiod replicas, 1 to 10 (default 2).",
)
.or(Absent::Num(2))];

const RESOURCES: &[Attr] = &[
    Attr::new(
        "cpu",
        "cpu",
        Kind::String,
        Mode::Optional,
        "CPU request as a Kubernetes quantity, e.g. `200m`.",
    ),
    Attr::new(
        "memory",
        "memory",
        Kind::String,
        Mode::Optional,
        "Memory request as a Kubernetes quantity, e.g. `512Mi`.",
    ),
];

const ZTUNNEL: &[Attr] = &[
    Attr::new(
        "log_level",
        "logLevel",
        Kind::String,
        Mode::OptionalComputed,
        "`error`, `warn`, `info` (default), `debug` or `trace`.",
    )
    .or(Absent::Str("info")),
    Attr::new(
        "resources",
        "resources",
        Kind::Object(RESOURCES),
        Mode::OptionalComputed,
        "Resource requests of the ztunnel pods.",
    )
    .or(Absent::Nested),
];

const COMPONENTS: &[Attr] = &[
    Attr::new(
        "istiod",
        "istiod",
        Kind::Object(ISTIOD),
        Mode::OptionalComputed,
        "The control plane.",
    )
    .or(Absent::Nested),
    Attr::new(
        "ztunnel",
        "ztunnel",
        Kind::Object(ZTUNNEL),
        Mode::OptionalComputed,
        "The node-level L4 overlay.",
    )
    .or(Absent::Nested),
];

const OUTBOUND: &[Attr] = &[Attr::new(
    "mode",
    "mode",
    Kind::String,
    Mode::Required,
    "`ALLOW_ANY` or `REGISTRY_ONLY`.",
)];

const MESH_CONFIG: &[Attr] = &[
    Attr::new(
        "access_log_file",
        "accessLogFile",
        Kind::String,
        Mode::Optional,
        "`\"\"` (off) or `/dev/stdout`.",
    ),
    Attr::new(
        "access_log_encoding",
        "accessLogEncoding",
        Kind::String,
        Mode::Optional,
        "`TEXT` or `JSON`.",
    ),
    Attr::new(
        "enable_tracing",
        "enableTracing",
        Kind::Bool,
        Mode::Optional,
        "Istio's `enableTracing`.",
    ),
    Attr::new(
        "outbound_traffic_policy",
        "outboundTrafficPolicy",
        Kind::Object(OUTBOUND),
        Mode::Optional,
        "Istio's `outboundTrafficPolicy`.",
    ),
];

const UNINSTALL: &[Attr] = &[
    Attr::new(
        "purge_crds",
        "purgeCrds",
        Kind::Bool,
        Mode::OptionalComputed,
        "When the mesh is uninstalled (`mode = \"disabled\"`, or the cluster is destroyed), also delete the CRDs the agent installed. The agent keeps each CRD that still holds custom resources it did not create (the customer's AuthorizationPolicies, other controllers' Gateways) and says so, unless `force`. Default `false`.",
    )
    .or(Absent::Bool(false)),
    Attr::new(
        "force",
        "force",
        Kind::Bool,
        Mode::OptionalComputed,
        "With `purge_crds`, delete the CRDs even while they hold such custom resources, which are deleted with them. Default `false`.",
    )
    .or(Absent::Bool(false)),
];

pub const MESH: &[Attr] = &[
    Attr::new(
        "mode",
        "mode",
        Kind::String,
        Mode::OptionalComputed,
        "`ambient` (default) or `disabled`.",
    )
    .or(Absent::Str("ambient")),
    Attr::new(
        "upgrade",
        "upgrade",
        Kind::Object(UPGRADE),
        Mode::Required,
        "Version policy: a pinned version or a release channel.",
    ),
    Attr::new(
        "maintenance_window",
        "maintenanceWindow",
        Kind::Object(WINDOW),
        Mode::Optional,
        "Weekly UTC slots in which automatic upgrades may start.",
    ),
    Attr::new(
        "mtls",
        "mtls",
        Kind::String,
        Mode::OptionalComputed,
        "`strict` (default) or `permissive`.",
    )
    .or(Absent::Str("strict")),
    Attr::new(
        "enrolled_namespaces",
        "enrolledNamespaces",
        Kind::StringList,
        Mode::OptionalComputed,
        "Namespaces that join the ambient data plane (`istio.io/dataplane-mode=ambient`).",
    )
    .or(Absent::EmptyList),
    Attr::new(
        "waypoints",
        "waypoints",
        Kind::ObjectList(WAYPOINT),
        Mode::OptionalComputed,
        "L7 waypoint proxies (Gateway API `Gateway`s of class `istio-waypoint`).",
    )
    .or(Absent::EmptyList),
    Attr::new(
        "components",
        "components",
        Kind::Object(COMPONENTS),
        Mode::OptionalComputed,
        "Per-component knobs.",
    )
    .or(Absent::Nested),
    Attr::new(
        "mesh_config",
        "meshConfig",
        Kind::Object(MESH_CONFIG),
        Mode::OptionalComputed,
        "The allow-listed part of Istio's `MeshConfig`.",
    )
    .or(Absent::Nested),
    Attr::new(
        "uninstall",
        "uninstall",
        Kind::Object(UNINSTALL),
        Mode::OptionalComputed,
        "What uninstalling the mesh removes beyond the agent's own objects.",
    )
    .or(Absent::Nested),
];

const TIMEOUTS: &[Attr] = &[Attr::new(
    "delete",
    "delete",
    Kind::String,
    Mode::Optional,
    "How long destroy waits for the deletion operation, e.g. `20m` (default: the provider's `delete_timeout`).",
)];

/// Read-only attributes every cluster shows (resource and data source).
pub const STATUS: &[Attr] = &[
    Attr::new(
        "id",
        "id",
        Kind::String,
        Mode::Computed,
        "The cluster's UUID.",
    ),
    Attr::new(
        "generation",
        "generation",
        Kind::Number,
        Mode::Computed,
        "Bumped on every change of `mesh`.",
    ),
    Attr::new(
        "desired_version",
        "desiredVersion",
        Kind::String,
        Mode::Computed,
        "The concrete Istio version the desired state resolves to today.",
    ),
    Attr::new(
        "health",
        "",
        Kind::String,
        Mode::Computed,
        "`Healthy`, `Progressing`, `Degraded`, `Unhealthy` or `Unknown` (no agent report yet).",
    ),
    Attr::new(
        "connectivity",
        "",
        Kind::String,
        Mode::Computed,
        "`Connected`, `Stale` or `Disconnected`, from the agent's heartbeats.",
    ),
    Attr::new(
        "observed_generation",
        "",
        Kind::Number,
        Mode::Computed,
        "The generation the agent last reported as applied.",
    ),
];

const NAME: Attr = Attr::new(
    "name",
    "name",
    Kind::String,
    Mode::Required,
    "The cluster's name (a DNS label, unique in the tenant). Changing it replaces the cluster.",
);
const LABELS: Attr = Attr::new(
    "labels",
    "labels",
    Kind::StringMap,
    Mode::OptionalComputed,
    "Labels (Kubernetes label syntax) used by selectors and rollouts.",
)
.or(Absent::EmptyMap);
const MESH_ATTR: Attr = Attr::new(
    "mesh",
    "mesh",
    Kind::Object(MESH),
    Mode::Required,
    "The desired mesh state. Attributes left out take the API's defaults.",
);

const CLUSTER: &[Attr] = &[
    NAME,
    LABELS,
    MESH_ATTR,
    STATUS[0],
    STATUS[1],
    STATUS[2],
    STATUS[3],
    STATUS[4],
    STATUS[5],
    Attr::new(
        "force_destroy",
        "",
        Kind::Bool,
        Mode::Optional,
        "Destroy removes the record at once (`?force=true`, owner role) instead of waiting for the agent to uninstall the mesh, which then stays installed.",
    ),
    Attr::new(
        "timeouts",
        "",
        Kind::Object(TIMEOUTS),
        Mode::Optional,
        "Time limits of long-running operations.",
    ),
];

/// The attributes of the API body (`{name, labels, mesh}`), for pointers.
pub const BODY: &[Attr] = &[NAME, LABELS, MESH_ATTR];

/// Computed attributes that any update may change (the agent's view).
const VOLATILE: &[&str] = &["health", "connectivity", "observed_generation"];

/// Computed attributes that a change of `mesh` changes.
const MESH_VOLATILE: &[&str] = &["generation", "desired_version"];

/// The private state: the ETag of the last read or write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Private {
    pub etag: String,
}

/// A cluster as Terraform values of `attrs` (the API's fields plus status).
pub fn cluster_value(attrs: &[Attr], c: &Cluster) -> V {
    let json = serde_json::to_value(c).unwrap_or_default();
    let mut v = from_api(attrs, &json);
    set(
        &mut v,
        "health",
        V::String(format!("{:?}", c.status.health)),
    );
    set(
        &mut v,
        "connectivity",
        V::String(format!("{:?}", c.status.connectivity)),
    );
    set(
        &mut v,
        "observed_generation",
        c.status
            .observed_generation
            .map(V::Number)
            .unwrap_or(V::Null),
    );
    v
}

/// The state after a read or write: the API's view plus the provider-only
/// attributes as configured.
fn state_of(c: &Cluster, prior: &V) -> V {
    let mut v = cluster_value(CLUSTER, c);
    for name in ["force_destroy", "timeouts"] {
        set(&mut v, name, get(prior, name).clone());
    }
    v
}

pub struct ClusterResource {
    ctx: Ctx,
}

impl ClusterResource {
    pub fn new(ctx: Ctx) -> Self {
        ClusterResource { ctx }
    }

    /// Plan-time checks of the version policy against the release catalog.
    fn check_plan(&self, planned: &V, current: Option<&str>, diags: &mut Diagnostics) {
        let upgrade = get(get(planned, "mesh"), "upgrade");
        let at = |leaf: &'static str| {
            AttributePath::new("mesh")
                .attribute("upgrade")
                .attribute(leaf)
        };
        match (get(upgrade, "mode"), get(upgrade, "version")) {
            (V::String(mode), V::Null) if mode == "manual" => diag::attribute_error(
                diags,
                "A manual upgrade policy needs a version",
                "Set `mesh.upgrade.version` (see `data.meshfleet_releases`), or use `mode = \"automatic\"` with a `channel`.",
                at("version"),
            ),
            (V::String(mode), V::String(version)) if mode == "manual" => {
                if let Some(catalog) = self.ctx.catalog()
                    && let Some(why) = versions::refusal(catalog, current, version)
                {
                    diag::attribute_error(
                        diags,
                        format!("meshfleet would refuse Istio {version}"),
                        why,
                        at("version"),
                    );
                }
            }
            (V::String(mode), _) if mode == "automatic" && get(upgrade, "channel") == &V::Null => {
                diag::attribute_error(
                    diags,
                    "An automatic upgrade policy needs a channel",
                    "Set `mesh.upgrade.channel` to `rapid`, `regular` or `stable`.",
                    at("channel"),
                )
            }
            _ => {}
        }
    }

    async fn wait_for_deletion(
        &self,
        client: &Client,
        name: &str,
        operation: &str,
        timeout: Duration,
        diags: &mut Diagnostics,
    ) -> Option<()> {
        let deadline = Instant::now() + timeout;
        let action = format!("Cannot delete cluster `{name}`");
        loop {
            let op = match client.get_operation(operation).await {
                Ok(op) => op,
                Err(e) => {
                    diag::report(diags, &action, &e, None);
                    return None;
                }
            };
            match op.status {
                OperationStatus::Succeeded => return Some(()),
                OperationStatus::Failed | OperationStatus::Cancelled => {
                    let why = op
                        .error
                        .map(|p| p.detail)
                        .unwrap_or_else(|| "no reason given".into());
                    diag::error(
                        diags,
                        format!(
                            "{action}: its deletion operation {}",
                            op.status.as_str().to_lowercase()
                        ),
                        format!("{why}\n\noperation: {operation}"),
                    );
                    return None;
                }
                OperationStatus::Running => {}
            }
            if Instant::now() >= deadline {
                diag::error(
                    diags,
                    format!(
                        "{action}: still deleting after {}",
                        humantime::format_duration(timeout)
                    ),
                    format!(
                        "The agent has not finished uninstalling the mesh. Poll {operation}, raise `timeouts.delete`, \
                         or set `force_destroy = true` to remove the record and leave the mesh installed."
                    ),
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn private_etag(p: &Option<Private>) -> Option<&str> {
    p.as_ref().map(|p| p.etag.as_str())
}

#[async_trait]
impl Resource for ClusterResource {
    type State<'a> = V;
    type PrivateState<'a> = Option<Private>;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A cluster registered with meshfleet and its desired mesh state. Import with `terraform import meshfleet_cluster.<name> <cluster name>`.",
            tf_attributes(CLUSTER, false),
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: V) -> Option<()> {
        diag::check_duration(
            diags,
            get(get(&config, "timeouts"), "delete"),
            AttributePath::new("timeouts").attribute("delete"),
        );
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: V,
        private: Option<Private>,
        _meta: V,
    ) -> Option<(V, Option<Private>)> {
        let client = self.ctx.client(diags)?;
        let name = get_str(&state, "name")?.to_string();
        match client.get_cluster(&name).await {
            Ok(Some((c, etag))) => Some((state_of(&c, &state), Some(Private { etag }))),
            // gone: Terraform plans to create it again
            Ok(None) => Some((V::Null, private)),
            Err(e) => {
                diag::report(diags, &format!("Cannot read cluster `{name}`"), &e, None);
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        _proposed: V,
        config: V,
        _meta: V,
    ) -> Option<(V, Option<Private>)> {
        let planned = plan(CLUSTER, &config);
        self.check_plan(&planned, None, diags);
        Some((planned, None))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: V,
        _proposed: V,
        config: V,
        private: Option<Private>,
        _meta: V,
    ) -> Option<(V, Option<Private>, Vec<AttributePath>)> {
        let mut planned = plan(CLUSTER, &config);
        if inputs(CLUSTER, &planned) == inputs(CLUSTER, &prior) {
            return Some((prior, private, vec![]));
        }
        let mut replace = vec![];
        if get(&planned, "name") != get(&prior, "name") {
            replace.push(AttributePath::new("name"));
            self.check_plan(&planned, None, diags);
            return Some((planned, private, replace));
        }
        for s in STATUS {
            set(&mut planned, s.name, get(&prior, s.name).clone());
        }
        if inputs(BODY, &planned) != inputs(BODY, &prior) {
            for name in VOLATILE {
                set(&mut planned, name, V::Unknown);
            }
        }
        if get(&planned, "mesh") != get(&prior, "mesh") {
            for name in MESH_VOLATILE {
                set(&mut planned, name, V::Unknown);
            }
            let upgrade = |v: &V| get(get(v, "mesh"), "upgrade").clone();
            if upgrade(&planned) != upgrade(&prior) {
                self.check_plan(&planned, get_str(&prior, "desired_version"), diags);
            }
        }
        Some((planned, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        private: Option<Private>,
        _meta: V,
    ) -> Option<Option<Private>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: V,
        _config: V,
        _private: Option<Private>,
        _meta: V,
    ) -> Option<(V, Option<Private>)> {
        let client = self.ctx.client(diags)?;
        let name = get_str(&planned, "name")?.to_string();
        let input: ClusterInput = api_body(BODY, &planned, diags)?;
        match client.create_cluster(&name, &input).await {
            Ok((c, etag)) => Some((state_of(&c, &planned), Some(Private { etag }))),
            Err(Error::PreconditionFailed(detail)) => {
                diag::error_at(
                    diags,
                    format!("Cluster `{name}` already exists"),
                    format!(
                        "{detail}.\n\nTo manage it with Terraform, import it: \
                         `terraform import <this resource's address> {name}` \
                         (or an `import` block with `id = \"{name}\"`)."
                    ),
                    AttributePath::new("name"),
                );
                None
            }
            Err(e) => {
                diag::report(
                    diags,
                    &format!("Cannot create cluster `{name}`"),
                    &e,
                    Some(BODY),
                );
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: V,
        planned: V,
        _config: V,
        private: Option<Private>,
        _meta: V,
    ) -> Option<(V, Option<Private>)> {
        if inputs(BODY, &planned) == inputs(BODY, &prior) {
            // only provider-side settings changed
            return Some((planned, private));
        }
        let client = self.ctx.client(diags)?;
        let name = get_str(&planned, "name")?.to_string();
        let input: ClusterInput = api_body(BODY, &planned, diags)?;
        match client
            .replace_cluster(&name, &input, private_etag(&private))
            .await
        {
            Ok((c, etag)) => Some((state_of(&c, &planned), Some(Private { etag }))),
            Err(e) => {
                diag::report(
                    diags,
                    &format!("Cannot update cluster `{name}`"),
                    &e,
                    Some(BODY),
                );
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: V,
        private: Option<Private>,
        _meta: V,
    ) -> Option<()> {
        let client = self.ctx.client(diags)?;
        let name = get_str(&prior, "name")?.to_string();
        let force = get_bool(&prior, "force_destroy").unwrap_or(false);
        let timeout = attrs::get_str(get(&prior, "timeouts"), "delete")
            .and_then(parse_duration)
            .unwrap_or_else(|| self.ctx.delete_timeout());
        match client
            .delete_cluster(&name, private_etag(&private), force)
            .await
        {
            Ok(Deletion::Done) => Some(()),
            Ok(Deletion::Started { operation }) => {
                tracing::info!(%name, %operation, ?timeout, "waiting for the deletion operation");
                self.wait_for_deletion(client, &name, &operation, timeout, diags)
                    .await
            }
            Err(e) if e.status() == Some(404) => Some(()),
            Err(e) => {
                diag::report(diags, &format!("Cannot delete cluster `{name}`"), &e, None);
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(V, Option<Private>)> {
        let client = self.ctx.client(diags)?;
        match client.get_cluster(&id).await {
            Ok(Some((c, etag))) => Some((state_of(&c, &V::Null), Some(Private { etag }))),
            Ok(None) => {
                diag::error(
                    diags,
                    format!("No cluster `{id}` to import"),
                    "The tenant of the provider's token has no cluster of that name.",
                );
                None
            }
            Err(e) => {
                diag::report(diags, &format!("Cannot import cluster `{id}`"), &e, None);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{object, to_api};
    use meshfleet_model::MeshSpec;

    /// A configuration that sets only the required attributes plans exactly
    /// what the API stores for the same minimal body: left-out attributes
    /// are the API's defaults, so a plan after apply (or import) is empty.
    #[test]
    fn left_out_attributes_plan_the_apis_defaults() {
        let config = object(&[
            ("name", V::String("c".into())),
            (
                "mesh",
                object(&[(
                    "upgrade",
                    object(&[
                        ("mode", V::String("manual".into())),
                        ("version", V::String("1.28.2".into())),
                    ]),
                )]),
            ),
        ]);
        let planned = plan(BODY, &config);
        let spec: MeshSpec =
            serde_json::from_str(r#"{"upgrade":{"mode":"manual","version":"1.28.2"}}"#)
                .expect("spec");
        let stored = from_api(MESH, &serde_json::to_value(&spec).expect("json"));
        assert_eq!(get(&planned, "mesh"), &stored);
        assert_eq!(get(&planned, "labels"), &V::Map(Default::default()));
    }

    #[test]
    fn a_full_spec_survives_the_round_trip_through_terraform_values() {
        let spec: MeshSpec = serde_json::from_value(serde_json::json!({
            "mode": "ambient",
            "upgrade": {"mode": "manual", "version": "1.27.1"},
            "maintenanceWindow": {"slots": [{"day": "saturday", "start": "02:00", "durationMinutes": 240}]},
            "mtls": "permissive",
            "enrolledNamespaces": ["shop"],
            "waypoints": [{"namespace": "shop", "name": "w", "trafficType": "all", "replicas": 3}],
            "components": {"istiod": {"replicas": 3}, "ztunnel": {"logLevel": "debug", "resources": {"cpu": "200m"}}},
            "meshConfig": {"accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON", "enableTracing": true,
                           "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
            "uninstall": {"purgeCrds": true, "force": true}
        }))
        .expect("spec");
        let tf = from_api(MESH, &serde_json::to_value(&spec).expect("json"));
        let back = to_api(MESH, &tf, &AttributePath::root()).expect("known");
        let again: MeshSpec = serde_json::from_value(back).expect("spec");
        assert_eq!(again, spec);
    }

    #[test]
    fn the_version_pointer_lands_on_the_version_attribute() {
        assert_eq!(
            attrs::pointer_path(BODY, "/mesh/upgrade/version"),
            AttributePath::new("mesh")
                .attribute("upgrade")
                .attribute("version")
        );
        assert_eq!(
            attrs::pointer_path(BODY, "/mesh/waypoints/0/namespace"),
            AttributePath::new("mesh")
                .attribute("waypoints")
                .index(0)
                .attribute("namespace")
        );
    }
}
