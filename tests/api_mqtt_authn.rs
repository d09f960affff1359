//! `POST /units/mqtt_authn`: who may CONNECT to the broker, as EMQX's HTTP authenticator asks
//! (`{"username": "${username}", "clientid": "${clientid}"}`, answer always 200).

mod common;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use serde_json::json;

async fn authn(inst: &TestInstance, username: &str) -> String {
    let (s, v) = inst
        .post(
            "/units/mqtt_authn",
            None,
            json!({"username": username, "clientid": "some-client"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["result"].as_str().unwrap().to_string()
}

async fn broker_authentication(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("authnowner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "authn", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap();
    let env = inst
        .get(&format!("/units/env/{uuid}"), Some(&owner))
        .await
        .1;
    let unit_token = env["PU_AUTH_TOKEN"].as_str().unwrap().to_string();
    let key = pepeunit::token::TokenKey::new(&inst.config.secret_key);

    // a unit's own token, and the backend token of this instance
    assert_eq!(authn(&inst, &unit_token).await, "allow");
    assert_eq!(
        authn(&inst, &key.backend_token(&inst.domain)).await,
        "allow"
    );

    // users, garbage, empty usernames, forged and foreign tokens never connect
    assert_eq!(authn(&inst, &owner).await, "deny");
    assert_eq!(authn(&inst, "garbage").await, "deny");
    assert_eq!(authn(&inst, "").await, "deny");
    let forged =
        pepeunit::token::TokenKey::new("another-secret-key-1").unit_token(uuid.parse().unwrap());
    assert_eq!(authn(&inst, &forged).await, "deny");
    assert_eq!(
        authn(&inst, &key.backend_token("other.example")).await,
        "deny"
    );
    // a well-signed token of a unit that never existed
    assert_eq!(
        authn(&inst, &key.unit_token(uuid::Uuid::new_v4())).await,
        "deny"
    );

    // the client id is optional; the username is not
    let (s, v) = inst
        .post("/units/mqtt_authn", None, json!({"username": unit_token}))
        .await;
    assert_eq!((s.as_u16(), v["result"].as_str()), (200, Some("allow")));
    let (s, _) = inst
        .post("/units/mqtt_authn", None, json!({"clientid": uuid}))
        .await;
    assert_eq!(s, 422);

    // once the unit is deleted its token no longer connects
    let (s, v) = inst.delete(&format!("/units/{uuid}"), Some(&owner)).await;
    assert!(s.is_success(), "{v}");
    assert_eq!(authn(&inst, &unit_token).await, "deny");
    inst.stop().await;
}

both_backends!(broker_authentication);
