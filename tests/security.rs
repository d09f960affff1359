//! Known security gaps closed (issue 14, part 7): one Admin however registrations race, unit
//! tokens of deleted units stay dead (import and re-creation never revive them) and an owner
//! can rotate a unit's token, and no outgoing connection a user can aim (git, release APIs,
//! peer brokers) reaches a loopback, private or link-local address without
//! `PU_ALLOW_LOCAL_NETWORK=true`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::{base_topic, MqttDevice};
use common::{assert_detail, Backend, TestInstance};
use serde_json::{json, Value};

/// Many registrations at once on a fresh instance: exactly one of them becomes the Admin.
async fn first_admin_under_concurrent_registrations(backend: Backend) {
    // several fresh instances: each race is short, a few of them make a double Admin likely
    for _ in 0..4 {
        one_registration_race(backend).await;
    }
}

async fn one_registration_race(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    const N: usize = 12;
    let answers = futures_util::future::join_all((0..N).map(|i| {
        let inst = &inst;
        async move {
            inst.post(
                "/users",
                None,
                json!({"login": format!("racer{i:02}"), "password": "password-1"}),
            )
            .await
        }
    }))
    .await;
    let mut admins_answered = 0;
    for (s, v) in &answers {
        assert_eq!(s.as_u16(), 201, "{v}");
        if v["role"] == "Admin" {
            admins_answered += 1;
        }
    }
    assert_eq!(admins_answered, 1, "registration answers: {answers:?}");
    // and so the database says
    let (s, t) = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "racer00", "password": "password-1"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let (s, list) = inst.get("/users?limit=100", t["token"].as_str()).await;
    assert_eq!(s, 200, "{list}");
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), N);
    let admins: Vec<&Value> = users.iter().filter(|u| u["role"] == "Admin").collect();
    assert_eq!(admins.len(), 1, "{admins:?}");
    // a later registration is a User
    let (s, late) = inst
        .post(
            "/users",
            None,
            json!({"login": "latecomer", "password": "password-1"}),
        )
        .await;
    assert_eq!(s, 201, "{late}");
    assert_eq!(late["role"], "User");
    inst.stop().await;
}

/// `POST /units/mqtt_authn`: what EMQX (and so any broker) is told about a username.
async fn authn(inst: &TestInstance, token: &str) -> String {
    let (s, v) = inst
        .post("/units/mqtt_authn", None, json!({"username": token}))
        .await;
    assert_eq!(s, 200, "{v}");
    v["result"].as_str().unwrap().to_string()
}

