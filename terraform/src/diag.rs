//! Terraform diagnostics from the provider's errors.
//!
//! Diagnostics are built as plain values: `tf_provider::Diagnostic::new`
//! appends a Rust backtrace to the detail whenever `RUST_BACKTRACE` is set,
//! and a user must never see a stack.

use tf_provider::{AttributePath, AttributePathStep, Diagnostic, Diagnostics};

use crate::attrs::{Attr, V, pointer_path};
use crate::error::Error;

pub fn error(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    error_at(diags, summary, detail, AttributePath::root());
}

pub fn error_at(
    diags: &mut Diagnostics,
    summary: impl Into<String>,
    detail: impl Into<String>,
    attribute: AttributePath,
) {
    diags.add_error(Diagnostic {
        summary: summary.into().into(),
        detail: detail.into().into(),
        attribute,
    });
}

/// An attribute path as written in configuration: `mesh.waypoints[0].name`.
pub fn path_text(path: &AttributePath) -> String {
    let mut out = String::new();
    for step in &path.steps {
        match step {
            AttributePathStep::Attribute(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            AttributePathStep::Key(key) => out.push_str(&format!("[{key:?}]")),
            AttributePathStep::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// An error on an attribute; the detail names it too, because Terraform
/// shows the source of a nested attribute only as its resource block.
pub fn attribute_error(
    diags: &mut Diagnostics,
    summary: impl Into<String>,
    detail: impl Into<String>,
    attribute: AttributePath,
) {
    let detail = format!("{}\n\nattribute: {}", detail.into(), path_text(&attribute));
    error_at(diags, summary, detail, attribute);
}

/// A configured duration (`20m`, `1h30m`) that does not parse is an error.
pub fn check_duration(diags: &mut Diagnostics, value: &V, attribute: AttributePath) {
    if let V::String(s) = value
        && crate::provider::parse_duration(s).is_none()
    {
        error_at(
            diags,
            format!("`{s}` is not a duration"),
            "Use a duration such as `20m` or `1h30m`.",
            attribute,
        );
    }
}

pub fn warning(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    diags.add_warning(Diagnostic {
        summary: summary.into().into(),
        detail: detail.into().into(),
        attribute: AttributePath::root(),
    });
}

/// One diagnostic per error; an API problem gives one per `errors[]` entry,
/// on the attribute its pointer names (`attrs` is the resource's schema).
pub fn report(diags: &mut Diagnostics, action: &str, err: &Error, attrs: Option<&[Attr]>) {
    match err {
        Error::Problem(p) => {
            let request = p
                .instance
                .as_deref()
                .map(|i| format!(" (request id {i})"))
                .unwrap_or_default();
            match p.errors.as_deref() {
                Some(fields) if !fields.is_empty() => {
                    for f in fields {
                        let path = attrs
                            .map(|a| pointer_path(a, &f.pointer))
                            .unwrap_or_default();
                        let at = if path.steps.is_empty() {
                            format!("field: {}", f.pointer)
                        } else {
                            format!("attribute: {} (field {})", path_text(&path), f.pointer)
                        };
                        error_at(
                            diags,
                            format!("{action}: {}", f.detail),
                            format!("{at}\nmeshfleet answered {} {}{request}", p.status, p.title),
                            path,
                        );
                    }
                }
                _ => error(
                    diags,
                    format!("{action}: {}", p.detail),
                    format!("meshfleet answered {} {}{request}", p.status, p.title),
                ),
            }
        }
        Error::Unauthorized(detail) => error(
            diags,
            "meshfleet refused the provider's token",
            format!(
                "{detail}\n\nSet a valid token in the provider block (`token`) or in MESHFLEET_TOKEN \
                 (a dev token: `meshfleet token --tenant <tenant> --role contributor`)."
            ),
        ),
        Error::Forbidden(detail) => error(
            diags,
            format!("{action}: the token's role does not allow it"),
            format!("{detail}\n\nUse a token with the contributor or owner role."),
        ),
        Error::Unreachable { endpoint, reason } => error(
            diags,
            format!("Cannot reach meshfleet at {endpoint}"),
            format!(
                "{reason}\n\nCheck the provider's `endpoint` (or MESHFLEET_URL) and that the service is running."
            ),
        ),
        Error::NotMeshfleet { endpoint, what } => error(
            diags,
            format!("{endpoint} is not a meshfleet API"),
            format!(
                "{what}\n\nCheck the provider's `endpoint` (or MESHFLEET_URL): it is the service's base URL, e.g. http://127.0.0.1:8080."
            ),
        ),
        Error::Unavailable { status, detail } => error(
            diags,
            format!("meshfleet is unavailable ({status})"),
            format!("{detail}\n\nThe service is up but cannot serve now; retry later."),
        ),
        Error::PreconditionFailed(detail) => error(
            diags,
            format!("{action}: it changed since Terraform last read it"),
            format!(
                "{detail}\n\nSomeone else changed it after this plan's refresh. Run `terraform plan` \
                 (or `terraform apply -refresh-only`) to see the change, then apply again."
            ),
        ),
        Error::Config(msg) => error(diags, "Invalid provider configuration", msg.clone()),
        Error::Operation(msg) => error(diags, action.to_string(), msg.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Kind, Mode};
    use meshfleet_model::{FieldError, Problem};

    const MESH: &[Attr] = &[Attr::new(
        "version",
        "version",
        Kind::String,
        Mode::Optional,
        "v",
    )];
    const ROOT: &[Attr] = &[Attr::new(
        "mesh",
        "mesh",
        Kind::Object(MESH),
        Mode::Required,
        "m",
    )];

    #[test]
    fn each_field_error_lands_on_its_attribute() {
        let err = Error::Problem(Box::new(Problem {
            type_: "about:blank".into(),
            title: "Unprocessable Entity".into(),
            status: 422,
            detail: "invalid cluster".into(),
            instance: Some("req-1".into()),
            errors: Some(vec![
                FieldError::new("/mesh/version", "no such version"),
                FieldError::new("/elsewhere", "other"),
            ]),
        }));
        let mut diags = Diagnostics::default();
        report(&mut diags, "Cannot update", &err, Some(ROOT));
        assert_eq!(diags.errors.len(), 2);
        assert_eq!(
            diags.errors[0].attribute,
            AttributePath::new("mesh").attribute("version")
        );
        assert!(diags.errors[0].summary.contains("no such version"));
        assert!(
            diags.errors[0]
                .detail
                .contains("attribute: mesh.version (field /mesh/version)")
        );
        assert!(diags.errors[0].detail.contains("req-1"));
        assert_eq!(diags.errors[1].attribute, AttributePath::root());
    }

    #[test]
    fn paths_read_like_configuration() {
        let p = AttributePath::new("mesh")
            .attribute("waypoints")
            .index(0)
            .attribute("name");
        assert_eq!(path_text(&p), "mesh.waypoints[0].name");
        assert_eq!(
            path_text(&AttributePath::new("labels").key("env")),
            "labels[\"env\"]"
        );
    }

    #[test]
    fn a_refused_connection_is_one_diagnostic_naming_the_endpoint() {
        let err = Error::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        let mut diags = Diagnostics::default();
        report(&mut diags, "Cannot read", &err, None);
        assert_eq!(diags.errors.len(), 1);
        assert!(diags.errors[0].summary.contains("http://127.0.0.1:1"));
        assert!(!diags.errors[0].detail.contains("backtrace"));
    }
}
