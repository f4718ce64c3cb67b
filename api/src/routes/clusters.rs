//! `/v1/clusters`: the tenants' cluster resource.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use meshfleet_core::domain::health::{self, StatusInputs};
use meshfleet_core::domain::names::{dns_label_problem, is_dns_label};
use meshfleet_core::domain::validation;
use meshfleet_core::ops::clusters::{self as cluster_ops, Deletion};
use meshfleet_core::ops::spec;
use meshfleet_core::settings::Settings;
use meshfleet_core::store::clusters::{self as store, ClusterRow};
use meshfleet_core::store::fleet::{self as fleet_store, After, Judged, Scope, Sort};
use meshfleet_core::store::releases::load_catalog;
use meshfleet_model::{Cluster, ClusterInput, ClusterList, Condition, Problem, UpgradeMode};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::IntoParams;

use super::fleet;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{
    CursorField, CursorShape, CursorValue, JsonBody, MergePatch, Preconditions, Query, merge_patch,
    page_limit, paginate, parse_json, with_header,
};
use crate::state::AppState;

/// The strong ETag of a stored cluster: its id and resource version.
pub fn etag(row: &ClusterRow) -> String {
    format!("\"{}-{}\"", row.id.simple(), row.resource_version)
}

/// The service's own conditions on a cluster: `EndOfSupport` for a pinned
/// version within the warning period of (or past) its end of support.
fn service_conditions(row: &ClusterRow, now: DateTime<Utc>, settings: &Settings) -> Vec<Condition> {
    let Some(eos) = row.end_of_support else {
        return vec![];
    };
    if row.mesh.0.upgrade.mode != UpgradeMode::Manual {
        return vec![];
    }
    let warn_from = chrono::Duration::from_std(settings.end_of_support_warning)
        .map(|w| eos - w)
        .unwrap_or(eos);
    let today = now.date_naive();
    if today < warn_from {
        return vec![];
    }
    let message = if today > eos {
        format!(
            "Istio {} reached its end of support on {eos}; it will be upgraded even outside the maintenance window unless you upgrade first",
            row.desired_version
        )
    } else {
        format!(
            "Istio {} reaches its end of support on {eos}; plan the upgrade",
            row.desired_version
        )
    };
    vec![Condition {
        type_: "EndOfSupport".into(),
        status: "True".into(),
        reason: Some(
            if today > eos {
                "PastEndOfSupport"
            } else {
                "EndOfSupportSoon"
            }
            .into(),
        ),
        message: Some(message),
        last_transition_time: None,
    }]
}

pub fn to_cluster(row: ClusterRow, now: DateTime<Utc>, settings: &Settings) -> Cluster {
    let conditions = service_conditions(&row, now, settings);
    let status = health::derive(
        StatusInputs {
            report: row.report.as_ref().map(|r| &r.0),
            generation: row.generation,
            generation_changed_at: row.generation_changed_at,
            last_heartbeat_at: row.last_heartbeat_at,
        },
        row.pending_upgrade.map(|p| p.0),
        conditions,
        now,
        settings,
    );
    Cluster {
        name: row.name,
        id: row.id,
        labels: row.labels.0,
        mesh: row.mesh.0,
        generation: row.generation,
        desired_version: row.desired_version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        deletion_operation: row.deletion_operation,
        status,
    }
}

fn cluster_response(state: &AppState, status: StatusCode, row: ClusterRow) -> Response {
    let tag = etag(&row);
    let cluster = to_cluster(row, state.clock.now(), &state.config.settings);
    with_header(
        (status, axum::Json(cluster)).into_response(),
        header::ETAG,
        &tag,
    )
}

/// A name that is not a DNS label names no cluster: 404, before any query.
pub fn known_name(name: &str) -> ApiResult<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError::cluster_not_found(name))
    }
}

/// Locks the tenant's cluster `name` for a write, or 404.
async fn lock_existing(conn: &mut PgConnection, tenant: &str, name: &str) -> ApiResult<ClusterRow> {
    known_name(name)?;
    store::lock_cluster(conn, tenant, name)
        .await?
        .ok_or_else(|| ApiError::cluster_not_found(name))
}

fn check_if_match(pre: &Preconditions, row: &ClusterRow) -> ApiResult<()> {
    if let Some(m) = &pre.if_match
        && !m.matches(&etag(row))
    {
        return Err(ApiError::PreconditionFailed(format!(
            "If-Match does not match the current ETag of cluster `{}`; read it again and retry",
            row.name
        )));
    }
    Ok(())
}

fn path_name(name: &str) -> ApiResult<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "/name",
            dns_label_problem("cluster name", name),
        ))
    }
}

