//! Permissions over HTTP (API.md §5): granting and revoking, the rules on who may grant what,
//! and the structural grants that cannot be revoked. Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use common::api::{assert_err, assert_field_error, column, public_registry, repo, s};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};

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

both_backends!(
    permission_grant_and_revoke,
    permission_create_rules,
    permission_structural_grants_stay,
);
