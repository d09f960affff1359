//! The EMQX broker-config worker against a fake EMQX REST API v5 (EMQX cannot run on these
//! machines). The fake keeps EMQX's state in memory and speaks its wire format as the EMQX
//! sources define it (see the module docs of `src/mqtt/emqx/`): Basic auth with an API key, the
//! `{"code","message"}` errors, POST prepending authorization sources, PUT bodies checked and
//! filled with defaults before they are merged (so a partial body would reset an admin's
//! settings, which the tests would notice).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use pepeunit::mqtt::emqx::{run_worker, EmqxAdmin, EmqxError, EmqxHealth, EmqxSettings};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

const KEY: &str = "pepeunit-key";
const SECRET: &str = "pepeunit-secret";
/// Bound of every wait, so that a broken worker fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The fake

struct EmqxState {
    authenticators: Vec<Value>,
    sources: Vec<Value>,
    settings: Value,
    listeners: BTreeMap<String, Value>,
    zone: Value,
    /// Data integration (EMQX 5.4+): connectors and actions keyed `type:name`, rules by id.
    connectors: BTreeMap<String, Value>,
    actions: BTreeMap<String, Value>,
    rules: BTreeMap<String, Value>,
    /// false: an EMQX before 5.4, without the connectors API (404).
    data_integration: bool,
}

impl EmqxState {
    /// A freshly installed EMQX 5: no authenticator, the shipped `file` source ending in
    /// `{allow, all}`, `no_match = allow`.
    fn fresh() -> EmqxState {
        EmqxState {
            authenticators: vec![],
            sources: vec![json!({
                "type": "file",
                "enable": true,
                "rules": "{allow, {ipaddr, \"127.0.0.1\"}, all, [\"$SYS/#\", \"#\"]}.\n{allow, all}.\n"
            })],
            settings: json!({
                "no_match": "allow",
                "deny_action": "ignore",
                "cache": {"enable": true, "max_size": 32, "ttl": "1m", "excludes": []}
            }),
            listeners: BTreeMap::from([("tcp:default".to_string(), listener_defaults())]),
            zone: zone_defaults(),
            connectors: BTreeMap::new(),
            actions: BTreeMap::new(),
            rules: BTreeMap::new(),
            data_integration: true,
        }
    }
}

fn listener_defaults() -> Value {
    json!({
        "id": "tcp:default", "type": "tcp", "bind": "0.0.0.0:1883", "enable": true,
        "acceptors": 16, "max_connections": "infinity", "max_conn_rate": "infinity",
        "messages_rate": "infinity",
        "proxy_protocol": false, "zone": "default", "enable_authn": true,
        "tcp_options": {"active_n": 100, "backlog": 1024, "nodelay": true}
    })
}

fn zone_defaults() -> Value {
    json!({
        "mqtt": {
            "max_packet_size": "1MB", "max_clientid_len": 65535, "max_topic_levels": 128,
            "max_qos_allowed": 2, "max_inflight": 32, "max_mqueue_len": 1000,
            "retain_available": true, "idle_timeout": "15s"
        },
        "force_gc": {"enable": true, "count": 16000, "bytes": "16MB"},
        "flapping_detect": {"enable": false, "max_count": 15, "window_time": "1m", "ban_time": "5m"}
    })
}

struct Fake {
    state: Mutex<EmqxState>,
    /// When not 0, every request is answered with this status.
    outage: AtomicU16,
    requests: AtomicUsize,
    /// Accepted writes (POST/PUT that changed the state).
    writes: AtomicUsize,
}

