//! The MQTT core against the embedded broker, with rumqttc devices: authentication at CONNECT,
//! topic ACLs, state and log ingest, commands, links between units, and the firmware update
//! status transitions. Every test runs on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::{base_topic, unit_token, MqttDevice};
use common::{Backend, TestInstance};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn mqtt_port(inst: &TestInstance) -> u16 {
    inst.config.mqtt_bind.port()
}

/// Polls `GET path` until `done` holds (bounded); returns the last body.
async fn wait_for(
    inst: &TestInstance,
    path: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, body) = inst.get(path, Some(token)).await;
        assert_eq!(s.as_u16(), 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn mqtt_counters(inst: &TestInstance, admin: &str) -> Value {
    let (s, body) = inst.get("/metrics/mqtt", Some(admin)).await;
    assert_eq!(s.as_u16(), 200, "{body}");
    body["counters"].clone()
}

async fn connect_refusals(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, user) = inst.user("owner1").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &user, &firmware, "fan", "Private").await;
    let port = mqtt_port(&inst);
    for (token, what) in [
        ("garbage".to_string(), "garbage"),
        (user.clone(), "a user token"),
        (String::new(), "an empty username"),
    ] {
        let got = MqttDevice::connect(port, "x", &token).await;
        assert!(got.is_err(), "{what} was accepted");
    }
    let other_key = pepeunit::token::TokenKey::new("another-secret-key-0123456789")
        .unit_token(unit["uuid"].as_str().unwrap().parse().unwrap());
    assert!(MqttDevice::connect(port, "x", &other_key).await.is_err());
    assert!(MqttDevice::connect(port, "ok", &unit_token(&inst, &unit))
        .await
        .is_ok());
    // rmqtt sends a last will without asking the publish ACL: a will on a topic the unit may
    // not publish to is refused at CONNECT; one on its own log topic is accepted, and when
    // the connection is lost the broker sends it and the core stores it (superusers' and
    // wills' messages are taken in the publish hook, not the ACL hook)
    let (s, other) = inst
        .post(
            "/units",
            Some(&user),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "other_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{other}");
    let foreign = base_topic(&inst, &other, "output_base_topic", "log");
    let will = r#"{"level": "Warning", "text": "connection lost"}"#;
    let token = unit_token(&inst, &unit);
    assert!(
        MqttDevice::connect_with_will(port, "w1", &token, Some((&foreign, will)))
            .await
            .is_err(),
        "a will on another unit's topic was accepted"
    );
    let own = base_topic(&inst, &unit, "output_base_topic", "log");
    let dev = MqttDevice::connect_with_will(port, "w2", &token, Some((&own, will)))
        .await
        .expect("a will on the unit's own topic");
    drop(dev);
    let log_list = format!(
        "/units/log_list/?uuid={}&limit=10",
        unit["uuid"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = inst.get(&log_list, Some(&user)).await;
        if v["unit_logs"][0]["text"] == "connection lost" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the will was not stored: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a deleted unit's token stops working
    let (s, _) = inst
        .delete(
            &format!("/units/{}", unit["uuid"].as_str().unwrap()),
            Some(&user),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the unit row cache lives 2 s
    assert!(MqttDevice::connect(port, "gone", &unit_token(&inst, &unit))
        .await
        .is_err());
    let c = mqtt_counters(&inst, &admin).await;
    assert!(c["connects_refused"].as_u64().unwrap() >= 6, "{c}");
    inst.stop().await;
}

async fn topic_acl(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, user) = inst.user("owner1").await;
    let (_, repo, a) = registry_repo_unit(&inst, &user, &firmware, "unita", "Private").await;
    let (s, b) = inst
        .post(
            "/units",
            Some(&user),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "unitb_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{b}");
    let port = mqtt_port(&inst);
    let mut dev_a = MqttDevice::connect(port, "a", &unit_token(&inst, &a))
        .await
        .unwrap();
    // own command topics: yes; another unit's: no; wildcards: no
    assert!(
        dev_a
            .subscribe(&base_topic(&inst, &a, "input_base_topic", "update"))
            .await
    );
    assert!(
        !dev_a
            .subscribe(&base_topic(&inst, &b, "input_base_topic", "update"))
            .await
    );
    assert!(
        !dev_a
            .subscribe(&format!("{}/+/+/+/pepeunit", inst.domain))
            .await
    );
    assert!(!dev_a.subscribe("#").await);
    // subscribing to its own output topic is not needed and not allowed
    assert!(
        !dev_a
            .subscribe(&base_topic(&inst, &a, "output_base_topic", "state"))
            .await
    );

    // a publish to another unit's state topic is dropped, not stored
    let before = mqtt_counters(&inst, &admin).await["publishes_denied"]
        .as_u64()
        .unwrap();
    dev_a
        .publish(
            &base_topic(&inst, &b, "output_base_topic", "state"),
            json!({"pu_commit_version": "forged"}).to_string(),
        )
        .await;
    // and to its own command topic (only the backend sends commands)
    dev_a
        .publish(
            &base_topic(&inst, &a, "input_base_topic", "update"),
            r#"{"COMMAND":"Update"}"#,
        )
        .await;
    // and anything that is not UTF-8, even on its own topic (the official client dies on it)
    dev_a
        .publish(
            &base_topic(&inst, &a, "output_base_topic", "log"),
            vec![0xff, 0xfe, 0x00],
        )
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = mqtt_counters(&inst, &admin).await["publishes_denied"]
            .as_u64()
            .unwrap();
        if now >= before + 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes were not denied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, b_read) = inst
        .get(
            &format!("/units/{}", b["uuid"].as_str().unwrap()),
            Some(&user),
        )
        .await;
    assert_eq!(b_read["current_commit_version"], Value::Null, "{b_read}");
    assert!(dev_a.recv(Duration::from_millis(300)).await.is_none());
    inst.stop().await;
}

