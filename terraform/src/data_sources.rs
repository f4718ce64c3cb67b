//! Data sources: `meshfleet_releases` (the catalog), `meshfleet_cluster`
//! (one cluster, read-only) and `meshfleet_fleet_summary` (the tenant's
//! fleet at a glance).

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Description};
use tf_provider::{DataSource, Diagnostics};

use crate::attrs::{Attr, Kind, Mode, V, from_api, get_str, schema, set, tf_attributes};
use crate::diag;
use crate::provider::Ctx;
use crate::resources::cluster::{MESH, STATUS, cluster_value};

const RELEASE: &[Attr] = &[
    Attr::new(
        "version",
        "version",
        Kind::String,
        Mode::Computed,
        "The Istio version, e.g. `1.28.2`.",
    ),
    Attr::new(
        "channels",
        "channels",
        Kind::StringList,
        Mode::Computed,
        "Channels the version is on (`rapid`, `regular`, `stable`).",
    ),
    Attr::new(
        "released_at",
        "releasedAt",
        Kind::String,
        Mode::Computed,
        "Release date.",
    ),
    Attr::new(
        "end_of_support",
        "endOfSupport",
        Kind::String,
        Mode::Computed,
        "End of support date, if announced.",
    ),
    Attr::new(
        "retired",
        "retired",
        Kind::Bool,
        Mode::Computed,
        "A retired version cannot be newly selected.",
    ),
];

const RELEASES: &[Attr] = &[
    Attr::new(
        "releases",
        "items",
        Kind::ObjectList(RELEASE),
        Mode::Computed,
        "Every version in the catalog, newest first.",
    ),
    Attr::new(
        "versions",
        "",
        Kind::StringList,
        Mode::Computed,
        "The versions that can be selected (not retired, with a release bundle), newest first.",
    ),
];

pub struct ReleasesData {
    ctx: Ctx,
}

impl ReleasesData {
    pub fn new(ctx: Ctx) -> Self {
        ReleasesData { ctx }
    }
}

#[async_trait]
impl DataSource for ReleasesData {
    type State<'a> = V;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "meshfleet's release catalog: the Istio versions clusters and rollouts can select.",
            tf_attributes(RELEASES, false),
        ))
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, _config: V, _meta: V) -> Option<V> {
        let client = self.ctx.client(diags)?;
        let releases = match client.releases().await {
            Ok(r) => r,
            Err(e) => {
                diag::report(diags, "Cannot read the release catalog", &e, None);
                return None;
            }
        };
        let json = serde_json::json!({ "items": releases });
        let mut v = from_api(RELEASES, &json);
        set(
            &mut v,
            "versions",
            V::List(
                releases
                    .iter()
                    .filter(|r| !r.retired && r.bundle.is_some())
                    .map(|r| V::String(r.version.clone()))
                    .collect(),
            ),
        );
        Some(v)
    }
}

const LAST_HEARTBEAT: Attr = Attr::new(
    "last_heartbeat_at",
    "",
    Kind::String,
    Mode::Computed,
    "When the agent was last heard from (RFC 3339).",
);

const CLUSTER_DATA: &[Attr] = &[
    Attr::new(
        "name",
        "name",
        Kind::String,
        Mode::Required,
        "Name of the cluster to read.",
    ),
    Attr::new(
        "labels",
        "labels",
        Kind::StringMap,
        Mode::Computed,
        "The cluster's labels.",
    ),
    Attr::new(
        "mesh",
        "mesh",
        Kind::Object(MESH),
        Mode::Computed,
        "The desired mesh state (the same attributes as `meshfleet_cluster`).",
    ),
    STATUS[0],
    STATUS[1],
    STATUS[2],
    STATUS[3],
    STATUS[4],
    STATUS[5],
    LAST_HEARTBEAT,
];

pub struct ClusterData {
    ctx: Ctx,
}

impl ClusterData {
    pub fn new(ctx: Ctx) -> Self {
        ClusterData { ctx }
    }
}

#[async_trait]
impl DataSource for ClusterData {
    type State<'a> = V;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let mut attributes = tf_attributes(&CLUSTER_DATA[1..], true);
        attributes.insert(
            "name".into(),
            Attribute {
                attr_type: AttributeType::String,
                description: Description::markdown(CLUSTER_DATA[0].doc),
                constraint: AttributeConstraint::Required,
                sensitive: false,
                deprecated: false,
            },
        );
        Some(schema(
            "One cluster of the tenant, read-only: its desired mesh state and what its agent reports.",
            attributes,
        ))
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: V, _meta: V) -> Option<V> {
        let client = self.ctx.client(diags)?;
        let name = get_str(&config, "name")?.to_string();
        match client.get_cluster(&name).await {
            Ok(Some((c, _))) => {
                let mut v = cluster_value(CLUSTER_DATA, &c);
                set(
                    &mut v,
                    "last_heartbeat_at",
                    c.status
                        .last_heartbeat_at
                        .map(|t| V::String(t.to_rfc3339()))
                        .unwrap_or(V::Null),
                );
                Some(v)
            }
            Ok(None) => {
                diag::error(
                    diags,
                    format!("No cluster `{name}`"),
                    "The tenant of the provider's token has no cluster of that name.",
                );
                None
            }
            Err(e) => {
                diag::report(diags, &format!("Cannot read cluster `{name}`"), &e, None);
                None
            }
        }
    }
}

