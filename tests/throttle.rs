//! Per-topic throttling (issue 18 part 2, SPEC §8) end to end: the embedded broker drops what
//! exceeds a topic's limit before anyone gets it (the device keeps its connection and gets its
//! PUBACKs), the shards do it with an external broker (mosquitto), drops are counted per topic
//! and Unit for the owner, admins set the rules and per-user rules over REST, and they outlive a
//! restart. Scraper tokens (part 5) are here too. The bucket arithmetic at its boundaries
//! (exactly the burst, one more, refill to the nanosecond, clock going back) is unit-tested in
//! `src/domain/throttle.rs`, many topics of one Unit in `src/service/throttle.rs`.

mod common;

use std::time::Duration;

use common::fixtures::{output_node, registry_repo_unit, FirmwareRepo};
use common::mqtt::{unit_token, MqttDevice};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A rule no test outlives: one message per 100 s after a burst of 3.
const SLOW_NODES: &str = "{domain}/+/pepeunit=0.01:3";

/// Publishes `n` QoS 1 messages on `topic` as `token` and waits for their PUBACKs. Returns how
/// many were acknowledged and whether the connection was lost meanwhile.
async fn flood(
    port: u16,
    id: &str,
    token: &str,
    topic: &str,
    n: usize,
    payload: &str,
) -> (usize, bool) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(token, "");
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, n + 10);
    for i in 0..n {
        client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                payload.replace("{i}", &i.to_string()),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    let mut lost = false;
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked < n && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                if connected {
                    lost = true;
                }
                connected = true;
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => lost = true,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => {
                lost = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = client.disconnect().await;
    (acked, lost)
}

/// One QoS 1 publish over MQTT 5; the reason code of its PUBACK.
async fn v5_puback_reason(port: u16, token: &str, topic: &str) -> String {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
    let mut o = O5::new("device-v5", "127.0.0.1", port);
    o.set_credentials(token, "");
    let (client, mut eventloop) = C5::new(o, 10);
    client
        .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "v5")
        .await
        .unwrap();
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(E5::Incoming(P5::PubAck(ack))) => return format!("{:?}", ack.reason),
                Ok(_) => {}
                Err(e) => return format!("error {e}"),
            }
        }
    })
    .await
    .expect("a PUBACK within 10 s");
    let _ = client.disconnect().await;
    reason
}

/// Polls `path` (with `token`) until `done` holds.
async fn until(
    inst: &TestInstance,
    token: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    inst.get_until(path, Some(token), done).await
}

fn topic<'a>(unit_load: &'a Value, suffix: &str) -> &'a Value {
    unit_load["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no topic {suffix}: {unit_load}"))
}

/// Counts what a watcher gets on `topic` until `wait` passes with nothing new.
async fn received(watcher: &mut MqttDevice, topic: &str, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(p) = watcher.recv_on(topic, wait).await {
        got.push(String::from_utf8(p).unwrap());
    }
    got
}

async fn put(inst: &TestInstance, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    inst.call("PUT", path, Some(token), Some(body)).await
}

