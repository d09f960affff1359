//! The served OpenAPI document (`{api}/openapi.json`): every `$ref` resolves, every operation
//! is well-formed, the document validates against the OpenAPI 3.1 schema
//! (`tests/openapi/validate.py`, openapi-spec-validator in the `PU_TEST_PYTHON` venv), and its
//! constraints (enums, ranges, lengths, patterns, required fields) match what the server
//! accepts: values the document forbids are refused, values it allows are taken.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use pepeunit::domain::{
    BackendTopicCommand, LogLevel, PermissionEntities, UnitNodeType, UserRole, UserStatus,
    VisibilityLevel,
};
use serde_json::{json, Value};

async fn served_document(inst: &TestInstance) -> Value {
    let (st, doc) = inst.get("/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK, "{doc}");
    doc
}

// ---------------------------------------------------------------------------------------------
// Structure

/// Every `$ref` in `v` with the JSON pointer of where it stands.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    out.push((at.to_string(), child.as_str().unwrap_or("").to_string()));
                } else {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    refs(child, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The target of a local reference (`#/components/schemas/X`), or None.
fn target<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// `v`, or what its `$ref` points at when that resolves (a dangling one is reported apart).
fn deref_lenient<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    v.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| target(doc, r))
        .unwrap_or(v)
}

/// `schema`, or what its `$ref` points at.
fn deref<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => target(doc, r).unwrap_or_else(|| panic!("{r} does not resolve")),
        None => schema,
    }
}

const TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "array", "object", "null",
];

/// Problems of one schema and the schemas inside it.
fn check_schema(doc: &Value, s: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(map) = s.as_object() else {
        if !s.is_boolean() {
            problems.push(format!("{at}: a schema must be an object or a boolean"));
        }
        return;
    };
    if let Some(r) = map.get("$ref") {
        match r.as_str().and_then(|r| target(doc, r)) {
            Some(t) if t.is_object() => {}
            _ => problems.push(format!("{at}: $ref {r} does not resolve to a schema")),
        }
    }
    match map.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts))
            if !ts.is_empty() && ts.iter().all(|t| TYPES.contains(&t.as_str().unwrap_or(""))) => {}
        Some(t) => problems.push(format!("{at}: bad type {t}")),
    }
    if let Some(e) = map.get("enum") {
        if e.as_array().is_none_or(|e| e.is_empty()) {
            problems.push(format!("{at}: enum must be a non-empty array"));
        }
    }
    if let Some(required) = map.get("required") {
        let props = map.get("properties").and_then(Value::as_object);
        for name in required.as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("");
            if !props.is_some_and(|p| p.contains_key(name)) {
                problems.push(format!(
                    "{at}: required {name:?} is not among the properties"
                ));
            }
        }
    }
    for (lo, hi) in [("minimum", "maximum"), ("minLength", "maxLength")] {
        if let (Some(lo_v), Some(hi_v)) = (
            map.get(lo).and_then(Value::as_f64),
            map.get(hi).and_then(Value::as_f64),
        ) {
            if lo_v > hi_v {
                problems.push(format!("{at}: {lo} {lo_v} > {hi} {hi_v}"));
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get(key) {
            check_schema(doc, child, &format!("{at}/{key}"), problems);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = map.get(key) {
            match list.as_array() {
                Some(list) if !list.is_empty() => {
                    for (i, child) in list.iter().enumerate() {
                        check_schema(doc, child, &format!("{at}/{key}/{i}"), problems);
                    }
                }
                _ => problems.push(format!("{at}: {key} must be a non-empty array")),
            }
        }
    }
    if let Some(props) = map.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (name, child) in props {
                    check_schema(doc, child, &format!("{at}/properties/{name}"), problems);
                }
            }
            None => problems.push(format!("{at}: properties must be an object")),
        }
    }
}

/// The `{name}`s of a path template.
fn template_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