struct FakeEmqx {
    fake: Arc<Fake>,
    api_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEmqx {
    async fn start() -> FakeEmqx {
        Self::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn serve(listener: tokio::net::TcpListener) -> FakeEmqx {
        let fake = Arc::new(Fake {
            state: Mutex::new(EmqxState::fresh()),
            outage: AtomicU16::new(0),
            requests: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        });
        let addr = listener.local_addr().unwrap();
        let api = Router::new()
            .route("/authentication", get(authn_list).post(authn_create))
            .route("/authentication/{id}", axum::routing::put(authn_update))
            .route(
                "/authorization/sources",
                get(sources_list).post(source_create),
            )
            .route(
                "/authorization/sources/{kind}",
                axum::routing::put(source_update),
            )
            .route("/authorization/sources/{kind}/move", post(source_move))
            .route(
                "/authorization/settings",
                get(settings_get).put(settings_put),
            )
            .route("/listeners/{id}", get(listener_get).put(listener_put))
            .route("/configs/global_zone", get(zone_get).put(zone_put))
            .route("/connectors", get(connectors_list).post(connector_create))
            .route(
                "/connectors/{id}",
                axum::routing::put(connector_update).delete(connector_delete),
            )
            .route("/actions", get(actions_list).post(action_create))
            .route(
                "/actions/{id}",
                axum::routing::put(action_update).delete(action_delete),
            )
            .route("/rules", get(rules_list).post(rule_create))
            .route(
                "/rules/{id}",
                axum::routing::put(rule_update).delete(rule_delete),
            )
            .layer(middleware::from_fn_with_state(fake.clone(), gate))
            .with_state(fake.clone());
        let app = Router::new().nest("/api/v5", api);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeEmqx {
            fake,
            api_url: format!("http://{addr}/api/v5"),
            task,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EmqxState> {
        self.fake.state.lock().unwrap()
    }

    fn writes(&self) -> usize {
        self.fake.writes.load(Ordering::SeqCst)
    }

    fn source(&self, kind: &str) -> Option<Value> {
        self.state()
            .sources
            .iter()
            .find(|s| s["type"] == kind)
            .cloned()
    }
}

impl Drop for FakeEmqx {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

/// Outages and the API key check, before any handler.
async fn gate(State(fake): State<Arc<Fake>>, req: Request, next: Next) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let outage = fake.outage.load(Ordering::SeqCst);
    if outage != 0 {
        return error(
            StatusCode::from_u16(outage).unwrap(),
            "INTERNAL_ERROR",
            "fake outage",
        );
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
    );
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "BAD_API_KEY_OR_SECRET",
            "Check api_key/api_secret",
        );
    }
    let write = req.method() != axum::http::Method::GET;
    let resp = next.run(req).await;
    if write && resp.status().is_success() {
        fake.writes.fetch_add(1, Ordering::SeqCst);
    }
    resp
}

fn is_http_url(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
}

fn is_string_map(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}

/// `emqx_authn_http_schema`: password_based + http, get|post, a url, a body map.
fn check_authenticator(v: &Value) -> Result<(), String> {
    if v["mechanism"] != "password_based" || v["backend"] != "http" {
        return Err(String::from(
            "mechanism must be password_based, backend http",
        ));
    }
    if !matches!(v["method"].as_str(), Some("get" | "post")) {
        return Err(String::from("unknown_http_method, expected get | post"));
    }
    if !is_http_url(&v["url"]) {
        return Err(String::from("the value of the field 'url' cannot be empty"));
    }
    if !v["body"].is_null() && !is_string_map(&v["body"]) {
        return Err(String::from("body must be a map of strings"));
    }
    if v.get("id").is_some() {
        return Err(String::from("unknown field id"));
    }
    if !v["enable"].is_null() && !v["enable"].is_boolean() {
        return Err(String::from("enable must be a boolean"));
    }
    Ok(())
}

/// `emqx_authz_http_schema` for http sources; other types are taken as they are.
fn check_source(v: &Value) -> Result<(), String> {
    let Some(kind) = v["type"].as_str() else {
        return Err(String::from("missing_type_field"));
    };
    if !v["enable"].is_null() && !v["enable"].is_boolean() {
        return Err(String::from("enable must be a boolean"));
    }
    if kind == "http" {
        if !matches!(v["method"].as_str(), Some("get" | "post")) {
            return Err(String::from("unknown_http_method, expected get | post"));
        }
        if !is_http_url(&v["url"]) {
            return Err(String::from("the value of the field 'url' cannot be empty"));
        }
        if !v["body"].is_null() && !is_string_map(&v["body"]) {
            return Err(String::from("body must be a map of strings"));
        }
    }
    Ok(())
}

fn with_defaults(defaults: Value, given: &Value) -> Value {
    let mut out = defaults;
    if let (Some(o), Some(g)) = (out.as_object_mut(), given.as_object()) {
        for (k, v) in g {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

async fn authn_list(State(f): State<Arc<Fake>>) -> Response {
    Json(json!(f.state.lock().unwrap().authenticators)).into_response()
}

async fn authn_create(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    if let Err(e) = check_authenticator(&body) {
        return bad(e);
    }
    let mut s = f.state.lock().unwrap();
    if s.authenticators
        .iter()
        .any(|a| a["id"] == "password_based:http")
    {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            "authenticator already exists",
        );
    }
    let stored = with_defaults(
        json!({
            "enable": true, "request_timeout": "5s", "pool_size": 8,
            "connect_timeout": "15s", "enable_pipelining": 100, "ssl": {"enable": false},
            "headers": {"content-type": "application/json", "accept": "application/json"}
        }),
        &body,
    );
    let mut stored = stored;
    stored["id"] = json!("password_based:http");
    s.authenticators.push(stored.clone());
    Json(stored).into_response()
}

async fn authn_update(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(e) = check_authenticator(&body) {
        return bad(e);
    }
    let mut s = f.state.lock().unwrap();
    let Some(slot) = s.authenticators.iter_mut().find(|a| a["id"] == id.as_str()) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "authenticator not found",
        );
    };
    let mut stored = body;
    stored["id"] = json!(id);
    *slot = stored;
    StatusCode::NO_CONTENT.into_response()
}

async fn sources_list(State(f): State<Arc<Fake>>) -> Response {
    Json(json!({"sources": f.state.lock().unwrap().sources})).into_response()
}

async fn source_create(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    if let Err(e) = check_source(&body) {
        return bad(e);
    }
    let mut s = f.state.lock().unwrap();
    if s.sources.iter().any(|x| x["type"] == body["type"]) {
        return bad("duplicated_authz_source_type");
    }
    let stored = with_defaults(
        json!({"enable": true, "request_timeout": "30s", "pool_size": 8, "connect_timeout": "15s"}),
        &body,
    );
    // EMQX prepends (`?CMD_PREPEND`)
    s.sources.insert(0, stored);
    StatusCode::NO_CONTENT.into_response()
}

async fn source_update(
    State(f): State<Arc<Fake>>,
    Path(kind): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(e) = check_source(&body) {
        return bad(e);
    }
    if body["type"] != kind.as_str() {
        return bad("Type mismatch");
    }
    let mut s = f.state.lock().unwrap();
    let Some(slot) = s.sources.iter_mut().find(|x| x["type"] == kind.as_str()) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found");
    };
    *slot = body;
    StatusCode::NO_CONTENT.into_response()
}

async fn source_move(
    State(f): State<Arc<Fake>>,
    Path(kind): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = f.state.lock().unwrap();
    let Some(i) = s.sources.iter().position(|x| x["type"] == kind.as_str()) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found");
    };
    let source = s.sources.remove(i);
    match body["position"].as_str() {
        Some("front") => s.sources.insert(0, source),
        Some("rear") => s.sources.push(source),
        other => {
            s.sources.insert(i, source);
            return bad(format!("invalid position {other:?}"));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn settings_get(State(f): State<Arc<Fake>>) -> Response {
    Json(f.state.lock().unwrap().settings.clone()).into_response()
}

async fn settings_put(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    // emqx_authz_api_settings: the three keys are required
    if !matches!(body["no_match"].as_str(), Some("allow" | "deny"))
        || !matches!(body["deny_action"].as_str(), Some("ignore" | "disconnect"))
        || !body["cache"].is_object()
    {
        return bad("no_match, deny_action and cache are required");
    }
    let cache = &body["cache"];
    if !cache["enable"].is_boolean()
        || !cache["max_size"]
            .as_u64()
            .is_some_and(|n| (1..=1_048_576).contains(&n))
        || !cache["ttl"].is_string()
    {
        return bad("cache needs enable, max_size 1..1048576 and a ttl duration");
    }
    let mut s = f.state.lock().unwrap();
    // a partial cache object would be filled with defaults
    let cache = with_defaults(
        json!({"enable": true, "max_size": 32, "ttl": "1m", "excludes": []}),
        cache,
    );
    s.settings =
        json!({"no_match": body["no_match"], "deny_action": body["deny_action"], "cache": cache});
    Json(s.settings.clone()).into_response()
}

async fn listener_get(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    match f.state.lock().unwrap().listeners.get(&id) {
        Some(l) => Json(l.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "BAD_LISTENER_ID",
            "Listener id not found",
        ),
    }
}

async fn listener_put(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if body["type"].as_str().is_none() {
        return bad("type is required");
    }
    if body["id"] != id.as_str() {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_LISTENER_ID",
            "Path and body's listener id not match",
        );
    }
    let max = &body["max_connections"];
    if !(max.is_null() || max == "infinity" || max.as_u64().is_some_and(|n| n > 0)) {
        return bad("max_connections must be infinity or a positive integer");
    }
    // EMQX 5.8 takes a rate as "N/s" (or another period), or "infinity"
    let rate = &body["messages_rate"];
    let rate_ok = rate.is_null()
        || rate == "infinity"
        || rate.as_str().is_some_and(|r| {
            r.split_once('/').is_some_and(|(n, per)| {
                n.parse::<u64>().is_ok_and(|n| n > 0) && matches!(per, "s" | "1s" | "m" | "1m")
            })
        });
    if !rate_ok {
        return bad("messages_rate must be infinity or a rate like 100/s");
    }
    let mut s = f.state.lock().unwrap();
    let Some(slot) = s.listeners.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "BAD_LISTENER_ID",
            "Listener id not found",
        );
    };
    // the checked body carries defaults for what it leaves out, then is merged
    let checked = with_defaults(listener_defaults(), &body);
    let mut merged = slot.clone();
    for (k, v) in checked.as_object().unwrap() {
        if k != "running" && k != "current_connections" {
            merged[k] = v.clone();
        }
    }
    *slot = merged.clone();
    Json(merged).into_response()
}

