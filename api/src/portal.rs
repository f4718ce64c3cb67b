//! The portal: a web UI served at `/` and `/ui/...`. Plain HTML, CSS and
//! JavaScript modules from `api/portal/`, embedded in the binary at build
//! time (no CDN, no outside fonts, no Node build step); the page calls the
//! REST API with the token the user signed in with.
//!
//! `/ui/assets/<file>` are the files; every other `/ui/...` path is the page
//! itself (the script routes on the path). Nothing here shadows an API route:
//! `/v1/...`, `/docs`, `/openapi.json` and the probes keep their handlers, and
//! an unknown `/v1/...` path still answers the problem+json 404.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Where the page may load from and talk to: this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../portal/", $name)),
        }
    };
}

/// Every file of the portal (the page is the first).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("views/signin.js", JS),
    asset!("views/overview.js", JS),
    asset!("views/clusters.js", JS),
    asset!("views/cluster.js", JS),
    asset!("views/rollouts.js", JS),
    asset!("views/service.js", JS),
];

/// Strong ETags of [`ASSETS`], by index (a hash of the embedded bytes).
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// The portal's routes (they need no state).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/assets/{*file}", get(asset))
        .route("/ui/{*path}", get(page))
}

async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(i, &headers),
        None => ApiError::NotFound(format!("the portal has no file `{file}`")).into_response(),
    }
}

/// Serves asset `i`: `304` when `If-None-Match` names its ETag. Clients
/// revalidate every time (`no-cache`), so a new binary's files are seen at
/// once and an unchanged file costs a `304`.
fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    for (name, value) in [
        (header::ETAG, etag.as_str()),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        insert(h, name, value);
    }
    response
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_etag() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert!(etags().iter().all(|t| t.len() == 26 && t.starts_with('"')));
        assert_eq!(ASSETS[0].name, "index.html");
    }

    /// Each `import ... from './x.js'` of a module and each `/ui/assets/...`
    /// of the page names an embedded file.
    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let known = |name: &str| ASSETS.iter().any(|a| a.name == name);
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            let dir = a.name.rsplit_once('/').map_or("", |(d, _)| d);
            if a.name.ends_with(".js") {
                for spec in text.split("from '").skip(1) {
                    let spec = spec.split('\'').next().unwrap_or_default();
                    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                    for p in spec.split('/') {
                        match p {
                            "." => {}
                            ".." => {
                                parts.pop();
                            }
                            p => parts.push(p),
                        }
                    }
                    let resolved = parts.join("/");
                    assert!(known(&resolved), "{} imports {spec}: not embedded", a.name);
                }
            }
            for reference in text.split("/ui/assets/").skip(1) {
                let name: String = reference
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                    .collect();
                assert!(known(&name), "{} loads {name}: not embedded", a.name);
            }
        }
    }
}
