//! The official Python device client (`pepeunit-client` 1.3.x) over MQTT against `pepeunit
//! serve`'s embedded broker, with nothing else installed: connect, state, logs, Update after a
//! new tag (the client downloads its firmware and reports the new version), SchemaUpdate after
//! linking, data from unit A's output arriving at unit B's input, and ACL denials.
//!
//! Devices are tests/device/mqtt_device.py processes (facts about the client in
//! tests/device/CLIENT-NOTES.md); their JSON event lines are read as they happen.

mod common;

use std::time::Duration;

use common::device::{workdir, Device, WAIT};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::unit_token;
use common::{python, Backend, TestInstance};
use serde_json::{json, Value};

async fn wait_unit(
    inst: &TestInstance,
    token: &str,
    unit: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = inst.get(&format!("/units/{unit}"), Some(token)).await;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unit never reached the state: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_uuid(inst: &TestInstance, token: &str, unit: &str, topic: &str) -> String {
    let (_, list) = inst
        .get(&format!("/unit_nodes?unit_uuid={unit}"), Some(token))
        .await;
    list["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"] == topic)
        .unwrap_or_else(|| panic!("{topic} in {list}"))["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn official_client_over_mqtt(backend: Backend) {
    let Some(python) = python() else {
        eprintln!("skipped: PU_TEST_PYTHON not set (scripts/test.sh creates the venv)");
        return;
    };
    let inst = TestInstance::start_with(
        backend,
        &[
            ("PU_STATE_SEND_INTERVAL", "1"),
            ("PU_FIRMWARE_UPDATE_TIMEOUT", "120"),
            // the default per-topic limits of SPEC §8 (tests otherwise run without them): the
            // official client works under them
            ("PU_THROTTLE_RULES", ""),
        ],
    )
    .await;
    let firmware = FirmwareRepo::create().await;
    let (_, user) = inst.user("owner1").await;
    let (registry, repo, unit_a) =
        registry_repo_unit(&inst, &user, &firmware, "unita", "Private").await;
    let a = unit_a["uuid"].as_str().unwrap().to_string();
    let (s, unit_b) = inst
        .post(
            "/units",
            Some(&user),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "unitb_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{unit_b}");
    let b = unit_b["uuid"].as_str().unwrap().to_string();
    let head = firmware.head("main");
    let (work_a, work_b) = (
        workdir(&inst, &a, &unit_token(&inst, &a)).await,
        workdir(&inst, &b, &unit_token(&inst, &b)).await,
    );

    // A: reports state, logs an error, and publishes its temperature twice a second
    let mut dev_a = Device::spawn(
        &python,
        "A",
        work_a.path(),
        &[
            "--duration",
            "90",
            "--log",
            "error:sensor failed",
            "--publish-every",
            "500:current_temp/pepeunit:21.5",
        ],
    );
    dev_a.expect("ready", |e| e["event"] == "ready").await;
    wait_unit(&inst, &user, &a, |u| {
        u["current_commit_version"] == json!(head)
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, logs) = inst
            .get(
                &format!("/units/log_list/?uuid={a}&level=Error"),
                Some(&user),
            )
            .await;
        if logs["unit_logs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["text"] == "sensor failed"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "error log never stored: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B: listens; trying A's command topic is refused by the broker
    let a_update = format!("{}/input_base_topic/{a}/update/pepeunit", inst.domain);
    let mut dev_b = Device::spawn(
        &python,
        "B",
        work_b.path(),
        &["--duration", "90", "--subscribe", &a_update],
    );
    let denied = dev_b
        .expect("the SUBACK for A's command topic", |e| {
            e["event"] == "subscribed" && e["topic"] == json!(a_update)
        })
        .await;
    assert_eq!(denied["ok"], false, "{denied}");

    // linking A's output to B's input: B gets SchemaUpdate, fetches its schema, subscribes,
    // and receives A's values
    let out_a = node_uuid(&inst, &user, &a, "current_temp/pepeunit").await;
    let in_b = node_uuid(&inst, &user, &b, "set_fan_state/pepeunit").await;
    let (s, edge) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&user),
            json!({"node_output_uuid": out_a, "node_input_uuid": in_b}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{edge}");
    dev_b
        .expect("SchemaUpdate", |e| {
            e["event"] == "command" && e["command"] == "SchemaUpdate"
        })
        .await;
    let out_topic = format!("{}/{out_a}/pepeunit", inst.domain);
    let got = dev_b
        .expect("A's value on B's input", |e| {
            e["event"] == "input" && e["topic"] == json!(out_topic)
        })
        .await;
    assert_eq!(got["value"], "21.5", "{got}");

    // a new tag moves the repo's target: A gets Update, downloads its firmware through the
    // client's own code, and reports the new version
    let new_head = firmware.publish("main.py", "print('v3')\n", Some("v0.3.0"));
    let (s, body) = inst
        .patch(
            &format!(
                "/repository_registry/update_local_repository/{}",
                registry["uuid"].as_str().unwrap()
            ),
            Some(&user),
            Value::Null,
        )
        .await;
    assert!(s.is_success(), "{body}");
    let update = dev_a
        .expect("Update", |e| {
            e["event"] == "command" && e["command"] == "Update"
        })
        .await;
    assert_eq!(
        update["payload"]["PU_COMMIT_VERSION"],
        json!(new_head),
        "{update}"
    );
    let read = wait_unit(&inst, &user, &a, |u| {
        u["firmware_update_status"] == "Success"
    })
    .await;
    assert_eq!(read["current_commit_version"], json!(new_head), "{read}");

    // a garbage (JWT-shaped) token is refused at CONNECT
    let mut intruder = Device::spawn(
        &python,
        "intruder",
        work_b.path(),
        &[
            "--duration",
            "10",
            "--wait-connack",
            "--auth-token",
            "eyJhbGciOiJIUzI1NiJ9.eyJ1dWlkIjoieCJ9.c2lnbmF0dXJl",
        ],
    );
    intruder
        .expect("a refused CONNECT", |e| e["event"] == "connect_refused")
        .await;
    assert_eq!(intruder.exit_code().await, 4);
    drop((dev_a, dev_b));
    inst.stop().await;
}

both_backends!(official_client_over_mqtt);