async fn zone_get(State(f): State<Arc<Fake>>) -> Response {
    Json(f.state.lock().unwrap().zone.clone()).into_response()
}

/// hocon's `bytesize`: an integer, or digits with kb/mb/gb.
fn is_bytesize(v: &Value) -> bool {
    if v.as_u64().is_some() {
        return true;
    }
    let Some(s) = v.as_str() else { return false };
    let digits = s.trim_end_matches(char::is_alphabetic);
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "kb" | "KB" | "mb" | "MB" | "gb" | "GB")
}

async fn zone_put(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    let Some(roots) = body.as_object() else {
        return bad("global zone must be an object");
    };
    let defaults = zone_defaults();
    let mut s = f.state.lock().unwrap();
    for (root, value) in roots {
        if defaults.get(root).is_none() || !value.is_object() {
            return bad(format!("unknown global zone root {root}"));
        }
        if root == "mqtt" && !is_bytesize(&value["max_packet_size"]) {
            return bad("max_packet_size is not a byte size");
        }
    }
    for (root, value) in roots {
        // each root is replaced by the checked value, defaults filled in
        s.zone[root] = with_defaults(defaults[root].clone(), value);
    }
    Json(s.zone.clone()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Helpers

// Data integration, as `emqx_connector_api.erl`, `emqx_bridge_v2_api.erl` and
// `emqx_rule_engine_api.erl` answer: POST needs `type` and `name` (rules: `sql`, optional `id`)
// and answers 201; PUT on `type:name` answers 200; DELETE 204, refused (400) while something
// depends on the object; GET masks passwords; rules are listed as `{"data": [...]}`.

fn name_ok(v: &Value) -> bool {
    v.as_str().is_some_and(|n| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// EMQX hides secrets in what it returns: passwords and `authorization` headers.
fn masked(mut v: Value) -> Value {
    if v.get("password").is_some() {
        v["password"] = json!("******");
    }
    if v["parameters"]["headers"].get("authorization").is_some() {
        v["parameters"]["headers"]["authorization"] = json!("******");
    }
    v
}

async fn connectors_list(State(f): State<Arc<Fake>>) -> Response {
    let s = f.state.lock().unwrap();
    if !s.data_integration {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "NOT_FOUND", "message": "Request Path Not Found"})),
        )
            .into_response();
    }
    Json(
        s.connectors
            .values()
            .cloned()
            .map(masked)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn connector_create(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    let valid = match body["type"].as_str() {
        Some("mqtt") => body["server"].as_str().is_some(),
        Some("http") => body["url"].as_str().is_some_and(|u| u.starts_with("http")),
        _ => false,
    };
    if !valid || !name_ok(&body["name"]) {
        return bad("type mqtt with a server or http with a url, and a valid name, are required");
    }
    let id = format!(
        "{}:{}",
        body["type"].as_str().unwrap(),
        body["name"].as_str().unwrap()
    );
    let mut s = f.state.lock().unwrap();
    if s.connectors.contains_key(&id) {
        return bad("connector already exists");
    }
    let stored = with_defaults(json!({"enable": true, "status": "connected"}), &body);
    s.connectors.insert(id, stored.clone());
    (StatusCode::CREATED, Json(masked(stored))).into_response()
}

async fn connector_update(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if body.get("type").is_some() || body.get("name").is_some() {
        return bad("type and name are not allowed in a PUT body");
    }
    let mut s = f.state.lock().unwrap();
    let Some(slot) = s.connectors.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "connector not found");
    };
    let (kind, name) = (slot["type"].clone(), slot["name"].clone());
    *slot = with_defaults(
        json!({"type": kind, "name": name, "status": "connected"}),
        &body,
    );
    Json(masked(slot.clone())).into_response()
}

