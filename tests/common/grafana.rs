//! A local fake of Grafana's HTTP API (https://grafana.com/docs/grafana/latest/developers/http_api/),
//! the part a dashboard sync uses, with Grafana's answers and refusals:
//! - every call needs the admin's Basic auth (401 `Invalid username or password` otherwise);
//! - org-scoped calls (`X-Grafana-Org-Id`, default org 1) need the caller to be a member of
//!   that organisation (401 otherwise); the admin becomes Admin of every org it creates;
//! - `GET /api/orgs/:id`, `GET /api/orgs/name/:name` (404 `Organization not found`),
//!   `POST /api/orgs` (409 `Organization name taken`);
//! - `POST /api/admin/users` (400 without login or with a password under 4 characters, 412
//!   when the login or email exists; logins and emails are lower-cased, as since Grafana 11,
//!   so `Alice` and `alice` are one user);
//! - `POST /api/orgs/:id/users` (400 bad role, 404 unknown user or org, 409 already a member);
//! - `POST /api/datasources` (400 without name or type, 409 same name in the org; a uid is
//!   given), `GET /api/datasources/name/:name` (404 `Data source not found`),
//!   `PUT /api/datasources/uid/:uid` (404 unknown, 409 renamed onto another's name);
//! - `POST /api/dashboards/db` (400 without a dashboard, an empty title or a uid over 40
//!   characters; 412 `version-mismatch` for an existing uid without `overwrite`), answering
//!   `{id, uid, url, status, version, slug}` with the version bumped at each save.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

pub const ADMIN: &str = "grafana-admin";
pub const PASSWORD: &str = "grafana-admin-password";

#[derive(Clone, Debug)]
pub struct Org {
    pub id: i64,
    pub name: String,
    /// login -> role
    pub members: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fake {
    orgs: Vec<Org>,
    /// login -> (id, email)
    users: BTreeMap<String, (i64, String)>,
    /// (org, datasource body)
    datasources: Vec<(i64, Value)>,
    /// (org, uid) -> (version, saved dashboard)
    dashboards: BTreeMap<(i64, String), (i64, Value)>,
    calls: Vec<String>,
}

pub struct FakeGrafana {
    /// The value for `PU_GRAFANA_URL`.
    pub url: String,
    state: Arc<Mutex<Fake>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn err(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

type Shared = Arc<Mutex<Fake>>;

/// The org a call is scoped to, after Basic auth and the membership check.
fn authorize(fake: &mut Fake, headers: &HeaderMap, call: String) -> Result<i64, Box<Response>> {
    fake.calls.push(call);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "Invalid username or password",
        )));
    }
    let org = match headers.get("x-grafana-org-id") {
        None => 1,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| Box::new(err(StatusCode::BAD_REQUEST, "invalid X-Grafana-Org-Id")))?,
    };
    let member = fake
        .orgs
        .iter()
        .any(|o| o.id == org && o.members.contains_key(ADMIN));
    if !member {
        return Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "User not a member of organization",
        )));
    }
    Ok(org)
}

async fn org_by_id(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut f = s.lock().unwrap();
    if let Err(r) = authorize(&mut f, &headers, format!("GET /api/orgs/{id}")) {
        return *r;
    }
    match f.orgs.iter().find(|o| o.id.to_string() == id) {
        Some(o) => Json(json!({"id": o.id, "name": o.name, "address": {}})).into_response(),
        None => err(StatusCode::NOT_FOUND, "Organization not found"),
    }
}

async fn org_by_name(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut f = s.lock().unwrap();
    if let Err(r) = authorize(&mut f, &headers, format!("GET /api/orgs/name/{name}")) {
        return *r;
    }
    match f.orgs.iter().find(|o| o.name == name) {
        Some(o) => Json(json!({"id": o.id, "name": o.name, "address": {}})).into_response(),
        None => err(StatusCode::NOT_FOUND, "Organization not found"),
    }
}

async fn create_org(State(s): State<Shared>, headers: HeaderMap, body: Json<Value>) -> Response {
    let mut f = s.lock().unwrap();
    if let Err(r) = authorize(&mut f, &headers, "POST /api/orgs".into()) {
        return *r;
    }
    let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
        return err(StatusCode::BAD_REQUEST, "bad request data");
    };
    if f.orgs.iter().any(|o| o.name == name) {
        return err(StatusCode::CONFLICT, "Organization name taken");
    }
    let id = f.orgs.iter().map(|o| o.id).max().unwrap_or(0) + 1;
    f.orgs.push(Org {
        id,
        name: name.to_string(),
        members: BTreeMap::from([(ADMIN.to_string(), "Admin".to_string())]),
    });
    Json(json!({"orgId": id, "message": "Organization created"})).into_response()
}

