//! Helpers shared by the REST API tests (`tests/api_*.rs`): error assertions, raw requests,
//! signed tokens, and the registry, repo and unit every resource test starts from.

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::fixtures::FirmwareRepo;
use super::{git, TestInstance};

/// 2100-01-01: an `exp` that never passes during a test run.
pub const FAR_FUTURE: i64 = 4_102_444_800;

pub type Answer = (StatusCode, Value);

/// A domain error: `status`, and a `detail` string `"<status>: <code>: ..."` containing `needle`.
#[track_caller]
pub fn assert_err(got: &Answer, status: u16, code: u16, needle: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    let detail = got.1["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("detail is not a string: {}", got.1));
    let prefix = format!("{status}: {code}: ");
    assert!(
        detail.starts_with(&prefix),
        "{detail:?} does not start with {prefix:?}"
    );
    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
}

/// A request that could not be parsed: 422 with a FastAPI-like `detail` list located at `loc0`
/// (`body`, `query` or `path`).
#[track_caller]
pub fn assert_field_error(got: &Answer, loc0: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    let list = got.1["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is not a list: {}", got.1));
    assert!(!list.is_empty(), "{}", got.1);
    assert_eq!(list[0]["loc"][0], loc0, "{}", got.1);
    assert!(list[0]["msg"].is_string(), "{}", got.1);
}

/// Sends `body` as is (for malformed JSON).
pub async fn send_text(
    inst: &TestInstance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let mut req = inst
        .http
        .request(method.parse().unwrap(), inst.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

/// The values of `field` in the list `items` of a list answer.
pub fn column(list: &Value, items: &str, field: &str) -> Vec<String> {
    list[items]
        .as_array()
        .unwrap_or_else(|| panic!("no {items} in {list}"))
        .iter()
        .map(|i| s(&i[field]).to_string())
        .collect()
}

/// A JWT with arbitrary claims, HS256-signed with `key`.
pub fn sign_claims(key: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64URL.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

pub async fn create_registry(inst: &TestInstance, token: &str, body: Value) -> Answer {
    inst.post("/repository_registry", Some(token), body).await
}

/// A public registry of `url` that synced; returns its uuid.
pub async fn public_registry(inst: &TestInstance, token: &str, url: &str) -> String {
    let got = create_registry(
        inst,
        token,
        json!({"platform": "Gitlab", "repository_url": url, "is_public_repository": true, "credentials": null}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert_eq!(got.1["sync_status"], "Updated", "{}", got.1);
    s(&got.1["uuid"]).to_string()
}

pub async fn create_repo(
    inst: &TestInstance,
    token: &str,
    registry: &str,
    name: &str,
    visibility: &str,
) -> Answer {
    inst.post(
        "/repos",
        Some(token),
        json!({"repository_registry_uuid": registry, "default_branch": "main", "visibility_level": visibility, "name": name, "is_compilable_repo": false}),
    )
    .await
}

/// A repo that was created; returns its uuid.
pub async fn repo(
    inst: &TestInstance,
    token: &str,
    registry: &str,
    name: &str,
    vis: &str,
) -> String {
    let got = create_repo(inst, token, registry, name, vis).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    s(&got.1["uuid"]).to_string()
}

/// An auto-updating unit of `repo`; returns its uuid.
pub async fn unit(inst: &TestInstance, token: &str, repo: &str, name: &str, vis: &str) -> String {
    let (st, v) = inst
        .post(
            "/units",
            Some(token),
            json!({"repo_uuid": repo, "visibility_level": vis, "name": name, "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s(&v["uuid"]).to_string()
}

/// The commit ids of `rev` in the fixture's work tree, newest first.
pub fn history(fw: &FirmwareRepo, rev: &str) -> Vec<String> {
    git(&fw.work, &["log", "--format=%H", rev])
        .lines()
        .map(str::to_string)
        .collect()
}
