//! What the route annotations cannot say, added to the generated document in
//! one place: the responses every route can give (400, 401, 413, 415, 429,
//! 431, 503), the formats and bounds the server enforces on parameters and bodies
//! (patterns, lengths, ranges, mutually exclusive fields), and the links from
//! a created resource to the operations on it. `scripts/contract.sh` holds
//! the server to it with schemathesis.

use serde_json::{Map, Value, json};

use meshfleet_model::patterns;

use crate::http::{CursorShape, ETAG_LIST_PATTERN};
use crate::routes::{agent, clusters, events, fleet, ops, rollouts};

const PROBLEM: &str = "#/components/schemas/Problem";

/// A problem response, optionally with `Retry-After`.
fn problem(description: &str, retry_after: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": PROBLEM}}},
    });
    if retry_after {
        response["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }});
    }
    response
}

/// The cursor parameter of each paged list.
fn cursor_shapes() -> [(&'static str, CursorShape); 5] {
    [
        ("/v1/clusters", clusters::CURSOR),
        ("/v1/events", events::CURSOR),
        ("/v1/clusters/{name}/status/history", agent::HISTORY_CURSOR),
        ("/v1/rollouts", rollouts::CURSOR),
        ("/v1/ops/clusters", ops::TRIAGE_CURSOR),
    ]
}

/// `A`, `A,B`, ... from `allowed`, with spaces around the items.
fn list_of(allowed: &[&str]) -> String {
    let one = format!(" *({}) *", allowed.join("|"));
    format!("^({one}(,{one})*)?$")
}

/// Makes `doc` (the serialized document) state the whole contract.
pub fn apply(doc: &mut Value) {
    let mut request_schemas = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (_, operation) in item.iter_mut() {
                operation_contract(path, operation, &mut request_schemas);
            }
        }
    }
    links(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schema_contract(schemas);
        integer_bounds_all(schemas);
        // Whatever a request carries is stored: no NUL in its strings.
        let mut seen = std::collections::BTreeSet::new();
        while let Some(name) = request_schemas.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(schema) = schemas.get_mut(&name) {
                no_nul(schema, &mut request_schemas);
            }
        }
    }
}

fn operation_contract(path: &str, operation: &mut Value, request_schemas: &mut Vec<String>) {
    let has_body = operation.get("requestBody").is_some();
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let mut has_input = has_body;
    if let Some(params) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        has_input |= !params.is_empty();
        for param in params {
            parameter_contract(path, param, request_schemas);
        }
    }
    if let Some(body) = operation.get("requestBody") {
        collect_refs(body, request_schemas);
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    // A route's own description stays; 429 and 503 get `Retry-After` anyway.
    let mut add = |status: &str, response: Value| {
        let existing = responses
            .entry(status.to_string())
            .or_insert(response.clone());
        if let Some(headers) = response.get("headers")
            && existing.get("headers").is_none()
        {
            existing["headers"] = headers.clone();
        }
    };
    if has_input {
        add(
            "400",
            problem("A malformed parameter, header or body", false),
        );
    }
    if secured {
        add("401", problem("Missing or invalid credentials", false));
    }
    if has_body {
        add(
            "413",
            problem(
                &format!("The body exceeds {} bytes", crate::http::BODY_LIMIT),
                false,
            ),
        );
        add(
            "415",
            problem("The body's Content-Type is not accepted here", false),
        );
    }
    add(
        "431",
        problem(
            &format!(
                "The request's headers exceed {} bytes",
                crate::http::HEADER_LIMIT
            ),
            false,
        ),
    );
    add(
        "429",
        problem(
            "Too many requests from this tenant or agent; retry after `Retry-After`",
            true,
        ),
    );
    add(
        "503",
        problem(
            "The database is unavailable or the request took too long; retry after `Retry-After`",
            true,
        ),
    );
    // Keep the responses in status order.
    let mut sorted: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(sorted);
}

fn parameter_contract(path: &str, param: &mut Value, request_schemas: &mut Vec<String>) {
    let name = param["name"].as_str().unwrap_or_default().to_string();
    let location = param["in"].as_str().unwrap_or_default().to_string();
    let schema = &mut param["schema"];
    let string = |pattern: String| json!({"type": "string", "pattern": pattern});
    match (location.as_str(), name.as_str()) {
        ("header", "If-Match" | "If-None-Match") => {
            *schema = string(ETAG_LIST_PATTERN.to_string());
        }
        ("query", "limit") => {
            *schema = json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 500, "default": 50});
        }
        ("query", "cursor") => {
            if let Some((_, shape)) = cursor_shapes().into_iter().find(|(p, _)| *p == path) {
                *schema = string(shape.pattern());
            }
        }
        ("query", "waitSeconds") => {
            schema["maximum"] = json!(meshfleet_model::MAX_WAIT_SECONDS);
        }
        ("query", "labelSelector") => {
            *schema = string(patterns::label_selector());
            schema["maxLength"] = json!(4096);
        }
        ("query", "health") => *schema = string(list_of(&fleet::HEALTHS)),
        ("query", "connectivity") => *schema = string(list_of(&fleet::CONNECTIVITIES)),
        ("query", "staleFor") => *schema = string(ops::STALE_FOR_PATTERN.into()),
        ("query", "window") => *schema = string(ops::WINDOW_PATTERN.into()),
        ("path", "name") => *schema = string(patterns::DNS_LABEL.into()),
        ("path", "version") => *schema = string(patterns::VERSION.into()),
        ("path", "action") => {
            *schema = json!({"type": "string", "enum": ["pause", "resume", "cancel", "approve"]});
        }
        _ => {
            collect_refs(schema, request_schemas);
            no_nul(schema, request_schemas);
        }
    }
}