/// Everything the Rust side checks about a document; empty when it is sound.
fn structural_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        problems.push(format!("openapi is {}, not 3.1.x", doc["openapi"]));
    }
    let mut all = Vec::new();
    refs(doc, "#", &mut all);
    for (at, r) in &all {
        if !r.starts_with("#/") || target(doc, r).is_none() {
            problems.push(format!("{at}: $ref {r:?} does not resolve"));
        }
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, s) in schemas {
            check_schema(
                doc,
                s,
                &format!("#/components/schemas/{name}"),
                &mut problems,
            );
        }
    }
    let mut operation_ids = BTreeMap::new();
    let Some(paths) = doc["paths"].as_object() else {
        problems.push("paths is missing".into());
        return problems;
    };
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let at = format!("{} {path}", method.to_uppercase());
            match op["operationId"].as_str() {
                Some(id) => {
                    if let Some(other) = operation_ids.insert(id.to_string(), at.clone()) {
                        problems.push(format!("{at}: operationId {id} also used by {other}"));
                    }
                }
                None => problems.push(format!("{at}: no operationId")),
            }
            let mut path_params = BTreeSet::new();
            let mut seen = BTreeSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let p = deref_lenient(doc, p);
                let name = p["name"].as_str().unwrap_or("");
                let place = p["in"].as_str().unwrap_or("");
                if name.is_empty() || !["query", "path", "header", "cookie"].contains(&place) {
                    problems.push(format!("{at}: parameter without name or location: {p}"));
                }
                if !seen.insert((name.to_string(), place.to_string())) {
                    problems.push(format!("{at}: parameter {name} ({place}) twice"));
                }
                if place == "path" {
                    path_params.insert(name.to_string());
                    if p["required"] != json!(true) {
                        problems.push(format!("{at}: path parameter {name} not required"));
                    }
                }
                match p.get("schema") {
                    Some(s) => {
                        check_schema(doc, s, &format!("{at} parameter {name}"), &mut problems)
                    }
                    None => problems.push(format!("{at}: parameter {name} has no schema")),
                }
            }
            if path_params != template_names(path) {
                problems.push(format!(
                    "{at}: path parameters {path_params:?} do not match the template"
                ));
            }
            if let Some(body) = op.get("requestBody") {
                let body = deref_lenient(doc, body);
                match body["content"].as_object() {
                    Some(content) if !content.is_empty() => {
                        for (media, m) in content {
                            match m.get("schema") {
                                Some(s) => check_schema(
                                    doc,
                                    s,
                                    &format!("{at} request {media}"),
                                    &mut problems,
                                ),
                                None => {
                                    problems.push(format!("{at}: request {media} has no schema"))
                                }
                            }
                        }
                    }
                    _ => problems.push(format!("{at}: request body without content")),
                }
            }
            match op["responses"].as_object() {
                Some(responses) if !responses.is_empty() => {
                    for (status, r) in responses {
                        let r = deref_lenient(doc, r);
                        if r["description"].as_str().is_none() {
                            problems.push(format!("{at}: response {status} has no description"));
                        }
                        // a media type without a schema is allowed (any content)
                        for (media, m) in r["content"].as_object().into_iter().flatten() {
                            if let Some(s) = m.get("schema") {
                                let at = format!("{at} response {status} {media}");
                                check_schema(doc, s, &at, &mut problems);
                            }
                        }
                    }
                }
                _ => problems.push(format!("{at}: no responses")),
            }
        }
    }
    problems
}

