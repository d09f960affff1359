//! Moving a Unit between two instances of our server while its device (the official
//! `pepeunit-client`, tests/device/mqtt_device.py) runs: nobody touches the device, it ends up
//! reporting to the new instance. Also: cancelling, tickets, unsigned peer requests, and
//! "update env from the instance".

mod common;

use std::time::Duration;

use common::device::{workdir, Device};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::unit_token;
use common::{python, Backend, TestInstance};
use serde_json::{json, Value};

const FEDERATED: &[(&str, &str)] = &[("PU_FEDERATION_ALLOW_LOCAL", "true")];

/// The fixture's schema plus `reset/pepeunit`, so the instance can restart the device.
const SCHEMA_WITH_RESET: &str = r#"{
  "input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit", "reset/pepeunit"],
  "output_base_topic": ["state/pepeunit", "log/pepeunit"],
  "input_topic": ["set_fan_state/pepeunit", "raw_input"],
  "output_topic": ["current_temp/pepeunit", "raw_output"]
}"#;

async fn ticket(b: &TestInstance, token: &str) -> String {
    let (s, t) = b
        .post("/federation/move_tickets", Some(token), json!({}))
        .await;
    assert_eq!(s, 201, "{t}");
    t["ticket"].as_str().unwrap().to_string()
}

