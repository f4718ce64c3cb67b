//! The `meshfleet` provider: its configuration (endpoint, token, default
//! delete timeout) and the resources and data sources it serves.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use meshfleet_model::Release;
use tf_provider::schema::{Block, Description, Schema};
use tf_provider::{AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::attrs::{Absent, Attr, Kind, Mode, V, get, tf_attributes};
use crate::client::Client;
use crate::data_sources::{ClusterData, FleetSummaryData, ReleasesData};
use crate::diag;
use crate::resources::{BootstrapTokenResource, ClusterResource, RolloutResource};

pub const ENDPOINT_ENV: &str = "MESHFLEET_URL";
pub const TOKEN_ENV: &str = "MESHFLEET_TOKEN";
pub const DEFAULT_DELETE_TIMEOUT: &str = "20m";

const CONFIG: &[Attr] = &[
    Attr::new(
        "endpoint",
        "",
        Kind::String,
        Mode::Optional,
        "Base URL of the meshfleet API, e.g. `http://127.0.0.1:8080`. Defaults to `MESHFLEET_URL`.",
    ),
    Attr::new(
        "token",
        "",
        Kind::String,
        Mode::Optional,
        "Bearer token (a JWT naming the tenant and its roles; `contributor` or `owner` to change things). Defaults to `MESHFLEET_TOKEN`.",
    )
    .sensitive(),
    Attr::new(
        "delete_timeout",
        "",
        Kind::String,
        Mode::Optional,
        "How long a cluster's destroy waits for its deletion operation unless the resource sets `timeouts.delete` (a duration such as `20m`; default `20m`).",
    )
    .or(Absent::Str(DEFAULT_DELETE_TIMEOUT)),
];

/// What the provider's resources share once it is configured.
#[derive(Debug, Default)]
pub struct Shared {
    client: OnceLock<Client>,
    catalog: OnceLock<Vec<Release>>,
    delete_timeout: OnceLock<Duration>,
}

pub type Ctx = Arc<Shared>;

impl Shared {
    /// The configured client, or a diagnostic.
    pub fn client(&self, diags: &mut Diagnostics) -> Option<&Client> {
        let c = self.client.get();
        if c.is_none() {
            diag::error(
                diags,
                "The meshfleet provider is not configured",
                "Terraform called the provider before configuring it.",
            );
        }
        c
    }

    /// The release catalog read when the provider was configured.
    pub fn catalog(&self) -> Option<&[Release]> {
        self.catalog.get().map(Vec::as_slice)
    }

    pub fn delete_timeout(&self) -> Duration {
        self.delete_timeout
            .get()
            .copied()
            .unwrap_or(Duration::from_secs(20 * 60))
    }
}

#[derive(Debug, Default)]
pub struct MeshfleetProvider {
    ctx: Ctx,
}

/// A configured string: the attribute, else the environment variable.
fn setting(config: &V, name: &str, env: &str) -> Result<Option<String>, ()> {
    match get(config, name) {
        V::String(s) if !s.is_empty() => Ok(Some(s.clone())),
        V::Unknown => Err(()),
        _ => Ok(std::env::var(env).ok().filter(|s| !s.is_empty())),
    }
}

/// Parses a duration such as `20m` or `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

#[async_trait]
impl Provider for MeshfleetProvider {
    type Config<'a> = V;
    type MetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes: tf_attributes(CONFIG, false),
                description: Description::markdown(
                    "Manages meshfleet clusters, their agents' bootstrap tokens and fleet rollouts through the meshfleet REST API.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: V) -> Option<()> {
        diag::check_duration(
            diags,
            get(&config, "delete_timeout"),
            AttributePath::new("delete_timeout"),
        );
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: V,
    ) -> Option<()> {
        let (Ok(endpoint), Ok(token)) = (
            setting(&config, "endpoint", ENDPOINT_ENV),
            setting(&config, "token", TOKEN_ENV),
        ) else {
            diag::error(
                diags,
                "The meshfleet provider's endpoint and token must be known when planning",
                "They depend on a value that is only known after apply; use a variable or MESHFLEET_URL/MESHFLEET_TOKEN.",
            );
            return None;
        };
        let Some(endpoint) = endpoint else {
            diag::error_at(
                diags,
                "No meshfleet endpoint",
                format!(
                    "Set `endpoint` in the provider block or {ENDPOINT_ENV} (e.g. http://127.0.0.1:8080)."
                ),
                AttributePath::new("endpoint"),
            );
            return None;
        };
        let Some(token) = token else {
            diag::error_at(
                diags,
                "No meshfleet token",
                format!(
                    "Set `token` in the provider block or {TOKEN_ENV} (a dev token: `meshfleet token --tenant <tenant> --role contributor`)."
                ),
                AttributePath::new("token"),
            );
            return None;
        };
        let timeout = match get(&config, "delete_timeout") {
            V::String(s) => parse_duration(s)?,
            _ => parse_duration(DEFAULT_DELETE_TIMEOUT)?,
        };
        let client = match Client::new(&endpoint, &token) {
            Ok(c) => c,
            Err(e) => {
                diag::report(diags, "Cannot configure the meshfleet provider", &e, None);
                return None;
            }
        };
        // One call up front: a wrong endpoint, a bad token or a service that
        // is down is one diagnostic here rather than one per resource; the
        // catalog it returns validates versions at plan time.
        match client.releases().await {
            Ok(releases) => {
                let _ = self.ctx.catalog.set(releases);
            }
            Err(e) if e.status() == Some(404) => {
                diag::error(
                    diags,
                    format!("{} is not a meshfleet API", client.endpoint()),
                    format!(
                        "GET /v1/releases answered 404 ({e}).\n\nCheck the provider's `endpoint` (or {ENDPOINT_ENV}): \
                         it is the service's base URL, e.g. http://127.0.0.1:8080, without a path."
                    ),
                );
                return None;
            }
            Err(e) => {
                diag::report(diags, "Cannot connect to meshfleet", &e, None);
                return None;
            }
        }
        let _ = self.ctx.delete_timeout.set(timeout);
        let _ = self.ctx.client.set(client);
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let mut map: HashMap<String, Box<dyn DynamicResource>> = HashMap::new();
        map.insert(
            "cluster".into(),
            Box::new(ClusterResource::new(self.ctx.clone())),
        );
        map.insert(
            "bootstrap_token".into(),
            Box::new(BootstrapTokenResource::new(self.ctx.clone())),
        );
        map.insert(
            "rollout".into(),
            Box::new(RolloutResource::new(self.ctx.clone())),
        );
        Some(map)
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let mut map: HashMap<String, Box<dyn DynamicDataSource>> = HashMap::new();
        map.insert(
            "releases".into(),
            Box::new(ReleasesData::new(self.ctx.clone())),
        );
        map.insert(
            "cluster".into(),
            Box::new(ClusterData::new(self.ctx.clone())),
        );
        map.insert(
            "fleet_summary".into(),
            Box::new(FleetSummaryData::new(self.ctx.clone())),
        );
        Some(map)
    }
}

/// Serves the provider over the plugin protocol (what `main` runs).
pub async fn serve() -> Result<(), String> {
    // tonic (the plugin server) and reqwest (the API client) bring different
    // rustls crypto providers; name one, or rustls refuses to pick.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tf_provider::serve("meshfleet", MeshfleetProvider::default())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_terraform_timeouts() {
        assert_eq!(parse_duration("20m"), Some(Duration::from_secs(1200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("soon"), None);
    }
}
