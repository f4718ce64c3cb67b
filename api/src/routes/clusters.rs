//! `/v1/clusters`: the tenants' cluster resource.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshfleet_model::{Cluster, ClusterInput, ClusterList, Problem};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::Principal;
use crate::db::{self, ClusterRow, ClusterUpdate, NewEvent};
use crate::error::{ApiError, ApiResult};
use crate::http::{
    JsonBody, MergePatch, Preconditions, Query, decode_cursor, merge_patch, page_limit, paginate,
    parse_json, with_header,
};
use crate::selector;
use crate::status;
use crate::validation::{self, Catalog, Current, Version, is_dns_label};

/// The strong ETag of a stored cluster: its id and resource version.
pub fn etag(row: &ClusterRow) -> String {
    format!("\"{}-{}\"", row.id.simple(), row.resource_version)
}

pub fn to_cluster(row: ClusterRow) -> Cluster {
    let status = status::derive(
        row.report.as_ref().map(|s| &s.0),
        row.generation,
        row.last_heartbeat_at,
        chrono::Utc::now(),
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
        status,
    }
}

fn with_etag(status: StatusCode, row: ClusterRow) -> Response {
    let tag = etag(&row);
    with_header(
        (status, axum::Json(to_cluster(row))).into_response(),
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
async fn lock_existing(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    name: &str,
) -> ApiResult<ClusterRow> {
    known_name(name)?;
    db::lock_cluster(tx, tenant, name)
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
            validation::dns_label_problem("cluster name", name),
        ))
    }
}

fn stored_version(row: &ClusterRow) -> ApiResult<Version> {
    Version::parse(&row.desired_version).ok_or_else(|| {
        ApiError::Internal(format!(
            "stored version `{}` does not parse",
            row.desired_version
        ))
    })
}