async fn connector_delete(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    let mut s = f.state.lock().unwrap();
    let name = id.split_once(':').map(|(_, n)| n).unwrap_or_default();
    if s.actions.values().any(|a| a["connector"] == name) {
        return bad(
            "Cannot delete connector while there are active channels defined for this connector",
        );
    }
    match s.connectors.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "connector not found"),
    }
}

async fn actions_list(State(f): State<Arc<Fake>>) -> Response {
    Json(
        f.state
            .lock()
            .unwrap()
            .actions
            .values()
            .cloned()
            .map(masked)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

fn check_action(s: &EmqxState, kind: &str, body: &Value) -> Result<(), String> {
    let connector = format!("{kind}:{}", body["connector"].as_str().unwrap_or_default());
    if !s.connectors.contains_key(&connector) {
        return Err(format!("connector {connector} not found"));
    }
    if kind == "http" {
        let p = &body["parameters"];
        if !p["path"].as_str().is_some_and(|p| p.starts_with('/'))
            || !matches!(
                p["method"].as_str(),
                Some("post" | "put" | "get" | "delete")
            )
        {
            return Err("parameters.path and parameters.method are required".into());
        }
        return Ok(());
    }
    let remote = &body["parameters"]["remote"];
    if remote["topic"].as_str().is_none_or(str::is_empty) {
        return Err("parameters.remote.topic is required".into());
    }
    if body["parameters"].get("local").is_some() || body["parameters"].get("pool_size").is_some() {
        return Err("unknown field in parameters".into());
    }
    Ok(())
}

async fn action_create(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    let mut s = f.state.lock().unwrap();
    let kind = body["type"].as_str().unwrap_or_default().to_string();
    if !matches!(kind.as_str(), "mqtt" | "http") || !name_ok(&body["name"]) {
        return bad("type mqtt or http and a valid name are required");
    }
    if let Err(e) = check_action(&s, &kind, &body) {
        return bad(e);
    }
    let id = format!("{kind}:{}", body["name"].as_str().unwrap());
    if s.actions.contains_key(&id) {
        return bad("action already exists");
    }
    let stored = with_defaults(json!({"enable": true, "status": "connected"}), &body);
    s.actions.insert(id, stored.clone());
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn action_update(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = f.state.lock().unwrap();
    let kind = id
        .split_once(':')
        .map(|(k, _)| k)
        .unwrap_or_default()
        .to_string();
    if let Err(e) = check_action(&s, &kind, &body) {
        return bad(e);
    }
    let Some(slot) = s.actions.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "action not found");
    };
    let (kind, name) = (slot["type"].clone(), slot["name"].clone());
    *slot = with_defaults(
        json!({"type": kind, "name": name, "status": "connected"}),
        &body,
    );
    Json(slot.clone()).into_response()
}

async fn action_delete(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    let mut s = f.state.lock().unwrap();
    if s.rules.values().any(|r| {
        r["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == id.as_str()))
    }) {
        return bad("Cannot delete action while rules depend on it");
    }
    match s.actions.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "action not found"),
    }
}

async fn rules_list(State(f): State<Arc<Fake>>) -> Response {
    let s = f.state.lock().unwrap();
    let data: Vec<Value> = s.rules.values().cloned().collect();
    Json(json!({"data": data, "meta": {"page": 1, "limit": 1000, "count": data.len()}}))
        .into_response()
}

fn check_rule(s: &EmqxState, body: &Value) -> Result<(), String> {
    if !body["sql"]
        .as_str()
        .is_some_and(|q| q.starts_with("SELECT"))
    {
        return Err("sql is required".into());
    }
    for a in body["actions"].as_array().cloned().unwrap_or_default() {
        if !a.as_str().is_some_and(|a| s.actions.contains_key(a)) {
            return Err(format!("action {a} not found"));
        }
    }
    Ok(())
}

