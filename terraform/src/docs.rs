//! The registry's documentation pages (`terraform/docs/`), rendered from the
//! provider's own schema (the descriptions `terraform providers schema -json`
//! shows) plus an example and notes per page. A test fails when a committed
//! page differs from its rendering; `MESHFLEET_WRITE_DOCS=1 cargo test -p
//! terraform-provider-meshfleet docs` rewrites them.

use std::collections::HashMap;
use std::fmt::Write;

use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Schema};
use tf_provider::{Diagnostics, Provider};

use crate::provider::MeshfleetProvider;

enum Kind {
    Provider,
    Resource,
    DataSource,
}

struct Page {
    kind: Kind,
    /// `cluster` for `meshfleet_cluster`; empty for the provider.
    name: &'static str,
    example: &'static str,
    notes: &'static str,
}

const PROVIDER_EXAMPLE: &str = r#"terraform {
  required_providers {
    meshfleet = { source = "meshfleet/meshfleet" }
  }
}

provider "meshfleet" {
  endpoint = "http://127.0.0.1:8080" # or MESHFLEET_URL
  token    = var.token               # or MESHFLEET_TOKEN; sensitive
}"#;

const PROVIDER_NOTES: &str = r#"The provider is a client of meshfleet's public REST API: everything it does,
`curl` could do with the same token. It reads the release catalog when it is
configured, so a wrong `endpoint`, a refused `token` or a service that is down
is one diagnostic before any resource is touched, and versions are checked
against the catalog at plan time.

Writes are conditional: create sends `If-None-Match: *` (an existing cluster
is an error that points at `terraform import`), updates and deletes send
`If-Match` with the ETag read at refresh, so two pipelines cannot silently
overwrite each other; a `412` asks you to plan again. API errors keep the
API's `detail`, and each `errors[].pointer` becomes the diagnostic's attribute
(named in the detail too, since Terraform shows a nested attribute's source as
its resource block).

## Use a local build

```shell
cargo build --release -p terraform-provider-meshfleet
cat > ~/.terraformrc <<EOF
provider_installation {
  dev_overrides { "meshfleet/meshfleet" = "$PWD/target/release" }
  direct {}
}
EOF
```

With `dev_overrides`, skip `terraform init`: `terraform plan` and `apply`
start the provider from that folder."#;

const CLUSTER_EXAMPLE: &str = r#"resource "meshfleet_cluster" "prod_eu" {
  name   = "prod-eu-1"
  labels = { env = "prod", region = "eu" }
  mesh = {
    upgrade             = { mode = "manual", version = "1.27.1" }
    mtls                = "strict"
    enrolled_namespaces = ["shop"]
    waypoints           = [{ namespace = "shop", name = "shop-waypoint" }]
    maintenance_window  = { slots = [{ day = "saturday", start = "02:00", duration_minutes = 240 }] }
  }
  timeouts = { delete = "20m" }
}"#;

const CLUSTER_NOTES: &str = r#"Every field of the API's cluster spec is an attribute. An attribute left out
means the API's default (`mode = "ambient"`, `mtls = "strict"`, 2 istiod
replicas, ...) and produces no diff; a change made outside Terraform (API,
portal) shows in the next plan as a change back to the configuration.

**Versions and rollouts.** A version the catalog does not have, a retired one,
or an upgrade that skips a minor fails at plan time. What only the API can
judge (a downgrade to a version this cluster never ran, a change while a
rollout holds the cluster) fails at apply with the API's message on
`mesh.upgrade.version`. A `meshfleet_rollout` (or the reconciler, for a
channel follower past end of support) moves a pinned `mesh.upgrade.version`
itself; the next plan shows that as drift until the configuration names the
new version. To let rollouts own the version, add
`lifecycle { ignore_changes = [mesh.upgrade.version] }`.

**Destroy** deletes the cluster. A cluster whose agent registered is deleted
in two phases: its mesh is uninstalled by the agent, then the record goes;
destroy follows the deletion operation (`Operation-Location`) until it ends,
for `timeouts.delete` (default: the provider's `delete_timeout`, `20m`), and
reports the operation's error if it fails. `force_destroy = true` removes the
record at once (owner role) and leaves the mesh installed.

## Import

```shell
terraform import meshfleet_cluster.prod_eu prod-eu-1
```

The plan right after an import of a cluster that matches its configuration is
empty."#;

const TOKEN_EXAMPLE: &str = r#"resource "meshfleet_bootstrap_token" "prod_eu" {
  cluster = meshfleet_cluster.prod_eu.name
}

# e.g. with the kubernetes context of that cluster:
#   terraform output -raw install_command | sh
output "install_command" {
  value     = meshfleet_bootstrap_token.prod_eu.install_command
  sensitive = true
}"#;

const TOKEN_NOTES: &str = r#"The token is issued with the agent's install manifest
(`GET /v1/clusters/{name}/agent-manifest`), so `token`, `manifest` and
`install_command` carry the same one-time token. When it has expired (or its
cluster is gone), the next plan issues a new one. It cannot be imported:
meshfleet shows a token only once."#;