/// Runs `tests/openapi/validate.py` on `doc`: Some(problems), or None when the validator is
/// not installed and the test may skip.
fn meta_schema_problems(python: &str, doc: &Value) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi/validate.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .expect("the test python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => {
            assert_eq!(stdout.trim(), "valid", "{stdout}");
            Some(Vec::new())
        }
        Some(1) => Some(stdout.lines().map(str::to_string).collect()),
        Some(3) if !common::require_all() => None,
        Some(3) => panic!(
            "PU_TEST_REQUIRE_ALL=1 but {python} lacks openapi-spec-validator \
             (scripts/test.sh installs it): {stdout}"
        ),
        _ => panic!(
            "{python} {script}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_valid_openapi_3_1() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let doc = served_document(&inst).await;
    inst.stop().await;

    let problems = structural_problems(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // the operations clients know stay where they were
    for (path, method, id) in [
        ("/units", "get", "list_units"),
        ("/repos", "get", "list_repos"),
        ("/users", "get", "list_users"),
        ("/units/log_list", "get", "unit_log_list"),
        (
            "/units/send_command_to_input_base_topic/{uuid}",
            "post",
            "send_command",
        ),
    ] {
        assert_eq!(doc["paths"][path][method]["operationId"], id, "{path}");
    }

    // The checks can fail: a document missing a schema others point at is refused by both.
    let mut broken = doc.clone();
    broken["components"]["schemas"]
        .as_object_mut()
        .unwrap()
        .remove("Unit")
        .expect("Unit is a component");
    let found = structural_problems(&broken);
    assert!(
        found
            .iter()
            .any(|p| p.contains("#/components/schemas/Unit") && p.contains("does not resolve")),
        "{found:?}"
    );

    let Some(python) = common::python() else {
        eprintln!("skipped the OpenAPI 3.1 schema check: PU_TEST_PYTHON not set");
        return;
    };
    let Some(problems) = meta_schema_problems(&python, &doc) else {
        eprintln!("skipped the OpenAPI 3.1 schema check: openapi-spec-validator not installed");
        return;
    };
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let problems = meta_schema_problems(&python, &broken).unwrap();
    assert!(!problems.is_empty(), "a dangling $ref passed the validator");
    let mut broken = doc.clone();
    broken["paths"]["/units"]["get"]["parameters"][0]["in"] = json!("body");
    let problems = meta_schema_problems(&python, &broken).unwrap();
    assert!(
        !problems.is_empty(),
        "a parameter `in: body` passed the validator"
    );
}

// ---------------------------------------------------------------------------------------------
// Constraints against the server

/// The wire strings of a domain enum.
fn names<T: Copy + std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(|v| v.to_string()).collect()
}

/// The `enum` of a component schema.
fn component_enum(doc: &Value, name: &str) -> Vec<String> {
    doc["components"]["schemas"][name]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("components/schemas/{name} has no enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The schema of a query or path parameter of an operation, references followed.
fn param_schema<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    let p = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    deref(doc, &p["schema"])
}

/// A property of a component schema, `oneOf [null, X]` and references followed.
fn property_schema<'a>(doc: &'a Value, component: &str, prop: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][component]["properties"][prop];
    assert!(!s.is_null(), "{component}.{prop} is not documented");
    let s = match s.get("oneOf").and_then(Value::as_array) {
        Some(alts) => alts
            .iter()
            .find(|a| a["type"] != "null")
            .expect("a non-null alternative"),
        None => s,
    };
    deref(doc, s)
}

/// The allowed values of an enum schema (or of the items of an array of enums).
fn enum_values(doc: &Value, s: &Value) -> Option<Vec<String>> {
    let s = if s["type"] == "array" {
        deref(doc, &s["items"])
    } else {
        s
    };
    s["enum"].as_array().map(|e| {
        e.iter()
            .map(|v| v.as_str().expect("string enums").to_string())
            .collect()
    })
}

/// The integer ranges a schema allows: its own `minimum`/`maximum`, or those of its `oneOf`.
fn int_ranges(s: &Value) -> Vec<(Option<i64>, Option<i64>)> {
    let one = |s: &Value| {
        let (lo, hi) = (s["minimum"].as_i64(), s["maximum"].as_i64());
        (lo.is_some() || hi.is_some()).then_some((lo, hi))
    };
    match s["oneOf"].as_array() {
        Some(alts) => alts.iter().filter_map(one).collect(),
        None => one(s).into_iter().collect(),
    }
}

/// Values at and just past each bound, and whether the document allows each.
fn boundary_values(ranges: &[(Option<i64>, Option<i64>)]) -> Vec<(i64, bool)> {
    let allowed = |v: i64| {
        ranges
            .iter()
            .any(|(lo, hi)| lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi))
    };
    let mut values = BTreeSet::new();
    for (lo, hi) in ranges {
        for b in [lo, hi].into_iter().flatten() {
            values.extend([b - 1, *b, b + 1]);
        }
    }
    values.into_iter().map(|v| (v, allowed(v))).collect()
}

