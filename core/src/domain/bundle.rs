//! Release bundles: the rules an imported bundle must satisfy before it is
//! stored (see `meshfleet_model::bundle`).

use std::collections::BTreeSet;

use meshfleet_model::{BundleDocument, BundleImport, BundleOrigin, BundleRef, FieldError};
use serde_json::Value;

/// The API group of the Gateway API, whose CRDs carry their bundle version.
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// The annotation with a Gateway API CRD's bundle version.
const GATEWAY_API_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";
/// Templates an imported bundle must have (istiod builds waypoints from it).
pub const REQUIRED_TEMPLATES: [&str; 1] = ["waypoint"];

/// A bundle reference from its stored columns (digest, origin).
pub fn bundle_ref(digest: Option<String>, origin: Option<&str>) -> Option<BundleRef> {
    Some(BundleRef::new(digest?, BundleOrigin::parse(origin?)?))
}

/// The canonical document of an import for `version`, or one error per
/// problem (pointer `/crds/{file}` or `/templates/{name}`).
pub fn document_of(version: &str, input: &BundleImport) -> Result<BundleDocument, Vec<FieldError>> {
    let mut errors = Vec::new();
    if input.origin == BundleOrigin::Development {
        if !input.crds.is_empty() {
            errors.push(FieldError::new(
                "/crds",
                "must be empty with origin `development` (the agent renders that bundle itself)",
            ));
        }
        if !input.templates.is_empty() {
            errors.push(FieldError::new(
                "/templates",
                "must be empty with origin `development` (the agent renders that bundle itself)",
            ));
        }
        return if errors.is_empty() {
            Ok(BundleDocument::development(version))
        } else {
            Err(errors)
        };
    }
    if input.crds.is_empty() {
        errors.push(FieldError::new(
            "/crds",
            "is required: the CRD files of the release (e.g. crd-all.gen.yaml and the Gateway API standard-install.yaml)",
        ));
    }
    let mut crds = Vec::new();
    let mut names = BTreeSet::new();
    for (i, text) in input.crds.iter().enumerate() {
        let pointer = format!("/crds/{i}");
        let documents: Vec<Value> = match serde_saphyr::from_multiple(text) {
            Ok(d) => d,
            Err(e) => {
                errors.push(FieldError::new(
                    &pointer,
                    format!("is not YAML or JSON: {}", first_line(&e.to_string())),
                ));
                continue;
            }
        };
        if documents.is_empty() {
            errors.push(FieldError::new(&pointer, "holds no document"));
        }
        for (n, doc) in documents.into_iter().enumerate() {
            if is_gateway_api_upgrade_policy(&doc) {
                continue;
            }
            match check_crd(&doc) {
                Ok(name) if !names.insert(name.clone()) => errors.push(FieldError::new(
                    &pointer,
                    format!("document {n}: CRD {name} appears more than once in the bundle"),
                )),
                Ok(_) => crds.push(doc),
                Err(why) => errors.push(FieldError::new(&pointer, format!("document {n}: {why}"))),
            }
        }
    }
    for name in REQUIRED_TEMPLATES {
        if input
            .templates
            .get(name)
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(FieldError::new(
                format!("/templates/{name}"),
                format!("is required: istiod's `{name}` injection template (from istio-discovery's files/)"),
            ));
        }
    }
    for name in input.templates.keys() {
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(FieldError::new(
                format!("/templates/{name}"),
                "a template name is 1–63 letters, digits, `-` or `_`",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(BundleDocument {
        version: version.to_string(),
        origin: BundleOrigin::Imported,
        crds,
        templates: input.templates.clone(),
    })
}

/// The Gateway API's `safe-upgrades` ValidatingAdmissionPolicy and its
/// binding, which newer `standard-install.yaml`s carry beside the CRDs: not
/// part of a bundle (the agent installs CRDs only), so left out of it.
fn is_gateway_api_upgrade_policy(doc: &Value) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    matches!(
        kind,
        "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"
    ) && name == "safe-upgrades.gateway.networking.k8s.io"
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A CRD the agent can install: `apiextensions.k8s.io/v1`
/// CustomResourceDefinition with a name, names, versions, and an Istio or
/// Gateway API group (a Gateway API CRD with its bundle version). Its name.
fn check_crd(doc: &Value) -> Result<String, String> {
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(doc, |v, k| v.get(k))
            .and_then(Value::as_str)
    };
    let kind = text(&["kind"]).unwrap_or("");
    let api_version = text(&["apiVersion"]).unwrap_or("");
    if kind != "CustomResourceDefinition" || api_version != "apiextensions.k8s.io/v1" {
        return Err(format!(
            "is a `{kind}` of `{api_version}`, not an apiextensions.k8s.io/v1 CustomResourceDefinition"
        ));
    }
    let name = text(&["metadata", "name"])
        .filter(|n| !n.is_empty())
        .ok_or("a CustomResourceDefinition without metadata.name")?;
    let group = text(&["spec", "group"]).ok_or_else(|| format!("CRD {name} has no spec.group"))?;
    if text(&["spec", "names", "kind"]).is_none() || text(&["spec", "names", "plural"]).is_none() {
        return Err(format!(
            "CRD {name} has no spec.names.kind and spec.names.plural"
        ));
    }
    let versions = doc
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("CRD {name} has no spec.versions"))?;
    if versions
        .iter()
        .any(|v| v.get("name").and_then(Value::as_str).is_none())
    {
        return Err(format!("CRD {name} has a version without a name"));
    }
    if group == GATEWAY_API_GROUP {
        if doc
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(GATEWAY_API_VERSION_ANNOTATION))
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(format!(
                "Gateway API CRD {name} has no `{GATEWAY_API_VERSION_ANNOTATION}` annotation"
            ));
        }
    } else if !group.ends_with(".istio.io") {
        return Err(format!(
            "CRD {name} of group `{group}` is neither an Istio nor a Gateway API CRD"
        ));
    }
    if !name.ends_with(&format!(".{group}")) {
        return Err(format!("CRD name {name} is not `<plural>.{group}`"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = "# upstream header\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: wasmplugins.extensions.istio.io\nspec:\n  group: extensions.istio.io\n  names: {kind: WasmPlugin, plural: wasmplugins}\n  scope: Namespaced\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n---\n";

    fn import(crds: &[&str], waypoint: Option<&str>) -> BundleImport {
        BundleImport {
            origin: BundleOrigin::Imported,
            crds: crds.iter().map(|s| s.to_string()).collect(),
            templates: waypoint
                .map(|w| [("waypoint".to_string(), w.to_string())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_yaml_stream_of_crds_with_a_waypoint_template_is_a_bundle_with_a_stable_digest() {
        let a = document_of("1.28.2", &import(&[CRD], Some("apiVersion: v1"))).unwrap();
        assert_eq!(a.crds.len(), 1);
        assert_eq!(
            a.crds[0]["metadata"]["name"],
            "wasmplugins.extensions.istio.io"
        );
        // The same CRD as JSON: the same canonical content.
        let json = serde_json::to_string(&a.crds[0]).unwrap();
        let b = document_of("1.28.2", &import(&[&json], Some("apiVersion: v1"))).unwrap();
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn every_problem_of_an_import_is_one_error() {
        let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        let policy = "kind: ValidatingAdmissionPolicy\nmetadata: {name: safe-upgrades.gateway.networking.k8s.io}\n";
        let with_policy = format!("{CRD}---\n{policy}");
        assert_eq!(
            document_of("1.28.2", &import(&[&with_policy], Some("t")))
                .unwrap()
                .crds
                .len(),
            1,
            "the Gateway API's upgrade policy is left out"
        );
        let errors =
            document_of("1.28.2", &import(&[CRD, other, "{ not: [yaml"], None)).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/crds/1", "/crds/2", "/templates/waypoint"],
            "{errors:?}"
        );
        assert!(errors[0].detail.contains("ConfigMap"));
    }

    #[test]
    fn a_gateway_api_crd_needs_its_bundle_version() {
        let gw = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gateways.gateway.networking.k8s.io}\nspec: {group: gateway.networking.k8s.io, names: {kind: Gateway, plural: gateways}, versions: [{name: v1}]}\n";
        let errors = document_of("1.28.2", &import(&[gw], Some("t"))).unwrap_err();
        assert!(errors[0].detail.contains("bundle-version"), "{errors:?}");
    }
}