const ROLLOUT_EXAMPLE: &str = r#"resource "meshfleet_rollout" "q4" {
  target_version = "1.28.2"
  selector       = "env=prod"
  stages = [
    { name = "canary", selector = "region=eu", max_concurrency = 1, soak_seconds = 0 },
    { name = "rest", max_concurrency = 10 },
  ]
  failure_policy      = { max_failed_clusters = 1, action = "rollback" }
  wait_for_completion = false

  # A rollout takes the clusters that exist when it starts.
  depends_on = [meshfleet_cluster.prod_eu]
}"#;

const ROLLOUT_NOTES: &str = r#"Create returns once meshfleet accepted the rollout, or with
`wait_for_completion = true` once it has succeeded; when it pauses, rolls back
or is cancelled instead, create fails with the rollout's reason and the
failed clusters' reasons (the rollout stays in the state, tainted). `state`
and `counts` are refreshed on every plan.

## Import

```shell
terraform import meshfleet_rollout.q4 <rollout id>
```

The API does not return a stage's `selector` or `percent`, so they are null
after an import."#;

const RELEASES_EXAMPLE: &str = r#"data "meshfleet_releases" "all" {}

output "newest" {
  value = data.meshfleet_releases.all.versions[0]
}"#;

const CLUSTER_DATA_EXAMPLE: &str = r#"data "meshfleet_cluster" "prod_eu" {
  name = "prod-eu-1"
}

output "health" {
  value = data.meshfleet_cluster.prod_eu.health
}"#;

const SUMMARY_EXAMPLE: &str = r#"data "meshfleet_fleet_summary" "mine" {}

output "unhealthy" {
  value = data.meshfleet_fleet_summary.mine.by_health["Unhealthy"]
}"#;

const PAGES: &[Page] = &[
    Page {
        kind: Kind::Provider,
        name: "",
        example: PROVIDER_EXAMPLE,
        notes: PROVIDER_NOTES,
    },
    Page {
        kind: Kind::Resource,
        name: "cluster",
        example: CLUSTER_EXAMPLE,
        notes: CLUSTER_NOTES,
    },
    Page {
        kind: Kind::Resource,
        name: "bootstrap_token",
        example: TOKEN_EXAMPLE,
        notes: TOKEN_NOTES,
    },
    Page {
        kind: Kind::Resource,
        name: "rollout",
        example: ROLLOUT_EXAMPLE,
        notes: ROLLOUT_NOTES,
    },
    Page {
        kind: Kind::DataSource,
        name: "releases",
        example: RELEASES_EXAMPLE,
        notes: "",
    },
    Page {
        kind: Kind::DataSource,
        name: "cluster",
        example: CLUSTER_DATA_EXAMPLE,
        notes: "",
    },
    Page {
        kind: Kind::DataSource,
        name: "fleet_summary",
        example: SUMMARY_EXAMPLE,
        notes: "",
    },
];

fn type_name(t: &AttributeType) -> String {
    match t {
        AttributeType::String => "String".into(),
        AttributeType::Number => "Number".into(),
        AttributeType::Bool => "Boolean".into(),
        AttributeType::List(inner) => format!("List of {}", type_name(inner)),
        AttributeType::Set(inner) => format!("Set of {}", type_name(inner)),
        AttributeType::Map(inner) => format!("Map of {}", type_name(inner)),
        AttributeType::AttributeSingle(_) => "Attributes".into(),
        AttributeType::AttributeList(_) => "Attributes List".into(),
        AttributeType::AttributeSet(_) => "Attributes Set".into(),
        AttributeType::AttributeMap(_) => "Attributes Map".into(),
        AttributeType::Object(_) => "Object".into(),
        AttributeType::Tuple(_) => "Tuple".into(),
        AttributeType::Any => "Dynamic".into(),
    }
}

fn nested(t: &AttributeType) -> Option<&HashMap<String, Attribute>> {
    match t {
        AttributeType::AttributeSingle(a)
        | AttributeType::AttributeList(a)
        | AttributeType::AttributeSet(a)
        | AttributeType::AttributeMap(a) => Some(a),
        _ => None,
    }
}