/// One operation to probe: its documented path, the URL path with ids filled in, the query
/// that makes a valid request (the required parameters), and the status of success.
struct Probe {
    method: &'static str,
    doc_path: &'static str,
    url: String,
    base: Vec<(&'static str, String)>,
    ok: u16,
}

/// What a probe found wrong, and which (operation, parameter) pairs it exercised.
#[derive(Default)]
struct Findings {
    mismatches: Vec<String>,
    probed: BTreeSet<(String, String)>,
}

fn query_string(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Probe {
    async fn send(
        &self,
        inst: &TestInstance,
        token: &str,
        extra: Option<(&str, String)>,
        drop: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut pairs: Vec<(&str, String)> = self
            .base
            .iter()
            .filter(|(k, _)| Some(*k) != drop)
            .cloned()
            .collect();
        pairs.extend(extra);
        let url = format!("{}?{}", self.url, query_string(&pairs));
        inst.call(self.method, &url, Some(token), None).await
    }

    async fn expect(
        &self,
        inst: &TestInstance,
        token: &str,
        param: &str,
        value: String,
        allowed: bool,
        found: &mut Findings,
    ) {
        let (st, body) = self
            .send(inst, token, Some((param, value.clone())), None)
            .await;
        let want = if allowed { self.ok } else { 422 };
        if st.as_u16() != want {
            found.mismatches.push(format!(
                "{} {}?{param}={value}: the document {} it, the server answered {st} {body}",
                self.method,
                self.doc_path,
                if allowed { "allows" } else { "forbids" }
            ));
        }
    }

    /// Sends, for every documented query parameter with an enum or a range, a value the
    /// document forbids (expecting 422) and the values it allows at the edges (expecting
    /// success). A required parameter is also left out once (expecting 422).
    async fn run(&self, inst: &TestInstance, token: &str, doc: &Value, found: &mut Findings) {
        let method = self.method.to_lowercase();
        let op = &doc["paths"][self.doc_path][&method];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            self.method,
            self.doc_path
        );
        let (st, body) = self.send(inst, token, None, None).await;
        assert_eq!(st.as_u16(), self.ok, "{} {}: {body}", self.method, self.url);
        for p in op["parameters"].as_array().into_iter().flatten() {
            let p = deref(doc, p);
            if p["in"] != "query" {
                continue;
            }
            let name = p["name"].as_str().unwrap();
            let in_base = self.base.iter().any(|(k, _)| *k == name);
            if p["required"] == json!(true) {
                assert!(
                    in_base,
                    "{}: give required {name} in the base query",
                    self.doc_path
                );
                let (st, body) = self.send(inst, token, None, Some(name)).await;
                if st != StatusCode::UNPROCESSABLE_ENTITY {
                    found.mismatches.push(format!(
                        "{} {} without required {name}: {st} {body}",
                        self.method, self.doc_path
                    ));
                }
            }
            let schema = deref(doc, &p["schema"]);
            let mut probed = false;
            if let Some(values) = enum_values(doc, schema) {
                probed = true;
                self.expect(inst, token, name, "NotOneOfThese".into(), false, found)
                    .await;
                if !in_base {
                    for v in values {
                        self.expect(inst, token, name, v, true, found).await;
                    }
                }
            }
            let ranges = int_ranges(schema);
            if !ranges.is_empty() && !in_base {
                probed = true;
                for (v, allowed) in boundary_values(&ranges) {
                    self.expect(inst, token, name, v.to_string(), allowed, found)
                        .await;
                }
            }
            if probed {
                found
                    .probed
                    .insert((self.doc_path.to_string(), name.to_string()));
            }
        }
    }
}

/// A JSON endpoint whose request body is probed, and its status of success.
struct BodyProbe<'a> {
    method: &'static str,
    path: String,
    token: Option<&'a str>,
    ok: u16,
}

