//! The thin slice end to end: user, registry from a git server, repo, unit, env, schema, firmware.

mod common;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};

async fn device_rest_slice(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner1").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
    assert_eq!(repo["is_auto_update_repo"], true);
    let uuid = unit["uuid"].as_str().unwrap();

    let (s, env) = inst.get(&format!("/units/env/{uuid}"), Some(&token)).await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["PU_DOMAIN"], inst.domain.as_str());
    assert_eq!(env["WIFI_SSID"], "ssid");
    // auto + tag-only: the newest tagged commit of main
    assert_eq!(env["PU_COMMIT_VERSION"], firmware.head("main").as_str());

    let (s, schema) = inst
        .get(&format!("/units/get_current_schema/{uuid}"), Some(&token))
        .await;
    assert_eq!(s, 200, "{schema}");
    assert_eq!(
        schema["input_base_topic"]["update/pepeunit"][0],
        format!("{}/input_base_topic/{uuid}/update/pepeunit", inst.domain)
    );
    inst.stop().await;
}

both_backends!(device_rest_slice);