const VERSION_COUNT: &[Attr] = &[
    Attr::new(
        "version",
        "version",
        Kind::String,
        Mode::Computed,
        "An Istio version.",
    ),
    Attr::new(
        "desired",
        "desired",
        Kind::Number,
        Mode::Computed,
        "Clusters whose desired version it is.",
    ),
    Attr::new(
        "observed",
        "observed",
        Kind::Number,
        Mode::Computed,
        "Clusters whose agent reports a component on it.",
    ),
];

const EOS_COUNT: &[Attr] = &[
    Attr::new(
        "version",
        "version",
        Kind::String,
        Mode::Computed,
        "An Istio version.",
    ),
    Attr::new(
        "end_of_support",
        "endOfSupport",
        Kind::String,
        Mode::Computed,
        "Its end of support date.",
    ),
    Attr::new(
        "past",
        "past",
        Kind::Bool,
        Mode::Computed,
        "Whether the date has passed.",
    ),
    Attr::new(
        "clusters",
        "clusters",
        Kind::Number,
        Mode::Computed,
        "Clusters that want it.",
    ),
];

const FAILING: &[Attr] = &[
    Attr::new(
        "component",
        "component",
        Kind::String,
        Mode::Computed,
        "e.g. `ztunnel`.",
    ),
    Attr::new(
        "clusters",
        "clusters",
        Kind::Number,
        Mode::Computed,
        "Degraded or unhealthy clusters where it fails.",
    ),
];

const ROLLOUT_SUMMARY: &[Attr] = &[
    Attr::new(
        "id",
        "id",
        Kind::String,
        Mode::Computed,
        "The rollout's id.",
    ),
    Attr::new("name", "name", Kind::String, Mode::Computed, "Its name."),
    Attr::new(
        "target_version",
        "targetVersion",
        Kind::String,
        Mode::Computed,
        "Its target version.",
    ),
    Attr::new("state", "state", Kind::String, Mode::Computed, "Its state."),
];

const SUMMARY: &[Attr] = &[
    Attr::new(
        "clusters",
        "clusters",
        Kind::Number,
        Mode::Computed,
        "Clusters in the tenant.",
    ),
    Attr::new(
        "by_health",
        "byHealth",
        Kind::NumberMap,
        Mode::Computed,
        "Clusters per health (`Healthy`, `Progressing`, `Degraded`, `Unhealthy`, `Unknown`).",
    ),
    Attr::new(
        "by_connectivity",
        "byConnectivity",
        Kind::NumberMap,
        Mode::Computed,
        "Clusters per connectivity (`Connected`, `Stale`, `Disconnected`).",
    ),
    Attr::new(
        "versions",
        "versions",
        Kind::ObjectList(VERSION_COUNT),
        Mode::Computed,
        "Every version desired or observed, newest first.",
    ),
    Attr::new(
        "end_of_support",
        "endOfSupport",
        Kind::ObjectList(EOS_COUNT),
        Mode::Computed,
        "Desired versions past or near their end of support.",
    ),
    Attr::new(
        "lagging_total",
        "laggingTotal",
        Kind::Number,
        Mode::Computed,
        "Clusters whose agent has not caught up with their desired state.",
    ),
    Attr::new(
        "failing_components",
        "failingComponents",
        Kind::ObjectList(FAILING),
        Mode::Computed,
        "Components failing in degraded or unhealthy clusters, most clusters first.",
    ),
    Attr::new(
        "rollouts",
        "rollouts",
        Kind::ObjectList(ROLLOUT_SUMMARY),
        Mode::Computed,
        "Active rollouts, then the most recent finished ones.",
    ),
    Attr::new(
        "generated_at",
        "generatedAt",
        Kind::String,
        Mode::Computed,
        "When the figures were computed.",
    ),
];

pub struct FleetSummaryData {
    ctx: Ctx,
}

impl FleetSummaryData {
    pub fn new(ctx: Ctx) -> Self {
        FleetSummaryData { ctx }
    }
}

#[async_trait]
impl DataSource for FleetSummaryData {
    type State<'a> = V;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "The tenant's fleet at a glance (`GET /v1/fleet/summary`): clusters by health and connectivity, versions, lagging clusters, failing components, rollouts.",
            tf_attributes(SUMMARY, false),
        ))
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, _config: V, _meta: V) -> Option<V> {
        let client = self.ctx.client(diags)?;
        match client.fleet_summary().await {
            Ok(s) => Some(from_api(
                SUMMARY,
                &serde_json::to_value(&s).unwrap_or_default(),
            )),
            Err(e) => {
                diag::report(diags, "Cannot read the fleet summary", &e, None);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::get;
    use meshfleet_model::{ConnectivityCounts, FleetSummary, HealthCounts};

    #[test]
    fn the_fleet_summary_maps_counts_by_name() {
        let s = FleetSummary {
            clusters: 3,
            by_health: HealthCounts {
                healthy: 2,
                ..Default::default()
            },
            by_connectivity: ConnectivityCounts {
                disconnected: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let v = from_api(SUMMARY, &serde_json::to_value(&s).expect("json"));
        assert_eq!(get(&v, "clusters"), &V::Number(3));
        assert_eq!(get(get(&v, "by_health"), "Healthy"), &V::Number(2));
        assert_eq!(
            get(get(&v, "by_connectivity"), "Disconnected"),
            &V::Number(1)
        );
    }
}