/// Create or replace a cluster.
///
/// Idempotent: the same body twice changes nothing (no generation bump, no
/// event). `If-None-Match: *` makes it create-only; `If-Match` makes it a
/// conditional replace.
#[utoipa::path(
    put, path = "/v1/clusters/{name}", tag = "clusters",
    params(("name" = String, Path, description = "Cluster name (DNS label)"),
           ("If-Match" = Option<String>, Header, description = "Replace only if the ETag matches"),
           ("If-None-Match" = Option<String>, Header, description = "`*`: create only")),
    request_body = ClusterInput,
    responses(
        (status = 200, description = "Replaced (or unchanged)", body = Cluster, headers(("ETag" = String))),
        (status = 201, description = "Created", body = Cluster, headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rollout holds the version, or the tenant's cluster quota is reached", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Precondition failed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid spec", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_cluster(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    pre: Preconditions,
    JsonBody(input): JsonBody<ClusterInput>,
) -> ApiResult<Response> {
    principal.require_write()?;
    path_name(&name)?;
    // An invalid body is a 422 whatever the preconditions say.
    let problems = validation::static_problems(&name, &input);
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    // A create racing another create of the same name turns into a replace.
    for _ in 0..3 {
        let mut tx = state.pool.begin().await?;
        let catalog = load_catalog(&mut *tx).await?;
        let now = state.clock.now();
        match store::lock_cluster(&mut tx, &principal.tenant, &name).await? {
            Some(row) => {
                if pre.if_none_match.is_some() {
                    return Err(ApiError::PreconditionFailed(format!(
                        "cluster `{name}` already exists"
                    )));
                }
                check_if_match(&pre, &row)?;
                let row = spec::change_spec(
                    &mut tx,
                    &principal.tenant,
                    &catalog,
                    row,
                    input,
                    &principal.actor(),
                    now,
                )
                .await?;
                tx.commit().await?;
                return Ok(cluster_response(&state, StatusCode::OK, row));
            }
            None => {
                if pre.if_match.is_some() {
                    return Err(ApiError::PreconditionFailed(format!(
                        "cluster `{name}` does not exist, so If-Match cannot match"
                    )));
                }
                let Some(row) = cluster_ops::create(
                    &mut tx,
                    &principal.tenant,
                    &catalog,
                    &name,
                    &input,
                    &principal.actor(),
                    now,
                    state.config.max_clusters_per_tenant,
                )
                .await?
                else {
                    tx.rollback().await?;
                    continue;
                };
                tx.commit().await?;
                return Ok(with_header(
                    cluster_response(&state, StatusCode::CREATED, row),
                    header::LOCATION,
                    &format!("/v1/clusters/{name}"),
                ));
            }
        }
    }
    Err(ApiError::Conflict(format!(
        "cluster `{name}` is being created and deleted concurrently; retry"
    )))
}

/// Read a cluster. `If-None-Match` with its ETag answers 304.
#[utoipa::path(
    get, path = "/v1/clusters/{name}", tag = "clusters",
    params(("name" = String, Path, description = "Cluster name"),
           ("If-None-Match" = Option<String>, Header, description = "ETag held by the client")),
    responses(
        (status = 200, description = "The cluster", body = Cluster, headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_cluster(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    pre: Preconditions,
) -> ApiResult<Response> {
    principal.require_read()?;
    known_name(&name)?;
    let not_modified =
        |tag: &str| with_header(StatusCode::NOT_MODIFIED.into_response(), header::ETAG, tag);
    // The ETag versions the spec and labels; a reported status changes
    // without it, so only a cluster no agent reports for can be "not
    // modified" (and only such a cluster's ETag is remembered: see `cache`).
    if let Some(m) = &pre.if_none_match
        && let Some(tag) = state
            .hub
            .remembered(&mut false, |c| {
                c.resource_etag(&principal.tenant, &name)
                    .filter(|tag| m.matches(tag))
            })
            .await
    {
        return Ok(not_modified(&tag));
    }
    let stamp = state.hub.stamp();
    let row = store::get_cluster(&state.pool, &principal.tenant, &name)
        .await?
        .ok_or_else(|| ApiError::cluster_not_found(&name))?;
    if row.report.is_none() {
        let tag = etag(&row);
        if let Some(stamp) = stamp {
            state
                .hub
                .cache
                .store_resource_etag(&principal.tenant, &name, row.id, stamp, &tag);
        }
        if pre.if_none_match.as_ref().is_some_and(|m| m.matches(&tag)) {
            return Ok(not_modified(&tag));
        }
    }
    Ok(cluster_response(&state, StatusCode::OK, row))
}

/// Change a cluster with a JSON merge patch (RFC 7386) of `{labels, mesh}`.
#[utoipa::path(
    patch, path = "/v1/clusters/{name}", tag = "clusters",
    params(("name" = String, Path, description = "Cluster name"),
           ("If-Match" = Option<String>, Header, description = "Apply only if the ETag matches")),
    request_body(content = Object, content_type = "application/merge-patch+json",
                 description = "A merge patch of the PUT body, e.g. {\"mesh\":{\"upgrade\":{\"version\":\"1.28.2\"}}}"),
    responses(
        (status = 200, description = "Patched (or unchanged)", body = Cluster, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Precondition failed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a merge patch", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The patched spec is invalid", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn patch_cluster(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    pre: Preconditions,
    MergePatch(patch): MergePatch,
) -> ApiResult<Response> {
    principal.require_write()?;
    let mut tx = state.pool.begin().await?;
    let row = lock_existing(&mut tx, &principal.tenant, &name).await?;
    check_if_match(&pre, &row)?;
    let mut doc = json!({ "labels": row.labels.0, "mesh": row.mesh.0 });
    merge_patch(&mut doc, &patch);
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
    let input: ClusterInput = parse_json(&bytes)?;
    let catalog = load_catalog(&mut *tx).await?;
    let row = spec::change_spec(
        &mut tx,
        &principal.tenant,
        &catalog,
        row,
        input,
        &principal.actor(),
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(cluster_response(&state, StatusCode::OK, row))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Remove the record at once, whatever the agent is doing (role `owner`).
    /// The mesh stays installed in the cluster.
    pub force: Option<bool>,
}

/// Delete a cluster.
///
/// A cluster whose agent has registered is deleted in two phases: its
/// desired state becomes `mode: disabled`, the agent uninstalls the mesh and
/// reports, and then the record is removed. That answers 202 with an
/// `Operation-Location` to poll. A cluster that never had an agent is removed
/// at once (204); so is any cluster with `?force=true` (owner).
#[utoipa::path(
    delete, path = "/v1/clusters/{name}", tag = "clusters",
    params(("name" = String, Path, description = "Cluster name"),
           ("If-Match" = Option<String>, Header, description = "Delete only if the ETag matches"),
           DeleteParams),
    responses(
        (status = 202, description = "Uninstalling; poll the operation", body = meshfleet_model::Operation,
         headers(("Location" = String, description = "The operation"), ("Operation-Location" = String, description = "The operation"))),
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role (owner for force)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Precondition failed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_cluster(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    pre: Preconditions,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Response> {
    principal.require_write()?;
    let force = params.force.unwrap_or(false);
    if force {
        principal.require_owner()?;
    }
    let mut tx = state.pool.begin().await?;
    let row = lock_existing(&mut tx, &principal.tenant, &name).await?;
    check_if_match(&pre, &row)?;
    let now = state.clock.now();
    let outcome = cluster_ops::request_deletion(
        &mut tx,
        &principal.tenant,
        row,
        &principal.actor(),
        force,
        now,
    )
    .await?;
    match outcome {
        Deletion::Removed => {
            tx.commit().await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Deletion::Started(op) => {
            let operation =
                meshfleet_core::store::operations::get_operation(&mut *tx, &principal.tenant, op)
                    .await?
                    .ok_or_else(|| ApiError::Internal(format!("operation {op} vanished")))?;
            tx.commit().await?;
            Ok(super::operations::accepted(operation))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Kubernetes label selector, e.g. `env=prod,tier!=db,region in (eu,us)`.
    pub label_selector: Option<String>,
    /// Comma-separated healths (as derived for `GET`), e.g. `Degraded,Unhealthy`.
    pub health: Option<String>,
    /// Comma-separated connectivities, e.g. `Stale,Disconnected`.
    pub connectivity: Option<String>,
    /// Desired version, e.g. `1.28.2`.
    pub version: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// After the cluster of this name.
pub const CURSOR: CursorShape = CursorShape {
    kind: "c2",
    fields: &[CursorField::Text],
};

/// List clusters, by name, in pages (keyset pagination).
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters",
    params(ListParams),
    responses(
        (status = 200, description = "A page of clusters", body = ClusterList),
        (status = 400, description = "Bad selector, health, connectivity, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_clusters(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ClusterList>> {
    principal.require_read()?;
    let limit = page_limit(params.limit)?;
    let filter = fleet::filter(
        params.label_selector.as_deref(),
        params.health.as_deref(),
        params.connectivity.as_deref(),
        params.version.as_deref(),
    )?;
    let after = match params
        .cursor
        .as_deref()
        .map(|c| CURSOR.decode(c))
        .transpose()?
    {
        None => None,
        Some(values) => match values.as_slice() {
            [CursorValue::Text(name)] => Some(After {
                key: 0,
                tenant: principal.tenant.clone(),
                name: name.clone(),
            }),
            _ => return Err(ApiError::Internal("cluster cursor shape".into())),
        },
    };
    let now = state.clock.now();
    let mut rows = fleet_store::list(
        &state.pool,
        Scope::Tenant(&principal.tenant),
        &Judged::at(now, &state.config.settings),
        &filter,
        Sort::Name,
        after.as_ref(),
        limit + 1,
    )
    .await?;
    let next_cursor = paginate(&mut rows, limit, |r| {
        CURSOR.encode(&[CursorValue::Text(r.row.name.clone())])
    });
    Ok(axum::Json(ClusterList {
        items: rows
            .into_iter()
            .map(|r| to_cluster(r.row, now, &state.config.settings))
            .collect(),
        next_cursor,
    }))
}
