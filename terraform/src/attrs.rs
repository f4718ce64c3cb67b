//! One description per attribute, from which the provider derives the
//! Terraform schema, the conversion between Terraform values (snake_case) and
//! API JSON (camelCase), the planned value of an attribute left out of the
//! configuration (the API's default), and the attribute path of an API
//! problem's JSON pointer.
//!
//! Terraform values are handled as [`V`] trees (msgpack maps for objects).

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
pub use tf_provider::value::ValueAny as V;
use tf_provider::{AttributePath, Diagnostics};

use crate::diag;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    String,
    Number,
    Bool,
    StringList,
    /// `map(string)`; keys are the user's and kept verbatim.
    StringMap,
    /// `map(number)`.
    NumberMap,
    /// A nested object (`x = { ... }`).
    Object(&'static [Attr]),
    /// A list of nested objects (`x = [{ ... }]`).
    ObjectList(&'static [Attr]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    /// Set by the provider only.
    Computed,
    /// Optional; when left out the provider plans the API's default.
    OptionalComputed,
}

/// What an attribute left out of the configuration means.
#[derive(Debug, Clone, Copy)]
pub enum Absent {
    Null,
    Str(&'static str),
    Num(i64),
    Bool(bool),
    EmptyList,
    EmptyMap,
    /// An object made of its attributes' own defaults.
    Nested,
    /// A value of the model crate (API JSON), e.g. `FailurePolicy::default()`.
    Model(fn() -> Json),
}

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Terraform name (snake_case).
    pub name: &'static str,
    /// API field name (camelCase); empty for provider-only attributes.
    pub json: &'static str,
    pub kind: Kind,
    pub mode: Mode,
    pub absent: Absent,
    /// Markdown, shown by `terraform providers schema -json` and the docs.
    pub doc: &'static str,
    pub sensitive: bool,
}

impl Attr {
    pub const fn new(
        name: &'static str,
        json: &'static str,
        kind: Kind,
        mode: Mode,
        doc: &'static str,
    ) -> Attr {
        Attr {
            name,
            json,
            kind,
            mode,
            absent: Absent::Null,
            doc,
            sensitive: false,
        }
    }

    /// Optional, planned as `absent` when left out.
    pub const fn or(mut self, absent: Absent) -> Attr {
        self.absent = absent;
        self
    }

    pub const fn sensitive(mut self) -> Attr {
        self.sensitive = true;
        self
    }
}

/// The Terraform schema of `attrs`; with `all_computed`, every attribute is
/// read-only (data sources reusing a resource's attributes).
pub fn tf_attributes(attrs: &[Attr], all_computed: bool) -> HashMap<String, Attribute> {
    attrs
        .iter()
        .map(|a| {
            let constraint = if all_computed {
                AttributeConstraint::Computed
            } else {
                match a.mode {
                    Mode::Required => AttributeConstraint::Required,
                    Mode::Optional => AttributeConstraint::Optional,
                    Mode::Computed => AttributeConstraint::Computed,
                    Mode::OptionalComputed => AttributeConstraint::OptionalComputed,
                }
            };
            (
                a.name.to_string(),
                Attribute {
                    attr_type: tf_type(a.kind, all_computed),
                    description: Description::markdown(a.doc),
                    constraint,
                    sensitive: a.sensitive,
                    deprecated: false,
                },
            )
        })
        .collect()
}

fn tf_type(kind: Kind, all_computed: bool) -> AttributeType {
    match kind {
        Kind::String => AttributeType::String,
        Kind::Number => AttributeType::Number,
        Kind::Bool => AttributeType::Bool,
        Kind::StringList => AttributeType::List(Box::new(AttributeType::String)),
        Kind::StringMap => AttributeType::Map(Box::new(AttributeType::String)),
        Kind::NumberMap => AttributeType::Map(Box::new(AttributeType::Number)),
        Kind::Object(s) => AttributeType::AttributeSingle(tf_attributes(s, all_computed)),
        Kind::ObjectList(s) => AttributeType::AttributeList(tf_attributes(s, all_computed)),
    }
}

/// A resource's or data source's schema.
pub fn schema(description: &str, attributes: HashMap<String, Attribute>) -> Schema {
    Schema {
        version: 1,
        block: Block {
            version: 1,
            attributes,
            description: Description::markdown(description),
            ..Default::default()
        },
    }
}

/// The API body (`T`, a model type) of a planned object of `attrs`.
pub fn api_body<T: DeserializeOwned>(
    attrs: &[Attr],
    planned: &V,
    diags: &mut Diagnostics,
) -> Option<T> {
    let json = match to_api(attrs, planned, &AttributePath::root()) {
        Ok(j) => j,
        Err(path) => {
            diag::error_at(
                diags,
                "A value is still unknown at apply",
                "The provider cannot send an unknown value to meshfleet.",
                path,
            );
            return None;
        }
    };
    match serde_json::from_value(json) {
        Ok(body) => Some(body),
        Err(e) => {
            diag::error(diags, "Invalid configuration", e.to_string());
            None
        }
    }
}

/// An API object as a Terraform object of `attrs` (missing fields are null;
/// provider-only attributes are null too).
pub fn from_api(attrs: &[Attr], json: &Json) -> V {
    V::Map(
        attrs
            .iter()
            .map(|a| {
                let v = if a.json.is_empty() {
                    &Json::Null
                } else {
                    json.get(a.json).unwrap_or(&Json::Null)
                };
                (a.name.to_string(), value_from_api(a.kind, v))
            })
            .collect(),
    )
}

fn value_from_api(kind: Kind, v: &Json) -> V {
    if v.is_null() {
        return V::Null;
    }
    let list = |f: &dyn Fn(&Json) -> V| {
        V::List(
            v.as_array()
                .map(|a| a.iter().map(f).collect())
                .unwrap_or_default(),
        )
    };
    let map = |f: &dyn Fn(&Json) -> V| {
        V::Map(
            v.as_object()
                .map(|o| o.iter().map(|(k, x)| (k.clone(), f(x))).collect())
                .unwrap_or_default(),
        )
    };
    match kind {
        Kind::String => match v {
            Json::String(s) => V::String(s.clone()),
            other => V::String(other.to_string()),
        },
        Kind::Number => v.as_i64().map(V::Number).unwrap_or(V::Null),
        Kind::Bool => v.as_bool().map(V::Bool).unwrap_or(V::Null),
        Kind::StringList => list(&|x| value_from_api(Kind::String, x)),
        Kind::StringMap => map(&|x| value_from_api(Kind::String, x)),
        Kind::NumberMap => map(&|x| value_from_api(Kind::Number, x)),
        Kind::Object(s) => from_api(s, v),
        Kind::ObjectList(s) => list(&|x| from_api(s, x)),
    }
}

/// A Terraform object of `attrs` as the API body: nulls and provider-only
/// or computed attributes left out. An unknown value fails with its path.
pub fn to_api(attrs: &[Attr], tf: &V, at: &AttributePath) -> Result<Json, AttributePath> {
    let mut out = Map::new();
    for a in attrs {
        if a.json.is_empty() || a.mode == Mode::Computed {
            continue;
        }
        let path = at.clone().attribute(a.name);
        if let Some(j) = value_to_api(a.kind, get(tf, a.name), &path)? {
            out.insert(a.json.to_string(), j);
        }
    }
    Ok(Json::Object(out))
}

fn value_to_api(kind: Kind, v: &V, at: &AttributePath) -> Result<Option<Json>, AttributePath> {
    let j = match (kind, v) {
        (_, V::Null) => return Ok(None),
        (_, V::Unknown) => return Err(at.clone()),
        (Kind::Object(s), v) => to_api(s, v, at)?,
        (Kind::ObjectList(s), V::List(items)) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| to_api(s, x, &at.clone().index(i as i64)))
                .collect::<Result<_, _>>()?,
        ),
        (_, V::List(items)) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    scalar_to_api(x, &at.clone().index(i as i64)).map(|o| o.unwrap_or(Json::Null))
                })
                .collect::<Result<_, _>>()?,
        ),
        (_, V::Map(m)) => Json::Object(
            m.iter()
                .map(|(k, x)| {
                    scalar_to_api(x, &at.clone().key(k.clone()))
                        .map(|o| (k.clone(), o.unwrap_or(Json::Null)))
                })
                .collect::<Result<_, _>>()?,
        ),
        (_, scalar) => return scalar_to_api(scalar, at),
    };
    Ok(Some(j))
}