async fn create_user(State(s): State<Shared>, headers: HeaderMap, body: Json<Value>) -> Response {
    let mut f = s.lock().unwrap();
    if let Err(r) = authorize(&mut f, &headers, "POST /api/admin/users".into()) {
        return *r;
    }
    let login = body["login"].as_str().unwrap_or("").to_lowercase();
    let email = body["email"].as_str().unwrap_or("").to_lowercase();
    let password = body["password"].as_str().unwrap_or("");
    if login.is_empty() && email.is_empty() {
        return err(StatusCode::BAD_REQUEST, "bad request data");
    }
    if password.chars().count() < 4 {
        return err(StatusCode::BAD_REQUEST, "password is missing or too short");
    }
    let login = if login.is_empty() { &email } else { &login };
    if f.users.contains_key(login) || f.users.values().any(|(_, e)| *e == email) {
        return err(
            StatusCode::PRECONDITION_FAILED,
            "User with email '' or username '' already exists",
        );
    }
    let id = f.users.len() as i64 + 2;
    f.users.insert(login.to_string(), (id, email));
    Json(json!({"id": id, "message": "User created"})).into_response()
}

async fn add_member(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(org): Path<i64>,
    body: Json<Value>,
) -> Response {
    let mut f = s.lock().unwrap();
    if let Err(r) = authorize(&mut f, &headers, format!("POST /api/orgs/{org}/users")) {
        return *r;
    }
    let role = body["role"].as_str().unwrap_or("");
    if !["Viewer", "Editor", "Admin", "None"].contains(&role) {
        return err(StatusCode::BAD_REQUEST, "Invalid role specified");
    }
    let who = body["loginOrEmail"].as_str().unwrap_or("").to_lowercase();
    let Some(login) = f
        .users
        .iter()
        .find(|(l, (_, e))| **l == who || *e == who)
        .map(|(l, _)| l.clone())
    else {
        return err(StatusCode::NOT_FOUND, "User not found");
    };
    let Some(o) = f.orgs.iter_mut().find(|o| o.id == org) else {
        return err(StatusCode::NOT_FOUND, "Organization not found");
    };
    if o.members.contains_key(&login) {
        return err(
            StatusCode::CONFLICT,
            "User is already member of this organization",
        );
    }
    o.members.insert(login, role.to_string());
    Json(json!({"message": "User added to organization"})).into_response()
}

async fn create_datasource(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let mut f = s.lock().unwrap();
    let org = match authorize(&mut f, &headers, "POST /api/datasources".into()) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let name = body["name"].as_str().unwrap_or("");
    if name.is_empty() || body["type"].as_str().unwrap_or("").is_empty() {
        return err(StatusCode::BAD_REQUEST, "bad request data");
    }
    if f.datasources
        .iter()
        .any(|(o, d)| *o == org && d["name"] == name)
    {
        return err(
            StatusCode::CONFLICT,
            "data source with the same name already exists",
        );
    }
    let id = f.datasources.len() as i64 + 1;
    let mut saved = body.0.clone();
    saved["id"] = json!(id);
    saved["orgId"] = json!(org);
    if saved["uid"].as_str().unwrap_or("").is_empty() {
        saved["uid"] = json!(format!("ds{id}"));
    }
    f.datasources.push((org, saved.clone()));
    Json(json!({"id": id, "name": name, "message": "Datasource added", "datasource": saved}))
        .into_response()
}

async fn datasource_by_name(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut f = s.lock().unwrap();
    let org = match authorize(
        &mut f,
        &headers,
        format!("GET /api/datasources/name/{name}"),
    ) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match f
        .datasources
        .iter()
        .find(|(o, d)| *o == org && d["name"] == name.as_str())
    {
        Some((_, d)) => Json(d.clone()).into_response(),
        None => err(StatusCode::NOT_FOUND, "Data source not found"),
    }
}

