//! The release catalog (global reference data, not tenant data).

use chrono::NaiveDate;
use meshfleet_model::{Channel, ComponentImages, Release, ReleaseInput};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::domain::version::{Catalog, CatalogEntry, Version};

#[derive(sqlx::FromRow)]
struct ReleaseRow {
    version: String,
    channels: Vec<String>,
    released_at: NaiveDate,
    end_of_support: Option<NaiveDate>,
    retired: bool,
    images: Json<ComponentImages>,
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
        }
    }
}

pub async fn list_releases(db: impl PgExecutor<'_>) -> Result<Vec<Release>, sqlx::Error> {
    let rows: Vec<ReleaseRow> = sqlx::query_as(
        "SELECT version, channels, released_at, end_of_support, retired, images
         FROM releases ORDER BY major DESC, minor DESC, patch DESC",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Release::from).collect())
}

pub async fn load_catalog(db: impl PgExecutor<'_>) -> Result<Catalog, sqlx::Error> {
    let rows: Vec<(String, Vec<String>, bool, Option<NaiveDate>)> =
        sqlx::query_as("SELECT version, channels, retired, end_of_support FROM releases")
            .fetch_all(db)
            .await?;
    let entries = rows
        .into_iter()
        .filter_map(|(v, channels, retired, end_of_support)| {
            Some(CatalogEntry {
                version: Version::parse(&v)?,
                channels: channels.iter().filter_map(|c| Channel::parse(c)).collect(),
                retired,
                end_of_support,
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
    let (row, created): (ReleaseRow, bool) = {
        let row: (String, Vec<String>, NaiveDate, Option<NaiveDate>, bool, Json<ComponentImages>, bool) =
            sqlx::query_as(
                "INSERT INTO releases (version, major, minor, patch, channels, released_at, end_of_support, retired, images)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (version) DO UPDATE SET
                    channels = EXCLUDED.channels, released_at = EXCLUDED.released_at,
                    end_of_support = EXCLUDED.end_of_support, retired = EXCLUDED.retired,
                    images = EXCLUDED.images, updated_at = now()
                 RETURNING version, channels, released_at, end_of_support, retired, images, (xmax = 0) AS created",
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
        (
            ReleaseRow {
                version: row.0,
                channels: row.1,
                released_at: row.2,
                end_of_support: row.3,
                retired: row.4,
                images: row.5,
            },
            row.6,
        )
    };
    Ok((row.into(), created))
}