impl BodyProbe<'_> {
    /// Sends `base` with `field` set to `value` and compares the answer with what the document
    /// says of the value.
    async fn value(
        &self,
        inst: &TestInstance,
        base: Value,
        field: &str,
        value: Value,
        allowed: bool,
        found: &mut Findings,
    ) {
        let mut body = base;
        body[field] = value.clone();
        let (st, answer) = inst
            .call(self.method, &self.path, self.token, Some(body))
            .await;
        let want = if allowed { self.ok } else { 422 };
        if st.as_u16() != want {
            found.mismatches.push(format!(
                "{} {} {field}={value}: the document {} it, the server answered {st} {answer}",
                self.method,
                self.path,
                if allowed { "allows" } else { "forbids" }
            ));
        }
    }

    /// Probes the lengths `minLength - 1`, `minLength`, `maxLength` and `maxLength + 1` of a
    /// documented string property with names from `name_of`.
    #[allow(clippy::too_many_arguments)]
    async fn lengths(
        &self,
        inst: &TestInstance,
        doc: &Value,
        component: &str,
        field: &str,
        base: impl Fn(&mut u32) -> Value,
        seed: &mut u32,
        found: &mut Findings,
    ) {
        let s = property_schema(doc, component, field);
        let lo = s["minLength"].as_u64().expect("a minLength") as usize;
        let hi = s["maxLength"].as_u64().expect("a maxLength") as usize;
        assert!(s["pattern"].is_string(), "{component}.{field}: {s}");
        for (len, allowed) in [(lo - 1, false), (lo, true), (hi, true), (hi + 1, false)] {
            let body = base(seed);
            let value = json!(name_of(len, seed));
            self.value(inst, body, field, value, allowed, found).await;
        }
    }
}

/// A name of `len` characters (`u` and digits), unique per call.
fn name_of(len: usize, seed: &mut u32) -> String {
    *seed += 1;
    let digits = len.checked_sub(1).expect("names of at least one character");
    let name = format!("u{:0digits$}", *seed);
    assert_eq!(
        name.len(),
        len,
        "seed {seed} too large for {len} characters"
    );
    name
}