/// Names of the component schemas `value` refers to.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn is_string_type(schema: &Map<String, Value>) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// Gives every free-form string in `schema` the no-NUL pattern and every
/// date the pattern of a date, and queues the schemas it refers to.
fn no_nul(schema: &mut Value, queue: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                queue.push(name.to_string());
            }
            if is_string_type(map) && !map.contains_key("pattern") {
                // JSON Schema 2020-12 only annotates with `format`; the
                // server refuses what is not a date, so say it as a pattern.
                match map.get("format").and_then(Value::as_str) {
                    Some("date-time") => {
                        map.insert("pattern".into(), json!(patterns::date_time()));
                    }
                    Some("date") => {
                        map.insert("pattern".into(), json!(patterns::date()));
                    }
                    Some(_) => {}
                    None if !map.contains_key("enum") && !map.contains_key("const") => {
                        map.insert("pattern".into(), json!(patterns::NO_NUL));
                    }
                    None => {}
                }
            }
            for v in map.values_mut() {
                no_nul(v, queue);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| no_nul(v, queue)),
        _ => {}
    }
}

/// Integers as the server reads them: u32 (as int64) up to 4294967295, i32
/// and i64 in range.
fn integer_bounds_all(schemas: &mut Map<String, Value>) {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                let integer = match map.get("type") {
                    Some(Value::String(t)) => t == "integer",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                    _ => false,
                };
                if integer {
                    let unsigned = map.get("minimum").and_then(Value::as_i64) == Some(0);
                    let (min, max) = match map.get("format").and_then(Value::as_str) {
                        // A u32 does not fit an int32 (which schemathesis and
                        // generated clients take literally).
                        Some("int32") if unsigned => {
                            map.insert("format".into(), json!("int64"));
                            (0, i64::from(u32::MAX))
                        }
                        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
                        _ if unsigned => (0, i64::MAX),
                        _ => (i64::MIN, i64::MAX),
                    };
                    map.entry("minimum").or_insert(json!(min));
                    map.entry("maximum").or_insert(json!(max));
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    schemas.values_mut().for_each(walk);
}

/// The property `prop` of component `schema`.
fn prop<'a>(schemas: &'a mut Map<String, Value>, schema: &str, prop: &str) -> &'a mut Value {
    &mut schemas[schema]["properties"][prop]
}

fn set(target: &mut Value, values: Value) {
    if let (Value::Object(t), Value::Object(v)) = (target, values) {
        t.extend(v);
    }
}

