//! `meshfleet_bootstrap_token`: a one-time bootstrap token for a cluster's
//! agent, with the agent's install manifest that carries it
//! (`GET /v1/clusters/{name}/agent-manifest` issues the token and renders the
//! manifest in one call). Replaced when it has expired or its cluster is gone.

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use meshfleet_model::BOOTSTRAP_TOKEN_PREFIX;
use tf_provider::schema::Schema;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::attrs::{Attr, Kind, Mode, V, get, get_str, plan, schema, set, tf_attributes};
use crate::client::Client;
use crate::diag;
use crate::error::Result;
use crate::provider::Ctx;

const TOKEN: &[Attr] = &[
    Attr::new(
        "cluster",
        "",
        Kind::String,
        Mode::Required,
        "Name of the cluster whose agent the token is for. Changing it issues a new token.",
    ),
    Attr::new(
        "token",
        "",
        Kind::String,
        Mode::Computed,
        "The one-time bootstrap token (stored by meshfleet only as a hash; single use).",
    )
    .sensitive(),
    Attr::new(
        "expires_at",
        "",
        Kind::String,
        Mode::Computed,
        "When the token expires (RFC 3339). After that, the next plan replaces it.",
    ),
    Attr::new(
        "manifest",
        "",
        Kind::String,
        Mode::Computed,
        "The agent's install manifest (multi-document YAML: namespace, RBAC, a Secret with this token and the service URL, the Deployment).",
    )
    .sensitive(),
    Attr::new(
        "install_command",
        "",
        Kind::String,
        Mode::Computed,
        "A shell command that installs the agent with this token in the cluster of the current kubectl context.",
    )
    .sensitive(),
];

pub struct BootstrapTokenResource {
    ctx: Ctx,
}

impl BootstrapTokenResource {
    pub fn new(ctx: Ctx) -> Self {
        BootstrapTokenResource { ctx }
    }
}

/// The bootstrap token in a rendered install manifest (its Secret's `token`).
pub fn token_in_manifest(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let value = line.trim().strip_prefix("token:")?.trim();
        let token = serde_json::from_str::<String>(value)
            .unwrap_or_else(|_| value.trim_matches(|c| c == '"' || c == '\'').to_string());
        token
            .starts_with(&format!("{BOOTSTRAP_TOKEN_PREFIX}."))
            .then_some(token)
    })
}

/// `kubectl apply` of the manifest, self-contained (base64 keeps quoting safe).
pub fn install_command(manifest: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(manifest);
    format!("printf '%s' '{b64}' | base64 -d | kubectl apply -f -")
}

/// When the newest bootstrap token of `cluster` expires (its creation event).
async fn expiry(client: &Client, cluster: &str) -> Result<Option<String>> {
    let events = client.cluster_events(cluster).await?;
    Ok(events
        .items
        .iter()
        .find(|e| e.action == "agent.bootstrap_token_created")
        .and_then(|e| e.detail.get("expiresAt"))
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

fn expired(state: &V, now: DateTime<Utc>) -> bool {
    get_str(state, "expires_at")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t <= now)
}

#[async_trait]
impl Resource for BootstrapTokenResource {
    type State<'a> = V;
    type PrivateState<'a> = V;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A one-time bootstrap token for a cluster's agent and the install manifest that carries it. \
                     The token is shown once by meshfleet and kept in the Terraform state (sensitive); \
                     it is replaced when it has expired. Destroying it only forgets it: an unused token expires by itself, \
                     and `DELETE /v1/clusters/{name}/agent-credential` voids all of a cluster's tokens.",
            tf_attributes(TOKEN, false),
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        if expired(&state, Utc::now()) {
            return Some((V::Null, private));
        }
        let client = self.ctx.client(diags)?;
        let cluster = get_str(&state, "cluster")?.to_string();
        match client.get_cluster(&cluster).await {
            Ok(Some(_)) => Some((state, private)),
            Ok(None) => Some((V::Null, private)),
            Err(e) => {
                diag::report(diags, &format!("Cannot read cluster `{cluster}`"), &e, None);
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        _proposed: V,
        config: V,
        _meta: V,
    ) -> Option<(V, V)> {
        Some((plan(TOKEN, &config), V::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: V,
        _proposed: V,
        config: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V, Vec<AttributePath>)> {
        if get(&config, "cluster") == get(&prior, "cluster") {
            return Some((prior, private, vec![]));
        }
        Some((
            plan(TOKEN, &config),
            private,
            vec![AttributePath::new("cluster")],
        ))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        private: V,
        _meta: V,
    ) -> Option<V> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: V,
        _config: V,
        _private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        let client = self.ctx.client(diags)?;
        let cluster = get_str(&planned, "cluster")?.to_string();
        let action = format!("Cannot issue a bootstrap token for cluster `{cluster}`");
        let manifest = match client.agent_manifest(&cluster).await {
            Ok(m) => m,
            Err(e) => {
                diag::report(diags, &action, &e, None);
                return None;
            }
        };
        let Some(token) = token_in_manifest(&manifest) else {
            diag::error(
                diags,
                action,
                "The agent manifest meshfleet returned carries no bootstrap token.",
            );
            return None;
        };
        let expires_at = match expiry(client, &cluster).await {
            Ok(e) => e,
            Err(e) => {
                diag::report(diags, &action, &e, None);
                return None;
            }
        };
        let mut state = planned;
        set(&mut state, "token", V::String(token));
        set(
            &mut state,
            "expires_at",
            expires_at.map(V::String).unwrap_or(V::Null),
        );
        set(
            &mut state,
            "install_command",
            V::String(install_command(&manifest)),
        );
        set(&mut state, "manifest", V::String(manifest));
        Some((state, V::Null))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        planned: V,
        _config: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        _private: V,
        _meta: V,
    ) -> Option<()> {
        Some(())
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, _id: String) -> Option<(V, V)> {
        diag::error(
            diags,
            "A bootstrap token cannot be imported",
            "meshfleet shows a token only once, when it is issued; let Terraform issue a new one.",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_in_the_rendered_secret() {
        let manifest =
            "kind: Secret\nstringData:\n  url: \"http://x\"\n  token: \"mfbt.demo.abc.def\"\n";
        assert_eq!(
            token_in_manifest(manifest).as_deref(),
            Some("mfbt.demo.abc.def")
        );
        assert_eq!(
            token_in_manifest("token: REPLACE_WITH_BOOTSTRAP_TOKEN"),
            None
        );
    }

    #[test]
    fn an_expired_token_is_gone_at_refresh() {
        let now = Utc::now();
        let state = |at: DateTime<Utc>| {
            V::Map(
                [("expires_at".to_string(), V::String(at.to_rfc3339()))]
                    .into_iter()
                    .collect(),
            )
        };
        assert!(expired(&state(now - chrono::Duration::seconds(1)), now));
        assert!(!expired(&state(now + chrono::Duration::hours(1)), now));
    }

    #[test]
    fn the_install_command_carries_the_manifest() {
        let cmd = install_command("a: 'b'\n");
        let b64 = cmd.split('\'').nth(3).expect("quoted");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert_eq!(decoded, b"a: 'b'\n");
    }
}
