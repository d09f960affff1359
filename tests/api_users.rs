//! Users and tokens over HTTP (API.md §1-§2): registration (the first user is the Admin),
//! login, profile changes, blocking, listing, and tokens that are forged, expired or belong to
//! deleted units. Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use pepeunit::token::TokenKey;
use serde_json::{json, Value};
use uuid::Uuid;

use common::api::{assert_err, assert_field_error, column, s, sign_claims, FAR_FUTURE};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};

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
);