fn scalar_to_api(v: &V, at: &AttributePath) -> Result<Option<Json>, AttributePath> {
    Ok(Some(match v {
        V::Null => return Ok(None),
        V::Unknown => return Err(at.clone()),
        V::String(s) => Json::String(s.clone()),
        V::Number(n) => Json::from(*n),
        V::Bool(b) => Json::Bool(*b),
        other => serde_json::to_value(other).unwrap_or(Json::Null),
    }))
}

/// The planned object for a configuration of `attrs`: what is set is kept,
/// what is left out becomes the API's default, unknowns stay unknown, and
/// computed attributes are unknown (the caller fills in what it knows).
pub fn plan(attrs: &[Attr], config: &V) -> V {
    V::Map(
        attrs
            .iter()
            .map(|a| (a.name.to_string(), plan_value(a, get(config, a.name))))
            .collect(),
    )
}

fn plan_value(a: &Attr, c: &V) -> V {
    if a.mode == Mode::Computed {
        return V::Unknown;
    }
    match (c, a.kind) {
        (V::Unknown, _) => V::Unknown,
        (V::Null, _) => absent_value(a),
        (v, Kind::Object(s)) => plan(s, v),
        (V::List(items), Kind::ObjectList(s)) => V::List(
            items
                .iter()
                .map(|i| match i {
                    V::Unknown => V::Unknown,
                    i => plan(s, i),
                })
                .collect(),
        ),
        (v, _) => v.clone(),
    }
}

