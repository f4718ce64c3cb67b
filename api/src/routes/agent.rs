//! The fleet agent's routes (`/v1/agent/*`) and the tenant's routes that
//! manage a cluster's agent (`/v1/clusters/{name}/bootstrap-tokens`,
//! `/agent-credential`, `/status/history`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshfleet_model::{
    AgentCredential, BOOTSTRAP_TOKEN_PREFIX, BootstrapToken, BundleDocument,
    CHANGE_TRACEPARENT_HEADER, DesiredState, MAX_WAIT_SECONDS, Problem, RegisterRequest,
    StatusHistoryEntry, StatusHistoryList, StatusReport,
};
use meshfleet_telemetry::{format_traceparent, parse_traceparent};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::IntoParams;

use meshfleet_core::domain::{desired, health, report};
use meshfleet_core::ops::status::{Fingerprint, Recorded, record_report};
use meshfleet_core::store::events::{NewEvent, insert_event};
use meshfleet_core::store::{agents as db, clusters, releases, status};

use crate::agent_auth::{self, AgentPrincipal};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{
    CursorField, CursorShape, CursorValue, JsonBody, JsonBytes, Preconditions, Query, id_cursor,
    page_limit, paginate, with_header,
};
use crate::routes::clusters::known_name;
use crate::state::AppState;

/// A configured duration as a chrono one (they are validated at start-up).
fn chrono_duration(d: Duration, what: &str) -> ApiResult<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(|_| ApiError::Internal(format!("{what} out of range")))
}

fn with_etag(response: Response, tag: &str) -> Response {
    with_header(response, header::ETAG, tag)
}

/// Secrets are shown once: never cached.
fn no_store(response: Response) -> Response {
    with_header(response, header::CACHE_CONTROL, "no-store")
}

async fn cluster_id(state: &AppState, tenant: &str, name: &str) -> ApiResult<uuid::Uuid> {
    known_name(name)?;
    clusters::cluster_id_by_name(&state.pool, tenant, name)
        .await?
        .ok_or_else(|| ApiError::cluster_not_found(name))
}

