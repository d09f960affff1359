//! Repos over HTTP (API.md §4): creation rules, visibility, list filters, update modes,
//! versions, platforms and deletion. Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use pepeunit::token::TokenKey;
use serde_json::json;
use uuid::Uuid;

use common::api::{
    assert_err, assert_field_error, column, create_repo, history, public_registry, repo, unit,
};
use common::fixtures::FirmwareRepo;
use common::{Backend, TestInstance};

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

both_backends!(
    repos_create_rules,
    repos_get_visibility,
    repos_list_filters,
    repos_patch_update_modes,
    repos_versions_platforms_and_delete,
);