async fn constraints_match_the_server(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let doc = served_document(&inst).await;
    let firmware = FirmwareRepo::create().await;
    // the first user is the admin, so the admin endpoints are reachable
    let (_, token) = inst.user("owner").await;
    let (registry, repo, unit) =
        registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let registry_uuid = registry["uuid"].as_str().unwrap().to_string();

    // Enums name exactly the server's wire strings.
    assert_eq!(component_enum(&doc, "Order"), ["asc", "desc"]);
    assert_eq!(
        component_enum(&doc, "BackendTopicCommand"),
        names(BackendTopicCommand::ALL)
    );
    assert_eq!(component_enum(&doc, "LogLevel"), names(LogLevel::ALL));
    assert_eq!(
        component_enum(&doc, "VisibilityLevel"),
        names(VisibilityLevel::ALL)
    );
    assert_eq!(
        component_enum(&doc, "UnitNodeType"),
        names(UnitNodeType::ALL)
    );
    assert_eq!(component_enum(&doc, "UserRole"), names(UserRole::ALL));
    assert_eq!(component_enum(&doc, "UserStatus"), names(UserStatus::ALL));
    assert_eq!(
        component_enum(&doc, "PermissionEntities"),
        names(PermissionEntities::ALL)
    );

    // Pagination: every documented offset and limit says what the server checks.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            for name in ["offset", "limit"] {
                let op = &item[method];
                let documented = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name);
                if documented {
                    let s = param_schema(&doc, path, method, name);
                    assert!(
                        s["minimum"].as_i64().is_some_and(|m| m >= 0),
                        "{method} {path} {name}: no minimum: {s}"
                    );
                }
            }
        }
    }
    for path in [
        "/permission/get_resource_agents",
        "/repository_registry/branch_commits/{uuid}",
    ] {
        assert_eq!(
            param_schema(&doc, path, "get", "limit")["maximum"],
            500,
            "{path}"
        );
    }

    let q = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    let probes = vec![
        Probe {
            method: "GET",
            doc_path: "/units",
            url: "/units".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/repos",
            url: "/repos".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/users",
            url: "/users".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/unit_nodes",
            url: "/unit_nodes".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/repository_registry",
            url: "/repository_registry".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/repository_registry/branch_commits/{uuid}",
            url: format!("/repository_registry/branch_commits/{registry_uuid}"),
            base: q(&[("repo_branch", "main")]),
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/units/log_list",
            url: "/units/log_list/".into(),
            base: q(&[("uuid", &unit_uuid)]),
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/permission/get_resource_agents",
            url: "/permission/get_resource_agents".into(),
            base: q(&[("resource_uuid", &unit_uuid), ("resource_type", "Unit")]),
            ok: 200,
        },
        Probe {
            method: "POST",
            doc_path: "/units/send_command_to_input_base_topic/{uuid}",
            url: format!("/units/send_command_to_input_base_topic/{unit_uuid}"),
            base: q(&[("command", "LogSync")]),
            ok: 204,
        },
        Probe {
            method: "GET",
            doc_path: "/units/firmware/tgz/{uuid}",
            url: format!("/units/firmware/tgz/{unit_uuid}"),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/hub/search",
            url: "/hub/search".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/federation/deliveries",
            url: "/federation/deliveries".into(),
            base: vec![],
            ok: 200,
        },
        Probe {
            method: "GET",
            doc_path: "/metrics/node",
            url: "/metrics/node".into(),
            base: vec![],
            ok: 200,
        },
    ];
    let mut found = Findings::default();
    for p in &probes {
        p.run(&inst, &token, &doc, &mut found).await;
    }
    // every command the document lists is one the server takes
    let command = Probe {
        method: "POST",
        doc_path: "/units/send_command_to_input_base_topic/{uuid}",
        url: format!("/units/send_command_to_input_base_topic/{unit_uuid}"),
        base: vec![],
        ok: 204,
    };
    let commands = enum_values(
        &doc,
        param_schema(&doc, command.doc_path, "post", "command"),
    )
    .unwrap();
    for c in commands {
        command
            .expect(&inst, &token, "command", c, true, &mut found)
            .await;
    }
    // the probes reached what they are for (a document without the constraints probes nothing)
    for (path, param) in [
        ("/units", "order_by_unit_name"),
        ("/units", "visibility_level"),
        ("/units", "offset"),
        ("/units", "limit"),
        ("/repos", "order_by_create_date"),
        ("/users", "role"),
        ("/users", "offset"),
        ("/unit_nodes", "type"),
        ("/repository_registry", "order_by_last_update"),
        ("/repository_registry/branch_commits/{uuid}", "limit"),
        ("/units/log_list", "level"),
        ("/units/log_list", "order_by_create_date"),
        ("/units/log_list", "limit"),
        ("/permission/get_resource_agents", "limit"),
        ("/permission/get_resource_agents", "agent_type"),
        ("/permission/get_resource_agents", "resource_type"),
        ("/units/send_command_to_input_base_topic/{uuid}", "command"),
        ("/units/firmware/tgz/{uuid}", "wbits"),
        ("/units/firmware/tgz/{uuid}", "level"),
        ("/hub/search", "kind"),
        ("/hub/search", "limit"),
        ("/hub/search", "offset"),
        ("/federation/deliveries", "state"),
        ("/federation/deliveries", "limit"),
        ("/metrics/node", "order"),
        ("/metrics/node", "limit"),
    ] {
        assert!(
            found
                .probed
                .contains(&(path.to_string(), param.to_string())),
            "{path} {param} was not probed: its documented schema has no enum or range"
        );
    }

    // Request bodies: lengths and patterns of names and passwords, enums, ranges, required
    // fields and unknown fields.
    let mut seed = 0u32;
    let users = BodyProbe {
        method: "POST",
        path: "/users".into(),
        token: None,
        ok: 201,
    };
    let with_password = |_: &mut u32| json!({"password": "password-1"});
    users
        .lengths(
            &inst,
            &doc,
            "UserCreate",
            "login",
            with_password,
            &mut seed,
            &mut found,
        )
        .await;
    let (body, bad) = (json!({"password": "password-1"}), json!("with space"));
    users
        .value(&inst, body, "login", bad, false, &mut found)
        .await;
    let password = property_schema(&doc, "UserCreate", "password");
    let lo = password["minLength"].as_u64().expect("a minLength") as usize;
    let hi = password["maxLength"].as_u64().expect("a maxLength") as usize;
    assert!(password["pattern"].is_string(), "{password}");
    for (len, allowed) in [(lo - 1, false), (lo, true), (hi, true), (hi + 1, false)] {
        let body = json!({"login": name_of(10, &mut seed)});
        let value = json!("p".repeat(len));
        users
            .value(&inst, body, "password", value, allowed, &mut found)
            .await;
    }
    let (body, bad) = (
        json!({"login": name_of(10, &mut seed)}),
        json!("pass word 1"),
    );
    users
        .value(&inst, body, "password", bad, false, &mut found)
        .await;

    let units = BodyProbe {
        method: "POST",
        path: "/units".into(),
        token: Some(&token),
        ok: 201,
    };
    let unit_body = |seed: &mut u32| {
        json!({"repo_uuid": repo["uuid"], "visibility_level": "Public",
            "name": name_of(12, seed), "is_auto_update_from_repo_unit": true})
    };
    units
        .lengths(
            &inst,
            &doc,
            "UnitCreate",
            "name",
            unit_body,
            &mut seed,
            &mut found,
        )
        .await;
    let visibility = property_schema(&doc, "UnitCreate", "visibility_level");
    for v in enum_values(&doc, visibility).expect("an enum") {
        let body = unit_body(&mut seed);
        units
            .value(&inst, body, "visibility_level", json!(v), true, &mut found)
            .await;
    }
    let body = unit_body(&mut seed);
    units
        .value(
            &inst,
            body,
            "visibility_level",
            json!("Secret"),
            false,
            &mut found,
        )
        .await;
    let unit_create = &doc["components"]["schemas"]["UnitCreate"];
    assert_eq!(unit_create["additionalProperties"], false);
    let body = unit_body(&mut seed);
    units
        .value(&inst, body, "no_such_field", json!(1), false, &mut found)
        .await;
    let required = unit_create["required"].as_array().expect("required fields");
    assert!(!required.is_empty());
    for field in required {
        let mut body = unit_body(&mut seed);
        body.as_object_mut()
            .unwrap()
            .remove(field.as_str().unwrap());
        let (st, answer) = inst.post("/units", Some(&token), body).await;
        if st != StatusCode::UNPROCESSABLE_ENTITY {
            found.mismatches.push(format!(
                "POST /units without required {field}: {st} {answer}"
            ));
        }
    }

    // integer ranges of update bodies
    let (_, nodes) = inst
        .get(&format!("/unit_nodes?unit_uuid={unit_uuid}"), Some(&token))
        .await;
    let node = nodes["unit_nodes"][0]["uuid"]
        .as_str()
        .expect("a unit node");
    for (path, component, field) in [
        (
            format!("/unit_nodes/{node}"),
            "UnitNodeUpdate",
            "max_connections",
        ),
        (
            format!("/units/alerts/{unit_uuid}"),
            "UnitAlertsUpdate",
            "mute_seconds",
        ),
    ] {
        let target = BodyProbe {
            method: "PATCH",
            path,
            token: Some(&token),
            ok: 200,
        };
        let ranges = int_ranges(property_schema(&doc, component, field));
        assert!(!ranges.is_empty(), "{component}.{field} has no range");
        for (v, allowed) in boundary_values(&ranges) {
            target
                .value(&inst, json!({}), field, json!(v), allowed, &mut found)
                .await;
        }
    }

    assert!(
        found.mismatches.is_empty(),
        "the document and the server disagree:\n{}",
        found.mismatches.join("\n")
    );
    inst.stop().await;
}

both_backends!(constraints_match_the_server);
