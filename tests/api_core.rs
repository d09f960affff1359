//! The core REST API over HTTP: users, tokens, repository registries, repos, permissions and
//! the answers to malformed requests (API.md §0-§5). Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use pepeunit::token::TokenKey;
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{git, Backend, TestInstance};

/// 2100-01-01: an `exp` that never passes during a test run.
const FAR_FUTURE: i64 = 4_102_444_800;

type Answer = (StatusCode, Value);

/// A domain error: `status`, and a `detail` string `"<status>: <code>: ..."` containing `needle`.
#[track_caller]
fn assert_err(got: &Answer, status: u16, code: u16, needle: &str) {
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
fn assert_field_error(got: &Answer, loc0: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    let list = got.1["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is not a list: {}", got.1));
    assert!(!list.is_empty(), "{}", got.1);
    assert_eq!(list[0]["loc"][0], loc0, "{}", got.1);
    assert!(list[0]["msg"].is_string(), "{}", got.1);
}

/// Sends `body` as is (for malformed JSON).
async fn send_text(
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

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

/// The values of `field` in the list `items` of a list answer.
fn column(list: &Value, items: &str, field: &str) -> Vec<String> {
    list[items]
        .as_array()
        .unwrap_or_else(|| panic!("no {items} in {list}"))
        .iter()
        .map(|i| s(&i[field]).to_string())
        .collect()
}

/// A JWT with arbitrary claims, HS256-signed with `key`.
fn sign_claims(key: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64URL.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

async fn create_registry(inst: &TestInstance, token: &str, body: Value) -> Answer {
    inst.post("/repository_registry", Some(token), body).await
}

/// A public registry of `url` that synced; returns its uuid.
async fn public_registry(inst: &TestInstance, token: &str, url: &str) -> String {
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

async fn create_repo(
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
async fn repo(inst: &TestInstance, token: &str, registry: &str, name: &str, vis: &str) -> String {
    let got = create_repo(inst, token, registry, name, vis).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    s(&got.1["uuid"]).to_string()
}

/// An auto-updating unit of `repo`; returns its uuid.
async fn unit(inst: &TestInstance, token: &str, repo: &str, name: &str, vis: &str) -> String {
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
fn history(fw: &FirmwareRepo, rev: &str) -> Vec<String> {
    git(&fw.work, &["log", "--format=%H", rev])
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// users

async fn users_register_first_admin_then_user(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (st, first) = inst
        .post(
            "/users",
            None,
            json!({"login": "first", "password": "password-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    assert_eq!(first["role"], "Admin");
    assert_eq!(first["status"], "Unverified");
    assert_eq!(first["login"], "first");
    assert!(Uuid::parse_str(s(&first["uuid"])).is_ok());
    assert!(Uuid::parse_str(s(&first["grafana_org_name"])).is_ok());
    assert!(first["grafana_org_id"].is_null());
    assert!(first["create_datetime"].is_string());
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        7,
        "UserRead has exactly its 7 fields, no secrets: {keys:?}"
    );

    let (st, second) = inst
        .post(
            "/users",
            None,
            json!({"login": "second", "password": "password-2"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{second}");
    assert_eq!(second["role"], "User");
    assert_eq!(second["status"], "Unverified");
    inst.stop().await;
}

async fn users_register_rejects_bad_input(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    inst.user("taken").await;
    let register = |login: String, password: String| {
        let inst = &inst;
        async move {
            inst.post(
                "/users",
                None,
                json!({"login": login, "password": password}),
            )
            .await
        }
    };
    assert_err(
        &register("taken".into(), "password-1".into()).await,
        422,
        3,
        "Login is not unique",
    );
    for login in [
        "abc".to_string(),
        "a".repeat(21),
        "with space".into(),
        "юникод1".into(),
        "".into(),
        "bad/slash".into(),
    ] {
        assert_err(
            &register(login.clone(), "password-1".into()).await,
            422,
            3,
            "Login is not correct",
        );
    }
    for password in [
        "1234567".to_string(),
        "пароль-123".into(),
        "p".repeat(101),
        "with space 1".into(),
    ] {
        assert_err(
            &register("fresh".into(), password).await,
            422,
            3,
            "Password is not correct",
        );
    }
    // the bounds themselves are accepted
    let (st, v) = register("abcd".into(), "p".repeat(100)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = register("a".repeat(20), "12345678".into()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    inst.stop().await;
}

async fn users_logged_in_caller_cannot_register(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("member").await;
    let got = inst
        .post(
            "/users",
            Some(&token),
            json!({"login": "another", "password": "password-1"}),
        )
        .await;
    assert_err(&got, 403, 1, "AgentUser access not allowed");
    // nor log in again while holding a token
    let got = inst
        .post(
            "/users/auth",
            Some(&token),
            json!({"credentials": "member", "password": "password-1"}),
        )
        .await;
    assert_err(&got, 403, 1, "AgentUser access not allowed");
    inst.stop().await;
}

async fn users_auth(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (uuid, token) = inst.user("member").await;
    let claims: Value =
        serde_json::from_slice(&B64URL.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["uuid"], uuid.as_str());
    assert_eq!(claims["type"], "User");
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    let got = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "member", "password": "password-2"}),
        )
        .await;
    assert_err(&got, 403, 1, "Password hash mismatched");
    let got = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "nobody", "password": "password-1"}),
        )
        .await;
    assert_err(&got, 404, 2, "The object does not exist");
    // a missing field is a parse error
    let got = inst
        .post("/users/auth", None, json!({"credentials": "member"}))
        .await;
    assert_field_error(&got, "body");
    inst.stop().await;
}

async fn users_get_by_uuid(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (admin, _) = inst.user("admin").await;
    let (_, token) = inst.user("member").await;
    let (st, v) = inst.get(&format!("/users/{admin}"), Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["login"], "admin");
    assert_eq!(v["role"], "Admin");
    let got = inst.get(&format!("/users/{admin}"), None).await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    let got = inst
        .get(&format!("/users/{}", Uuid::new_v4()), Some(&token))
        .await;
    assert_err(&got, 404, 2, "The object does not exist");
    inst.stop().await;
}

async fn users_patch_changes_the_caller(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (admin, _) = inst.user("admin").await;
    let (me, token) = inst.user("member").await;
    // the path uuid is ignored: the caller is updated
    let (st, v) = inst
        .patch(
            &format!("/users/{admin}"),
            Some(&token),
            json!({"login": "renamed", "password": "new-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["uuid"], me.as_str());
    assert_eq!(v["login"], "renamed");
    let (_, a) = inst.get(&format!("/users/{admin}"), Some(&token)).await;
    assert_eq!(a["login"], "admin");

    let auth = |login: &'static str, password: &'static str| {
        let inst = &inst;
        async move {
            inst.post(
                "/users/auth",
                None,
                json!({"credentials": login, "password": password}),
            )
            .await
        }
    };
    assert_err(
        &auth("member", "password-1").await,
        404,
        2,
        "does not exist",
    );
    assert_err(
        &auth("renamed", "password-1").await,
        403,
        1,
        "Password hash mismatched",
    );
    let (st, v) = auth("renamed", "new-password").await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // empty strings and missing fields keep the values
    let (st, v) = inst
        .patch(
            &format!("/users/{me}"),
            Some(&token),
            json!({"login": "", "password": ""}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["login"], "renamed");
    let (st, _) = auth("renamed", "new-password").await;
    assert_eq!(st, StatusCode::OK);

    let got = inst
        .patch(
            &format!("/users/{me}"),
            Some(&token),
            json!({"login": "no spaces allowed"}),
        )
        .await;
    assert_err(&got, 422, 3, "Login is not correct");
    let got = inst
        .patch(
            &format!("/users/{me}"),
            Some(&token),
            json!({"password": "short"}),
        )
        .await;
    assert_err(&got, 422, 3, "Password is not correct");
    let got = inst
        .patch(
            &format!("/users/{me}"),
            Some(&token),
            json!({"login": "admin"}),
        )
        .await;
    assert_err(&got, 422, 3, "Login is not unique");
    // keeping one's own login is not a conflict
    let (st, v) = inst
        .patch(
            &format!("/users/{me}"),
            Some(&token),
            json!({"login": "renamed"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = inst
        .patch(&format!("/users/{me}"), None, json!({"login": "botname"}))
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    inst.stop().await;
}

async fn users_block_and_unblock(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, admin) = inst.user("admin").await;
    let (member, member_token) = inst.user("member").await;
    let (_, other_token) = inst.user("other").await;

    let got = inst
        .call(
            "PATCH",
            &format!("/users/block/{member}"),
            Some(&other_token),
            None,
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);

    let (st, v) = inst
        .call(
            "PATCH",
            &format!("/users/block/{member}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(v.is_null());
    let got = inst.get("/users", Some(&member_token)).await;
    assert_err(&got, 403, 1, "Agent is blocked or not found");
    let got = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "member", "password": "password-1"}),
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let (_, v) = inst.get(&format!("/users/{member}"), Some(&admin)).await;
    assert_eq!(v["status"], "Blocked");

    let got = inst
        .call(
            "PATCH",
            &format!("/users/unblock/{member}"),
            Some(&other_token),
            None,
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let (st, v) = inst
        .call(
            "PATCH",
            &format!("/users/unblock/{member}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = inst
        .get(&format!("/users/{member}"), Some(&member_token))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "Unverified");

    let got = inst
        .call(
            "PATCH",
            &format!("/users/block/{}", Uuid::new_v4()),
            Some(&admin),
            None,
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    inst.stop().await;
}

async fn users_list_filters(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (admin, token) = inst.user("admin_0").await;
    let (a1, _) = inst.user("user_a1").await;
    let (b2, _) = inst.user("user_b2").await;
    inst.user("other_c3").await;

    let list = |query: String| {
        let inst = &inst;
        let token = &token;
        async move {
            let got = inst.get(&format!("/users{query}"), Some(token)).await;
            assert_eq!(got.0, StatusCode::OK, "{query}: {}", got.1);
            got.1
        }
    };
    let all = list(String::new()).await;
    assert_eq!(all["count"], 4);
    // newest first by default
    assert_eq!(
        column(&all, "users", "login"),
        ["other_c3", "user_b2", "user_a1", "admin_0"]
    );
    let asc = list("?order_by_create_date=asc".into()).await;
    assert_eq!(column(&asc, "users", "login")[0], "admin_0");

    let v = list("?search_string=USER_".into()).await;
    assert_eq!(v["count"], 2);
    let v = list("?search_string=user%20a1".into()).await;
    assert_eq!(column(&v, "users", "login"), ["user_a1"]);
    let v = list("?role=Admin".into()).await;
    assert_eq!(column(&v, "users", "uuid"), [admin.as_str()]);
    let v = list("?role=Admin&role=User".into()).await;
    assert_eq!(v["count"], 4);
    let v = list("?status=Blocked".into()).await;
    assert_eq!(v["count"], 0);
    let v = list(format!("?uuids={a1}&uuids={b2}")).await;
    let mut got = column(&v, "users", "uuid");
    got.sort();
    let mut want = vec![a1.clone(), b2.clone()];
    want.sort();
    assert_eq!(got, want);
    let v = list(format!("?uuids={a1}")).await;
    assert_eq!(v["count"], 1);

    let v = list("?order_by_create_date=asc&offset=1&limit=2".into()).await;
    assert_eq!(v["count"], 4, "count is the total before paging");
    assert_eq!(column(&v, "users", "login"), ["user_a1", "user_b2"]);
    let v = list("?limit=0".into()).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 4, "limit 0 = all");

    let got = inst.get("/users?limit=-1", Some(&token)).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert_eq!(got.1, json!({"detail": "limit must be >= 0"}));
    let got = inst.get("/users?offset=-1", Some(&token)).await;
    assert_eq!(got.1, json!({"detail": "offset must be >= 0"}));
    assert_field_error(&inst.get("/users?limit=ten", Some(&token)).await, "query");
    assert_field_error(&inst.get("/users?role=admin", Some(&token)).await, "query");
    assert_field_error(
        &inst.get("/users?uuids=not-a-uuid", Some(&token)).await,
        "query",
    );
    let got = inst.get("/users", None).await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    inst.stop().await;
}

async fn users_verification_link_is_disabled(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("member").await;
    for path in [
        "/users/generate_verification_link/",
        "/users/generate_verification_link",
    ] {
        let got = inst.get(path, Some(&token)).await;
        assert_err(
            &got,
            405,
            15,
            "Feature Flag Error: This feature has been disabled by the instance Owner",
        );
    }
    let got = inst.get("/users/generate_verification_link/", None).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    inst.stop().await;
}

// ---------------------------------------------------------------------------------------------
// tokens

async fn tokens_forged_or_expired_are_refused(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (uuid, token) = inst.user("member").await;
    let user = Uuid::parse_str(&uuid).unwrap();
    let ours = TokenKey::new(&inst.config.secret_key);
    let now = chrono::Utc::now().timestamp();
    let payload = token.split('.').nth(1).unwrap();
    let none_header = B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let original_sig = token.split('.').nth(2).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "garbage".into(), "Token is invalid"),
        ("three dots", "a.b.c".into(), "Token is invalid"),
        (
            "Bearer prefix",
            format!("Bearer {token}"),
            "Token is invalid",
        ),
        (
            "other key",
            TokenKey::new("other-secret-key-123").user_token(user, FAR_FUTURE),
            "Token is invalid",
        ),
        ("expired", ours.user_token(user, now - 60), "Token expired"),
        (
            "alg none without signature",
            format!("{none_header}.{payload}."),
            "Token is invalid",
        ),
        (
            "alg none with the original signature",
            format!("{none_header}.{payload}.{original_sig}"),
            "Token is invalid",
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{original_sig}",
                token.split('.').next().unwrap(),
                B64URL.encode(
                    json!({"uuid": Uuid::new_v4().to_string(), "type": "User", "exp": FAR_FUTURE})
                        .to_string()
                )
            ),
            "Token is invalid",
        ),
        (
            "unknown user",
            ours.user_token(Uuid::new_v4(), FAR_FUTURE),
            "User not found",
        ),
        (
            "unknown unit",
            ours.unit_token(Uuid::new_v4()),
            "Unit not found",
        ),
        (
            "unknown agent type",
            sign_claims(
                &inst.config.secret_key,
                &json!({"uuid": uuid, "type": "Robot", "exp": FAR_FUTURE}),
            ),
            "Invalid agent type",
        ),
        (
            "backend token of another domain",
            ours.backend_token("elsewhere.example.com"),
            "Token is invalid",
        ),
    ];
    for (what, bad, message) in cases {
        let got = inst.get("/users", Some(&bad)).await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "{what}: {}", got.1);
        assert_eq!(
            got.1["detail"],
            format!("403: 1: No Access: {message}"),
            "{what}"
        );
    }
    // a fresh token of ours for the same user works
    let (st, v) = inst
        .get("/users", Some(&ours.user_token(user, FAR_FUTURE)))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    inst.stop().await;
}

async fn tokens_of_deleted_units_are_refused(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Private").await;
    let uuid = s(&unit["uuid"]);
    let unit_token =
        TokenKey::new(&inst.config.secret_key).unit_token(Uuid::parse_str(uuid).unwrap());
    let (st, v) = inst.get(&format!("/units/{uuid}"), Some(&unit_token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = inst.delete(&format!("/units/{uuid}"), Some(&token)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let got = inst.get("/metrics", Some(&unit_token)).await;
    assert_err(&got, 403, 1, "Unit not found");
    inst.stop().await;
}

// ---------------------------------------------------------------------------------------------
// repository_registry

async fn registry_create_and_read(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let (st, reg) = create_registry(
        &inst,
        &token,
        json!({"platform": "Github", "repository_url": firmware.url(), "is_public_repository": true, "credentials": null}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{reg}");
    assert_eq!(reg["platform"], "Github");
    assert_eq!(reg["repository_url"], firmware.url().as_str());
    assert_eq!(reg["is_public_repository"], true);
    assert_eq!(reg["sync_status"], "Updated");
    assert!(reg["sync_error"].is_null());
    assert!(reg["sync_last_datetime"].is_string());
    assert!(reg["local_repository_size"].as_i64().unwrap() > 0);
    assert_eq!(reg["creator_uuid"], me.as_str());
    assert!(reg["releases_data"].is_null());
    // API.md: upstream lists the clone's remote refs sorted and drops the first one (normally
    // `HEAD`). We deliberately list every branch of the mirror, sorted, and never drop one: for
    // an ordinary remote both give the same answer, and we never lose a real branch.
    assert_eq!(reg["branches"], json!(["dev", "main"]));
    let uuid = s(&reg["uuid"]);

    // readable by anyone when public
    for caller in [None, Some(token.as_str())] {
        let (st, v) = inst
            .get(&format!("/repository_registry/{uuid}"), caller)
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["uuid"], uuid);
        assert_eq!(v["branches"], json!(["dev", "main"]));
    }
    let got = inst
        .get(
            &format!("/repository_registry/{}", Uuid::new_v4()),
            Some(&token),
        )
        .await;
    assert_err(&got, 404, 2, "The object does not exist");
    let (st, v) = inst
        .get(&format!("/repository_registry?creator_uuid={me}"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 1);
    assert_eq!(
        v["repositories_registry"][0]["branches"],
        json!(["dev", "main"])
    );
    inst.stop().await;
}

async fn registry_rejects_bad_urls(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    for url in [
        "ftp://example.com/x.git".to_string(),
        "file:///tmp/x.git".into(),
        "http://example.com/x".into(),
        "not a url".into(),
        "https://user:secret-pat@example.com/x.git".into(),
        "ssh://git@example.com/x.git".into(),
        "git@example.com:x/y.git".into(),
        "".into(),
        "http://exa mple.com/x.git".into(),
    ] {
        let got = create_registry(
            &inst,
            &token,
            json!({"platform": "Gitlab", "repository_url": url, "is_public_repository": true, "credentials": null}),
        )
        .await;
        assert_err(&got, 422, 13, "Repository Registry Validation Error");
        assert!(
            !got.1["detail"].to_string().contains("secret-pat"),
            "the error echoes credentials: {}",
            got.1
        );
    }
    let (_, v) = inst.get("/repository_registry", Some(&token)).await;
    assert_eq!(v["count"], 0, "nothing was stored: {v}");

    public_registry(&inst, &token, &firmware.url()).await;
    let got = create_registry(
        &inst,
        &token,
        json!({"platform": "Gitlab", "repository_url": firmware.url(), "is_public_repository": true, "credentials": null}),
    )
    .await;
    assert_err(&got, 422, 13, "not unique");

    // private needs credentials
    let got = create_registry(
        &inst,
        &token,
        json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/private.git", "is_public_repository": false, "credentials": null}),
    )
    .await;
    assert_err(&got, 422, 13, "Credentials is not valid");
    let got = create_registry(
        &inst,
        &token,
        json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/private.git", "is_public_repository": false, "credentials": {"username": "", "pat_token": ""}}),
    )
    .await;
    assert_err(&got, 422, 13, "Credentials is not valid");
    // Bot cannot create
    let got = inst
        .post(
            "/repository_registry",
            None,
            json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/other.git", "is_public_repository": true, "credentials": null}),
        )
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    inst.stop().await;
}

async fn registry_unreachable_url_is_recorded(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("owner").await;
    let (st, reg) = create_registry(
        &inst,
        &token,
        json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/x.git", "is_public_repository": true, "credentials": null}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{reg}");
    assert_eq!(reg["sync_status"], "Error");
    let error = s(&reg["sync_error"]);
    assert!(error.starts_with("422: 5: "), "{error}");
    assert_eq!(reg["branches"], json!([]));
    assert_eq!(reg["local_repository_size"], 0);
    // no branch to build a repo from
    let got = create_repo(&inst, &token, s(&reg["uuid"]), "on_error", "Public").await;
    assert_err(&got, 422, 5, "");
    inst.stop().await;
}

async fn registry_private_visibility_and_credentials(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let public = public_registry(&inst, &token, &firmware.url()).await;
    let (st, private) = create_registry(
        &inst,
        &token,
        json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/private.git", "is_public_repository": false, "credentials": {"username": "me", "pat_token": "pat-123"}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{private}");
    assert_eq!(private["is_public_repository"], false);
    assert_eq!(private["sync_status"], "Error");
    let private = s(&private["uuid"]).to_string();

    let got = inst
        .get(&format!("/repository_registry/{private}"), None)
        .await;
    assert_err(&got, 403, 1, "Private RepositoryRegistry is not allowed");
    let (st, _) = inst
        .get(&format!("/repository_registry/{private}"), Some(&other))
        .await;
    assert_eq!(st, StatusCode::OK);

    let (_, v) = inst.get("/repository_registry", None).await;
    assert_eq!(
        column(&v, "repositories_registry", "uuid"),
        [public.as_str()]
    );
    assert_eq!(v["count"], 1);
    // a Bot asking for private ones still gets public ones only
    let (_, v) = inst
        .get("/repository_registry?is_public_repository=false", None)
        .await;
    assert_eq!(v["count"], 1);
    assert_eq!(
        column(&v, "repositories_registry", "uuid"),
        [public.as_str()]
    );
    let (_, v) = inst.get("/repository_registry", Some(&token)).await;
    assert_eq!(v["count"], 2);
    let (_, v) = inst
        .get(
            "/repository_registry?is_public_repository=false",
            Some(&token),
        )
        .await;
    assert_eq!(
        column(&v, "repositories_registry", "uuid"),
        [private.as_str()]
    );
    let (_, v) = inst
        .get(
            "/repository_registry?search_string=PRIVATE.git",
            Some(&token),
        )
        .await;
    assert_eq!(
        column(&v, "repositories_registry", "uuid"),
        [private.as_str()]
    );

    // credentials: public registries have none
    let got = inst
        .get(
            &format!("/repository_registry/get_credentials/{public}"),
            Some(&token),
        )
        .await;
    assert_err(&got, 422, 13, "This Repository is Public");
    let got = inst
        .patch(
            &format!("/repository_registry/set_credentials/{public}"),
            Some(&token),
            json!({"username": "me", "pat_token": "pat"}),
        )
        .await;
    assert_err(&got, 422, 13, "This Repository is Public");
    // each user sees only their own credentials
    let (st, v) = inst
        .get(
            &format!("/repository_registry/get_credentials/{private}"),
            Some(&token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["credentials"],
        json!({"username": "me", "pat_token": "pat-123"})
    );
    assert_eq!(v["status"], "Error", "the remote is unreachable: {v}");
    let (st, v) = inst
        .get(
            &format!("/repository_registry/get_credentials/{private}"),
            Some(&other),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.is_null(), "{v}");
    // without valid credentials the registry cannot be used
    let got = inst
        .call(
            "PATCH",
            &format!("/repository_registry/update_local_repository/{private}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = create_repo(&inst, &token, &private, "private_repo", "Private").await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);

    // credentials are stored per user
    let set = format!("/repository_registry/set_credentials/{private}");
    let got = inst
        .patch(
            &set,
            Some(&other),
            json!({"username": "", "pat_token": "x"}),
        )
        .await;
    assert_err(&got, 422, 13, "Credentials is not valid");
    let (st, v) = inst
        .patch(
            &set,
            Some(&other),
            json!({"username": "them", "pat_token": "pat-456"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let get_own = format!("/repository_registry/get_credentials/{private}");
    let (_, v) = inst.get(&get_own, Some(&other)).await;
    assert_eq!(
        v["credentials"],
        json!({"username": "them", "pat_token": "pat-456"})
    );
    let (_, v) = inst.get(&get_own, Some(&token)).await;
    assert_eq!(v["credentials"]["username"], "me");
    let got = inst
        .patch(&set, None, json!({"username": "bot", "pat_token": "pat"}))
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");

    // a registry with stored credentials can be deleted
    let (st, v) = inst
        .delete(&format!("/repository_registry/{private}"), Some(&token))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = inst.get("/repository_registry", Some(&token)).await;
    assert_eq!(
        column(&v, "repositories_registry", "uuid"),
        [public.as_str()]
    );
    inst.stop().await;
}

async fn registry_branch_commits(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let commits = |query: &str| {
        let inst = &inst;
        let token = &token;
        let path = format!("/repository_registry/branch_commits/{reg}?{query}");
        async move { inst.get(&path, Some(token)).await }
    };
    let main = history(&firmware, "main");
    let dev = history(&firmware, "dev");
    assert_eq!(main.len(), 2);
    assert_eq!(dev.len(), 3);

    let (st, v) = commits("repo_branch=main").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([
            {"commit": main[0], "summary": "second version", "tag": "v0.2.0"},
            {"commit": main[1], "summary": "first version", "tag": "v0.1.0"},
        ])
    );
    let (_, v) = commits("repo_branch=dev").await;
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| s(&c["commit"]))
        .collect();
    assert_eq!(got, dev);
    assert!(v[0]["tag"].is_null());
    assert_eq!(v[0]["summary"], "dev work");

    let (_, v) = commits("repo_branch=dev&only_tag=true").await;
    let tags: Vec<&str> = v.as_array().unwrap().iter().map(|c| s(&c["tag"])).collect();
    assert_eq!(tags, ["v0.2.0", "v0.1.0"]);
    let (_, v) = commits("repo_branch=dev&limit=1&offset=1").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["commit"], dev[1].as_str());
    let (_, v) = commits("repo_branch=dev&only_tag=true&limit=1&offset=1").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["tag"], "v0.1.0");
    let (_, v) = commits("repo_branch=dev&offset=5").await;
    assert_eq!(v, json!([]));

    assert_field_error(&commits("").await, "query");
    assert_field_error(&commits("repo_branch=main&only_tag=maybe").await, "query");
    assert_err(&commits("repo_branch=nope").await, 422, 5, "nope");
    assert_err(
        &commits("repo_branch=--upload-pack=touch%20x").await,
        422,
        5,
        "",
    );
    let got = commits("repo_branch=main&limit=501").await;
    assert_eq!(got.1, json!({"detail": "limit must be <= 500"}));
    let got = commits("repo_branch=main&limit=-1").await;
    assert_eq!(got.1, json!({"detail": "limit must be >= 0"}));
    let got = inst
        .get(
            &format!("/repository_registry/branch_commits/{reg}?repo_branch=main"),
            None,
        )
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    let got = inst
        .get(
            &format!(
                "/repository_registry/branch_commits/{}?repo_branch=main",
                Uuid::new_v4()
            ),
            Some(&token),
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    inst.stop().await;
}

async fn registry_update_local_repository(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let newest = firmware.publish("main.py", "print('v3')\n", Some("v0.3.0"));

    let path = format!("/repository_registry/update_local_repository/{reg}");
    let got = inst.call("PATCH", &path, None, None).await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    // any user may refresh a public registry
    let (st, v) = inst.call("PATCH", &path, Some(&other), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(v.is_null());

    let (st, v) = inst
        .get(
            &format!("/repository_registry/branch_commits/{reg}?repo_branch=main&limit=1"),
            Some(&token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([{"commit": newest, "summary": "change main.py", "tag": "v0.3.0"}])
    );
    let (_, v) = inst
        .get(&format!("/repository_registry/{reg}"), Some(&token))
        .await;
    assert_eq!(v["sync_status"], "Updated");
    assert!(v["sync_error"].is_null());
    let backend_token = TokenKey::new(&inst.config.secret_key).backend_token(&inst.domain);
    let sync = "/repository_registry/backend_sync_registry";
    let (st, v) = inst.call("PATCH", sync, Some(&backend_token), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let got = inst.call("PATCH", sync, Some(&token), None).await;
    assert_err(&got, 403, 1, "AgentUser access not allowed");
    let got = inst
        .call(
            "PATCH",
            &format!(
                "/repository_registry/update_local_repository/{}",
                Uuid::new_v4()
            ),
            Some(&token),
            None,
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    inst.stop().await;
}

async fn registry_delete_rules(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let repo_uuid = repo(&inst, &token, &reg, "the_repo", "Public").await;
    let path = format!("/repository_registry/{reg}");

    let got = inst.delete(&path, Some(&other)).await;
    assert_err(&got, 403, 1, "");
    let got = inst.delete(&path, None).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = inst.delete(&path, Some(&token)).await;
    assert_err(
        &got,
        422,
        2,
        "The array was expected to be empty, but it turned out to be full",
    );

    let (st, _) = inst
        .delete(&format!("/repos/{repo_uuid}"), Some(&token))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = inst.delete(&path, Some(&token)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(v.is_null());
    let got = inst.get(&path, Some(&token)).await;
    assert_err(&got, 404, 2, "The object does not exist");
    let got = inst.delete(&path, Some(&token)).await;
    assert_err(&got, 404, 2, "The object does not exist");
    let git = &inst.running.as_ref().unwrap().instance.git;
    assert!(
        !git.exists(Uuid::parse_str(&reg).unwrap()),
        "mirror removed"
    );
    // the URL is free again
    public_registry(&inst, &token, &firmware.url()).await;
    inst.stop().await;
}

// ---------------------------------------------------------------------------------------------
// repos

async fn repos_create_rules(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;

    let (st, r) = create_repo(&inst, &token, &reg, "fan_repo", "Internal").await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(r["name"], "fan_repo");
    assert_eq!(r["visibility_level"], "Internal");
    assert_eq!(r["default_branch"], "main");
    assert_eq!(r["is_auto_update_repo"], true);
    assert_eq!(r["is_only_tag_update"], true);
    assert_eq!(r["is_compilable_repo"], false);
    assert!(r["default_commit"].is_null());
    assert_eq!(r["creator_uuid"], me.as_str());
    assert_eq!(r["repository_registry_uuid"], reg.as_str());
    let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "create_datetime",
            "creator_uuid",
            "default_branch",
            "default_commit",
            "is_auto_update_repo",
            "is_compilable_repo",
            "is_only_tag_update",
            "last_update_datetime",
            "name",
            "repository_registry_uuid",
            "uuid",
            "visibility_level"
        ]
    );

    for name in [
        "abc".to_string(),
        "a".repeat(21),
        "bad name".into(),
        "имя_репо".into(),
    ] {
        let got = create_repo(&inst, &token, &reg, &name, "Public").await;
        assert_err(&got, 422, 6, "Repo Validation Error");
    }
    let got = create_repo(&inst, &token, &reg, "fan_repo", "Public").await;
    assert_err(&got, 422, 6, "not unique");
    let got = inst
        .post(
            "/repos",
            Some(&token),
            json!({"repository_registry_uuid": reg, "default_branch": "nope", "visibility_level": "Public", "name": "other_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_err(&got, 422, 5, "Branch nope not found");
    let got = create_repo(
        &inst,
        &token,
        &Uuid::new_v4().to_string(),
        "lost_repo",
        "Public",
    )
    .await;
    assert_err(&got, 404, 2, "does not exist");
    let got = inst
        .post(
            "/repos",
            None,
            json!({"repository_registry_uuid": reg, "default_branch": "main", "visibility_level": "Public", "name": "bot_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    // a missing field is a parse error, not a default
    let got = inst
        .post(
            "/repos",
            Some(&token),
            json!({"repository_registry_uuid": reg, "default_branch": "main", "name": "short_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_field_error(&got, "body");
    inst.stop().await;
}

async fn repos_get_visibility(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let public = repo(&inst, &token, &reg, "pub_repo", "Public").await;
    let internal = repo(&inst, &token, &reg, "int_repo", "Internal").await;
    let private = repo(&inst, &token, &reg, "priv_repo", "Private").await;

    let get = |uuid: &str, caller: Option<&str>| {
        let inst = &inst;
        let path = format!("/repos/{uuid}");
        let caller = caller.map(str::to_string);
        async move { inst.get(&path, caller.as_deref()).await }
    };
    for uuid in [&public, &internal, &private] {
        let (st, v) = get(uuid, Some(&token)).await;
        assert_eq!(st, StatusCode::OK, "the creator sees {v}");
    }
    assert_eq!(get(&public, Some(&other)).await.0, StatusCode::OK);
    assert_eq!(get(&internal, Some(&other)).await.0, StatusCode::OK);
    assert_err(
        &get(&private, Some(&other)).await,
        403,
        1,
        "Private visibility level is not allowed",
    );
    assert_eq!(get(&public, None).await.0, StatusCode::OK);
    assert_err(
        &get(&internal, None).await,
        403,
        1,
        "Internal visibility level is not allowed",
    );
    assert_err(
        &get(&private, None).await,
        403,
        1,
        "Private visibility level is not allowed",
    );
    assert_err(
        &get(&Uuid::new_v4().to_string(), None).await,
        404,
        2,
        "does not exist",
    );
    // the backend sees everything
    let backend_token = TokenKey::new(&inst.config.secret_key).backend_token(&inst.domain);
    assert_eq!(get(&private, Some(&backend_token)).await.0, StatusCode::OK);
    // the versions endpoint follows the same rule
    let got = inst.get(&format!("/repos/versions/{private}"), None).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    inst.stop().await;
}

async fn repos_list_filters(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let (other_uuid, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let public = repo(&inst, &token, &reg, "pub_repo", "Public").await;
    let internal = repo(&inst, &token, &reg, "int_repo", "Internal").await;
    let private = repo(&inst, &token, &reg, "priv_repo", "Private").await;
    let others = repo(&inst, &other, &reg, "others_repo", "Public").await;

    let list = |query: &str, caller: Option<&str>| {
        let inst = &inst;
        let path = format!("/repos{query}");
        let caller = caller.map(str::to_string);
        async move {
            let (st, v) = inst.get(&path, caller.as_deref()).await;
            assert_eq!(st, StatusCode::OK, "{path}: {v}");
            let mut names = column(&v, "repos", "uuid");
            names.sort();
            assert_eq!(v["count"].as_u64().unwrap() as usize, names.len(), "{v}");
            names
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list("", Some(&token)).await,
        sorted(vec![
            public.clone(),
            internal.clone(),
            private.clone(),
            others.clone()
        ])
    );
    assert_eq!(
        list("", Some(&other)).await,
        sorted(vec![public.clone(), internal.clone(), others.clone()])
    );
    assert_eq!(
        list("", None).await,
        sorted(vec![public.clone(), others.clone()])
    );
    assert_eq!(
        list(
            "?visibility_level=Internal&visibility_level=Private",
            Some(&token)
        )
        .await,
        sorted(vec![internal.clone(), private.clone()])
    );
    assert_eq!(
        list("?visibility_level=Private", Some(&other)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list("?visibility_level=Internal", None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list("?search_string=PRIV%20repo", Some(&token)).await,
        vec![private.as_str()]
    );
    assert_eq!(
        list(&format!("?creator_uuid={other_uuid}"), Some(&token)).await,
        vec![others.as_str()]
    );
    assert_eq!(
        list(
            &format!("?creators_uuids={me}&visibility_level=Public"),
            Some(&token)
        )
        .await,
        vec![public.as_str()]
    );
    assert_eq!(
        list(&format!("?uuids={public}&uuids={private}"), Some(&other)).await,
        vec![public.as_str()]
    );
    assert_eq!(
        list(
            &format!("?repository_registry_uuid={reg}&is_auto_update_repo=true"),
            None
        )
        .await,
        sorted(vec![public.clone(), others.clone()])
    );
    assert_eq!(
        list("?is_auto_update_repo=false", Some(&token)).await,
        Vec::<String>::new()
    );
    let (_, v) = inst
        .get(
            "/repos?limit=1&offset=1&order_by_create_date=asc",
            Some(&token),
        )
        .await;
    assert_eq!(v["count"], 4);
    assert_eq!(column(&v, "repos", "uuid"), [internal.as_str()]);
    assert_field_error(
        &inst
            .get("/repos?visibility_level=public", Some(&token))
            .await,
        "query",
    );
    inst.stop().await;
}

async fn repos_patch_update_modes(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let uuid = repo(&inst, &token, &reg, "fan_repo", "Public").await;
    repo(&inst, &token, &reg, "taken_repo", "Public").await;
    let path = format!("/repos/{uuid}");
    let main = history(&firmware, "main");
    let dev_only = firmware.head("dev");

    let got = inst
        .patch(&path, Some(&other), json!({"name": "stolen_repo"}))
        .await;
    assert_err(&got, 403, 1, "");
    let got = inst
        .patch(&path, Some(&token), json!({"is_auto_update_repo": false}))
        .await;
    assert_err(
        &got,
        422,
        6,
        "Repo updated manually requires branch and commit to be filled out",
    );
    let got = inst
        .patch(
            &path,
            Some(&token),
            json!({"is_auto_update_repo": false, "default_commit": dev_only}),
        )
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert!(
        got.1["detail"].as_str().unwrap().contains(&dev_only),
        "{}",
        got.1
    );
    let got = inst
        .patch(
            &path,
            Some(&token),
            json!({"is_auto_update_repo": false, "default_commit": "not-a-commit"}),
        )
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    let got = inst
        .patch(
            &path,
            Some(&token),
            json!({"is_auto_update_repo": false, "default_commit": "0123456789abcdef0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    // a commit is checked against the branch in automatic mode too
    let got = inst
        .patch(&path, Some(&token), json!({"default_commit": dev_only}))
        .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    // nothing was stored by the refused calls
    let (_, v) = inst.get(&path, Some(&token)).await;
    assert_eq!(v["is_auto_update_repo"], true);
    assert!(v["default_commit"].is_null());

    let (st, v) = inst
        .patch(
            &path,
            Some(&token),
            json!({"is_auto_update_repo": false, "default_commit": main[1][..10].to_uppercase()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["is_auto_update_repo"], false);
    // an abbreviation is stored as the full id (it becomes the devices' PU_COMMIT_VERSION)
    assert_eq!(v["default_commit"], main[1].as_str());
    assert_eq!(v["default_branch"], "main");
    let (_, v) = inst.get(&path, Some(&token)).await;
    assert_eq!(v["default_commit"], main[1].as_str());

    // switching to dev with a commit of dev works
    let (st, v) = inst
        .patch(
            &path,
            Some(&token),
            json!({"default_branch": "dev", "default_commit": dev_only}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["default_branch"], "dev");
    let got = inst
        .patch(&path, Some(&token), json!({"default_branch": "nope"}))
        .await;
    assert_err(&got, 422, 5, "nope");

    // back to automatic, every field optional
    let (st, v) = inst
        .patch(
            &path,
            Some(&token),
            json!({"is_auto_update_repo": true, "is_only_tag_update": false, "default_branch": "main", "name": "fan_repo_2", "visibility_level": "Internal"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["is_auto_update_repo"], true);
    assert_eq!(v["is_only_tag_update"], false);
    assert_eq!(v["name"], "fan_repo_2");
    assert_eq!(v["visibility_level"], "Internal");
    let got = inst
        .patch(&path, Some(&token), json!({"is_compilable_repo": true}))
        .await;
    assert_err(&got, 422, 6, "");
    let got = inst
        .patch(&path, Some(&token), json!({"name": "taken_repo"}))
        .await;
    assert_err(&got, 422, 6, "not unique");
    let got = inst.patch(&path, Some(&token), json!({"name": "x"})).await;
    assert_err(&got, 422, 6, "");
    let (st, v) = inst.patch(&path, Some(&token), json!({})).await;
    assert_eq!(st, StatusCode::OK, "an empty PATCH keeps everything: {v}");
    assert_eq!(v["name"], "fan_repo_2");
    let got = inst
        .patch(
            &format!("/repos/{}", Uuid::new_v4()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    inst.stop().await;
}

async fn repos_versions_platforms_and_delete(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let uuid = repo(&inst, &token, &reg, "fan_repo", "Public").await;

    let (st, v) = inst.get(&format!("/repos/versions/{uuid}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"unit_count": 0, "versions": []}));
    let u1 = unit(&inst, &token, &uuid, "fan_unit_1", "Public").await;
    unit(&inst, &token, &uuid, "fan_unit_2", "Private").await;
    let (_, v) = inst
        .get(&format!("/repos/versions/{uuid}"), Some(&token))
        .await;
    assert_eq!(v["unit_count"], 2, "{v}");
    let per_version: i64 = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["unit_count"].as_i64().unwrap())
        .sum();
    assert_eq!(per_version, 2, "{v}");

    // a repo cannot become stricter than its units
    let got = inst
        .patch(
            &format!("/repos/{uuid}"),
            Some(&token),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_err(
        &got,
        422,
        2,
        "The visibility level of the parent object fan_repo is lower than that of the child object fan_unit_1",
    );
    let (_, v) = inst.get(&format!("/repos/{uuid}"), None).await;
    assert_eq!(v["visibility_level"], "Public", "not stored: {v}");

    let (st, v) = inst
        .get(&format!("/repos/available_platforms/{uuid}"), Some(&token))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!([]));
    let (_, v) = inst
        .get(
            &format!("/repos/available_platforms/{uuid}?target_tag=v0.1.0"),
            Some(&token),
        )
        .await;
    assert_eq!(v, json!([]));

    let path = format!("/repos/{uuid}");
    let got = inst.delete(&path, Some(&other)).await;
    assert_err(&got, 403, 1, "");
    let got = inst.delete(&path, Some(&token)).await;
    assert_err(
        &got,
        422,
        2,
        "The array was expected to be empty, but it turned out to be full",
    );
    let (_, units) = inst
        .get(&format!("/units?repo_uuid={uuid}"), Some(&token))
        .await;
    for u in column(&units, "units", "uuid") {
        let (st, v) = inst.delete(&format!("/units/{u}"), Some(&token)).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    }
    assert!(column(&units, "units", "uuid").contains(&u1));
    let (st, v) = inst.delete(&path, Some(&token)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_err(
        &inst.get(&path, Some(&token)).await,
        404,
        2,
        "does not exist",
    );
    assert_err(
        &inst.delete(&path, Some(&token)).await,
        404,
        2,
        "does not exist",
    );
    // the creator's grant went with the repo
    let (_, v) = inst.get("/repos", Some(&token)).await;
    assert_eq!(v["count"], 0);
    inst.stop().await;
}

// ---------------------------------------------------------------------------------------------
// permission

async fn permission_grant_and_revoke(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let (friend, friend_token) = inst.user("friend").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let private = repo(&inst, &token, &reg, "priv_repo", "Private").await;
    let path = format!("/repos/{private}");
    assert_eq!(
        inst.get(&path, Some(&friend_token)).await.0,
        StatusCode::FORBIDDEN
    );

    let (st, p) = inst
        .post(
            "/permission",
            Some(&token),
            json!({"agent_uuid": friend, "agent_type": "User", "resource_uuid": private, "resource_type": "Repo"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert!(Uuid::parse_str(s(&p["uuid"])).is_ok());
    assert_eq!(p["agent_uuid"], friend.as_str());
    assert_eq!(p["agent_type"], "User");
    assert_eq!(p["resource_uuid"], private.as_str());
    assert_eq!(p["resource_type"], "Repo");
    let (st, v) = inst.get(&path, Some(&friend_token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = inst.get("/repos", Some(&friend_token)).await;
    assert_eq!(column(&v, "repos", "uuid"), [private.as_str()]);

    let agents =
        format!("/permission/get_resource_agents?resource_uuid={private}&resource_type=Repo");
    let (st, v) = inst.get(&agents, Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 2);
    let mut holders = column(&v, "permissions", "agent_uuid");
    holders.sort();
    let mut want = vec![me.clone(), friend.clone()];
    want.sort();
    assert_eq!(holders, want);
    let (_, v) = inst.get(&format!("{agents}&limit=1"), Some(&token)).await;
    assert_eq!(v["count"], 2);
    assert_eq!(v["permissions"].as_array().unwrap().len(), 1);
    let (_, v) = inst
        .get(&format!("{agents}&agent_type=Unit"), Some(&token))
        .await;
    assert_eq!(v["count"], 0);
    let got = inst.get(&format!("{agents}&limit=501"), Some(&token)).await;
    assert_eq!(got.1, json!({"detail": "limit must be <= 500"}));
    assert_field_error(
        &inst
            .get(
                &format!("/permission/get_resource_agents?resource_uuid={private}"),
                Some(&token),
            )
            .await,
        "query",
    );

    // revoking: the creator's own access stays, the grant goes
    let revoke = |agent: &str| format!("/permission/x?agent_uuid={agent}&resource_uuid={private}");
    let got = inst.delete(&revoke(&me), Some(&token)).await;
    assert_err(&got, 422, 4, "Permission Validation Error");
    let got = inst.delete(&revoke(&friend), Some(&friend_token)).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let (st, v) = inst.delete(&revoke(&friend), Some(&token)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(v.is_null());
    assert_err(
        &inst.get(&path, Some(&friend_token)).await,
        403,
        1,
        "Private visibility level is not allowed",
    );
    let (_, v) = inst.get("/repos", Some(&friend_token)).await;
    assert_eq!(v["count"], 0);
    assert_err(
        &inst.delete(&revoke(&friend), Some(&token)).await,
        404,
        2,
        "does not exist",
    );
    // the creator still sees it
    assert_eq!(inst.get(&path, Some(&token)).await.0, StatusCode::OK);
    inst.stop().await;
}

async fn permission_create_rules(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let (friend, friend_token) = inst.user("friend").await;
    let (third, _) = inst.user("third").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    let private = repo(&inst, &token, &reg, "priv_repo", "Private").await;
    let grant = |agent: &str, agent_type: &str, resource: &str, resource_type: &str| json!({"agent_uuid": agent, "agent_type": agent_type, "resource_uuid": resource, "resource_type": resource_type});

    // only the creator grants (upstream let anyone)
    let got = inst
        .post(
            "/permission",
            Some(&friend_token),
            grant(&friend, "User", &private, "Repo"),
        )
        .await;
    assert_err(&got, 403, 1, "");
    let got = inst
        .post(
            "/permission",
            None,
            grant(&friend, "User", &private, "Repo"),
        )
        .await;
    assert_err(&got, 403, 1, "AgentBot access not allowed");
    let (st, v) = inst
        .post(
            "/permission",
            Some(&token),
            grant(&friend, "User", &private, "Repo"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&friend, "User", &private, "Repo"),
        )
        .await;
    assert_err(&got, 422, 4, "Permission is exist");
    // the creator already holds one
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&me, "User", &private, "Repo"),
        )
        .await;
    assert_err(&got, 422, 4, "Permission is exist");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&third, "Repo", &private, "Repo"),
        )
        .await;
    assert_err(&got, 422, 4, "Permission Validation Error");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&third, "User", &friend, "User"),
        )
        .await;
    assert_err(&got, 422, 4, "Permission Validation Error");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&third, "User", &Uuid::new_v4().to_string(), "Repo"),
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&Uuid::new_v4().to_string(), "User", &private, "Repo"),
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    // the resource type must match the resource
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&third, "User", &private, "Unit"),
        )
        .await;
    assert_err(&got, 404, 2, "does not exist");
    let got = inst
        .post(
            "/permission",
            Some(&token),
            grant(&third, "Admin", &private, "Repo"),
        )
        .await;
    assert_field_error(&got, "body");
    // only the creator lists the agents
    let got = inst
        .get(
            &format!("/permission/get_resource_agents?resource_uuid={private}&resource_type=Repo"),
            Some(&friend_token),
        )
        .await;
    assert_err(&got, 403, 1, "");
    inst.stop().await;
}

async fn permission_structural_grants_stay(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, token) = inst.user("owner").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Private").await;
    let (repo, unit) = (s(&repo["uuid"]), s(&unit["uuid"]));
    let (_, nodes) = inst
        .get(&format!("/unit_nodes?unit_uuid={unit}"), Some(&token))
        .await;
    let node = column(&nodes, "unit_nodes", "uuid")[0].clone();

    let agents = format!("/permission/get_resource_agents?resource_uuid={unit}&resource_type=Unit");
    let (st, v) = inst.get(&agents, Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut holders = column(&v, "permissions", "agent_uuid");
    holders.sort();
    let mut want = vec![me.clone(), unit.to_string()];
    want.sort();
    assert_eq!(holders, want, "the creator and the unit itself: {v}");
    let got = inst
        .get(
            &format!("/permission/get_resource_agents?resource_uuid={me}&resource_type=User"),
            Some(&token),
        )
        .await;
    assert_err(&got, 422, 4, "Permission Validation Error");

    // the path segment is ignored; agent and resource come from the query
    let revoke = |agent: &str, resource: &str| {
        format!("/permission/ignored?agent_uuid={agent}&resource_uuid={resource}")
    };
    for (agent, resource, why) in [
        (unit, unit, "itself"),
        (unit, repo, "parent Repo"),
        (unit, node.as_str(), "own nodes"),
        (me.as_str(), unit, "creator"),
        (me.as_str(), repo, "creator"),
    ] {
        let got = inst.delete(&revoke(agent, resource), Some(&token)).await;
        assert_err(&got, 422, 4, why);
    }
    let (_, v) = inst.get(&agents, Some(&token)).await;
    assert_eq!(v["count"], 2, "nothing was revoked: {v}");
    inst.stop().await;
}

async fn duplicates_under_concurrency(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (friend, _) = inst.user("friend").await;
    let reg = public_registry(&inst, &token, &firmware.url()).await;
    // the uniqueness checks and the writes are apart (a git lookup in between): concurrent
    // requests must still get the documented error, never a generic one
    fn one_created(results: &[Answer], status: u16, code: u16, needle: &str) -> Value {
        let created: Vec<&Answer> = results
            .iter()
            .filter(|r| r.0 == StatusCode::CREATED)
            .collect();
        assert_eq!(created.len(), 1, "{results:?}");
        for r in results.iter().filter(|r| r.0 != StatusCode::CREATED) {
            assert_err(r, status, code, needle);
        }
        created[0].1.clone()
    }

    let one = || create_repo(&inst, &token, &reg, "same_name", "Private");
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    let repo = one_created(&[a, b, c, d], 422, 6, "Name is not unique");

    let body = json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/same.git", "is_public_repository": true, "credentials": null});
    let one = || create_registry(&inst, &token, body.clone());
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    one_created(&[a, b, c, d], 422, 13, "not unique");

    let grant = json!({"agent_uuid": friend, "agent_type": "User", "resource_uuid": repo["uuid"], "resource_type": "Repo"});
    let one = || inst.post("/permission", Some(&token), grant.clone());
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    one_created(&[a, b, c, d], 422, 4, "Permission is exist");
    inst.stop().await;
}

// ---------------------------------------------------------------------------------------------
// malformed requests, routing, documents

async fn bad_bodies_are_422(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (me, token) = inst.user("owner").await;
    for body in [
        "{\"login\": ",
        "not json",
        "[]",
        "",
        "{\"login\": \"abcd\", \"password\": \"password-1\"} trailing",
    ] {
        let got = send_text(&inst, "POST", "/users", None, body).await;
        assert_field_error(&got, "body");
    }
    let any = Uuid::new_v4();
    let cases: Vec<(&str, String, Option<&str>, Value)> = vec![
        // wrong enum strings (wire enums are case-sensitive)
        (
            "POST",
            "/repos".into(),
            Some(&token),
            json!({"repository_registry_uuid": any, "default_branch": "main", "visibility_level": "public", "name": "some_repo", "is_compilable_repo": false}),
        ),
        (
            "POST",
            "/repository_registry".into(),
            Some(&token),
            json!({"platform": "github", "repository_url": "http://127.0.0.1:1/x.git", "is_public_repository": true, "credentials": null}),
        ),
        (
            "PATCH",
            format!("/repos/{any}"),
            Some(&token),
            json!({"visibility_level": "PRIVATE"}),
        ),
        // wrong types
        (
            "POST",
            "/repository_registry".into(),
            Some(&token),
            json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/x.git", "is_public_repository": "yes", "credentials": null}),
        ),
        (
            "POST",
            "/users".into(),
            None,
            json!({"login": 1234, "password": "password-1"}),
        ),
        (
            "POST",
            "/permission".into(),
            Some(&token),
            json!({"agent_uuid": "not-a-uuid", "agent_type": "User", "resource_uuid": any, "resource_type": "Repo"}),
        ),
        // unknown fields
        (
            "POST",
            "/users".into(),
            None,
            json!({"login": "abcd", "password": "password-1", "role": "Admin"}),
        ),
        (
            "POST",
            "/users/auth".into(),
            None,
            json!({"credentials": "owner", "password": "password-1", "remember": true}),
        ),
        (
            "PATCH",
            format!("/users/{me}"),
            Some(&token),
            json!({"logn": "typo_name"}),
        ),
        (
            "PATCH",
            format!("/users/{me}"),
            Some(&token),
            json!({"role": "Admin"}),
        ),
        (
            "POST",
            "/repository_registry".into(),
            Some(&token),
            json!({"platform": "Gitlab", "repository_url": "http://127.0.0.1:1/x.git", "is_public_repository": true, "credentials": null, "branch": "main"}),
        ),
        (
            "PATCH",
            format!("/repos/{any}"),
            Some(&token),
            json!({"creator_uuid": me}),
        ),
        (
            "POST",
            "/permission".into(),
            Some(&token),
            json!({"agent_uuid": me, "agent_type": "User", "resource_uuid": any, "resource_type": "Repo", "level": 1}),
        ),
    ];
    for (method, path, caller, body) in cases {
        let got = inst.call(method, &path, caller, Some(body.clone())).await;
        assert_eq!(
            got.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} {body}: {}",
            got.1
        );
        assert!(
            got.1["detail"].is_array(),
            "{method} {path} {body}: {}",
            got.1
        );
        assert_eq!(got.1["detail"][0]["loc"][0], "body", "{}", got.1);
    }
    // nothing of the above changed the caller
    let (_, v) = inst.get(&format!("/users/{me}"), Some(&token)).await;
    assert_eq!(v["login"], "owner");
    assert_eq!(v["role"], "Admin");
    inst.stop().await;
}

async fn routing_paths_and_methods(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (me, token) = inst.user("owner").await;
    for path in [
        "/users/not-a-uuid",
        "/repos/not-a-uuid",
        "/repository_registry/not-a-uuid",
        "/repos/versions/1234",
    ] {
        let got = inst.get(path, Some(&token)).await;
        assert_field_error(&got, "path");
        assert_eq!(got.1["detail"][0]["loc"], json!(["path", "uuid"]));
    }
    let got = inst
        .call("PATCH", "/users/block/not-a-uuid", Some(&token), None)
        .await;
    assert_field_error(&got, "path");

    for path in ["/nope", "/users/a/b/c", "/repos/versions/a/b"] {
        let got = inst.get(path, Some(&token)).await;
        assert_eq!(got.0, StatusCode::NOT_FOUND, "{path}: {}", got.1);
        assert_eq!(got.1, json!({"detail": "Not Found"}), "{path}");
    }
    let got = inst.get(&format!("{}/elsewhere", inst.base), None).await;
    assert_eq!(got, (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));

    for (method, path) in [
        ("PUT", "/users".to_string()),
        ("DELETE", "/users/auth".into()),
        ("POST", format!("/users/{me}")),
        ("DELETE", "/metrics".into()),
    ] {
        let got = inst.call(method, &path, Some(&token), None).await;
        assert_eq!(
            got.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            got.1
        );
        assert_eq!(got.1, json!({"detail": "Method Not Allowed"}));
    }

    // trailing slash or not, the same route
    for path in ["/metrics", "/metrics/"] {
        let (st, v) = inst.get(path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["user_count"], 1, "{path}: {v}");
    }
    for path in ["/users", "/users/", &format!("/users/{me}/")] {
        let (st, v) = inst.get(path, Some(&token)).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
    }
    let (st, v) = inst.get("/users/?search_string=own", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 1);
    let (st, v) = inst
        .post(
            "/users/auth/",
            None,
            json!({"credentials": "owner", "password": "password-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    inst.stop().await;
}

async fn root_openapi_and_docs(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    for path in ["/pepeunit", "/pepeunit/"] {
        let (st, v) = inst.get(&format!("{}{path}", inst.base), None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        for key in ["name", "version", "description", "license", "authors"] {
            assert!(v[key].is_string(), "{key}: {v}");
        }
        let origin = format!("{}://{}", inst.config.http_type, inst.domain);
        assert_eq!(v["swagger"], format!("{origin}/pepeunit/docs"));
        assert_eq!(v["graphql"], format!("{origin}/pepeunit/graphql"));
        assert_eq!(v["grafana"], format!("{origin}/grafana/"));
        assert!(v.as_object().unwrap().contains_key("telegram_bot"));
        let flags = v["feature_flags"].as_object().unwrap();
        let mut names: Vec<&str> = flags.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "pu_ff_datapipe_default_last_value_enable",
                "pu_ff_datapipe_enable",
                "pu_ff_grafana_integration_enable",
                "pu_ff_prometheus_enable",
                "pu_ff_telegram_bot_enable"
            ]
        );
        assert!(flags.values().all(Value::is_boolean), "{v}");
    }
    // the root is open to any agent, a token holder too
    let (_, token) = inst.user("owner").await;
    let (st, _) = inst
        .get(&format!("{}/pepeunit", inst.base), Some(&token))
        .await;
    assert_eq!(st, StatusCode::OK);

    let (st, doc) = inst.get("/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/users",
        "/users/{uuid}",
        "/users/auth",
        "/units/env/{uuid}",
        "/units/firmware/tgz/{uuid}",
        "/repository_registry/branch_commits/{uuid}",
        "/repos/{uuid}",
        "/permission",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }

    let resp = inst
        .http
        .get(format!("{}/pepeunit/docs", inst.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let html = resp.text().await.unwrap();
    assert!(html.contains("/pepeunit/api/v1/openapi.json"), "{html}");
    inst.stop().await;
}

async fn metrics_count_entities(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    inst.user("other").await;
    let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
    let unit_token = TokenKey::new(&inst.config.secret_key)
        .unit_token(Uuid::parse_str(s(&unit["uuid"])).unwrap());
    let want = json!({
        "user_count": 2,
        "repository_registry_count": 1,
        "repo_count": 1,
        "unit_count": 1,
        // the fixture's schema has 2 input and 2 output topics
        "unit_node_count": 4,
        "unit_node_edge_count": 0,
    });
    for caller in [None, Some(token.as_str()), Some(unit_token.as_str())] {
        let (st, v) = inst.get("/metrics/", caller).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v, want);
    }
    let got = inst.get("/metrics", Some("garbage")).await;
    assert_err(&got, 403, 1, "Token is invalid");
    inst.stop().await;
}

both_backends!(
    users_register_first_admin_then_user,
    users_register_rejects_bad_input,
    users_logged_in_caller_cannot_register,
    users_auth,
    users_get_by_uuid,
    users_patch_changes_the_caller,
    users_block_and_unblock,
    users_list_filters,
    users_verification_link_is_disabled,
    tokens_forged_or_expired_are_refused,
    tokens_of_deleted_units_are_refused,
    registry_create_and_read,
    registry_rejects_bad_urls,
    registry_unreachable_url_is_recorded,
    registry_private_visibility_and_credentials,
    registry_branch_commits,
    registry_update_local_repository,
    registry_delete_rules,
    repos_create_rules,
    repos_get_visibility,
    repos_list_filters,
    repos_patch_update_modes,
    repos_versions_platforms_and_delete,
    permission_grant_and_revoke,
    permission_create_rules,
    permission_structural_grants_stay,
    duplicates_under_concurrency,
    bad_bodies_are_422,
    routing_paths_and_methods,
    root_openapi_and_docs,
    metrics_count_entities,
);