async fn state_and_logs(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, user) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &user, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap();
    let head = firmware.head("main");
    let dev = MqttDevice::connect(mqtt_port(&inst), uuid, &unit_token(&inst, &unit))
        .await
        .unwrap();
    let state_topic = base_topic(&inst, &unit, "output_base_topic", "state");
    dev.publish(
        &state_topic,
        json!({"pu_commit_version": head, "millis": 1000, "mem_free": 5.5, "ifconfig": ["10.0.0.2"], "extra": "dropped"}).to_string(),
    )
    .await;
    let read = wait_for(&inst, &format!("/units/{uuid}"), &user, |u| {
        u["current_commit_version"] == json!(head)
    })
    .await;
    assert_eq!(read["unit_state"]["millis"], json!(1000.0), "{read}");
    assert_eq!(read["unit_state"]["ifconfig"], json!(["10.0.0.2"]));
    assert_eq!(read["unit_state"]["pu_commit_version"], json!(head));

    // within PU_STATE_SEND_INTERVAL the same version is throttled; garbage is refused
    dev.publish(
        &state_topic,
        json!({"pu_commit_version": head, "millis": 2000}).to_string(),
    )
    .await;
    dev.publish(&state_topic, "not json").await;
    dev.publish(&state_topic, json!({"millis": 3}).to_string())
        .await;
    let log_topic = base_topic(&inst, &unit, "output_base_topic", "log");
    dev.publish(
        &log_topic,
        json!({"level": "Error", "text": "sensor failed"}).to_string(),
    )
    .await;
    dev.publish(
        &log_topic,
        json!([
            {"level": "info", "text": "boot", "create_datetime": "2026-01-01T00:00:00"},
            {"level": "Warning", "text": "hot"},
            {"level": "Bogus", "text": "refused"}
        ])
        .to_string(),
    )
    .await;
    let logs = wait_for(
        &inst,
        &format!("/units/log_list/?uuid={uuid}"),
        &user,
        |l| l["count"] == json!(3),
    )
    .await;
    let texts: Vec<&str> = logs["unit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"sensor failed") && texts.contains(&"boot") && texts.contains(&"hot"),
        "{logs}"
    );
    let boot = logs["unit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["text"] == "boot")
        .unwrap();
    assert_eq!(boot["level"], "Info");
    assert!(boot["create_datetime"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-01T00:00:00"));
    let c = mqtt_counters(&inst, &admin).await;
    assert!(c["states_throttled"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["invalid"].as_u64().unwrap() >= 3, "{c}");
    let read = inst.get(&format!("/units/{uuid}"), Some(&user)).await.1;
    assert_eq!(
        read["unit_state"]["millis"],
        json!(1000.0),
        "throttled state was stored: {read}"
    );
    inst.stop().await;
}

async fn commands_and_update_status(backend: Backend) {
    let inst = TestInstance::start_with(backend, &[("PU_STATE_SEND_INTERVAL", "1")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, user) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &user, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap();
    let mut dev = MqttDevice::connect(mqtt_port(&inst), uuid, &unit_token(&inst, &unit))
        .await
        .unwrap();
    for name in ["update", "env_update", "schema_update", "log_sync"] {
        assert!(
            dev.subscribe(&base_topic(&inst, &unit, "input_base_topic", name))
                .await
        );
    }
    let (s, body) = inst
        .post(
            &format!("/units/send_command_to_input_base_topic/{uuid}?command=Update"),
            Some(&user),
            Value::Null,
        )
        .await;
    assert_eq!(s.as_u16(), 204, "{body}");
    let got = dev
        .recv_on(
            &base_topic(&inst, &unit, "input_base_topic", "update"),
            WAIT,
        )
        .await
        .expect("Update arrives");
    let got: Value = serde_json::from_slice(&got).unwrap();
    // the target of an auto-updating, tag-only repo is its newest tag (v0.2.0 = main's head)
    let target = firmware.head("main");
    assert_eq!(
        got,
        json!({"COMMAND": "Update", "PU_COMMIT_VERSION": target})
    );
    let read = inst.get(&format!("/units/{uuid}"), Some(&user)).await.1;
    assert_eq!(read["firmware_update_status"], "RequestSent", "{read}");
    // the device reports the new version: Success
    dev.publish(
        &base_topic(&inst, &unit, "output_base_topic", "state"),
        json!({"pu_commit_version": target}).to_string(),
    )
    .await;
    wait_for(&inst, &format!("/units/{uuid}"), &user, |u| {
        u["firmware_update_status"] == "Success"
    })
    .await;

    for (command, name) in [
        ("EnvUpdate", "env_update"),
        ("SchemaUpdate", "schema_update"),
        ("LogSync", "log_sync"),
    ] {
        let (s, body) = inst
            .post(
                &format!("/units/send_command_to_input_base_topic/{uuid}?command={command}"),
                Some(&user),
                Value::Null,
            )
            .await;
        assert_eq!(s.as_u16(), 204, "{body}");
        let got = dev
            .recv_on(&base_topic(&inst, &unit, "input_base_topic", name), WAIT)
            .await
            .unwrap_or_else(|| panic!("{command} arrives"));
        assert_eq!(
            serde_json::from_slice::<Value>(&got).unwrap(),
            json!({"COMMAND": command})
        );
    }
    // Reset is not in this unit's schema: a silent 204, nothing published
    let (s, _) = inst
        .post(
            &format!("/units/send_command_to_input_base_topic/{uuid}?command=Reset"),
            Some(&user),
            Value::Null,
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    assert!(dev.recv(Duration::from_millis(300)).await.is_none());
    inst.stop().await;
}

async fn update_times_out(backend: Backend) {
    let inst = TestInstance::start_with(backend, &[("PU_FIRMWARE_UPDATE_TIMEOUT", "1")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, user) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &user, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap();
    let (s, _) = inst
        .post(
            &format!("/units/send_command_to_input_base_topic/{uuid}?command=Update"),
            Some(&user),
            Value::Null,
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    let read = wait_for(&inst, &format!("/units/{uuid}"), &user, |u| {
        u["firmware_update_status"] == "Error"
    })
    .await;
    assert!(
        read["firmware_update_error"]
            .as_str()
            .unwrap()
            .contains("within 1 s"),
        "{read}"
    );
    // the device comes back late with the target version: the update did happen
    let dev = MqttDevice::connect(mqtt_port(&inst), uuid, &unit_token(&inst, &unit))
        .await
        .unwrap();
    dev.publish(
        &base_topic(&inst, &unit, "output_base_topic", "state"),
        json!({"pu_commit_version": firmware.head("main")}).to_string(),
    )
    .await;
    let read = wait_for(&inst, &format!("/units/{uuid}"), &user, |u| {
        u["firmware_update_status"] == "Success"
    })
    .await;
    assert_eq!(read["firmware_update_error"], Value::Null, "{read}");
    inst.stop().await;
}

async fn linked_units_exchange_data(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, user) = inst.user("owner1").await;
    let (_, repo, a) = registry_repo_unit(&inst, &user, &firmware, "unita", "Private").await;
    let (s, b) = inst
        .post(
            "/units",
            Some(&user),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "unitb_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{b}");
    let node = |unit: &Value, ty: &str, name: &str| {
        let unit = unit.clone();
        let (ty, name) = (ty.to_string(), name.to_string());
        let inst = &inst;
        let user = user.clone();
        async move {
            let (_, list) = inst
                .get(
                    &format!(
                        "/unit_nodes?unit_uuid={}&type={ty}",
                        unit["uuid"].as_str().unwrap()
                    ),
                    Some(&user),
                )
                .await;
            list["unit_nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["topic_name"] == json!(name))
                .unwrap_or_else(|| panic!("{name} in {list}"))
                .clone()
        }
    };
    let out_a = node(&a, "Output", "current_temp/pepeunit").await;
    let in_b = node(&b, "Input", "set_fan_state/pepeunit").await;
    let port = mqtt_port(&inst);
    let dev_a = MqttDevice::connect(port, "a", &unit_token(&inst, &a))
        .await
        .unwrap();
    let mut dev_b = MqttDevice::connect(port, "b", &unit_token(&inst, &b))
        .await
        .unwrap();
    let out_topic = format!(
        "{}/{}/pepeunit",
        inst.domain,
        out_a["uuid"].as_str().unwrap()
    );
    let in_topic = format!(
        "{}/{}/pepeunit",
        inst.domain,
        in_b["uuid"].as_str().unwrap()
    );
    assert!(
        dev_b
            .subscribe(&base_topic(&inst, &b, "input_base_topic", "schema_update"))
            .await
    );
    assert!(dev_b.subscribe(&in_topic).await);
    // B may not listen to A's output before the link exists
    assert!(!dev_b.subscribe(&out_topic).await);

    let (s, edge) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&user),
            json!({"node_output_uuid": out_a["uuid"], "node_input_uuid": in_b["uuid"]}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{edge}");
    let got = dev_b
        .recv_on(
            &base_topic(&inst, &b, "input_base_topic", "schema_update"),
            WAIT,
        )
        .await
        .expect("SchemaUpdate after linking");
    assert_eq!(
        serde_json::from_slice::<Value>(&got).unwrap(),
        json!({"COMMAND": "SchemaUpdate"})
    );
    tokio::time::sleep(Duration::from_millis(5100)).await; // ACL answers are cached 5 s
    assert!(dev_b.subscribe(&out_topic).await);
    dev_a.publish(&out_topic, "21.5").await;
    assert_eq!(
        dev_b.recv_on(&out_topic, WAIT).await.as_deref(),
        Some(&b"21.5"[..])
    );
    // the core stores the last value of /pepeunit node topics
    wait_for(
        &inst,
        &format!("/unit_nodes/{}", out_a["uuid"].as_str().unwrap()),
        &user,
        |n| n["state"] == "21.5",
    )
    .await;

    // a user sets B's input: published to the node topic, then stored
    let (s, body) = inst
        .patch(
            &format!(
                "/unit_nodes/set_state_input/{}",
                in_b["uuid"].as_str().unwrap()
            ),
            Some(&user),
            json!({"state": "on"}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{body}");
    assert_eq!(body["state"], "on");
    assert_eq!(
        dev_b.recv_on(&in_topic, WAIT).await.as_deref(),
        Some(&b"on"[..])
    );

    // unlinking sends SchemaUpdate again
    let (s, _) = inst
        .delete(
            &format!(
                "/unit_nodes/delete_unit_node_edge/{}",
                edge["uuid"].as_str().unwrap()
            ),
            Some(&user),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    assert!(dev_b
        .recv_on(
            &base_topic(&inst, &b, "input_base_topic", "schema_update"),
            WAIT
        )
        .await
        .is_some());
    inst.stop().await;
}

both_backends!(
    connect_refusals,
    topic_acl,
    state_and_logs,
    commands_and_update_status,
    update_times_out,
    linked_units_exchange_data,
);
