//! Load metering (issue 18 part 1) end to end: a device's messages through the embedded broker
//! into the shards' meter, read back per Unit (with its topics), per Repo and per user, with
//! who may see what. The window arithmetic is unit-tested in `src/domain/load.rs`.

mod common;

use std::time::Duration;

use common::fixtures::{output_node, registry_repo_unit, FirmwareRepo};
use common::graphql;
use common::mqtt::{unit_token, MqttDevice};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Polls `path` (with `token`) until `done` holds.
async fn until(
    inst: &TestInstance,
    token: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    inst.get_until(path, Some(token), done).await
}

fn topic_count(body: &Value, suffix: &str) -> u64 {
    body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"].as_str().unwrap().ends_with(suffix))
        .map_or(0, |t| t["messages_last_hour"].as_u64().unwrap())
}

async fn metered(backend: Backend) {
    metered_with(backend, &[], None).await;
}

/// The same with the history in ClickHouse (PostgreSQL as the instance database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_clickhouse() {
    let Some(mut ch) = common::clickhouse::ClickHouse::start().await else {
        return;
    };
    let (backend, vars) = ch.instance_settings("load");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    metered_with(backend, &vars, Some(&mut ch)).await;
}

/// With `outage`, the telemetry store (ClickHouse) is down when an hour is recorded: the rows
/// are kept and written by the next record once it is back.
async fn metered_with(
    backend: Backend,
    extra: &[(&str, &str)],
    outage: Option<&mut common::clickhouse::ClickHouse>,
) {
    let mut inst = TestInstance::start_with(backend, extra).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, stranger) = inst.user("stranger1").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &owner, &firmware, "metered", "Private").await;
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let repo_uuid = repo["uuid"].as_str().unwrap().to_string();
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let device = MqttDevice::connect(
        inst.config.mqtt_bind.port(),
        "metered",
        &unit_token(&inst, &unit),
    )
    .await
    .unwrap();
    let d = &inst.domain;
    for v in 0..5 {
        device
            .publish(&format!("{d}/{node}/pepeunit"), v.to_string())
            .await;
    }
    let state = format!("{d}/output_base_topic/{unit_uuid}/state/pepeunit");
    for _ in 0..2 {
        device
            .publish(
                &state,
                r#"{"millis": 1, "mem_free": 1000, "freq": 1, "statvfs_free": 1}"#,
            )
            .await;
    }
    let log = format!("{d}/output_base_topic/{unit_uuid}/log/pepeunit");
    for i in 0..3 {
        device
            .publish(&log, format!(r#"{{"level": "Info", "text": "line {i}"}}"#))
            .await;
    }

    // the Unit with its three topics, every message counted (the stored state is throttled,
    // the load is not)
    let path = format!("/metrics/load/units/{unit_uuid}");
    let one = until(&inst, &owner, &path, |b| b["messages_last_hour"] == 10).await;
    assert_eq!(one["topic_count"], 3, "{one}");
    assert_eq!(topic_count(&one, &format!("{node}/pepeunit")), 5, "{one}");
    assert_eq!(topic_count(&one, "state/pepeunit"), 2, "{one}");
    assert_eq!(topic_count(&one, "log/pepeunit"), 3, "{one}");
    assert!(one["mps"]["minute"].as_f64().unwrap() > 0.0, "{one}");
    assert!(one["mps"]["hour"].as_f64().unwrap() > 0.0, "{one}");
    let avg = one["mps_per_topic"]["hour"].as_f64().unwrap();
    let sum = one["mps"]["hour"].as_f64().unwrap();
    assert!(
        (avg * 3.0 - sum).abs() < 1e-9,
        "average over its topics: {one}"
    );
    assert_eq!(one["load_class"], "Light", "the only busy Unit: {one}");

    // who sees it: the owner and admins; a stranger neither the Unit nor its owner's sum
    let (status, _) = inst.get(&path, Some(&stranger)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = inst.get(&path, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, mine) = inst.get("/metrics/load/units", Some(&owner)).await;
    assert_eq!(mine["units"].as_array().unwrap().len(), 1, "{mine}");
    assert!(
        mine["units"][0].get("topics").is_none(),
        "no topics in the list: {mine}"
    );
    let (_, theirs) = inst.get("/metrics/load/units", Some(&stranger)).await;
    assert_eq!(theirs["units"].as_array().unwrap().len(), 0, "{theirs}");
    assert_eq!(theirs["active_units"], 1, "the instance's figure: {theirs}");
    let (_, all) = inst.get("/metrics/load/units", Some(&admin)).await;
    assert_eq!(all["units"][0]["unit_uuid"], unit_uuid.as_str(), "{all}");
    assert!(all["metered_topics"].as_u64().unwrap() >= 3, "{all}");
    assert!(all["meter_memory_bytes"].as_u64().unwrap() > 0, "{all}");
    assert_eq!(all["unmetered_messages"], 0, "{all}");

    // the Repo's average over its Units, the user's sum
    let (status, r) = inst
        .get(&format!("/metrics/load/repos/{repo_uuid}"), Some(&owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["unit_count"], 1, "{r}");
    assert!(r["mps"]["hour"].as_f64().unwrap() > 0.0, "{r}");
    let owner_uuid = mine["units"][0]["creator_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, u) = inst
        .get(&format!("/metrics/load/users/{owner_uuid}"), Some(&owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["unit_count"], 1, "{u}");
    assert_eq!(u["units"].as_array().unwrap().len(), 1, "{u}");
    let (status, _) = inst
        .get(
            &format!("/metrics/load/users/{owner_uuid}"),
            Some(&stranger),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = inst
        .get(&format!("/metrics/load/repos/{repo_uuid}"), Some(&stranger))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = inst.get("/metrics/load/units", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token, no load");
    // the same over GraphQL (additive fields beside upstream's schema)
    let got = graphql::gql(
        &inst,
        Some(&owner),
        "query($u: UUID!) { getUnitLoad(uuid: $u) { topicCount messagesLastHour loadClass mps { hour } topics { topic messagesLastHour } } }",
        json!({"u": unit_uuid}),
    )
    .await;
    let l = &graphql::data(&got)["getUnitLoad"];
    assert_eq!(l["topicCount"], 3, "{l}");
    assert_eq!(l["messagesLastHour"], 10.0, "{l}");
    assert_eq!(l["loadClass"], "Light", "{l}");
    assert_eq!(l["topics"].as_array().unwrap().len(), 3, "{l}");
    let got = graphql::gql(
        &inst,
        Some(&stranger),
        "{ getLoadReport { activeUnits units { unitUuid } } }",
        json!({}),
    )
    .await;
    let r = &graphql::data(&got)["getLoadReport"];
    assert_eq!(r["activeUnits"], 1, "{r}");
    assert_eq!(r["units"], json!([]), "{r}");
    let got = graphql::gql(
        &inst,
        Some(&stranger),
        "query($u: UUID!) { getUnitLoad(uuid: $u) { topicCount } }",
        json!({"u": unit_uuid}),
    )
    .await;
    assert!(got.1.get("errors").is_some(), "a stranger: {}", got.1);
    let got = graphql::gql(
        &inst,
        Some(&owner),
        "query($u: UUID!) { getRepoLoad(uuid: $u) { unitCount mps { hour } } }",
        json!({"u": repo_uuid}),
    )
    .await;
    assert_eq!(
        graphql::data(&got)["getRepoLoad"]["unitCount"],
        1,
        "{}",
        got.1
    );
    drop(device);

    if let Some(ch) = outage {
        let instance = &inst.running.as_ref().unwrap().instance;
        let hour = pepeunit::service::load::hour_of(pepeunit::service::load::unix_now());
        ch.kill().await;
        assert!(instance.record_load_hour(hour).await.is_err());
        assert_eq!(instance.load.unwritten_hours(), 1);
        // nothing new was counted meanwhile: the kept row is what the next record writes
        assert!(instance.record_load_hour(hour).await.is_err());
        assert_eq!(instance.load.unwritten_hours(), 1);
        ch.resume().await;
        assert_eq!(instance.record_load_hour(hour).await.unwrap(), 1);
        assert_eq!(instance.load.unwritten_hours(), 0);
    }
    // a clean stop writes this hour into the history, which outlives the meter
    inst.restart(Duration::from_millis(100)).await;
    let history = format!("/metrics/load/units/{unit_uuid}/history");
    let (status, h) = inst.get(&history, Some(&owner)).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let hours = h["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "{h}");
    assert_eq!(hours[0]["messages"], 10, "{h}");
    assert!(
        hours[0]["hour_start"]
            .as_str()
            .unwrap()
            .ends_with(":00:00.000000"),
        "{h}"
    );
    let (status, _) = inst.get(&history, Some(&stranger)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, e) = inst
        .get(&format!("{history}?from=yesterday"), Some(&owner))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (status, _) = inst
        .get(
            &format!("{history}?from=2026-01-01T00:00:00&to=2026-03-01T00:00:00"),
            Some(&owner),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "more than 31 days"
    );
    // chrono's %Y takes a sign: near its limits the default range overflowed (a panic)
    for to in ["-262143-01-01T00:00:00", "+262142-12-31T00:00:00"] {
        let (status, e) = inst.get(&format!("{history}?to={to}"), Some(&owner)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{to}: {e}");
    }
    let (status, h) = inst
        .get(&format!("{history}?to=0001-01-02T00:00:00"), Some(&owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["hours"], serde_json::json!([]), "{h}");
    // the meter starts afresh; a second stop adds nothing (nothing new was counted)
    let (_, one) = inst.get(&path, Some(&owner)).await;
    assert_eq!(one["messages_last_hour"], 0, "{one}");
    inst.restart(Duration::from_millis(100)).await;
    let (_, h) = inst.get(&history, Some(&owner)).await;
    assert_eq!(h["hours"][0]["messages"], 10, "{h}");
    inst.stop().await;
}

both_backends!(metered);