/// Polls the move on A until `pred` holds.
async fn move_until(
    a: &TestInstance,
    token: &str,
    unit: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..900 {
        let (s, m) = a.get(&format!("/units/move/{unit}"), Some(token)).await;
        assert_eq!(s, 200, "{m}");
        if pred(&m) {
            return m;
        }
        last = m;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the move never got there; last: {last}");
}

/// Polls `inst`'s hub search for `q` until `pred` holds on the items.
async fn hub_until(inst: &TestInstance, q: &str, pred: impl Fn(&Vec<Value>) -> bool) {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (s, v) = inst
            .get(&format!("/hub/search?q={q}&kind=Unit"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        if pred(v["items"].as_array().unwrap()) {
            return;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hub of {} never got there: {last}", inst.domain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_follows_its_unit_to_another_instance() {
    let Some(python) = python() else {
        assert!(!common::require_all(), "PU_TEST_PYTHON is required");
        eprintln!("skipped: PU_TEST_PYTHON not set");
        return;
    };
    let a = TestInstance::start_with(Backend::Sqlite, FEDERATED).await;
    let b = TestInstance::start_with(Backend::Sqlite, FEDERATED).await;
    let firmware = FirmwareRepo::create().await;
    firmware.publish("schema_example.json", SCHEMA_WITH_RESET, Some("v0.3.0"));
    let (_, a_token) = a.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&a, &a_token, &firmware, "fan", "Public").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let (s, v) = a
        .patch(
            &format!("/units/env/{uuid}"),
            Some(&a_token),
            json!({"env_json_string": "{\"WIFI_SSID\": \"home\", \"WIFI_PASS\": \"moving-pass\", \"SENSOR_PERIOD\": 9}"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");

    // the device runs on A, knowing nothing of B
    let work = workdir(&a, &uuid, &a_token).await;
    let env_before: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("env.json")).unwrap()).unwrap();
    let mut device = Device::spawn(
        &python,
        "fan",
        work.path(),
        &["--real-restart", "--duration", "90", "--wait-connack"],
    );
    device
        .expect("ready on A", |e| {
            e["event"] == "ready" || e["event"] == "connected"
        })
        .await;

    // the owner has an account on B and moves the unit there with a ticket made on B
    let (b_owner, b_token) = b.user("newhome").await;
    // B follows A's hub feed (its first user is its admin): A's public unit is in B's hub
    let (s, v) = b
        .post(
            "/federation/follow",
            Some(&b_token),
            json!({"domain": a.domain}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let a_unit_id = format!("http://{}/pepeunit/ap/units/{uuid}", a.domain);
    hub_until(&b, "fan_unit", |items| {
        items.iter().any(|i| i["url"] == a_unit_id.as_str())
    })
    .await;
    let t = ticket(&b, &b_token).await;
    let (s, m) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": b.domain, "ticket": t}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["state"], "Requested");
    // the ticket was used up
    let (s, again) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": b.domain, "ticket": t}),
        )
        .await;
    assert_eq!(s, 422, "{again}");

    let mut done = Value::Null;
    for _ in 0..900 {
        let (_, m) = a.get(&format!("/units/move/{uuid}"), Some(&a_token)).await;
        while let Ok(e) = device.events.try_recv() {
            device.seen.push(e);
        }
        if m["state"] == "Done" {
            done = m;
            break;
        }
        done = m;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["state"], "Done", "{done}\ndevice: {:#?}", device.seen);
    let b_port = b.config.mqtt_port;
    device
        .expect("restart into B", |e| {
            e["event"] == "start" && e["port"].as_u64() == Some(b_port as u64)
        })
        .await;
    assert!(device.seen.iter().any(|e| e["event"] == "restarting"));

    // B: the unit is the new account's, with the device's reports and its old secrets
    let remote = done["remote_unit_uuid"].as_str().unwrap();
    let (s, b_unit) = b.get(&format!("/units/{remote}"), Some(&b_token)).await;
    assert_eq!(s, 200, "{b_unit}");
    assert_eq!(b_unit["creator_uuid"], b_owner);
    assert!(b_unit["unit_state"].is_object(), "{b_unit}");
    let (s, b_env) = b.get(&format!("/units/env/{remote}"), Some(&b_token)).await;
    assert_eq!(s, 200, "{b_env}");
    assert_eq!(b_env["PU_DOMAIN"], b.domain);
    assert_eq!(b_env["WIFI_PASS"], "moving-pass");
    assert_eq!(b_env["PU_SECRET_KEY"], env_before["PU_SECRET_KEY"]);
    // the device's own env.json now names B
    let env_after: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("env.json")).unwrap()).unwrap();
    assert_eq!(env_after["PU_DOMAIN"], b.domain);
    assert_eq!(env_after["PU_MQTT_PORT"].as_u64(), Some(b_port as u64));

    // A: moved; the old env endpoint sends the device to B, the actor says movedTo
    let a_unit_token = unit_token(&a, uuid.as_str());
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(a.url(&format!("/units/env/{uuid}")))
        .header("x-auth-token", &a_unit_token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(status, 308, "{}", res.text().await.unwrap());
    assert_eq!(
        location,
        format!("http://{}/pepeunit/api/v1/units/env/{remote}", b.domain)
    );
    let actor: Value = a
        .http
        .get(format!("{}/pepeunit/ap/units/{uuid}", a.base))
        .header("accept", "application/activity+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(actor["movedTo"], done["moved_to"], "{actor}");
    assert!(actor["movedTo"].as_str().unwrap().contains(remote));
    // B's hub: A's entry left with the Move, B's own copy is there
    let b_unit_id = format!("http://{}/pepeunit/ap/units/{remote}", b.domain);
    hub_until(&b, "fan_unit", |items| {
        !items.iter().any(|i| i["url"] == a_unit_id.as_str())
            && items.iter().any(|i| i["url"] == b_unit_id.as_str())
    })
    .await;
    // a done move cannot be undone
    let (s, v) = a
        .delete(&format!("/units/move/{uuid}"), Some(&a_token))
        .await;
    assert_eq!(s, 422, "{v}");

    drop(device);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_move_keeps_the_unit() {
    let a = TestInstance::start_with(Backend::Sqlite, FEDERATED).await;
    let b = TestInstance::start_with(Backend::Sqlite, FEDERATED).await;
    let firmware = FirmwareRepo::create().await;
    let (_, a_token) = a.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&a, &a_token, &firmware, "lamp", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let (_, b_token) = b.user("newhome").await;

    // bad requests: unknown ticket, own domain, someone else's unit, garbage domain
    let (s, v) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": b.domain, "ticket": "made-up"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("ticket"), "{v}");
    let (s, v) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": a.domain, "ticket": "x"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (_, stranger) = a.user("stranger").await;
    let t = ticket(&b, &b_token).await;
    let (s, v) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&stranger),
            json!({"target_domain": b.domain, "ticket": t}),
        )
        .await;
    assert!(s == 403 || s == 404, "{s} {v}");
    let (s, v) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": "not a domain!", "ticket": t}),
        )
        .await;
    assert_eq!(s, 422, "{v}");

    // an unsigned peer request is refused before anything is read
    let (s, v) = b
        .post(
            "/federation/peer/moves",
            None,
            json!({"ticket": t, "unit_uuid": uuid, "archive": "", "passphrase": "x"}),
        )
        .await;
    assert_eq!(s, 401, "{v}");

    // no device: the move waits; cancelling gives everything back
    let (s, m) = a
        .post(
            &format!("/units/move/{uuid}"),
            Some(&a_token),
            json!({"target_domain": b.domain, "ticket": t}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let remote = m["remote_unit_uuid"].as_str().unwrap().to_string();
    let waiting = move_until(&a, &a_token, &uuid, |m| m["state"] == "CommandsSent").await;
    assert!(waiting["commands_sent_datetime"].is_string());
    // while it waits, the device (if it asked) would get B's env
    let a_unit_token = unit_token(&a, uuid.as_str());
    let (s, env) = a
        .get(&format!("/units/env/{uuid}"), Some(&a_unit_token))
        .await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["PU_DOMAIN"], b.domain);
    let (s, copy) = b.get(&format!("/units/{remote}"), Some(&b_token)).await;
    assert_eq!(s, 200, "{copy}");

    let (s, m) = a
        .delete(&format!("/units/move/{uuid}"), Some(&a_token))
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["state"], "Cancelled");
    let (s, _) = b.get(&format!("/units/{remote}"), Some(&b_token)).await;
    assert_eq!(s, 404, "B dropped its copy");
    let (s, env) = a
        .get(&format!("/units/env/{uuid}"), Some(&a_unit_token))
        .await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["PU_DOMAIN"], a.domain);
    let (s, u) = a.get(&format!("/units/{uuid}"), Some(&a_token)).await;
    assert_eq!(s, 200, "{u}");

    a.stop().await;
    b.stop().await;
}

/// The roadmap's button: after the instance's address changes, the stored env is rewritten
/// and the device told to fetch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_env_from_instance() {
    let mut a = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = a.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&a, &token, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let (s, v) = a
        .patch(
            &format!("/units/env/{uuid}"),
            Some(&token),
            json!({"env_json_string": "{\"WIFI_SSID\": \"home\", \"WIFI_PASS\": \"p\", \"SENSOR_PERIOD\": 1}"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, before) = a.get(&format!("/units/env/{uuid}"), Some(&token)).await;
    // the instance moves to another MQTT port: the stored env still has the old one
    a.config.mqtt_host = "mqtt.example.org".into();
    a.restart(Duration::ZERO).await;
    let (_, stale) = a.get(&format!("/units/env/{uuid}"), Some(&token)).await;
    assert_eq!(stale["PU_MQTT_HOST"], before["PU_MQTT_HOST"]);
    let (s, r) = a
        .post(
            &format!("/units/update_env_from_instance/{uuid}?restart=true"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["stored_env_refreshed"], true);
    assert_eq!(r["env_update"], true);
    assert_eq!(r["schema_update"], true);
    assert_eq!(r["reset"], false, "the fixture's schema has no reset topic");
    let (_, fresh) = a.get(&format!("/units/env/{uuid}"), Some(&token)).await;
    assert_eq!(fresh["PU_MQTT_HOST"], "mqtt.example.org");
    assert_eq!(fresh["WIFI_PASS"], "p");
    assert_eq!(fresh["PU_SECRET_KEY"], before["PU_SECRET_KEY"]);
    // the device itself may not
    let (s, _) = a
        .post(
            &format!("/units/update_env_from_instance/{uuid}"),
            Some(&unit_token(&a, uuid.as_str())),
            json!({}),
        )
        .await;
    assert_eq!(s, 403);
    a.stop().await;
}