/// The `Schema` section of a page: required, optional and read-only
/// attributes, then each nested object's own section.
fn render_attributes(out: &mut String, attrs: &HashMap<String, Attribute>, anchor: &str) {
    let mut names: Vec<&String> = attrs.keys().collect();
    names.sort();
    let mut later = vec![];
    for (title, wanted) in [
        ("Required", &[AttributeConstraint::Required][..]),
        (
            "Optional",
            &[
                AttributeConstraint::Optional,
                AttributeConstraint::OptionalComputed,
            ][..],
        ),
        ("Read-Only", &[AttributeConstraint::Computed][..]),
    ] {
        let group: Vec<&&String> = names
            .iter()
            .filter(|n| wanted.contains(&attrs[**n].constraint))
            .collect();
        if group.is_empty() {
            continue;
        }
        if anchor.is_empty() {
            let _ = writeln!(out, "### {title}\n");
        } else {
            let _ = writeln!(out, "{title}:\n");
        }
        for name in group {
            let a = &attrs[*name];
            let sensitive = if a.sensitive { ", Sensitive" } else { "" };
            let _ = write!(
                out,
                "- `{name}` ({}{sensitive}) {}",
                type_name(&a.attr_type),
                a.description.content
            );
            if nested(&a.attr_type).is_some() {
                let id = format!("{anchor}--{name}");
                let _ = write!(out, " (see [below for nested schema](#nestedatt{id}))");
                later.push(((*name).clone(), id));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    for (name, id) in later {
        let path = id.trim_start_matches("--").replace("--", ".");
        let _ = writeln!(
            out,
            "<a id=\"nestedatt{id}\"></a>\n### Nested Schema for `{path}`\n"
        );
        if let Some(inner) = nested(&attrs[&name].attr_type) {
            render_attributes(out, inner, &id);
        }
    }
}

fn render(page: &Page, schema: &Schema) -> String {
    let (full, label) = match page.kind {
        Kind::Provider => ("meshfleet".to_string(), "Provider"),
        Kind::Resource => (format!("meshfleet_{}", page.name), "Resource"),
        Kind::DataSource => (format!("meshfleet_{}", page.name), "Data Source"),
    };
    let description = schema.block.description.content.trim();
    let mut out = String::new();
    let title = match page.kind {
        Kind::Provider => "Provider: meshfleet".to_string(),
        _ => format!("{full} {label} - meshfleet"),
    };
    let _ = writeln!(
        out,
        "---\npage_title: \"{title}\"\nsubcategory: \"\"\ndescription: |-\n  {}\n---\n",
        description.replace('\n', "\n  ")
    );
    match page.kind {
        Kind::Provider => {
            let _ = writeln!(out, "# meshfleet Provider\n");
        }
        _ => {
            let _ = writeln!(out, "# {full} ({label})\n");
        }
    }
    let _ = writeln!(out, "{description}\n");
    let _ = writeln!(
        out,
        "## Example Usage\n\n```terraform\n{}\n```\n",
        page.example
    );
    if !page.notes.is_empty() {
        let _ = writeln!(out, "{}\n", page.notes.trim());
    }
    let _ = writeln!(
        out,
        "<!-- The schema below is rendered from the provider's schema: MESHFLEET_WRITE_DOCS=1 cargo test -p terraform-provider-meshfleet docs -->\n## Schema\n"
    );
    render_attributes(&mut out, &schema.block.attributes, "");
    format!("{}\n", out.trim_end())
}

fn path_of(page: &Page) -> String {
    match page.kind {
        Kind::Provider => "docs/index.md".into(),
        Kind::Resource => format!("docs/resources/{}.md", page.name),
        Kind::DataSource => format!("docs/data-sources/{}.md", page.name),
    }
}

/// Every page and its rendering, from the provider's live schema.
fn rendered() -> Vec<(String, String)> {
    let provider = MeshfleetProvider::default();
    let mut diags = Diagnostics::default();
    let resources = Provider::get_resources(&provider, &mut diags).unwrap_or_default();
    let data = Provider::get_data_sources(&provider, &mut diags).unwrap_or_default();
    PAGES
        .iter()
        .map(|page| {
            let schema = match page.kind {
                Kind::Provider => Provider::schema(&provider, &mut diags),
                Kind::Resource => resources.get(page.name).and_then(|r| r.schema(&mut diags)),
                Kind::DataSource => data.get(page.name).and_then(|d| d.schema(&mut diags)),
            };
            let schema = schema.unwrap_or_else(|| panic!("no schema for {}", page.name));
            (path_of(page), render(page, &schema))
        })
        .collect()
}

#[test]
fn the_registry_docs_match_the_providers_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = std::env::var_os("MESHFLEET_WRITE_DOCS").is_some();
    let mut stale = vec![];
    for (path, text) in rendered() {
        let file = root.join(&path);
        if write {
            std::fs::create_dir_all(file.parent().expect("a folder")).expect("docs folder");
            std::fs::write(&file, &text).expect("write docs");
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; MESHFLEET_WRITE_DOCS=1 cargo test -p terraform-provider-meshfleet docs rewrites them"
    );
}

#[test]
fn every_attribute_has_a_description() {
    fn check(attrs: &HashMap<String, Attribute>, at: &str, missing: &mut Vec<String>) {
        for (name, a) in attrs {
            if a.description.content.trim().is_empty() || a.description.content == "empty" {
                missing.push(format!("{at}{name}"));
            }
            if let Some(inner) = nested(&a.attr_type) {
                check(inner, &format!("{at}{name}."), missing);
            }
        }
    }
    let provider = MeshfleetProvider::default();
    let mut diags = Diagnostics::default();
    let mut missing = vec![];
    for (name, r) in Provider::get_resources(&provider, &mut diags).unwrap_or_default() {
        let schema = r.schema(&mut diags).expect("schema");
        check(&schema.block.attributes, &format!("{name}: "), &mut missing);
    }
    for (name, d) in Provider::get_data_sources(&provider, &mut diags).unwrap_or_default() {
        let schema = d.schema(&mut diags).expect("schema");
        check(
            &schema.block.attributes,
            &format!("data {name}: "),
            &mut missing,
        );
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