async fn env_token(inst: &TestInstance, caller: &str, unit: &str) -> String {
    let (s, env) = inst.get(&format!("/units/env/{unit}"), Some(caller)).await;
    assert_eq!(s, 200, "{env}");
    env["PU_AUTH_TOKEN"].as_str().unwrap().to_string()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn export(inst: &TestInstance, token: &str) -> Vec<u8> {
    let res = inst
        .http
        .post(inst.url("/users/export"))
        .header("x-auth-token", token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.bytes().await.unwrap().to_vec()
}

async fn import(inst: &TestInstance, token: &str, archive: Vec<u8>) -> Value {
    let res = inst
        .http
        .post(inst.url("/users/import"))
        .header("x-auth-token", token)
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let report: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{report}");
    report
}

/// A deleted unit's uuid is never given to a unit again: an archive that still holds the unit
/// (the owner's own export, or anyone's crafted one) imports it under a new uuid, so the token
/// left on the deployed device stays refused by REST and the broker.
async fn import_never_revives_a_deleted_unit(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let (_, other) = inst.user("other1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Public").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let device_token = env_token(&inst, &owner, &uuid).await;
    assert_eq!(
        inst.get(&format!("/units/{uuid}"), Some(&device_token))
            .await
            .0,
        200
    );
    assert_eq!(authn(&inst, &device_token).await, "allow");
    let archive = export(&inst, &owner).await;
    let mut device = MqttDevice::connect(inst.config.mqtt_bind.port(), &uuid, &device_token)
        .await
        .unwrap();

    let (s, v) = inst.delete(&format!("/units/{uuid}"), Some(&owner)).await;
    assert_eq!(s, 204, "{v}");
    assert!(
        device.lost(Duration::from_secs(10)).await.is_some(),
        "the broker kept the session of a deleted unit"
    );
    assert_detail(
        &inst
            .get(&format!("/units/{uuid}"), Some(&device_token))
            .await,
        403,
        "Unit not found",
    );
    assert_eq!(authn(&inst, &device_token).await, "deny");

    // the owner imports their own export back, then another user the same archive
    for (who, token) in [("owner", &owner), ("another user", &other)] {
        let report = import(&inst, token, archive.clone()).await;
        assert_eq!(report["created"]["units"], 1, "{who}: {report}");
        let remapped = report["remapped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["table"] == "units" && r["from"] == uuid.as_str())
            .unwrap_or_else(|| panic!("{who}: the deleted uuid was not remapped: {report}"));
        let new_uuid = remapped["to"].as_str().unwrap();
        assert_ne!(new_uuid, uuid);
        // the old uuid names nothing, its token opens nothing
        assert_detail(
            &inst.get(&format!("/units/{uuid}"), Some(token)).await,
            404,
            "The object does not exist",
        );
        assert_detail(
            &inst
                .get(&format!("/units/{uuid}"), Some(&device_token))
                .await,
            403,
            "Unit not found",
        );
        assert_eq!(authn(&inst, &device_token).await, "deny", "{who}");
        // the imported unit is a working unit with its own token
        let fresh = env_token(&inst, token, new_uuid).await;
        assert_eq!(claims(&fresh)["uuid"], new_uuid);
        assert_eq!(authn(&inst, &fresh).await, "allow");
    }
    inst.stop().await;
}

/// The owner rotates a unit's token (`POST /units/rotate_token/{uuid}`): the answer is the new
/// env.json; the old token is refused by REST, by `mqtt_authn` and by the embedded broker,
/// whose live session with it is dropped; the new one works everywhere.
async fn owner_rotates_a_unit_token(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let (_, other) = inst.user("other1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Public").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let path = format!("/units/rotate_token/{uuid}");
    // a stored env (which holds the token too)
    let (s, v) = inst
        .patch(
            &format!("/units/env/{uuid}"),
            Some(&owner),
            json!({"env_json_string": "{\"WIFI_SSID\": \"home\"}"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let old = env_token(&inst, &owner, &uuid).await;
    assert_eq!(
        claims(&old),
        json!({"uuid": uuid, "type": "Unit"}),
        "upstream's token until rotated"
    );
    let port = inst.config.mqtt_bind.port();
    let command_topic = base_topic(&inst, &uuid, "input_base_topic", "env_update");
    let mut device = MqttDevice::connect(port, &uuid, &old).await.unwrap();
    assert!(device.subscribe(&command_topic).await);

    // only the owner rotates
    for (who, token) in [("another user", &other), ("the unit itself", &old)] {
        let got = inst.post(&path, Some(token), json!({})).await;
        assert_eq!(got.0, 403, "{who}: {}", got.1);
    }
    assert_eq!(inst.post(&path, None, json!({})).await.0, 403);

    let (s, env) = inst.post(&path, Some(&owner), json!({})).await;
    assert_eq!(s, 200, "{env}");
    let new = env["PU_AUTH_TOKEN"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(claims(&new)["uuid"], uuid.as_str());
    assert_eq!(env["WIFI_SSID"], "home", "the rest of the env stays: {env}");
    assert_eq!(env["PU_DOMAIN"], inst.domain.as_str());

    // the old token is dead everywhere, at once
    assert_detail(
        &inst.get(&format!("/units/{uuid}"), Some(&old)).await,
        403,
        "Token is invalid",
    );
    assert_detail(
        &inst.get(&format!("/units/env/{uuid}"), Some(&old)).await,
        403,
        "Token is invalid",
    );
    assert_eq!(authn(&inst, &old).await, "deny");
    let (s, v) = inst
        .post(
            "/units/auth",
            None,
            json!({"token": old, "topic": command_topic, "action": "subscribe"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["result"].as_str()),
        (200, Some("deny")),
        "{v}"
    );
    assert!(
        device.lost(Duration::from_secs(10)).await.is_some(),
        "the broker kept the session of a rotated token"
    );
    assert!(MqttDevice::connect(port, &uuid, &old).await.is_err());

    // the new one works, and is what the env says from now on
    assert_eq!(env_token(&inst, &owner, &uuid).await, new);
    assert_eq!(env_token(&inst, &new, &uuid).await, new);
    assert_eq!(authn(&inst, &new).await, "allow");
    let mut device = MqttDevice::connect(port, &uuid, &new).await.unwrap();
    assert!(device.subscribe(&command_topic).await);
    let (s, v) = inst
        .call(
            "POST",
            &format!("/units/send_command_to_input_base_topic/{uuid}?command=EnvUpdate"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    assert!(device
        .recv_on(&command_topic, Duration::from_secs(10))
        .await
        .is_some());

    // rotating again retires the second token too
    let (s, again) = inst.post(&path, Some(&owner), json!({})).await;
    assert_eq!(s, 200, "{again}");
    let third = again["PU_AUTH_TOKEN"].as_str().unwrap();
    assert!(third != new && third != old);
    assert_eq!(authn(&inst, &new).await, "deny");
    assert_eq!(authn(&inst, third).await, "allow");
    inst.stop().await;
}

/// Without `PU_ALLOW_LOCAL_NETWORK=true` a registry whose URL names (or resolves to) a
/// loopback, private or link-local address is refused when it is created, naming the class,
/// before any connection is made.
async fn local_registry_urls_are_refused(backend: Backend) {
    let inst = TestInstance::start_with(backend, &[("PU_ALLOW_LOCAL_NETWORK", "false")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let port = firmware.url().rsplit(':').next().unwrap().to_string();
    for (url, class) in [
        (firmware.url(), "loopback"),
        (format!("http://localhost:{port}"), "loopback"),
        ("http://[::1]:8080/a/b.git".to_string(), "loopback"),
        ("http://10.1.2.3/a/b.git".to_string(), "private"),
        ("https://192.168.0.10/a/b.git".to_string(), "private"),
        ("http://169.254.169.254/a/b.git".to_string(), "link-local"),
        ("http://[fe80::1]/a/b.git".to_string(), "link-local"),
        ("http://0.0.0.0/a/b.git".to_string(), "unspecified"),
    ] {
        let url = if url.ends_with(".git") {
            url
        } else {
            format!("{url}/firmware.git")
        };
        let (s, v) = inst
            .post(
                "/repository_registry",
                Some(&owner),
                json!({"platform": "Gitlab", "repository_url": url, "is_public_repository": true, "credentials": null}),
            )
            .await;
        assert!(s.is_client_error(), "{url}: {s} {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(class) && detail.contains("PU_ALLOW_LOCAL_NETWORK"),
            "{url}: {detail}"
        );
    }
    let (_, list) = inst.get("/repository_registry", Some(&owner)).await;
    assert_eq!(list["count"], 0, "{list}");
    inst.stop().await;
}

/// A registry that was accepted (here: while local addresses were allowed) is held to the rule
/// on every later sync too: git itself is refused, naming the class.
async fn local_registry_syncs_are_refused(backend: Backend) {
    let mut inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let (registry, _, _) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Public").await;
    let uuid = registry["uuid"].as_str().unwrap();
    inst.config.allow_local_network = false;
    inst.restart(Duration::ZERO).await;
    let (s, v) = inst
        .patch(
            &format!("/repository_registry/update_local_repository/{uuid}"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, r) = inst
        .get(&format!("/repository_registry/{uuid}"), Some(&owner))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["sync_status"], "Error", "{r}");
    let error = r["sync_error"].as_str().unwrap();
    assert!(
        error.contains("loopback") && error.contains("PU_ALLOW_LOCAL_NETWORK"),
        "{error}"
    );
    inst.stop().await;
}

both_backends!(
    first_admin_under_concurrent_registrations,
    import_never_revives_a_deleted_unit,
    owner_rotates_a_unit_token,
    local_registry_urls_are_refused,
    local_registry_syncs_are_refused,
);