/// The value an attribute left out of the configuration stands for.
pub fn absent_value(a: &Attr) -> V {
    match a.absent {
        Absent::Null => V::Null,
        Absent::Str(s) => V::String(s.to_string()),
        Absent::Num(n) => V::Number(n),
        Absent::Bool(b) => V::Bool(b),
        Absent::EmptyList => V::List(vec![]),
        Absent::EmptyMap => V::Map(BTreeMap::new()),
        Absent::Nested => match a.kind {
            Kind::Object(s) => plan(s, &V::Null),
            _ => V::Null,
        },
        Absent::Model(f) => value_from_api(a.kind, &f()),
    }
}

/// Only the attributes a user can set (for "did the configuration change").
pub fn inputs(attrs: &[Attr], v: &V) -> V {
    V::Map(
        attrs
            .iter()
            .filter(|a| a.mode != Mode::Computed)
            .map(|a| {
                let x = get(v, a.name);
                let x = match (a.kind, x) {
                    (Kind::Object(s), x @ V::Map(_)) => inputs(s, x),
                    (Kind::ObjectList(s), V::List(items)) => {
                        V::List(items.iter().map(|i| inputs(s, i)).collect())
                    }
                    (_, x) => x.clone(),
                };
                (a.name.to_string(), x)
            })
            .collect(),
    )
}

/// The Terraform attribute path of an API problem's JSON pointer
/// (`/mesh/upgrade/version` → `mesh.upgrade.version`), as far as it maps.
pub fn pointer_path(attrs: &[Attr], pointer: &str) -> AttributePath {
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut path = AttributePath::root();
    let mut level: Option<&[Attr]> = Some(attrs);
    let mut i = 0;
    while let (Some(list), Some(seg)) = (level, segments.get(i)) {
        let Some(a) = list.iter().find(|a| !a.json.is_empty() && a.json == seg) else {
            break;
        };
        path.add_attribute(a.name);
        i += 1;
        level = None;
        match a.kind {
            Kind::Object(s) => level = Some(s),
            Kind::ObjectList(s) => {
                if let Some(idx) = segments.get(i).and_then(|s| s.parse::<i64>().ok()) {
                    path.add_index(idx);
                    i += 1;
                    level = Some(s);
                }
            }
            Kind::StringList => {
                if let Some(idx) = segments.get(i).and_then(|s| s.parse::<i64>().ok()) {
                    path.add_index(idx);
                }
            }
            Kind::StringMap | Kind::NumberMap => {
                if let Some(key) = segments.get(i) {
                    path.add_key(key.clone());
                }
            }
            _ => {}
        }
    }
    path
}

static NULL: V = V::Null;