fn schema_contract(s: &mut Map<String, Value>) {
    // Labels (the `BTreeMap` schema is the labels map of a cluster).
    set(
        &mut s["BTreeMap"],
        json!({
            "maxProperties": 64,
            "propertyNames": {"type": "string", "pattern": patterns::label_key()},
            "additionalProperties": {"type": "string", "pattern": patterns::label_value()},
        }),
    );
    // Manual with a version, or automatic with a channel; never both.
    set(
        &mut s["UpgradePolicy"],
        json!({"oneOf": [
            {"properties": {"mode": {"const": "manual"}, "version": {"type": "string"}}, "required": ["version"],
             "not": {"required": ["channel"], "properties": {"channel": {"type": "string"}}}},
            {"properties": {"mode": {"const": "automatic"}, "channel": {"type": "string"}}, "required": ["channel"],
             "not": {"required": ["version"], "properties": {"version": {"type": "string"}}}},
        ]}),
    );
    set(&mut s["StageInput"], either_or("selector", "percent"));
    set(
        &mut s["FailurePolicy"],
        either_or("maxFailedClusters", "maxFailedPercent"),
    );
    let dns = json!({"pattern": patterns::DNS_LABEL});
    let version = json!({"pattern": patterns::VERSION});
    let text63 = json!({"minLength": 1, "maxLength": 63});
    let selector = json!({"pattern": patterns::label_selector(), "maxLength": 4096});
    let range = |min: u32, max: u32| json!({"minimum": min, "maximum": max});
    let items = |min: u32, max: u32| json!({"minItems": min, "maxItems": max});
    let image = json!({"pattern": patterns::IMAGE, "maxLength": 512});
    let properties = [
        ("ClusterInput", "name", dns.clone()),
        ("UpgradePolicy", "version", version.clone()),
        (
            "MeshSpec",
            "enrolledNamespaces",
            json!({"maxItems": 1000, "uniqueItems": true, "items": {
                "type": "string", "pattern": patterns::DNS_LABEL,
                "not": {"enum": meshfleet_core::domain::validation::RESERVED_NAMESPACES},
            }}),
        ),
        ("MeshSpec", "waypoints", json!({"maxItems": 100})),
        ("Waypoint", "namespace", dns.clone()),
        ("Waypoint", "name", dns),
        ("Waypoint", "replicas", range(1, 10)),
        ("IstiodSpec", "replicas", range(1, 10)),
        ("MaintenanceWindow", "slots", items(1, 21)),
        (
            "MaintenanceSlot",
            "start",
            json!({"pattern": patterns::HOUR_MINUTE}),
        ),
        ("MaintenanceSlot", "durationMinutes", range(30, 1440)),
        (
            "Resources",
            "cpu",
            json!({"pattern": patterns::CPU_QUANTITY}),
        ),
        (
            "Resources",
            "memory",
            json!({"pattern": patterns::MEMORY_QUANTITY}),
        ),
        (
            "MeshConfig",
            "accessLogFile",
            json!({"enum": ["", "/dev/stdout", null]}),
        ),
        // Rollouts.
        ("RolloutInput", "name", text63.clone()),
        ("RolloutInput", "targetVersion", version),
        ("RolloutInput", "selector", selector.clone()),
        ("RolloutInput", "stages", items(1, 10)),
        ("RolloutInput", "progressDeadlineSeconds", range(60, 86400)),
        ("StageInput", "name", text63.clone()),
        ("StageInput", "selector", selector),
        ("StageInput", "percent", range(1, 100)),
        ("StageInput", "maxConcurrency", range(1, 1000)),
        ("StageInput", "soakSeconds", range(0, 86400)),
        ("FailurePolicy", "maxFailedPercent", range(0, 100)),
        // Agent reports.
        ("StatusReport", "components", json!({"maxItems": 32})),
        ("StatusReport", "conditions", json!({"maxItems": 16})),
        ("ComponentStatus", "name", text63),
        ("ComponentStatus", "message", json!({"maxLength": 4096})),
        ("ComponentStatus", "conditions", json!({"maxItems": 16})),
        // Releases.
        ("ComponentImages", "istiod", image.clone()),
        ("ComponentImages", "cni", image.clone()),
        ("ComponentImages", "ztunnel", image.clone()),
        ("ComponentImages", "proxy", image),
    ];
    for (schema, property, values) in properties {
        set(prop(s, schema, property), values);
    }
}

/// Not both `a` and `b` (either may be absent or null).
fn either_or(a: &str, b: &str) -> Value {
    json!({"not": {
        "required": [a, b],
        "properties": {a: {"not": {"type": "null"}}, b: {"not": {"type": "null"}}},
    }})
}

/// Links from the responses that create or name a resource to the
/// operations on it, for schemathesis's stateful phase and for clients.
fn links(doc: &mut Value) {
    let cluster = |op: &str, etag: bool| {
        let mut parameters = json!({"path.name": "$response.body#/name"});
        if etag {
            parameters["header.If-Match"] = json!("$response.header.ETag");
        }
        json!({"operationId": op, "parameters": parameters})
    };
    let cluster_links = json!({
        "GetCluster": cluster("get_cluster", false),
        "PatchCluster": cluster("patch_cluster", true),
        "ReplaceCluster": cluster("put_cluster", true),
        "DeleteCluster": cluster("delete_cluster", true),
        "StatusHistory": cluster("status_history", false),
        "CreateBootstrapToken": cluster("create_bootstrap_token", false),
        "AgentManifest": cluster("agent_manifest", false),
        "RevokeAgentCredential": cluster("revoke_credential", false),
    });
    let rollout_links = json!({
        "GetRollout": {"operationId": "get_rollout", "parameters": {"path.id": "$response.body#/id"}},
        "ActOnRollout": {"operationId": "act_on_rollout", "parameters": {"path.id": "$response.body#/id"}},
        "GetOperation": {"operationId": "get_operation", "parameters": {"path.id": "$response.body#/operationId"}},
    });
    let operation_link = json!({
        "GetOperation": {"operationId": "get_operation", "parameters": {"path.id": "$response.body#/id"}},
    });
    for (pointer, links) in [
        (
            "/paths/~1v1~1clusters~1{name}/put/responses/200",
            &cluster_links,
        ),
        (
            "/paths/~1v1~1clusters~1{name}/put/responses/201",
            &cluster_links,
        ),
        (
            "/paths/~1v1~1clusters~1{name}/get/responses/200",
            &cluster_links,
        ),
        (
            "/paths/~1v1~1clusters~1{name}/patch/responses/200",
            &cluster_links,
        ),
        ("/paths/~1v1~1rollouts/post/responses/202", &rollout_links),
        (
            "/paths/~1v1~1rollouts~1{id}/get/responses/200",
            &rollout_links,
        ),
        (
            "/paths/~1v1~1clusters~1{name}/delete/responses/202",
            &operation_link,
        ),
    ] {
        if let Some(response) = doc.pointer_mut(pointer) {
            response["links"] = links.clone();
        }
    }
}
