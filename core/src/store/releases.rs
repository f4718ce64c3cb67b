//! The release catalog (global reference data, not tenant data).

use chrono::NaiveDate;
use meshfleet_model::{BundleOrigin, Channel, ComponentImages, Release, ReleaseInput};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::domain::bundle::bundle_ref;
use crate::domain::version::{Catalog, CatalogEntry, Version};

#[derive(sqlx::FromRow)]
struct ReleaseRow {
    version: String,
    channels: Vec<String>,
    released_at: NaiveDate,
    end_of_support: Option<NaiveDate>,
    retired: bool,
    images: Json<ComponentImages>,
    bundle_digest: Option<String>,
    bundle_origin: Option<String>,
}

impl From<ReleaseRow> for Release {
    fn from(r: ReleaseRow) -> Release {
        Release {
            version: r.version,
            channels: r
                .channels
                .iter()
                .filter_map(|c| Channel::parse(c))
                .collect(),
            released_at: r.released_at,
            end_of_support: r.end_of_support,
            retired: r.retired,
            images: r.images.0,
            bundle: bundle_ref(r.bundle_digest, r.bundle_origin.as_deref()),
        }
    }
}

pub async fn list_releases(db: impl PgExecutor<'_>) -> Result<Vec<Release>, sqlx::Error> {
    let rows: Vec<ReleaseRow> = sqlx::query_as(
        "SELECT r.version, r.channels, r.released_at, r.end_of_support, r.retired, r.images,
                r.bundle_digest, b.origin AS bundle_origin
         FROM releases r LEFT JOIN release_bundles b ON b.digest = r.bundle_digest
         ORDER BY r.major DESC, r.minor DESC, r.patch DESC",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Release::from).collect())
}

#[derive(sqlx::FromRow)]
struct CatalogRow {
    version: String,
    channels: Vec<String>,
    retired: bool,
    end_of_support: Option<NaiveDate>,
    has_bundle: bool,
}

/// A release as written, and whether the write created it.
#[derive(sqlx::FromRow)]
struct UpsertedRow {
    #[sqlx(flatten)]
    release: ReleaseRow,
    created: bool,
}

pub async fn load_catalog(db: impl PgExecutor<'_>) -> Result<Catalog, sqlx::Error> {
    let rows: Vec<CatalogRow> = sqlx::query_as(
        "SELECT version, channels, retired, end_of_support,
                bundle_digest IS NOT NULL AS has_bundle
         FROM releases",
    )
    .fetch_all(db)
    .await?;
    let entries = rows
        .into_iter()
        .filter_map(|r| {
            Some(CatalogEntry {
                version: Version::parse(&r.version)?,
                channels: r
                    .channels
                    .iter()
                    .filter_map(|c| Channel::parse(c))
                    .collect(),
                retired: r.retired,
                end_of_support: r.end_of_support,
                has_bundle: r.has_bundle,
            })
        })
        .collect();
    Ok(Catalog { entries })
}

/// The images of a release, locking it for the rest of the transaction.
pub async fn lock_release_images(
    conn: &mut PgConnection,
    version: Version,
) -> Result<Option<ComponentImages>, sqlx::Error> {
    let row: Option<Json<ComponentImages>> =
        sqlx::query_scalar("SELECT images FROM releases WHERE version = $1 FOR UPDATE")
            .bind(version.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|j| j.0))
}

/// Inserts or replaces a release; returns the stored release and whether it was created.
pub async fn upsert_release(
    conn: &mut PgConnection,
    version: Version,
    input: &ReleaseInput,
    images: &ComponentImages,
) -> Result<(Release, bool), sqlx::Error> {
    let mut channels: Vec<&str> = input.channels.iter().map(|c| c.as_str()).collect();
    channels.sort();
    channels.dedup();
    let row: UpsertedRow = sqlx::query_as(
        "INSERT INTO releases (version, major, minor, patch, channels, released_at, end_of_support, retired, images)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (version) DO UPDATE SET
            channels = EXCLUDED.channels, released_at = EXCLUDED.released_at,
            end_of_support = EXCLUDED.end_of_support, retired = EXCLUDED.retired,
            images = EXCLUDED.images, updated_at = now()
         RETURNING version, channels, released_at, end_of_support, retired, images,
            (xmax = 0) AS created, bundle_digest,
            (SELECT origin FROM release_bundles b WHERE b.digest = releases.bundle_digest) AS bundle_origin",
    )
    .bind(version.to_string())
    .bind(version.major as i32)
    .bind(version.minor as i32)
    .bind(version.patch as i32)
    .bind(&channels)
    .bind(input.released_at)
    .bind(input.end_of_support)
    .bind(input.retired)
    .bind(Json(images))
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.release.into(), row.created))
}

/// Stores a bundle document under its digest (nothing if it is there
/// already); whether it was new.
pub async fn insert_bundle(
    conn: &mut PgConnection,
    digest: &str,
    origin: BundleOrigin,
    document: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO release_bundles (digest, origin, document) VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest)
    .bind(origin.as_str())
    .bind(document)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The bundle digest of release `version`, locking the release for the rest
/// of the transaction: `None` when there is no such release, `Some(None)`
/// when it has no bundle.
pub async fn lock_release_bundle(
    conn: &mut PgConnection,
    version: Version,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("SELECT bundle_digest FROM releases WHERE version = $1 FOR UPDATE")
        .bind(version.to_string())
        .fetch_optional(&mut *conn)
        .await
}

/// Makes `digest` the bundle of release `version` (which wakes every waiting
/// agent: the desired state of clusters on it names the bundle).
pub async fn set_release_bundle(
    conn: &mut PgConnection,
    version: Version,
    digest: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE releases SET bundle_digest = $2, updated_at = now() WHERE version = $1")
        .bind(version.to_string())
        .bind(digest)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The stored document of a bundle, byte for byte as hashed.
pub async fn bundle_document(
    db: impl PgExecutor<'_>,
    digest: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT document FROM release_bundles WHERE digest = $1")
        .bind(digest)
        .fetch_optional(db)
        .await
}