/// Creates a bootstrap token for a cluster (used by the manifest route too).
pub async fn issue_bootstrap_token(
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> ApiResult<BootstrapToken> {
    let id = cluster_id(state, &principal.tenant, name).await?;
    let secret = agent_auth::new_bootstrap_token(&principal.tenant, id)?;
    let expires_at =
        state.clock.now() + chrono_duration(state.config.bootstrap_ttl, "bootstrap TTL")?;
    let mut tx = state.pool.begin().await?;
    db::insert_bootstrap_token(
        &mut tx,
        &principal.tenant,
        id,
        &secret.hash,
        expires_at,
        &principal.sub,
    )
    .await?;
    insert_event(
        &mut tx,
        &principal.tenant,
        NewEvent {
            cluster_name: Some(name),
            cluster_id: Some(id),
            actor: &principal.sub,
            action: "agent.bootstrap_token_created",
            generation: None,
            detail: json!({ "expiresAt": expires_at }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(BootstrapToken {
        token: secret.token,
        expires_at,
    })
}

/// Create a one-time bootstrap token for the cluster's agent (shown once).
#[utoipa::path(
    post, path = "/v1/clusters/{name}/bootstrap-tokens", tag = "agents",
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 201, description = "The token; it is stored only as a hash", body = BootstrapToken),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_bootstrap_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    principal.require_write()?;
    let token = issue_bootstrap_token(&state, &principal, &name).await?;
    Ok(no_store(
        (StatusCode::CREATED, axum::Json(token)).into_response(),
    ))
}

/// Revoke the cluster's agent credential and void its unused bootstrap tokens;
/// the agent must be given a new bootstrap token.
#[utoipa::path(
    delete, path = "/v1/clusters/{name}/agent-credential", tag = "agents",
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster, or no credential", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_credential(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_write()?;
    let id = cluster_id(&state, &principal.tenant, &name).await?;
    let mut tx = state.pool.begin().await?;
    let voided = db::void_bootstrap_tokens(&mut tx, &principal.tenant, id).await?;
    if !db::delete_credential(&mut tx, &principal.tenant, id).await? && voided == 0 {
        return Err(ApiError::NotFound(format!(
            "cluster `{name}` has no agent credential"
        )));
    }
    insert_event(
        &mut tx,
        &principal.tenant,
        NewEvent {
            cluster_name: Some(&name),
            cluster_id: Some(id),
            actor: &principal.sub,
            action: "agent.credential_revoked",
            generation: None,
            detail: json!({ "bootstrapTokensVoided": voided }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Before the history entry of this id.
pub const HISTORY_CURSOR: CursorShape = CursorShape {
    kind: "h2",
    fields: &[CursorField::Int],
};

/// Changes of the cluster's reported status, newest first (a bounded number is kept per cluster).
#[utoipa::path(
    get, path = "/v1/clusters/{name}/status/history", tag = "agents",
    params(("name" = String, Path, description = "Cluster name"), HistoryParams),
    responses(
        (status = 200, description = "A page of status changes", body = StatusHistoryList),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn status_history(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<axum::Json<StatusHistoryList>> {
    principal.require_read()?;
    let limit = page_limit(params.limit)?;
    let before = id_cursor(&HISTORY_CURSOR, params.cursor.as_deref())?;
    let id = cluster_id(&state, &principal.tenant, &name).await?;
    let mut rows =
        status::list_status_history(&state.pool, &principal.tenant, id, before, limit + 1).await?;
    let next_cursor = paginate(&mut rows, limit, |r| {
        HISTORY_CURSOR.encode(&[CursorValue::Int(r.id)])
    });
    let items = rows
        .into_iter()
        .map(|r| {
            let report = r.report.0;
            StatusHistoryEntry {
                id: r.id,
                at: r.at,
                health: health::parse_health(&r.health),
                observed_generation: r.observed_generation,
                components: report.components,
                conditions: report.conditions,
            }
        })
        .collect();
    Ok(axum::Json(StatusHistoryList { items, next_cursor }))
}

/// Exchange a bootstrap token for the cluster's agent credential.
///
/// A used, expired or unknown token is refused (401) and nothing is created.
/// Registering again with a new bootstrap token replaces the old credential.
#[utoipa::path(
    post, path = "/v1/agent/register", tag = "agent protocol",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The credential (shown once)", body = AgentCredential),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, used or expired bootstrap token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> ApiResult<Response> {
    let refused =
        || ApiError::Unauthorized("the bootstrap token is unknown, already used or expired".into());
    let (tenant, id) =
        agent_auth::parse(BOOTSTRAP_TOKEN_PREFIX, &req.bootstrap_token).ok_or_else(refused)?;
    // Registration attempts count against the agent's bucket of the cluster they name.
    crate::extract::limited(state.limits.agent.check(&id), "agent", || {
        "registration for this cluster".to_string()
    })
    .await?;
    let mut tx = state.pool.begin().await?;
    let name = db::key_share_cluster(&mut tx, &tenant, id)
        .await?
        .ok_or_else(refused)?;
    if !db::consume_bootstrap_token(
        &mut tx,
        &tenant,
        id,
        &agent_auth::hash(&req.bootstrap_token),
    )
    .await?
    {
        return Err(refused());
    }
    // One credential per cluster: older unused tokens can no longer replace it.
    db::void_bootstrap_tokens(&mut tx, &tenant, id).await?;
    let secret = agent_auth::new_credential(&tenant, id)?;
    let expires_at =
        state.clock.now() + chrono_duration(state.config.credential_ttl, "credential TTL")?;
    db::replace_credential(&mut tx, &tenant, id, &secret.hash, expires_at).await?;
    insert_event(
        &mut tx,
        &tenant,
        NewEvent {
            cluster_name: Some(&name),
            cluster_id: Some(id),
            actor: &meshfleet_core::ops::Actor::Agent(name.clone()).name(),
            action: "agent.registered",
            generation: None,
            detail: json!({ "facts": req.facts }),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%tenant, cluster = %name, "agent registered");
    let body = AgentCredential {
        cluster_name: name,
        cluster_id: id,
        credential: secret.token,
        expires_at,
    };
    Ok(no_store(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
    ))
}

/// Replace the agent's credential before it expires; the presented one stays
/// valid for a short grace period so that requests in flight still pass.
#[utoipa::path(
    post, path = "/v1/agent/credential/rotate", tag = "agent protocol",
    responses(
        (status = 200, description = "The new credential", body = AgentCredential),
        (status = 401, description = "Not a valid agent credential", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This credential was already rotated", body = Problem, content_type = "application/problem+json"),
    ),
    security(("agent" = []))
)]
pub async fn rotate(State(state): State<AppState>, agent: AgentPrincipal) -> ApiResult<Response> {
    let secret = agent_auth::new_credential(&agent.tenant, agent.cluster_id)?;
    let ttl = chrono_duration(state.config.credential_ttl, "credential TTL")?;
    let grace = chrono_duration(state.config.rotation_grace, "rotation grace")?;
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    let rotated = db::rotate_credential(
        &mut tx,
        &agent.tenant,
        agent.cluster_id,
        &agent.credential_hash,
        &secret.hash,
        now + ttl,
        now + grace,
    )
    .await?;
    if !rotated {
        return Err(ApiError::Conflict(
            "this credential was already rotated; use the newest one".into(),
        ));
    }
    insert_event(
        &mut tx,
        &agent.tenant,
        NewEvent {
            cluster_name: Some(&agent.cluster_name),
            cluster_id: Some(agent.cluster_id),
            actor: &agent.actor(),
            action: "agent.credential_rotated",
            generation: None,
            detail: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    let body = AgentCredential {
        cluster_name: agent.cluster_name,
        cluster_id: agent.cluster_id,
        credential: secret.token,
        expires_at: now + ttl,
    };
    Ok(no_store((StatusCode::OK, axum::Json(body)).into_response()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// With `If-None-Match`: wait up to this many seconds (at most 60) for a change.
    pub wait_seconds: Option<u64>,
}

/// The cluster's effective desired state; a long poll with `If-None-Match` and `waitSeconds`.
///
/// Answers 304 after `waitSeconds` if the state still has the given ETag, and
/// 200 at once when it changes (woken through PostgreSQL LISTEN/NOTIFY, so a
/// change written through any api replica reaches an agent waiting on any other).
#[utoipa::path(
    get, path = "/v1/agent/desired-state", tag = "agent protocol",
    params(WaitParams, ("If-None-Match" = Option<String>, Header, description = "ETag of the state the agent has")),
    responses(
        (status = 200, description = "The desired state", body = DesiredState, headers(("ETag" = String))),
        (status = 304, description = "Unchanged", headers(("ETag" = String))),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not a valid agent credential", body = Problem, content_type = "application/problem+json"),
    ),
    security(("agent" = []))
)]
pub async fn desired_state(
    State(state): State<AppState>,
    agent: AgentPrincipal,
    pre: Preconditions,
    Query(params): Query<WaitParams>,
) -> ApiResult<Response> {
    let wait = match params.wait_seconds.unwrap_or(0) {
        n if n <= MAX_WAIT_SECONDS => Duration::from_secs(n),
        n => {
            return Err(ApiError::BadRequest(format!(
                "`waitSeconds` must be at most {MAX_WAIT_SECONDS}, not {n}"
            )));
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let _waiter = Waiter::enter();
    // Subscribe before reading, so that a change committed in between is not missed.
    let subscription = state.hub.subscribe(&agent.tenant, agent.cluster_id);
    let mut shutdown = state.shutdown.clone();
    let mut fenced = agent.fenced;
    loop {
        let notified = subscription.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // An unchanged state is answered from this replica's cache when it
        // may be (see `cache`); anything else reads the database.
        // The reads are boxed (here and in the extractor): a future is as
        // large as its largest step, and a long poll keeps this one while it
        // waits.
        let remembered = match &pre.if_none_match {
            Some(m) => {
                Box::pin(state.hub.remembered(&mut fenced, |c| {
                    c.desired_etag(&agent.tenant, agent.cluster_id)
                        .filter(|tag| m.matches(tag))
                }))
                .await
            }
            None => None,
        };
        let tag = match remembered {
            Some(tag) => tag,
            None => {
                let stamp = state.hub.stamp();
                let row = Box::pin(clusters::desired_state(
                    &state.pool,
                    &agent.tenant,
                    agent.cluster_id,
                ))
                .await?
                .ok_or_else(|| ApiError::cluster_not_found(&agent.cluster_name))?;
                let change = row.change_traceparent.clone();
                let current = desired::effective(row);
                let tag = desired::etag(&current);
                if let Some(stamp) = stamp {
                    state.hub.cache.store_desired_etag(
                        &agent.tenant,
                        agent.cluster_id,
                        stamp,
                        &tag,
                    );
                }
                let unchanged = pre.if_none_match.as_ref().is_some_and(|m| m.matches(&tag));
                if !unchanged {
                    return Ok(changed_state(&agent, &pre, current, &tag, change));
                }
                tag
            }
        };
        let draining = *shutdown.borrow();
        let woken = tokio::time::Instant::now() < deadline
            && !draining
            && tokio::select! {
                _ = &mut notified => true,
                _ = tokio::time::sleep_until(deadline) => false,
                _ = shutdown.changed() => false,
            };
        if !woken {
            metrics::counter!("meshfleet_long_poll_answers_total", "result" => "not_modified")
                .increment(1);
            return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), &tag));
        }
    }
}

/// The answer of a desired-state read whose ETag is not the agent's.
fn changed_state(
    agent: &AgentPrincipal,
    pre: &Preconditions,
    current: DesiredState,
    tag: &str,
    change: Option<String>,
) -> Response {
    metrics::counter!("meshfleet_long_poll_answers_total", "result" => "changed").increment(1);
    let mut response = with_etag(axum::Json(&current).into_response(), tag);
    // An agent that had an older state receives a change: continue
    // the writer's trace (a first poll only learns the current state).
    if pre.if_none_match.is_some()
        && let Some(delivery) = change
            .as_deref()
            .and_then(parse_traceparent)
            .and_then(|change| delivery_traceparent(change, agent, current.generation))
    {
        response = with_header(
            response,
            header::HeaderName::from_static(CHANGE_TRACEPARENT_HEADER),
            &delivery,
        );
    }
    response
}

/// Counts a long poll in `meshfleet_long_poll_waiters` while it lasts.
struct Waiter;

impl Waiter {
    fn enter() -> Waiter {
        metrics::gauge!("meshfleet_long_poll_waiters").increment(1.0);
        Waiter
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        metrics::gauge!("meshfleet_long_poll_waiters").decrement(1.0);
    }
}

/// Records that a change reached its agent: a `desired_state.delivered`
/// span in the writer's trace (`change`), linked to the long poll's own span
/// (which is in the agent's trace and links back). Its `traceparent` for the
/// agent to continue; `None` when spans are not exported.
fn delivery_traceparent(
    change: SpanContext,
    agent: &AgentPrincipal,
    generation: i64,
) -> Option<String> {
    let poll = tracing::Span::current();
    let poll_context = poll.context().span().span_context().clone();
    poll.add_link(change.clone());
    let delivered = tracing::info_span!(
        parent: None,
        "desired_state.delivered",
        tenant = %agent.tenant,
        cluster = %agent.cluster_name,
        generation,
    );
    delivered
        .set_parent(Context::new().with_remote_span_context(change))
        .ok()?;
    delivered.add_link(poll_context);
    let context = delivered.context().span().span_context().clone();
    context.is_valid().then(|| format_traceparent(&context))
}

/// Report status; every call is also a heartbeat. An unchanged report only
/// refreshes the heartbeat; a changed one is stored, added to the history,
/// and a change of health is recorded as an event.
#[utoipa::path(
    put, path = "/v1/agent/status", tag = "agent protocol",
    request_body = StatusReport,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not a valid agent credential", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid report", body = Problem, content_type = "application/problem+json"),
    ),
    security(("agent" = []))
)]
pub async fn put_status(
    State(state): State<AppState>,
    agent: AgentPrincipal,
    body: JsonBytes,
) -> ApiResult<StatusCode> {
    let now = state.clock.now();
    let (tenant, cluster_id) = (&agent.tenant, agent.cluster_id);
    let body_hash: [u8; 32] = Sha256::digest(&body.0).into();
    // Known to be unchanged (this replica remembers the stored report, and
    // would have been told of any change committed before this request):
    // only the heartbeat time moves, written with the others within a second.
    // The very bytes of the stored report's body are that report (an agent
    // repeats its last report as its heartbeat) and are not parsed again.
    let mut fenced = agent.fenced;
    let same_bytes = state
        .hub
        .remembered(&mut fenced, |c| {
            c.report_body_is(tenant, cluster_id, &body_hash)
                .then_some(())
        })
        .await;
    if same_bytes.is_some() {
        state.heartbeats.remember(tenant, cluster_id, now);
        count_report("remembered");
        return Ok(StatusCode::NO_CONTENT);
    }
    let report: StatusReport = body.parse()?;
    report::validate_report(&report).map_err(ApiError::invalid)?;
    let fingerprint = Fingerprint::of(&report)?;
    let unchanged = state
        .hub
        .remembered(&mut fenced, |c| {
            c.report_is(tenant, cluster_id, &fingerprint.hash)
                .then_some(())
        })
        .await;
    let result = if unchanged.is_some() {
        // (the same report in other bytes: these are not remembered, as no
        // read stamped before the check backs them)
        state.heartbeats.remember(tenant, cluster_id, now);
        "remembered"
    } else {
        let stamp = state.hub.stamp();
        let recorded = record_report(
            &state.pool,
            &state.heartbeats,
            tenant,
            cluster_id,
            &agent.cluster_name,
            &report,
            &fingerprint,
            now,
            &state.config.settings,
        )
        .await?;
        if let Some(stamp) = stamp {
            state.hub.cache.store_report_hash(
                tenant,
                cluster_id,
                stamp,
                &fingerprint.hash,
                body_hash,
            );
        }
        // an unchanged one was coalesced into a batch's heartbeat-only write,
        // a changed one wrote status and history
        match recorded {
            Recorded::Heartbeat => "coalesced",
            Recorded::Changed => "changed",
        }
    };
    count_report(result);
    Ok(StatusCode::NO_CONTENT)
}

fn count_report(result: &'static str) {
    metrics::counter!("meshfleet_agent_heartbeats_total").increment(1);
    metrics::counter!("meshfleet_status_writes_total", "result" => result).increment(1);
}

/// `kubectl kustomize deploy/agent`, committed (CI fails when it drifts).
pub const AGENT_INSTALL_TEMPLATE: &str =
    include_str!("../../../deploy/generated/agent-install.yaml");

/// Fills the install template's placeholders with YAML-quoted values.
pub fn render_install_manifest(token: &str, service_url: &str, image: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    AGENT_INSTALL_TEMPLATE
        .replace("REPLACE_WITH_BOOTSTRAP_TOKEN", &quote(token))
        .replace("REPLACE_WITH_SERVICE_URL", &quote(service_url))
        .replace("REPLACE_WITH_AGENT_IMAGE", &quote(image))
}

/// The URL agents reach this service at: configured, or from the request.
fn service_url(state: &AppState, headers: &axum::http::HeaderMap) -> ApiResult<String> {
    if let Some(url) = &state.config.public_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .ok_or_else(|| {
            ApiError::BadRequest("cannot tell this service's URL: no valid Host header".into())
        })?;
    let proto = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    Ok(format!("{proto}://{host}"))
}

/// Everything to `kubectl apply` in the cluster to install its agent, with a
/// fresh bootstrap token (YAML; the same objects as `deploy/agent`).
#[utoipa::path(
    get, path = "/v1/clusters/{name}/agent-manifest", tag = "agents",
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "Multi-document YAML", body = String, content_type = "application/yaml"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn agent_manifest(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    principal.require_write()?;
    let url = service_url(&state, &headers)?;
    let token = issue_bootstrap_token(&state, &principal, &name).await?;
    let yaml = render_install_manifest(&token.token, &url, &state.config.agent_image);
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        yaml,
    )
        .into_response())
}

/// A release bundle by digest (agent credential): the canonical document,
/// byte for byte, whose SHA-256 is the digest. Immutable, so cached for good.
#[utoipa::path(
    get, path = "/v1/agent/bundles/{digest}", tag = "agent protocol",
    params(
        ("digest" = String, Path, description = "`sha256:` and 64 hex digits, as the desired state names it"),
        ("If-None-Match" = Option<String>, Header, description = "The digest, quoted, when the agent has it"),
    ),
    responses(
        (status = 200, description = "The bundle", body = BundleDocument, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "The agent has it", headers(("ETag" = String))),
        (status = 401, description = "Not a valid agent credential", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No bundle with this digest", body = Problem, content_type = "application/problem+json"),
    ),
    security(("agent" = []))
)]
pub async fn get_bundle(
    State(state): State<AppState>,
    _agent: AgentPrincipal,
    pre: Preconditions,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    let tag = format!("\"{digest}\"");
    let document = releases::bundle_document(&state.pool, &digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release bundle with digest `{digest}`")))?;
    let response = if pre.if_none_match.as_ref().is_some_and(|m| m.matches(&tag)) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], document).into_response()
    };
    Ok(with_header(
        with_etag(response, &tag),
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable",
    ))
}