async fn update_datasource(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    body: Json<Value>,
) -> Response {
    let mut f = s.lock().unwrap();
    let org = match authorize(&mut f, &headers, format!("PUT /api/datasources/uid/{uid}")) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let name = body["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() || body["type"].as_str().unwrap_or("").is_empty() {
        return err(StatusCode::BAD_REQUEST, "bad request data");
    }
    if f.datasources
        .iter()
        .any(|(o, d)| *o == org && d["name"] == name.as_str() && d["uid"] != uid.as_str())
    {
        return err(
            StatusCode::CONFLICT,
            "data source with the same name already exists",
        );
    }
    let Some((_, d)) = f
        .datasources
        .iter_mut()
        .find(|(o, d)| *o == org && d["uid"] == uid.as_str())
    else {
        return err(StatusCode::NOT_FOUND, "Data source not found");
    };
    let (id, org_id) = (d["id"].clone(), d["orgId"].clone());
    *d = body.0.clone();
    d["id"] = id;
    d["orgId"] = org_id;
    d["uid"] = json!(uid);
    Json(json!({"message": "Datasource updated", "name": name, "datasource": d.clone()}))
        .into_response()
}

async fn save_dashboard(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let mut f = s.lock().unwrap();
    let org = match authorize(&mut f, &headers, "POST /api/dashboards/db".into()) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Some(d) = body.get("dashboard").filter(|d| d.is_object()) else {
        return err(StatusCode::BAD_REQUEST, "bad request data");
    };
    let title = d["title"].as_str().unwrap_or("").trim().to_string();
    if title.is_empty() {
        return err(StatusCode::BAD_REQUEST, "Dashboard title cannot be empty");
    }
    let uid = d["uid"].as_str().unwrap_or("").to_string();
    if uid.chars().count() > 40 {
        return err(StatusCode::BAD_REQUEST, "uid too long, max 40 characters");
    }
    let overwrite = body["overwrite"].as_bool().unwrap_or(false);
    let key = (org, uid.clone());
    let version = match f.dashboards.get(&key) {
        Some(_) if !overwrite => {
            return (
                StatusCode::PRECONDITION_FAILED,
                Json(json!({"message": "The dashboard has been changed by someone else", "status": "version-mismatch"})),
            )
                .into_response()
        }
        Some((v, _)) => v + 1,
        None => 1,
    };
    f.dashboards.insert(key, (version, d.clone()));
    let slug: String = title
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect();
    Json(json!({
        "id": f.dashboards.len(),
        "uid": uid,
        "url": format!("/grafana/d/{uid}/{slug}"),
        "status": "success",
        "version": version,
        "slug": slug,
    }))
    .into_response()
}

impl FakeGrafana {
    pub async fn start() -> FakeGrafana {
        let mut fake = Fake::default();
        fake.orgs.push(Org {
            id: 1,
            name: "Main Org.".into(),
            members: BTreeMap::from([(ADMIN.to_string(), "Admin".to_string())]),
        });
        let state = Arc::new(Mutex::new(fake));
        let app = Router::new()
            .route("/api/orgs", post(create_org))
            .route("/api/orgs/{id}", get(org_by_id))
            .route("/api/orgs/name/{name}", get(org_by_name))
            .route("/api/orgs/{id}/users", post(add_member))
            .route("/api/admin/users", post(create_user))
            .route("/api/datasources", post(create_datasource))
            .route("/api/datasources/name/{name}", get(datasource_by_name))
            .route(
                "/api/datasources/uid/{uid}",
                axum::routing::put(update_datasource),
            )
            .route("/api/dashboards/db", post(save_dashboard))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGrafana { url, state, task }
    }

    /// The settings an instance needs to sync against this fake.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true".into()),
            ("PU_GRAFANA_URL", self.url.clone()),
            ("PU_GRAFANA_ADMIN_USER", ADMIN.into()),
            ("PU_GRAFANA_ADMIN_PASSWORD", PASSWORD.into()),
        ]
    }

    pub fn org_named(&self, name: &str) -> Option<Org> {
        let f = self.state.lock().unwrap();
        f.orgs.iter().find(|o| o.name == name).cloned()
    }

    pub fn orgs(&self) -> usize {
        self.state.lock().unwrap().orgs.len()
    }

    pub fn user_exists(&self, login: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .users
            .contains_key(&login.to_lowercase())
    }

    pub fn datasources(&self, org: i64) -> Vec<Value> {
        let f = self.state.lock().unwrap();
        f.datasources
            .iter()
            .filter(|(o, _)| *o == org)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// A saved dashboard and its version.
    pub fn dashboard(&self, org: i64, uid: &str) -> Option<(i64, Value)> {
        let f = self.state.lock().unwrap();
        f.dashboards.get(&(org, uid.to_string())).cloned()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}
