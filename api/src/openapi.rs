//! The OpenAPI document, generated from the route annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{agent, clusters, events, fleet, health, operations, ops, releases, rollouts};

mod contract;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshfleet API",
        description = "Tenants' API of meshfleet, the control plane of a managed Istio ambient mesh. \
Every error is application/problem+json. Writes honour If-Match with the strong ETag of the resource.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "clusters", description = "Registered clusters and their desired mesh state"),
        (name = "fleet", description = "The tenant's fleet at a glance (health dashboard)"),
        (name = "releases", description = "The Istio release catalog"),
        (name = "events", description = "Audit and activity log"),
        (name = "rollouts", description = "Fleet-wide staged upgrades that pause and roll back on bad health"),
        (name = "operations", description = "Long-running work: cluster deletions, rollouts"),
        (name = "agents", description = "A cluster's agent, as its tenant manages it"),
        (name = "agent protocol", description = "The routes the fleet agent calls"),
        (name = "ops", description = "Operator (sre) routes"),
        (name = "health", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        http.description = Some("A JWT with `sub`, `tid` (tenant) and `roles` claims".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
        let mut agent = Http::new(HttpAuthScheme::Bearer);
        agent.description =
            Some("The cluster's agent credential from POST /v1/agent/register".into());
        components.add_security_scheme("agent", SecurityScheme::Http(agent));
    }
}

/// Every documented route, with its handler.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(clusters::list_clusters))
        .routes(routes!(
            clusters::put_cluster,
            clusters::get_cluster,
            clusters::patch_cluster,
            clusters::delete_cluster
        ))
        .routes(routes!(agent::create_bootstrap_token))
        .routes(routes!(agent::agent_manifest))
        .routes(routes!(agent::revoke_credential))
        .routes(routes!(agent::status_history))
        .routes(routes!(agent::register))
        .routes(routes!(agent::rotate))
        .routes(routes!(agent::desired_state))
        .routes(routes!(agent::put_status))
        .routes(routes!(releases::list_releases))
        .routes(routes!(releases::put_release))
        .routes(routes!(releases::put_bundle))
        .routes(routes!(agent::get_bundle))
        .routes(routes!(events::list_events))
        .routes(routes!(operations::get_operation))
        .routes(routes!(rollouts::create_rollout, rollouts::list_rollouts))
        .routes(routes!(rollouts::get_rollout))
        .routes(routes!(rollouts::act_on_rollout))
        .routes(routes!(fleet::fleet_summary))
        .routes(routes!(ops::ops_summary))
        .routes(routes!(ops::ops_clusters))
        .routes(routes!(ops::ops_cluster))
        .routes(routes!(ops::sli))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The document served at `/openapi.json`.
pub fn document() -> serde_json::Value {
    finish(api_router().into_openapi())
}

/// The generated document made whole: its version, and what the route
/// annotations cannot say (`contract`). JSON, since utoipa's types cannot
/// hold all of it (`oneOf`/`not` beside `properties`, say).
pub fn finish(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    value["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    contract::apply(&mut value);
    value
}

/// The document as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = super::document_json();
        assert!(
            committed == generated,
            "openapi/openapi.json is out of date; regenerate it with `cargo run -p meshfleet -- openapi --output openapi/openapi.json`"
        );
    }
}