/// An attribute of an object value (null when absent or not an object).
pub fn get<'a>(v: &'a V, name: &str) -> &'a V {
    match v {
        V::Map(m) => m.get(name).unwrap_or(&NULL),
        _ => &NULL,
    }
}

pub fn get_str<'a>(v: &'a V, name: &str) -> Option<&'a str> {
    match get(v, name) {
        V::String(s) => Some(s),
        _ => None,
    }
}

pub fn get_bool(v: &V, name: &str) -> Option<bool> {
    match get(v, name) {
        V::Bool(b) => Some(*b),
        _ => None,
    }
}

/// Sets an attribute of an object value (no-op on a non-object).
pub fn set(v: &mut V, name: &str, value: V) {
    if let V::Map(m) = v {
        m.insert(name.to_string(), value);
    }
}

/// An object value from its attributes.
pub fn object(pairs: &[(&str, V)]) -> V {
    V::Map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// A string, or null.
pub fn str_or_null(s: Option<impl Into<String>>) -> V {
    s.map(|s| V::String(s.into())).unwrap_or(V::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF: &[Attr] = &[
        Attr::new("name", "name", Kind::String, Mode::Required, "n"),
        Attr::new(
            "replicas",
            "replicas",
            Kind::Number,
            Mode::OptionalComputed,
            "r",
        )
        .or(Absent::Num(1)),
    ];
    const ROOT: &[Attr] = &[
        Attr::new(
            "labels",
            "labels",
            Kind::StringMap,
            Mode::OptionalComputed,
            "l",
        )
        .or(Absent::EmptyMap),
        Attr::new(
            "way_points",
            "wayPoints",
            Kind::ObjectList(LEAF),
            Mode::Optional,
            "w",
        ),
        Attr::new("id", "id", Kind::String, Mode::Computed, "i"),
        Attr::new("timeouts", "", Kind::String, Mode::Optional, "t"),
    ];

    #[test]
    fn a_plan_fills_in_defaults_and_keeps_what_is_set() {
        let config = object(&[
            ("labels", V::Null),
            (
                "way_points",
                V::List(vec![object(&[
                    ("name", V::String("w".into())),
                    ("replicas", V::Null),
                ])]),
            ),
            ("id", V::Null),
            ("timeouts", V::Unknown),
        ]);
        let planned = plan(ROOT, &config);
        assert_eq!(get(&planned, "labels"), &V::Map(BTreeMap::new()));
        assert_eq!(get(&planned, "id"), &V::Unknown);
        assert_eq!(get(&planned, "timeouts"), &V::Unknown);
        let wp = match get(&planned, "way_points") {
            V::List(l) => l[0].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(get(&wp, "replicas"), &V::Number(1));
    }

    #[test]
    fn api_json_and_terraform_values_convert_both_ways() {
        let json = serde_json::json!({
            "labels": {"Env_Name": "prod"},
            "wayPoints": [{"name": "w", "replicas": 2}],
            "id": "x"
        });
        let tf = from_api(ROOT, &json);
        assert_eq!(get(&tf, "id"), &V::String("x".into()));
        assert_eq!(get(&tf, "timeouts"), &V::Null);
        let back = to_api(ROOT, &tf, &AttributePath::root()).expect("known");
        // computed and provider-only attributes are not sent
        assert_eq!(
            back,
            serde_json::json!({"labels": {"Env_Name": "prod"}, "wayPoints": [{"name": "w", "replicas": 2}]})
        );
    }

    #[test]
    fn an_unknown_value_is_refused_with_its_path() {
        let tf = object(&[("labels", V::Unknown)]);
        let err = to_api(ROOT, &tf, &AttributePath::root()).expect_err("unknown");
        assert_eq!(err, AttributePath::new("labels"));
    }

    #[test]
    fn pointers_map_to_attribute_paths() {
        assert_eq!(
            pointer_path(ROOT, "/wayPoints/0/replicas"),
            AttributePath::new("way_points")
                .index(0)
                .attribute("replicas")
        );
        assert_eq!(
            pointer_path(ROOT, "/labels/a~1b"),
            AttributePath::new("labels").key("a/b")
        );
        assert_eq!(pointer_path(ROOT, "/clusters/x"), AttributePath::root());
    }
}
