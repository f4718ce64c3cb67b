//! Sample inputs for tests, golden files and the fleet simulator.

use meshfleet_model::{
    AccessLogEncoding, ComponentImages, DesiredState, DesiredWaypoint, LogLevel, MeshConfig,
    MeshMode, MtlsMode, Resources, TrafficType, revision_of,
};
use uuid::Uuid;

/// A fixed cluster id, so rendered output is stable.
pub const SAMPLE_CLUSTER_ID: Uuid = Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001);

/// An ambient, strict-mTLS desired state at `version` with two enrolled
/// namespaces (`shop` with one waypoint, `payments` with none).
pub fn desired(version: &str) -> DesiredState {
    DesiredState {
        cluster_name: "prod-eu-1".to_string(),
        cluster_id: SAMPLE_CLUSTER_ID,
        generation: 1,
        mode: MeshMode::Ambient,
        version: version.to_string(),
        revision: revision_of(version),
        images: ComponentImages::upstream(version),
        mtls: MtlsMode::Strict,
        enrolled_namespaces: vec!["shop".to_string(), "payments".to_string()],
        waypoints: vec![DesiredWaypoint {
            namespace: "shop".to_string(),
            name: "shop-waypoint".to_string(),
            traffic_type: TrafficType::Service,
            replicas: 2,
        }],
        istiod_replicas: 2,
        ztunnel_log_level: LogLevel::Info,
        ztunnel_resources: Resources {
            cpu: Some("200m".to_string()),
            memory: Some("512Mi".to_string()),
        },
        mesh_config: MeshConfig {
            access_log_file: Some("/dev/stdout".to_string()),
            access_log_encoding: Some(AccessLogEncoding::Json),
            enable_tracing: None,
            outbound_traffic_policy: None,
        },
        bundle: None,
        purge_crds: false,
        force_purge_crds: false,
    }
}

/// What the agent would own after applying `steps` (as `list_owned` reports it).
pub fn owned_objects(steps: &[crate::RenderedStep]) -> Vec<crate::OwnedObject> {
    steps
        .iter()
        .flat_map(|s| {
            s.objects.iter().map(move |o| crate::OwnedObject {
                reference: o.reference(),
                component: Some(s.step.name().to_string()),
            })
        })
        .collect()
}
