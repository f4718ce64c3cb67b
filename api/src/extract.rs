//! How a request proves who it is: the bearer token of a user (JWT →
//! [`Principal`]) or of a cluster's agent (credential → [`AgentPrincipal`]).
//! The token logic lives in `auth` and `agent_auth`; this module only joins
//! it to the request and the app state.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use meshfleet_core::store::agents;
use meshfleet_model::AGENT_CREDENTIAL_PREFIX;

use crate::agent_auth::{self, AgentPrincipal};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::limits::{REFUSAL_DELAY_CAP, retry_after_secs};
use crate::state::AppState;

/// Reads the bearer token of a request.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::MissingCredentials)?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

/// A request over its limit: 429 with `Retry-After`, counted by `kind`
/// (`tenant` | `agent`; the metric never carries a tenant or cluster name).
/// The answer is held for the wait (at most [`REFUSAL_DELAY_CAP`]): a caller
/// that honours `Retry-After` loses nothing, and one that ignores it at full
/// speed is paced by its own connections instead of taking the CPU other
/// tenants need.
pub async fn limited(
    check: Result<(), std::time::Duration>,
    kind: &'static str,
    who: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let Err(wait) = check else {
        return Ok(());
    };
    metrics::counter!("meshfleet_rate_limited_total", "kind" => kind).increment(1);
    let retry_after_secs = retry_after_secs(wait);
    tokio::time::sleep(wait.min(REFUSAL_DELAY_CAP)).await;
    tracing::debug!(kind, retry_after_secs, "request over its rate limit");
    Err(ApiError::TooManyRequests {
        detail: format!(
            "{} is over its request rate limit; retry in {retry_after_secs}s (see Retry-After)",
            who()
        ),
        retry_after_secs,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if agent_auth::is_agent_credential(token) {
            return Err(ApiError::Unauthorized(
                "agent credentials are accepted only on the /v1/agent routes".into(),
            ));
        }
        let principal = state.verifier.verify(token)?;
        tracing::Span::current().record("tenant", principal.tenant.as_str());
        limited(
            state.limits.tenant.check(principal.tenant.as_str()),
            "tenant",
            || format!("tenant `{}`", principal.tenant),
        )
        .await?;
        tracing::debug!(sub = %principal.sub, tenant = %principal.tenant, "authenticated");
        Ok(principal)
    }
}

impl FromRequestParts<AppState> for AgentPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let Some((tenant, cluster_id)) = agent_auth::parse(AGENT_CREDENTIAL_PREFIX, token) else {
            return Err(ApiError::Unauthorized(
                "the agent routes take an agent credential (from /v1/agent/register), not a user token".into(),
            ));
        };
        let credential_hash = agent_auth::hash(token);
        let refused = || {
            ApiError::Unauthorized(
                "the agent credential is unknown, revoked, replaced or expired".into(),
            )
        };
        // Validity is judged by the wall clock, as the database's now() does.
        let now = chrono::Utc::now();
        let mut fenced = false;
        // The awaits are boxed: this future is part of the handler's, which a
        // long poll keeps while it waits (see `routes::agent::desired_state`).
        let remembered = Box::pin(state.hub.remembered(&mut fenced, |c| {
            c.credential(&tenant, cluster_id, &credential_hash, now)
        }))
        .await;
        let cluster_name = match remembered {
            Some(name) => name,
            None => {
                let stamp = state.hub.stamp();
                let (name, until) = Box::pin(agents::authenticate_agent(
                    &state.pool,
                    &tenant,
                    cluster_id,
                    &credential_hash,
                ))
                .await?
                .ok_or_else(refused)?;
                if let Some(stamp) = stamp {
                    state.hub.cache.store_credential(
                        &tenant,
                        cluster_id,
                        stamp,
                        &credential_hash,
                        &name,
                        until,
                    );
                }
                name
            }
        };
        let span = tracing::Span::current();
        span.record("tenant", tenant.as_str());
        span.record("cluster", cluster_name.as_str());
        tracing::debug!(%tenant, cluster = %cluster_name, "agent authenticated");
        Box::pin(limited(
            state.limits.agent.check(&cluster_id),
            "agent",
            || format!("the agent of cluster `{cluster_name}`"),
        ))
        .await?;
        Ok(AgentPrincipal {
            tenant,
            cluster_id,
            cluster_name,
            credential_hash,
            fenced,
        })
    }
}
