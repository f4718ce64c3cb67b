//! Importing a release's bundle into the catalog.

use meshfleet_model::{BundleImport, BundleImported, BundleRef, FieldError};
use serde_json::json;
use sqlx::PgConnection;

use crate::domain::bundle::document_of;
use crate::domain::version::Version;
use crate::error::{Error, Result};
use crate::store::events::{NewEvent, insert_event};
use crate::store::releases;

/// Stores the bundle of an import by digest and makes it release
/// `version`'s bundle. Idempotent: the same content is the same digest, and
/// `changed` is false when the release already had it. The event goes to
/// `tenant` (the SRE's).
pub async fn import_bundle(
    conn: &mut PgConnection,
    tenant: &str,
    actor: &str,
    version: &str,
    input: &BundleImport,
) -> Result<(BundleImported, bool)> {
    let parsed = Version::parse(version).ok_or_else(|| {
        Error::Invalid(vec![FieldError::new(
            "/version",
            format!("`{version}` is not a version like `1.28.2`"),
        )])
    })?;
    let document = document_of(version, input).map_err(Error::Invalid)?;
    let previous = releases::lock_release_bundle(conn, parsed)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "release {version} is not in the catalog; add it first with PUT /v1/ops/releases/{version}"
            ))
        })?;
    let digest = document.digest();
    let bytes = document.canonical();
    let text = String::from_utf8(bytes).map_err(|e| Error::Internal(e.to_string()))?;
    releases::insert_bundle(conn, &digest, document.origin, &text).await?;
    let changed = previous.as_deref() != Some(digest.as_str());
    if changed {
        releases::set_release_bundle(conn, parsed, &digest).await?;
        insert_event(
            conn,
            tenant,
            NewEvent {
                cluster_name: None,
                cluster_id: None,
                actor,
                action: "release.bundle_imported",
                generation: None,
                detail: json!({
                    "version": version,
                    "digest": digest,
                    "origin": document.origin.as_str(),
                    "previous": previous,
                }),
            },
        )
        .await?;
    }
    let crds = document
        .crds
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(|n| n.as_str()))
        .map(str::to_string)
        .collect();
    Ok((
        BundleImported {
            version: version.to_string(),
            bundle: BundleRef::new(digest, document.origin),
            crds,
            templates: document.templates.keys().cloned().collect(),
        },
        changed,
    ))
}