async fn rule_create(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    let mut s = f.state.lock().unwrap();
    if let Err(e) = check_rule(&s, &body) {
        return bad(e);
    }
    let id = body["id"].as_str().unwrap_or("generated").to_string();
    if s.rules.contains_key(&id) {
        return bad("rule id already exists");
    }
    let stored = with_defaults(json!({"enable": true, "id": id}), &body);
    s.rules.insert(id, stored.clone());
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn rule_update(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = f.state.lock().unwrap();
    if let Err(e) = check_rule(&s, &body) {
        return bad(e);
    }
    let Some(slot) = s.rules.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "rule not found");
    };
    *slot = with_defaults(json!({"id": id}), &body);
    Json(slot.clone()).into_response()
}

async fn rule_delete(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    match f.state.lock().unwrap().rules.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "rule not found"),
    }
}

fn settings(api_url: &str) -> EmqxSettings {
    let mut s = EmqxSettings::new(api_url, KEY, SECRET, "http://backend:5291/pepeunit/api/v1");
    s.max_connections = Some(5000);
    s.max_packet_size = Some(256 * 1024);
    s.messages_rate = Some(100);
    s
}

async fn wait_health(
    health: &mut watch::Receiver<EmqxHealth>,
    what: &str,
    f: impl FnMut(&EmqxHealth) -> bool,
) -> EmqxHealth {
    let result = tokio::time::timeout(WAIT, health.wait_for(f))
        .await
        .map(|r| r.map(|h| h.clone()));
    match result {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => panic!("health channel closed while waiting for {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}: {:?}", *health.borrow()),
    }
}