/// Validates `input` against `row` and writes it; a no-op when nothing changed.
async fn replace(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    catalog: &Catalog,
    row: ClusterRow,
    input: ClusterInput,
) -> ApiResult<ClusterRow> {
    let current = Current {
        desired_version: stored_version(&row)?,
        upgrade: &row.mesh.0.upgrade,
        history: &row.version_history,
    };
    let version = validation::validate_cluster(&row.name, &input, catalog, Some(current))
        .map_err(ApiError::invalid)?;
    let labels_changed = input.labels != row.labels.0;
    let mesh_changed = input.mesh != row.mesh.0;
    if !labels_changed && !mesh_changed {
        return Ok(row);
    }
    let new_version = version.to_string();
    let mut history = row.version_history.clone();
    if new_version != row.desired_version && !history.contains(&row.desired_version) {
        history.push(row.desired_version.clone());
    }
    let generation = row.generation + i64::from(mesh_changed);
    let updated = db::update_cluster(
        tx,
        &principal.tenant,
        &row.name,
        ClusterUpdate {
            labels: &input.labels,
            mesh: &input.mesh,
            generation,
            desired_version: &new_version,
            version_history: &history,
        },
    )
    .await?;
    let mut changed = Vec::new();
    if labels_changed {
        changed.push("labels");
    }
    if mesh_changed {
        changed.push("mesh");
    }
    let mut detail = json!({ "changed": changed });
    if new_version != row.desired_version {
        detail["fromVersion"] = json!(row.desired_version);
        detail["toVersion"] = json!(new_version);
    }
    db::insert_event(
        tx,
        &principal.tenant,
        NewEvent {
            cluster_name: Some(&row.name),
            cluster_id: Some(row.id),
            actor: &principal.sub,
            action: "cluster.updated",
            generation: Some(generation),
            detail,
        },
    )
    .await?;
    Ok(updated)
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
    // A create racing another create of the same name turns into a replace.
    for _ in 0..3 {
        let mut tx = state.pool.begin().await?;
        let catalog = db::load_catalog(&mut *tx).await?;
        match db::lock_cluster(&mut tx, &principal.tenant, &name).await? {
            Some(row) => {
                if pre.if_none_match.is_some() {
                    return Err(ApiError::PreconditionFailed(format!(
                        "cluster `{name}` already exists"
                    )));
                }
                check_if_match(&pre, &row)?;
                let row = replace(&mut tx, &principal, &catalog, row, input).await?;
                tx.commit().await?;
                return Ok(with_etag(StatusCode::OK, row));
            }
            None => {
                if pre.if_match.is_some() {
                    return Err(ApiError::PreconditionFailed(format!(
                        "cluster `{name}` does not exist, so If-Match cannot match"
                    )));
                }
                let version = validation::validate_cluster(&name, &input, &catalog, None)
                    .map_err(ApiError::invalid)?;
                let Some(row) = db::insert_cluster(
                    &mut tx,
                    &principal.tenant,
                    &name,
                    &input.labels,
                    &input.mesh,
                    &version.to_string(),
                )
                .await?
                else {
                    tx.rollback().await?;
                    continue;
                };
                db::insert_event(
                    &mut tx,
                    &principal.tenant,
                    NewEvent {
                        cluster_name: Some(&name),
                        cluster_id: Some(row.id),
                        actor: &principal.sub,
                        action: "cluster.created",
                        generation: Some(row.generation),
                        detail: json!({ "version": row.desired_version }),
                    },
                )
                .await?;
                tx.commit().await?;
                return Ok(with_header(
                    with_etag(StatusCode::CREATED, row),
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
    let row = db::get_cluster(&state.pool, &principal.tenant, &name)
        .await?
        .ok_or_else(|| ApiError::cluster_not_found(&name))?;
    // The ETag versions the spec and labels; a reported status changes
    // without it, so only a cluster no agent reports for can be "not modified".
    if let Some(m) = &pre.if_none_match
        && row.report.is_none()
        && m.matches(&etag(&row))
    {
        return Ok(with_header(
            StatusCode::NOT_MODIFIED.into_response(),
            header::ETAG,
            &etag(&row),
        ));
    }
    Ok(with_etag(StatusCode::OK, row))
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
    let catalog = db::load_catalog(&mut *tx).await?;
    let row = replace(&mut tx, &principal, &catalog, row, input).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, row))
}

/// Delete a cluster.
#[utoipa::path(
    delete, path = "/v1/clusters/{name}", tag = "clusters",
    params(("name" = String, Path, description = "Cluster name"),
           ("If-Match" = Option<String>, Header, description = "Delete only if the ETag matches")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the contributor role", body = Problem, content_type = "application/problem+json"),
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
) -> ApiResult<StatusCode> {
    principal.require_write()?;
    let mut tx = state.pool.begin().await?;
    let row = lock_existing(&mut tx, &principal.tenant, &name).await?;
    check_if_match(&pre, &row)?;
    db::delete_cluster(&mut tx, &principal.tenant, &name).await?;
    db::insert_event(
        &mut tx,
        &principal.tenant,
        NewEvent {
            cluster_name: Some(&name),
            cluster_id: Some(row.id),
            actor: &principal.sub,
            action: "cluster.deleted",
            generation: Some(row.generation),
            detail: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Kubernetes label selector, e.g. `env=prod,tier!=db,region in (eu,us)`.
    pub label_selector: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

const CURSOR_KIND: &str = "c1";

/// List clusters, by name, in pages (keyset pagination).
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters",
    params(ListParams),
    responses(
        (status = 200, description = "A page of clusters", body = ClusterList),
        (status = 400, description = "Bad selector, limit or cursor", body = Problem, content_type = "application/problem+json"),
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
    let selector = selector::parse(params.label_selector.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?;
    let after = params
        .cursor
        .as_deref()
        .map(|c| decode_cursor(CURSOR_KIND, c))
        .transpose()?;
    let mut rows = db::list_clusters(
        &state.pool,
        &principal.tenant,
        &selector,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    let next_cursor = paginate(&mut rows, limit, CURSOR_KIND, |r| r.name.clone());
    Ok(axum::Json(ClusterList {
        items: rows.into_iter().map(to_cluster).collect(),
        next_cursor,
    }))
}
