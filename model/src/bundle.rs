//! Release bundles: what an Istio release ships as text rather than as code
//! (its CustomResourceDefinitions with their real schemas, istiod's injection
//! templates), stored in the catalog by the SHA-256 digest of its canonical
//! document and fetched by agents from `GET /v1/agent/bundles/{digest}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Path prefix of the agent route that serves a bundle by digest.
pub const BUNDLE_PATH: &str = "/v1/agent/bundles";

/// Where a release's bundle comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BundleOrigin {
    /// Rendered by the agent itself (the project's own approximation of the
    /// release's CRDs and templates): nothing to download.
    Development,
    /// Imported by an SRE from upstream's release artifacts.
    #[default]
    Imported,
}

impl BundleOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleOrigin::Development => "development",
            BundleOrigin::Imported => "imported",
        }
    }

    pub fn parse(s: &str) -> Option<BundleOrigin> {
        match s {
            "development" => Some(BundleOrigin::Development),
            "imported" => Some(BundleOrigin::Imported),
            _ => None,
        }
    }
}

/// A release's bundle as the catalog and the desired state name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleRef {
    /// `sha256:` and the hex SHA-256 of the bundle's canonical document.
    #[schema(example = "sha256:5f1c…")]
    pub digest: String,
    pub origin: BundleOrigin,
    /// Where an agent fetches it (`GET`, agent credential); a `development`
    /// bundle needs no download.
    #[schema(example = "/v1/agent/bundles/sha256:5f1c…")]
    pub url: String,
}

impl BundleRef {
    pub fn new(digest: String, origin: BundleOrigin) -> BundleRef {
        let url = format!("{BUNDLE_PATH}/{digest}");
        BundleRef {
            digest,
            origin,
            url,
        }
    }
}

/// The canonical document of a bundle, served as stored: its digest is the
/// SHA-256 of exactly these bytes ([`BundleDocument::canonical`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleDocument {
    /// The Istio release this is the bundle of.
    pub version: String,
    pub origin: BundleOrigin,
    /// The CustomResourceDefinitions, one JSON object each, in import order.
    #[schema(value_type = Vec<Object>)]
    pub crds: Vec<serde_json::Value>,
    /// istiod's injection templates by name (at least `waypoint`).
    pub templates: BTreeMap<String, String>,
}

impl BundleDocument {
    /// The development bundle of `version`: no content, the agent renders it.
    pub fn development(version: &str) -> BundleDocument {
        BundleDocument {
            version: version.to_string(),
            origin: BundleOrigin::Development,
            crds: Vec::new(),
            templates: BTreeMap::new(),
        }
    }

    /// The canonical bytes: compact JSON, fields in declaration order, the
    /// CRDs' keys sorted (whatever order the imported files had them in).
    pub fn canonical(&self) -> Vec<u8> {
        let sorted = BundleDocument {
            crds: self.crds.iter().map(sorted_keys).collect(),
            ..self.clone()
        };
        serde_json::to_vec(&sorted).unwrap_or_default()
    }

    /// `sha256:<hex>` of [`BundleDocument::canonical`].
    pub fn digest(&self) -> String {
        digest_of(&self.canonical())
    }
}

/// `value` with every object's keys in sorted order. serde_json keeps
/// insertion order in some builds (its `preserve_order` feature, which any
/// crate of a build may turn on) and sorts in others: text the agent writes
/// into a cluster, or hashes into a digest, must not depend on which.
pub fn sorted_keys(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted_keys(&map[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted_keys).collect())
        }
        other => other.clone(),
    }
}

/// `sha256:<hex>` of some bytes (how a fetched bundle is verified).
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Body of `PUT /v1/ops/releases/{version}/bundle`: the files of an upstream
/// release as texts (`origin: imported`, the default), or `{"origin":
/// "development"}` to give the release the development bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImport {
    #[serde(default)]
    pub origin: BundleOrigin,
    /// CRD files as upstream ships them (YAML streams or JSON), e.g.
    /// `crd-all.gen.yaml` of the base chart and the Gateway API's
    /// `standard-install.yaml`.
    #[serde(default)]
    pub crds: Vec<String>,
    /// Injection templates by name, e.g. `waypoint` (required for `imported`).
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

/// Answer of `PUT /v1/ops/releases/{version}/bundle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleImported {
    pub version: String,
    pub bundle: BundleRef,
    /// Names of the bundle's CRDs.
    pub crds: Vec<String>,
    /// Names of its templates.
    pub templates: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_document_is_the_text_the_migration_hashes() {
        let doc = BundleDocument::development("1.28.2");
        assert_eq!(
            String::from_utf8(doc.canonical()).unwrap(),
            r#"{"version":"1.28.2","origin":"development","crds":[],"templates":{}}"#
        );
        assert!(doc.digest().starts_with("sha256:"));
        assert_eq!(doc.digest().len(), 71);
    }
}
