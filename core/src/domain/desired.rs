//! The effective desired state an agent receives: the spec with its version
//! resolved and the release's images, with a content-hash ETag.

use meshfleet_model::{DesiredState, DesiredWaypoint, revision_of};
use sha2::{Digest, Sha256};

use meshfleet_model::{ComponentImages, MeshSpec};
use sqlx::types::Json;
use uuid::Uuid;

/// What the effective desired state is made of (one row of the store).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesiredRow {
    pub name: String,
    pub id: Uuid,
    pub mesh: Json<MeshSpec>,
    pub generation: i64,
    pub desired_version: String,
    pub images: Json<ComponentImages>,
    pub bundle_digest: Option<String>,
    pub bundle_origin: Option<String>,
    /// `traceparent` of the span that last changed the desired state (see
    /// `meshfleet_telemetry::current_traceparent`); not part of the state or its ETag.
    pub change_traceparent: Option<String>,
}

pub fn effective(row: DesiredRow) -> DesiredState {
    let mesh = row.mesh.0;
    let bundle = super::bundle::bundle_ref(row.bundle_digest, row.bundle_origin.as_deref());
    DesiredState {
        cluster_name: row.name,
        cluster_id: row.id,
        generation: row.generation,
        mode: mesh.mode,
        revision: revision_of(&row.desired_version),
        version: row.desired_version,
        images: row.images.0,
        mtls: mesh.mtls,
        enrolled_namespaces: mesh.enrolled_namespaces,
        waypoints: mesh
            .waypoints
            .into_iter()
            .map(|w| DesiredWaypoint {
                namespace: w.namespace,
                name: w.name,
                traffic_type: w.traffic_type,
                replicas: w.replicas,
            })
            .collect(),
        istiod_replicas: mesh.components.istiod.replicas,
        ztunnel_log_level: mesh.components.ztunnel.log_level,
        ztunnel_resources: mesh.components.ztunnel.resources,
        mesh_config: mesh.mesh_config,
        bundle,
        purge_crds: mesh.uninstall.purge_crds,
        force_purge_crds: mesh.uninstall.purge_crds && mesh.uninstall.force,
    }
}

/// Strong ETag: the SHA-256 of the serialized state (struct field order is fixed).
pub fn etag(state: &DesiredState) -> String {
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16]))
}