fn assert_configured(emqx: &FakeEmqx) {
    let s = emqx.state();
    let authn = &s.authenticators[0];
    assert_eq!(authn["id"], "password_based:http");
    assert_eq!(authn["enable"], true);
    assert_eq!(authn["method"], "post");
    assert_eq!(
        authn["url"],
        "http://backend:5291/pepeunit/api/v1/units/mqtt_authn"
    );
    assert_eq!(
        authn["body"],
        json!({"username": "${username}", "clientid": "${clientid}"})
    );

    let first = &s.sources[0];
    assert_eq!(first["type"], "http", "{:?}", s.sources);
    assert_eq!(first["enable"], true);
    assert_eq!(first["method"], "post");
    assert_eq!(
        first["url"],
        "http://backend:5291/pepeunit/api/v1/units/auth"
    );
    assert_eq!(
        first["body"],
        json!({"token": "${username}", "topic": "${topic}", "action": "${action}"})
    );
    for other in &s.sources[1..] {
        assert_eq!(other["enable"], false, "{other}");
    }

    assert_eq!(s.settings["no_match"], "deny");
    assert_eq!(s.settings["deny_action"], "ignore");
    assert_eq!(s.settings["cache"]["enable"], true);
    assert_eq!(s.settings["cache"]["max_size"], 64);
    assert_eq!(s.settings["cache"]["ttl"], "1m");

    assert_eq!(s.listeners["tcp:default"]["max_connections"], 5000);
    // the per-client limit EMQX can express (SPEC §8); per-topic limits stay with the shards
    assert_eq!(s.listeners["tcp:default"]["messages_rate"], "100/s");
    assert_eq!(s.zone["mqtt"]["max_packet_size"], "256KB");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn first_apply_configures_a_fresh_emqx_and_the_second_changes_nothing() {
    let emqx = FakeEmqx::start().await;
    {
        // an admin's own tuning, which must survive
        let mut s = emqx.state();
        s.zone["mqtt"]["max_clientid_len"] = json!(1000);
        s.zone["force_gc"]["count"] = json!(5);
        s.listeners.get_mut("tcp:default").unwrap()["acceptors"] = json!(8);
        s.settings["cache"]["excludes"] = json!(["$SYS/#"]);
    }
    let admin = EmqxAdmin::new(settings(&emqx.api_url)).unwrap();

    let report = admin.apply().await.unwrap();
    assert_eq!(
        report.changed,
        [
            "authorization source http: created",
            "authorization source file: disabled",
            "authorization settings: updated no_match, cache.max_size",
            "authentication password_based:http: created",
            "listener tcp:default max_connections: set to 5000",
            "listener tcp:default messages_rate: set to 100/s",
            "mqtt max_packet_size: set to 262144 bytes",
        ],
        "{report}"
    );
    assert_configured(&emqx);
    {
        let s = emqx.state();
        assert_eq!(s.zone["mqtt"]["max_clientid_len"], 1000);
        assert_eq!(s.zone["force_gc"]["count"], 5);
        assert_eq!(s.listeners["tcp:default"]["acceptors"], 8);
        assert_eq!(s.settings["cache"]["excludes"], json!(["$SYS/#"]));
    }
    // the file source is kept, only switched off
    assert!(emqx.source("file").unwrap()["rules"]
        .as_str()
        .unwrap()
        .contains("{allow, all}"));

    let writes = emqx.writes();
    let again = admin.apply().await.unwrap();
    assert!(again.is_unchanged(), "{again}");
    assert_eq!(emqx.writes(), writes, "an idempotent apply writes nothing");
    assert_eq!(again.unchanged.len(), 7, "{again}");
}

#[tokio::test]
async fn drift_is_corrected() {
    let emqx = FakeEmqx::start().await;
    let admin = EmqxAdmin::new(settings(&emqx.api_url)).unwrap();
    admin.apply().await.unwrap();
    {
        // someone edits EMQX by hand
        let mut s = emqx.state();
        let http = s.sources.remove(0);
        let mut http = http;
        http["url"] = json!("http://elsewhere/auth");
        http["body"] = json!({"token": "${clientid}", "topic": "${topic}"});
        http["pool_size"] = json!(32);
        s.sources.push(http);
        s.sources.insert(
            0,
            json!({"type": "built_in_database", "enable": true, "max_rules": 100}),
        );
        s.settings["no_match"] = json!("allow");
        s.settings["cache"]["ttl"] = json!("30m");
        s.authenticators[0]["enable"] = json!(false);
        s.listeners.get_mut("tcp:default").unwrap()["max_connections"] = json!("infinity");
        s.listeners.get_mut("tcp:default").unwrap()["messages_rate"] = json!("1000/s");
        s.zone["mqtt"]["max_packet_size"] = json!("1MB");
    }
    let report = admin.apply().await.unwrap();
    assert_eq!(
        report.changed,
        [
            "authorization source http: updated url, body",
            "authorization source http: moved to the front",
            "authorization source built_in_database: disabled",
            "authorization settings: updated no_match, cache.ttl",
            "authentication password_based:http: updated enable",
            "listener tcp:default max_connections: set to 5000",
            "listener tcp:default messages_rate: set to 100/s",
            "mqtt max_packet_size: set to 262144 bytes",
        ],
        "{report}"
    );
    assert_configured(&emqx);
    // what Pepeunit does not manage stays as the admin set it
    assert_eq!(emqx.source("http").unwrap()["pool_size"], 32);
    assert_eq!(emqx.source("built_in_database").unwrap()["max_rules"], 100);
    // equal values written differently are not drift
    emqx.state().settings["cache"]["ttl"] = json!("60s");
    emqx.state().zone["mqtt"]["max_packet_size"] = json!(262144);
    emqx.state().listeners.get_mut("tcp:default").unwrap()["messages_rate"] = json!("100/1s");
    assert!(admin.apply().await.unwrap().is_unchanged());
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error() {
    let emqx = FakeEmqx::start().await;
    let mut s = settings(&emqx.api_url);
    s.api_secret = "not-the-secret".into();
    let err = EmqxAdmin::new(s).unwrap().apply().await.unwrap_err();
    match &err {
        EmqxError::Credentials { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (401, "BAD_API_KEY_OR_SECRET"))
        }
        other => panic!("expected a credentials error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("PU_EMQX_API_KEY") && text.contains("Check api_key/api_secret"),
        "{text}"
    );
    assert_eq!(emqx.writes(), 0);
}

#[tokio::test]
async fn an_emqx_error_is_named_with_its_request() {
    let emqx = FakeEmqx::start().await;
    emqx.state().listeners.clear();
    let err = EmqxAdmin::new(settings(&emqx.api_url))
        .unwrap()
        .apply()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("GET /listeners/tcp:default answered HTTP 404 BAD_LISTENER_ID"),
        "{text}"
    );
}

#[tokio::test]
async fn the_worker_retries_while_emqx_fails_and_reapplies_on_request() {
    let emqx = FakeEmqx::start().await;
    emqx.fake.outage.store(500, Ordering::SeqCst);
    let admin = EmqxAdmin::new(settings(&emqx.api_url))
        .unwrap()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(40));
    let mut health = admin.health();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reapply_tx, reapply_rx) = mpsc::channel(4);
    let worker = tokio::spawn(run_worker(admin, stop_rx, reapply_rx));

    let failing = wait_health(&mut health, "three failures", |h| {
        h.consecutive_failures >= 3
    })
    .await;
    let error = failing.last_error.unwrap();
    assert!(
        error.contains("HTTP 500 INTERNAL_ERROR: fake outage"),
        "{error}"
    );
    assert!(failing.last_success.is_none());

    // EMQX recovers: the next retry configures it
    emqx.fake.outage.store(0, Ordering::SeqCst);
    let healthy = wait_health(&mut health, "a success", EmqxHealth::is_healthy).await;
    assert!(!healthy.last_report.unwrap().is_unchanged());
    assert!(healthy.last_error.is_some(), "the last error is kept");
    assert_configured(&emqx);

    // drift, then a reapply request corrects it
    let first_success = healthy.last_success.unwrap();
    emqx.state().settings["no_match"] = json!("allow");
    reapply_tx.send(()).await.unwrap();
    let reapplied = wait_health(&mut health, "a second success", |h| {
        h.last_success.is_some_and(|t| t > first_success)
    })
    .await;
    assert_eq!(
        reapplied.last_report.unwrap().changed,
        ["authorization settings: updated no_match"]
    );
    assert_eq!(emqx.state().settings["no_match"], "deny");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("the worker stops")
        .unwrap();
}

#[tokio::test]
async fn the_worker_waits_for_an_unreachable_emqx() {
    // a port nothing listens on, until the fake EMQX takes it
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let admin = EmqxAdmin::new(settings(&format!("http://{addr}/api/v5")))
        .unwrap()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(40));
    let mut health = admin.health();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_reapply_tx, reapply_rx) = mpsc::channel(1);
    let worker = tokio::spawn(run_worker(admin, stop_rx, reapply_rx));

    let failing = wait_health(&mut health, "two failures", |h| h.consecutive_failures >= 2).await;
    let error = failing.last_error.unwrap();
    assert!(error.contains("is unreachable"), "{error}");

    let emqx = FakeEmqx::serve(tokio::net::TcpListener::bind(addr).await.unwrap());
    wait_health(&mut health, "a success", EmqxHealth::is_healthy).await;
    assert_configured(&emqx);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("the worker stops")
        .unwrap();
}

