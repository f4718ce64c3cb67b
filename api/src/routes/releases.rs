//! `/v1/releases` (the catalog) and the SRE's `/v1/ops/releases/{version}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshfleet_model::{
    BundleImport, BundleImported, ComponentImages, Problem, Release, ReleaseInput, ReleaseList,
};
use serde_json::json;

use meshfleet_core::domain::version::Version;
use meshfleet_core::ops::bundles;
use meshfleet_core::store::events::{NewEvent, insert_event};
use meshfleet_core::store::{reconcile, releases as db};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{JsonBody, LargeJsonBody};
use crate::state::AppState;

/// The release catalog: supported Istio versions, newest first.
#[utoipa::path(
    get, path = "/v1/releases", tag = "releases",
    responses(
        (status = 200, description = "The catalog", body = ReleaseList),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_releases(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<ReleaseList>> {
    if principal.require_read().is_err() {
        principal.require_sre()?;
    }
    Ok(axum::Json(ReleaseList {
        items: db::list_releases(&state.pool).await?,
    }))
}

/// Add, change or retire a release (role `sre`).
#[utoipa::path(
    put, path = "/v1/ops/releases/{version}", tag = "ops",
    params(("version" = String, Path, description = "Istio version, e.g. 1.28.2")),
    request_body = ReleaseInput,
    responses(
        (status = 200, description = "Replaced", body = Release),
        (status = 201, description = "Added", body = Release),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The release's images are published already and differ", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid release", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_release(
    State(state): State<AppState>,
    principal: Principal,
    Path(version): Path<String>,
    JsonBody(input): JsonBody<ReleaseInput>,
) -> ApiResult<Response> {
    principal.require_sre()?;
    let parsed = Version::parse(&version).ok_or_else(|| {
        ApiError::invalid_field(
            "/version",
            format!("`{version}` is not a version like `1.28.2`"),
        )
    })?;
    if let Some(eos) = input.end_of_support
        && eos < input.released_at
    {
        return Err(ApiError::invalid_field(
            "/endOfSupport",
            "must not be before releasedAt",
        ));
    }
    let images = input
        .images
        .clone()
        .unwrap_or_else(|| ComponentImages::upstream(&version));
    for (field, image) in [
        ("istiod", &images.istiod),
        ("cni", &images.cni),
        ("ztunnel", &images.ztunnel),
        ("proxy", &images.proxy),
    ] {
        if image.is_empty()
            || image.chars().count() > 512
            || image.contains(|c: char| c.is_whitespace() || c == '\0')
        {
            return Err(ApiError::invalid_field(
                &format!("/images/{field}"),
                "must be an image reference",
            ));
        }
    }
    let mut tx = state.pool.begin().await?;
    // Images are part of every running cluster's desired state on this
    // version: they are fixed once published (a new build is a new version).
    let images = match (
        db::lock_release_images(&mut tx, parsed).await?,
        input.images.is_some(),
    ) {
        (Some(stored), true) if stored != images => {
            return Err(ApiError::Conflict(format!(
                "the images of release {version} are already published and cannot change; publish a new version"
            )));
        }
        (Some(stored), _) => stored,
        (None, _) => images,
    };
    let (release, created) = db::upsert_release(&mut tx, parsed, &input, &images).await?;
    // Channel-following clusters look at the catalog again now.
    reconcile::schedule_channel_followers(&mut *tx, state.clock.now()).await?;
    insert_event(
        &mut tx,
        &principal.tenant,
        NewEvent {
            cluster_name: None,
            cluster_id: None,
            actor: &principal.sub,
            action: if created { "release.added" } else { "release.updated" },
            generation: None,
            detail: json!({ "version": version, "retired": release.retired, "channels": release.channels }),
        },
    )
    .await?;
    tx.commit().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(release)).into_response())
}

/// Import a release's bundle (role `sre`): its CRDs and injection templates
/// from upstream's release artifacts, stored by the SHA-256 digest of their
/// canonical content; or `{"origin": "development"}` for the bundle the
/// agent renders itself. Idempotent: the same content is the same digest.
/// Agents on this version fetch it from the `url` of the answer.
#[utoipa::path(
    put, path = "/v1/ops/releases/{version}/bundle", tag = "ops",
    params(("version" = String, Path, description = "Istio version, e.g. 1.28.2")),
    request_body = BundleImport,
    responses(
        (status = 200, description = "The release already had this bundle", body = BundleImported),
        (status = 201, description = "The release's bundle is now this one", body = BundleImported),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the sre role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such release", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 32 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid bundle: one error per problem", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_bundle(
    State(state): State<AppState>,
    principal: Principal,
    Path(version): Path<String>,
    LargeJsonBody(input): LargeJsonBody<BundleImport>,
) -> ApiResult<Response> {
    principal.require_sre()?;
    let mut tx = state.pool.begin().await?;
    let (imported, changed) =
        bundles::import_bundle(&mut tx, &principal.tenant, &principal.sub, &version, &input)
            .await?;
    if changed {
        // Channel-following clusters may now move to this version.
        reconcile::schedule_channel_followers(&mut *tx, state.clock.now()).await?;
    }
    tx.commit().await?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(imported)).into_response())
}
