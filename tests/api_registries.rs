//! Repository registries over HTTP (API.md §3): creation and URL checks, private registries
//! with credentials, branches and commits, local updates and deletion rules. Every test runs
//! on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use pepeunit::token::TokenKey;
use serde_json::json;
use uuid::Uuid;

use common::api::{
    assert_err, assert_field_error, column, create_registry, create_repo, history, public_registry,
    repo, s,
};
use common::fixtures::FirmwareRepo;
use common::{Backend, TestInstance};

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

both_backends!(
    registry_create_and_read,
    registry_rejects_bad_urls,
    registry_unreachable_url_is_recorded,
    registry_private_visibility_and_credentials,
    registry_branch_commits,
    registry_update_local_repository,
    registry_delete_rules,
);