/// What EMQX does with the templates we configure: substitute the placeholders and POST the
/// body to the URL. Against a running instance this proves URLs and field names meet our
/// endpoints.
#[tokio::test]
async fn the_configured_requests_reach_our_endpoints() {
    let inst = common::TestInstance::start(common::Backend::Sqlite).await;
    let emqx = FakeEmqx::start().await;
    let admin = EmqxAdmin::new(EmqxSettings::new(&emqx.api_url, KEY, SECRET, &inst.api)).unwrap();
    admin.apply().await.unwrap();
    let (authn, authz) = {
        let s = emqx.state();
        (s.authenticators[0].clone(), s.sources[0].clone())
    };
    let render = |template: &Value, vars: &[(&str, &str)]| -> Value {
        let mut out = template.clone();
        for v in out.as_object_mut().unwrap().values_mut() {
            let mut text = v.as_str().unwrap().to_string();
            for (name, value) in vars {
                text = text.replace(&format!("${{{name}}}"), value);
            }
            *v = json!(text);
        }
        out
    };
    let ask = |source: &Value, vars: &[(&str, &str)]| {
        let url = source["url"].as_str().unwrap().to_string();
        let body = render(&source["body"], vars);
        let http = inst.http.clone();
        async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["result"].clone()
        }
    };
    let backend =
        pepeunit::token::TokenKey::new(&inst.config.secret_key).backend_token(&inst.domain);
    let topic = format!("{}/+/+/+/pepeunit", inst.domain);

    assert_eq!(
        ask(&authn, &[("username", &backend), ("clientid", "backend")]).await,
        "allow"
    );
    assert_eq!(
        ask(&authn, &[("username", "garbage"), ("clientid", "x")]).await,
        "deny"
    );
    let vars = [
        ("username", backend.as_str()),
        ("topic", topic.as_str()),
        ("action", "subscribe"),
    ];
    assert_eq!(ask(&authz, &vars).await, "allow");
    let vars = [
        ("username", "garbage"),
        ("topic", topic.as_str()),
        ("action", "publish"),
    ];
    assert_eq!(ask(&authz, &vars).await, "deny");
    inst.stop().await;
}

fn emqx_bridge(n: u128, host: &str) -> pepeunit::mqtt::emqx::EmqxBridge {
    pepeunit::mqtt::emqx::EmqxBridge {
        uuid: uuid::Uuid::from_u128(n),
        peer_domain: "b.example".into(),
        host: host.into(),
        port: 1883,
        credential: format!("cred-{n}"),
        topic: format!("a.example/{}/pepeunit", uuid::Uuid::from_u128(n + 1000)),
    }
}

#[tokio::test]
async fn bridges_become_connectors_actions_and_rules_and_go_away_with_them() {
    let emqx = FakeEmqx::start().await;
    // an admin's own integration, which must survive
    emqx.state().connectors.insert(
        "mqtt:theirs".into(),
        json!({"type": "mqtt", "name": "theirs", "server": "x:1883", "enable": true}),
    );
    let admin = EmqxAdmin::new(settings(&emqx.api_url)).unwrap();
    // nothing said about bridges yet: they are left alone
    admin.apply().await.unwrap();
    assert_eq!(emqx.state().connectors.len(), 1);

    let (one, two) = (
        emqx_bridge(1, "mqtt.b.example"),
        emqx_bridge(2, "mqtt.b.example"),
    );
    admin.set_bridges(vec![one.clone(), two.clone()]);
    let report = admin.apply().await.unwrap();
    let created = report
        .changed
        .iter()
        .filter(|c| c.ends_with(": created"))
        .count();
    assert_eq!(created, 6, "{report}");
    {
        let s = emqx.state();
        let name = one.name();
        let c = &s.connectors[&format!("mqtt:{name}")];
        assert_eq!(c["server"], "mqtt.b.example:1883");
        assert_eq!(c["username"], "cred-1");
        let a = &s.actions[&format!("mqtt:{name}")];
        assert_eq!(a["connector"], name.as_str());
        assert_eq!(a["parameters"]["remote"]["topic"], one.topic.as_str());
        assert_eq!(a["parameters"]["remote"]["qos"], 1);
        let r = &s.rules[&name];
        assert_eq!(r["sql"], format!("SELECT * FROM \"{}\"", one.topic));
        assert_eq!(r["actions"], json!([format!("mqtt:{name}")]));
    }
    // again: nothing to do (the masked password is not compared)
    let again = admin.apply().await.unwrap();
    assert!(again.is_unchanged(), "{again}");

    // one goes, the other moves to another host
    let moved = emqx_bridge(2, "mqtt2.b.example");
    admin.set_bridges(vec![moved.clone()]);
    let report = admin.apply().await.unwrap();
    let changed = report.changed.join("; ");
    assert!(
        changed.contains(&format!(
            "bridge connector {}: updated server",
            moved.name()
        )),
        "{changed}"
    );
    for kind in ["rule", "action", "connector"] {
        assert!(
            changed.contains(&format!("bridge {kind} {}: removed", one.name())),
            "{changed}"
        );
    }
    {
        let s = emqx.state();
        assert_eq!(
            s.connectors[&format!("mqtt:{}", moved.name())]["server"],
            "mqtt2.b.example:1883"
        );
        assert!(!s.rules.contains_key(&one.name()));
        assert_eq!(s.connectors.len(), 2, "{:?}", s.connectors.keys());
    }
    assert!(admin.apply().await.unwrap().is_unchanged());

    // no bridges left: ours go, the admin's stays
    admin.set_bridges(vec![]);
    admin.apply().await.unwrap();
    let s = emqx.state();
    assert!(s.rules.is_empty() && s.actions.is_empty());
    assert_eq!(s.connectors.keys().collect::<Vec<_>>(), vec!["mqtt:theirs"]);
}