async fn embedded(backend: Backend) {
    // ("PU_THROTTLE_RULES", ""): the defaults of SPEC §8 (tests otherwise run without limits)
    let mut inst = TestInstance::start_with(backend, &[("PU_THROTTLE_RULES", "")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (owner_uuid, owner) = inst.user("owner1").await;
    let (_, stranger) = inst.user("stranger1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "throttled", "Private").await;
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let d = inst.domain.clone();
    let port = inst.config.mqtt_bind.port();
    let token = unit_token(&inst, &unit);

    // the defaults, and who may read them
    let (status, settings) = inst.get("/throttle", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["source"], "config", "{settings}");
    assert_eq!(
        settings["rules"],
        json!([
            {"pattern": "{domain}/output_base_topic/+/log/pepeunit", "rate": 1.0, "burst": 60},
            {"pattern": "{domain}/+/+/+/pepeunit", "rate": 1.0, "burst": 3},
            {"pattern": "{domain}/+/pepeunit", "rate": 1.0, "burst": 3},
            {"pattern": "{domain}/+", "rate": 10.0, "burst": 20},
        ]),
        "{settings}"
    );
    assert_eq!(settings["config_rules"], settings["rules"]);
    for who in [Some(owner.as_str()), None] {
        let (status, _) = inst.get("/throttle", who).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    // under the defaults a boot's burst of 60 log lines is kept whole (one message per line,
    // as the official client sends them)
    let log = format!("{d}/output_base_topic/{unit_uuid}/log/pepeunit");
    let (acked, lost) = flood(
        port,
        "logger",
        &token,
        &log,
        60,
        r#"{"level": "Info", "text": "boot line {i}"}"#,
    )
    .await;
    assert_eq!((acked, lost), (60, false));
    let path = format!("/metrics/load/units/{unit_uuid}");
    let one = until(&inst, &owner, &path, |b| b["messages_last_hour"] == 60).await;
    assert_eq!(one["throttled_last_hour"], 0, "{one}");

    // a slow limit on node topics, so that the boundary does not depend on the machine's speed
    let (status, set) = put(
        &inst,
        "/throttle",
        &admin,
        json!({"rules": [{"pattern": "{domain}/+/pepeunit", "rate": 0.01, "burst": 3}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["source"], "admin");

    // a watcher (the backend's own token: a superuser) sees what the broker routes
    let backend_token = inst
        .running
        .as_ref()
        .unwrap()
        .instance
        .tokens
        .backend_token(&d);
    let mut watcher = MqttDevice::connect(port, "watcher", &backend_token)
        .await
        .unwrap();
    let node_topic = format!("{d}/{node}/pepeunit");
    assert!(watcher.subscribe(&node_topic).await);

    // exactly the burst passes, the rest is dropped before anyone gets it; every message is
    // acknowledged and the device stays connected
    let (acked, lost) = flood(port, "device", &token, &node_topic, 10, "{i}").await;
    assert_eq!((acked, lost), (10, false));
    let got = received(&mut watcher, &node_topic, Duration::from_secs(1)).await;
    assert_eq!(got, ["0", "1", "2"], "only the first three are routed");
    let one = until(&inst, &owner, &path, |b| b["throttled_last_hour"] == 7).await;
    let t = topic(&one, &format!("{node}/pepeunit"));
    assert_eq!(t["messages_last_minute"], 3, "{one}");
    assert_eq!(t["throttled_last_minute"], 7, "{one}");
    assert_eq!(t["throttled_last_hour"], 7, "{one}");
    let (_, mqtt) = inst.get("/metrics/mqtt", Some(&admin)).await;
    assert_eq!(mqtt["counters"]["throttled"], 7, "{mqtt}");
    // MQTT 5 devices learn why: PUBACK reason 0x97
    assert_eq!(
        v5_puback_reason(port, &token, &node_topic).await,
        "QuotaExceeded"
    );
    until(&inst, &owner, &path, |b| b["throttled_last_hour"] == 8).await;
    let (status, _) = inst.get(&path, Some(&stranger)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // the last value stored is the last one that passed
    let (_, n) = inst.get(&format!("/unit_nodes/{node}"), Some(&owner)).await;
    assert_eq!(n["state"], "2", "{n}");

    // the owner's own rules come first: unlimited for them
    let (status, set) = put(
        &inst,
        &format!("/throttle/users/{owner_uuid}"),
        &admin,
        json!({"rules": [{"pattern": "{domain}/+/pepeunit", "rate": 0}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["users"][0]["user_uuid"], owner_uuid.as_str(), "{set}");
    let (acked, _) = flood(port, "device", &token, &node_topic, 5, "u{i}").await;
    assert_eq!(acked, 5);
    let got = received(&mut watcher, &node_topic, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 5, "{got:?}");
    // back to the instance's rules: buckets start full under them
    let (status, _) = inst
        .delete(&format!("/throttle/users/{owner_uuid}"), Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = inst
        .delete(&format!("/throttle/users/{owner_uuid}"), Some(&admin))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _) = flood(port, "device", &token, &node_topic, 5, "b{i}").await;
    let got = received(&mut watcher, &node_topic, Duration::from_secs(1)).await;
    assert_eq!(got, ["b0", "b1", "b2"]);
    until(&inst, &owner, &path, |b| b["throttled_last_hour"] == 10).await;

    // bad rules are refused with the rule named, and change nothing
    for (body, needle) in [
        (
            json!({"rules": [{"pattern": "{domain}/#/x", "rate": 1}]}),
            "rule 1",
        ),
        (
            json!({"rules": [{"pattern": "{domain}/+", "rate": -1}]}),
            "rate",
        ),
        (
            json!({"rules": [{"pattern": "{domain}/+", "rate": 1, "burst": 0}]}),
            "burst",
        ),
        (
            json!({"rules": [{"pattern": "{domain}/+", "rate": 1, "speed": 2}]}),
            "speed",
        ),
        (
            json!({"rules": [{"pattern": "a", "rate": 1}, {"pattern": "a", "rate": 2}]}),
            "twice",
        ),
    ] {
        let (status, err) = put(&inst, "/throttle", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
    let (status, _) = put(&inst, "/throttle", &owner, json!({"rules": []})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = put(
        &inst,
        &format!("/throttle/users/{}", uuid::Uuid::new_v4()),
        &admin,
        json!({"rules": []}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // what the admin set outlives a restart
    put(
        &inst,
        &format!("/throttle/users/{owner_uuid}"),
        &admin,
        json!({"rules": [{"pattern": "{domain}/+", "rate": 2.5, "burst": 4}]}),
    )
    .await;
    inst.restart(Duration::ZERO).await;
    inst.wait_mqtt_ready().await;
    let (_, after) = inst.get("/throttle", Some(&admin)).await;
    assert_eq!(after["source"], "admin", "{after}");
    assert_eq!(
        after["rules"],
        json!([{"pattern": SLOW_NODES.split('=').next().unwrap(), "rate": 0.01, "burst": 3}])
    );
    assert_eq!(
        after["users"],
        json!([{"user_uuid": owner_uuid, "rules": [{"pattern": "{domain}/+", "rate": 2.5, "burst": 4}]}])
    );
    // and the config's rules come back when the admin's are removed
    let (status, back) = inst.delete("/throttle", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["source"], "config");
    assert_eq!(back["rules"], settings["rules"]);
}

both_backends!(embedded);

/// With an external broker the shards throttle: the broker has routed the message already,
/// but the platform neither stores nor meters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker() {
    let Some(broker) = common::mosquitto::Mosquitto::start().await else {
        eprintln!("skipped: no mosquitto (scripts/test.sh installs it)");
        return;
    };
    let port = broker.port.to_string();
    let inst = TestInstance::start_with(
        Backend::Sqlite,
        &[
            ("PU_MQTT_MODE", "external"),
            ("PU_MQTT_BACKEND_HOST", "127.0.0.1"),
            ("PU_MQTT_BACKEND_PORT", &port),
            ("PU_MQTT_PORT", &port),
            ("PU_THROTTLE_RULES", SLOW_NODES),
        ],
    )
    .await;
    inst.wait_mqtt_ready().await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "external", "Private").await;
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let node_topic = format!("{}/{node}/pepeunit", inst.domain);
    let (acked, lost) = flood(
        broker.port,
        "device",
        &unit_token(&inst, &unit),
        &node_topic,
        10,
        "{i}",
    )
    .await;
    assert_eq!((acked, lost), (10, false));
    let path = format!("/metrics/load/units/{unit_uuid}");
    let one = until(&inst, &owner, &path, |b| b["throttled_last_hour"] == 7).await;
    let t = topic(&one, &format!("{node}/pepeunit"));
    assert_eq!(t["messages_last_minute"], 3, "{one}");
    let (_, mqtt) = inst.get("/metrics/mqtt", Some(&admin)).await;
    assert_eq!(mqtt["counters"]["throttled"], 7, "{mqtt}");
    let (_, n) = inst.get(&format!("/unit_nodes/{node}"), Some(&owner)).await;
    assert_eq!(n["state"], "2", "the last value that passed: {n}");
}

/// Scraper tokens (part 5): made and revoked by admins, they read metrics, load and
/// load_limit, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraper_tokens() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "scraped", "Private").await;
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let device = MqttDevice::connect(
        inst.config.mqtt_bind.port(),
        "scraped",
        &unit_token(&inst, &unit),
    )
    .await
    .unwrap();
    device
        .publish(&format!("{}/{node}/pepeunit", inst.domain), "1")
        .await;

    let (status, _) = inst
        .post("/scraper_tokens", Some(&owner), json!({"name": "mine"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": "a\nb"}),
        json!({}),
    ] {
        let (status, err) = inst
            .post("/scraper_tokens", Some(&admin), bad.clone())
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
    }
    let (status, made) = inst
        .post(
            "/scraper_tokens",
            Some(&admin),
            json!({"name": "prometheus"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("pus_") && token.len() == 68, "{token}");
    let uuid = made["uuid"].as_str().unwrap().to_string();
    let (_, list) = inst.get("/scraper_tokens", Some(&admin)).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(
        list[0].get("token").is_none(),
        "the token is shown once: {list}"
    );
    assert_eq!(list[0]["last_used_datetime"], Value::Null);

    let bearer = |url: String, t: &str| {
        inst.http
            .get(url)
            .header("authorization", format!("Bearer {t}"))
            .send()
    };
    let status = |r: reqwest::Response| StatusCode::from_u16(r.status().as_u16()).unwrap();
    // what it reads: every Unit's load (another user's too), the MQTT core, the node,
    // Prometheus, load_limit
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = bearer(inst.url("/metrics/load/units"), &token)
            .await
            .unwrap();
        assert_eq!(status_of(&r), 200);
        let body: Value = r.json().await.unwrap();
        if body["units"].as_array().unwrap().len() == 1 {
            assert_eq!(body["units"][0]["unit_uuid"], unit_uuid.as_str());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        inst.url(&format!("/metrics/load/units/{unit_uuid}")),
        inst.url("/metrics/mqtt"),
        inst.url("/metrics/node"),
        inst.url("/load_limit"),
        format!("{}/pepeunit/metrics", inst.base),
    ] {
        let r = bearer(path.clone(), &token).await.unwrap();
        assert_eq!(status(r), StatusCode::OK, "{path}");
    }
    let (_, list) = inst.get("/scraper_tokens", Some(&admin)).await;
    assert!(list[0]["last_used_datetime"].is_string(), "{list}");
    // and nothing else: it is not an agent
    for path in ["/throttle", "/scraper_tokens"] {
        let r = bearer(inst.url(path), &token).await.unwrap();
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{path}");
    }
    // /units answers anyone (public units): with the scraper token, what anonymous gets
    let r = bearer(inst.url("/units"), &token).await.unwrap();
    assert_eq!(status_of(&r), 200);
    let as_scraper: Value = r.json().await.unwrap();
    let (_, anonymous) = inst.get("/units", None).await;
    assert_eq!(as_scraper, anonymous);
    // the scheme is case-insensitive; another scheme (a proxy's Basic auth) is not ours and
    // leaves x-auth-token in charge
    let r = inst
        .http
        .get(inst.url("/metrics/load/units"))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::OK);
    let r = inst
        .http
        .get(inst.url("/metrics/load/units"))
        .header("authorization", "Basic cHJveHk6c2VjcmV0")
        .header("x-auth-token", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::OK);
    let r = inst
        .http
        .patch(inst.url("/grade"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::FORBIDDEN);
    // a wrong bearer is refused, not taken for no token
    let r = bearer(inst.url("/metrics/load/units"), "pus_0000")
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::FORBIDDEN);

    // revoked: refused at once
    let (status_code, _) = inst
        .delete(&format!("/scraper_tokens/{uuid}"), Some(&owner))
        .await;
    assert_eq!(status_code, StatusCode::FORBIDDEN);
    let (status_code, _) = inst
        .delete(&format!("/scraper_tokens/{uuid}"), Some(&admin))
        .await;
    assert_eq!(status_code, StatusCode::NO_CONTENT);
    let r = bearer(format!("{}/pepeunit/metrics", inst.base), &token)
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::FORBIDDEN);
    let (status_code, _) = inst
        .delete(&format!("/scraper_tokens/{uuid}"), Some(&admin))
        .await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);
}

fn status_of(r: &reqwest::Response) -> u16 {
    r.status().as_u16()
}
