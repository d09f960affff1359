//! Requests across resources (API.md §0): malformed bodies and parameters (422), routing of
//! paths and methods, the root, OpenAPI and docs pages, metrics, and uniqueness under
//! concurrent creation. Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use pepeunit::token::TokenKey;
use serde_json::{json, Value};
use uuid::Uuid;

use common::api::{
    assert_err, assert_field_error, create_registry, create_repo, public_registry, s, send_text,
    Answer,
};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};

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

// ---------------------------------------------------------------------------------------------
// uniqueness under concurrent requests

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

both_backends!(
    bad_bodies_are_422,
    routing_paths_and_methods,
    root_openapi_and_docs,
    metrics_count_entities,
    duplicates_under_concurrency,
);