/// The alert rule: created with the rest, idempotent, and what EMQX would POST for a device's
/// log message (the action's URL, method, headers; the rule's fields as the JSON body) reaches
/// our webhook and becomes a Telegram alert. Without alerts the objects go away.
#[tokio::test]
async fn the_alert_rule_forwards_log_messages_to_our_webhook() {
    use common::fixtures::{registry_repo_unit, FirmwareRepo};
    use common::telegram::FakeTelegram;
    let tg = FakeTelegram::start().await;
    let env = tg.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push(("PU_TELEGRAM_ALERT_INTERVAL", "0"));
    let inst = common::TestInstance::start_with(common::Backend::Sqlite, &vars).await;
    let firmware = FirmwareRepo::create().await;
    let (_, _admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "pump", "Private").await;
    common::telegram::link(&inst, &tg, &owner, 4100, "en").await;

    let emqx = FakeEmqx::start().await;
    let instance = &inst.running.as_ref().unwrap().instance;
    let mut settings = EmqxSettings::new(&emqx.api_url, KEY, SECRET, &inst.api);
    settings.alerts = Some(pepeunit::mqtt::emqx::EmqxAlerts {
        backend_api: inst.api.clone(),
        secret: instance.emqx_webhook_secret(),
        topic: format!("{}/output_base_topic/+/log/pepeunit", inst.domain),
    });
    let admin = EmqxAdmin::new(settings.clone()).unwrap();
    let report = admin.apply().await.unwrap();
    for kind in ["connector", "action", "rule"] {
        assert!(
            report.changed.contains(&format!("alerts {kind}: created")),
            "{report}"
        );
    }
    let again = admin.apply().await.unwrap();
    assert!(again.is_unchanged(), "{again}");
    assert!(
        settings
            .alerts_rule
            .load(std::sync::atomic::Ordering::Relaxed),
        "the worker tells the shards that EMQX carries the rule"
    );

    // a new secret (another PU_SECRET_KEY) is written although EMQX masks the header
    let mut rotated = settings.clone();
    rotated.alerts.as_mut().unwrap().secret = "another-secret".into();
    let report = EmqxAdmin::new(rotated).unwrap().apply().await.unwrap();
    assert!(
        report
            .changed
            .iter()
            .any(|c| c.starts_with("alerts action: updated")),
        "{report}"
    );
    assert_eq!(
        emqx.state().actions["http:pepeunit_alerts"]["parameters"]["headers"]["authorization"],
        "Bearer another-secret"
    );
    let back = admin.apply().await.unwrap();
    assert!(!back.is_unchanged(), "{back}");

    // EMQX's side of one device message, from the objects as stored
    let (connector, action, rule) = {
        let s = emqx.state();
        (
            s.connectors["http:pepeunit_alerts"].clone(),
            s.actions["http:pepeunit_alerts"].clone(),
            s.rules["pepeunit_alerts"].clone(),
        )
    };
    let topic = format!(
        "{}/output_base_topic/{}/log/pepeunit",
        inst.domain,
        unit["uuid"].as_str().unwrap()
    );
    let sql = rule["sql"].as_str().unwrap();
    let filter = sql.split('"').nth(1).unwrap();
    let matches = filter
        .split('/')
        .zip(topic.split('/'))
        .all(|(f, t)| f == "+" || f == t)
        && filter.split('/').count() == topic.split('/').count();
    assert!(matches, "{filter} must match {topic}");
    assert!(sql.starts_with("SELECT id, topic, payload FROM"), "{sql}");
    let url = format!(
        "{}{}",
        connector["url"].as_str().unwrap(),
        action["parameters"]["path"].as_str().unwrap()
    );
    assert_eq!(action["parameters"]["method"], "post");
    let mut req = inst.http.post(&url);
    for (k, v) in action["parameters"]["headers"].as_object().unwrap() {
        req = req.header(k.as_str(), v.as_str().unwrap());
    }
    let payload = json!({"level": "Critical", "text": "dry run protection"}).to_string();
    // no body template: EMQX sends the rule's selected fields as one JSON object
    let body = json!({"id": "0006123ABC", "topic": topic, "payload": payload});
    let resp = req.body(body.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    tg.wait_for(4100, "dry run protection", WAIT).await;

    // alerts off: our three objects are removed
    let with_alerts = settings.clone();
    settings.alerts = None;
    let flag = settings.alerts_rule.clone();
    let admin = EmqxAdmin::new(settings).unwrap();
    let report = admin.apply().await.unwrap();
    for kind in ["rule", "action", "connector"] {
        assert!(
            report.changed.contains(&format!("alerts {kind}: removed")),
            "{report}"
        );
    }
    {
        let s = emqx.state();
        assert!(s.connectors.is_empty() && s.actions.is_empty() && s.rules.is_empty());
    }
    assert!(
        !flag.load(std::sync::atomic::Ordering::Relaxed),
        "without our rule the shards feed alerts again"
    );

    // an EMQX before 5.4 cannot carry the rule: skipped, and the shards keep feeding alerts
    emqx.state().data_integration = false;
    // (shared with `flag`: as if a rule had been carried before the downgrade)
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = EmqxAdmin::new(with_alerts).unwrap().apply().await.unwrap();
    assert!(
        report
            .changed
            .iter()
            .any(|c| c.starts_with("alerts rule: skipped")),
        "{report}"
    );
    assert!(!flag.load(std::sync::atomic::Ordering::Relaxed));
    inst.stop().await;
}
