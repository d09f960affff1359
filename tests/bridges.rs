//! MQTT bridges between two instances of our server on loopback (SPEC §11, issue 5 part 4): a
//! device on A publishes to its Output node, a device on B subscribed to the bridged topic of
//! its schema.json receives it through A's built-in bridge carrier and B's embedded broker;
//! deleting the bridge stops the flow and revokes the credential. Then who may do what.

mod common;

use std::time::Duration;

use common::federation::eventually;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::{unit_token, MqttDevice};
use common::{assert_detail, Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

const LOCAL: &[(&str, &str)] = &[
    ("PU_FEDERATION_ALLOW_LOCAL", "true"),
    ("PU_FEDERATION_RETRY_BASE", "1"),
];

async fn start(backend: Backend) -> TestInstance {
    TestInstance::start_with(backend, LOCAL).await
}

fn mqtt_port(inst: &TestInstance) -> u16 {
    inst.config.mqtt_port
}

/// The uuid of the unit's node with this topic name.
async fn node(inst: &TestInstance, token: &str, unit: &Value, topic_name: &str) -> String {
    let (s, v) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={}", unit["uuid"].as_str().unwrap()),
            Some(token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"] == topic_name)
        .unwrap_or_else(|| panic!("no node {topic_name} in {v}"))["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn bridges(inst: &TestInstance, token: &str) -> Vec<Value> {
    let (s, v) = inst.get("/federation/bridges", Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

/// A with a Public unit (alice), B with a unit (bob); both first users, so admins.
struct Pair {
    a: TestInstance,
    b: TestInstance,
    alice: String,
    bob: String,
    a_unit: Value,
    b_unit: Value,
    /// A's Output node `current_temp/pepeunit` and B's Input node `set_fan_state/pepeunit`.
    output: String,
    input: String,
    _firmware: FirmwareRepo,
}

async fn pair(backend: Backend) -> Pair {
    let a = start(backend).await;
    let b = start(backend).await;
    let (_, alice) = a.user("alice").await;
    let (_, bob) = b.user("bobby").await;
    let firmware = FirmwareRepo::create().await;
    let (_, _, a_unit) = registry_repo_unit(&a, &alice, &firmware, "sensor", "Public").await;
    let (_, _, b_unit) = registry_repo_unit(&b, &bob, &firmware, "fan", "Private").await;
    let output = node(&a, &alice, &a_unit, "current_temp/pepeunit").await;
    let input = node(&b, &bob, &b_unit, "set_fan_state/pepeunit").await;
    Pair {
        a,
        b,
        alice,
        bob,
        a_unit,
        b_unit,
        output,
        input,
        _firmware: firmware,
    }
}

impl Pair {
    async fn bridge(&self, token: &str, output: &str, input: &str) -> (StatusCode, Value) {
        self.b
            .post(
                "/federation/bridges",
                Some(token),
                json!({"output_domain": self.a.domain, "output_node_uuid": output, "input_node_uuid": input}),
            )
            .await
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

async fn data_flows_from_a_device_on_a_to_a_device_on_b(backend: Backend) {
    let p = pair(backend).await;
    let (s, bridge) = p.bridge(&p.bob, &p.output, &p.input).await;
    assert_eq!(s, StatusCode::CREATED, "{bridge}");
    let topic = format!("{}/{}/pepeunit", p.a.domain, p.output);
    assert_eq!(bridge["state"], "Active", "{bridge}");
    assert_eq!(bridge["role"], "Input");
    assert_eq!(bridge["topic"], topic.as_str());
    assert_eq!(bridge["input_node_uuid"], p.input.as_str());
    let uuid = bridge["uuid"].as_str().unwrap().to_string();

    // B's schema.json lists the bridged topic after the node's own topic
    let b_unit = p.b_unit["uuid"].as_str().unwrap();
    let (s, schema) =
        p.b.get(&format!("/units/get_current_schema/{b_unit}"), Some(&p.bob))
            .await;
    assert_eq!(s, StatusCode::OK, "{schema}");
    let inputs = schema["input_topic"]["set_fan_state/pepeunit"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema}"));
    assert_eq!(inputs.len(), 2, "{schema}");
    assert_eq!(inputs[1], topic.as_str(), "{schema}");

    // A shows its side, and the carrier reaches B's broker
    eventually("A's side of the bridge Active", || async {
        let list = bridges(&p.a, &p.alice).await;
        let ours = list.iter().find(|b| b["uuid"] == uuid.as_str())?;
        assert_eq!(ours["role"], "Output", "{ours}");
        assert_eq!(ours["peer_domain"], p.b.domain.as_str(), "{ours}");
        (ours["state"] == "Active").then_some(())
    })
    .await;

    let mut b_device = MqttDevice::connect(
        mqtt_port(&p.b),
        &format!("b-{b_unit}"),
        &unit_token(&p.b, &p.b_unit),
    )
    .await
    .expect("B's device connects");
    assert!(
        b_device.subscribe(&topic).await,
        "B's broker refused the bridged topic to the unit it is bridged to"
    );
    let a_device = MqttDevice::connect(mqtt_port(&p.a), "a-device", &unit_token(&p.a, &p.a_unit))
        .await
        .expect("A's device connects");

    // the carrier subscribes on A a moment after it connected to B: publish until it arrives
    let mut got = None;
    for i in 0..40 {
        a_device.publish(&topic, format!("21.{i}")).await;
        if let Some(payload) = b_device.recv_on(&topic, Duration::from_millis(500)).await {
            got = Some(String::from_utf8(payload).unwrap());
            break;
        }
    }
    let got = got.expect("a message published on A reached the device on B within 20 s");
    assert!(got.starts_with("21."), "{got}");
    // and the next one too
    a_device.publish(&topic, "22.5").await;
    let mut next = None;
    while let Some(payload) = b_device.recv_on(&topic, Duration::from_secs(10)).await {
        if payload == b"22.5" {
            next = Some(());
            break;
        }
    }
    assert!(next.is_some(), "the second message did not arrive");

    // delete on B: both sides forget it, B's schema drops the topic
    let (s, v) =
        p.b.delete(&format!("/federation/bridges/{uuid}"), Some(&p.bob))
            .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(bridges(&p.b, &p.bob).await.is_empty());
    assert!(bridges(&p.a, &p.alice).await.is_empty());
    let (_, schema) =
        p.b.get(&format!("/units/get_current_schema/{b_unit}"), Some(&p.bob))
            .await;
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{schema}"
    );
    // nothing more arrives (whatever was in flight is drained first)
    while b_device
        .recv_on(&topic, Duration::from_millis(300))
        .await
        .is_some()
    {}
    a_device.publish(&topic, "after-delete").await;
    assert_eq!(
        b_device.recv_on(&topic, Duration::from_secs(2)).await,
        None,
        "a message arrived after the bridge was deleted"
    );
    // and B's broker refuses the credential
    let credential =
        pepeunit::token::TokenKey::new(&p.b.config.secret_key).bridge_token(uuid.parse().unwrap());
    assert!(
        MqttDevice::connect(mqtt_port(&p.b), "old-bridge", &credential)
            .await
            .is_err(),
        "a deleted bridge's credential still connects"
    );
    p.stop().await;
}

both_backends!(data_flows_from_a_device_on_a_to_a_device_on_b);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_publishes_to_its_topic_only() {
    let p = pair(Backend::Sqlite).await;
    let (s, bridge) = p.bridge(&p.bob, &p.output, &p.input).await;
    assert_eq!(s, StatusCode::CREATED, "{bridge}");
    let topic = bridge["topic"].as_str().unwrap().to_string();
    let credential = pepeunit::token::TokenKey::new(&p.b.config.secret_key)
        .bridge_token(bridge["uuid"].as_str().unwrap().parse().unwrap());

    // REST knows nothing of it
    let (s, v) = p.b.get("/federation/bridges", Some(&credential)).await;
    assert_detail(&(s, v), 403, "Invalid agent type");

    let b_unit = p.b_unit["uuid"].as_str().unwrap();
    let own_input = format!("{}/{}/pepeunit", p.b.domain, p.input);
    let mut b_device =
        MqttDevice::connect(mqtt_port(&p.b), "b-device", &unit_token(&p.b, &p.b_unit))
            .await
            .unwrap();
    assert!(b_device.subscribe(&topic).await);
    assert!(b_device.subscribe(&own_input).await);
    // the unit reads the bridged topic but may not publish to it
    b_device.publish(&topic, "from-the-unit").await;

    let mut forger = MqttDevice::connect(mqtt_port(&p.b), "forger", &credential)
        .await
        .expect("a live bridge credential connects");
    assert!(!forger.subscribe(&topic).await, "the credential subscribed");
    assert!(
        !forger.subscribe("#").await,
        "the credential subscribed to #"
    );
    forger.publish(&own_input, "forged").await;
    forger
        .publish(
            &format!("{}/input_base_topic/{b_unit}/update/pepeunit", p.b.domain),
            "{}",
        )
        .await;
    forger
        .publish(&format!("{}/{}", p.a.domain, uuid::Uuid::new_v4()), "x")
        .await;
    // the positive control: its own topic is carried
    forger.publish(&topic, "carried").await;
    let mut seen = Vec::new();
    while let Some((t, payload)) = b_device.recv(Duration::from_secs(3)).await {
        seen.push((t, String::from_utf8_lossy(&payload).into_owned()));
    }
    assert!(
        seen.iter().any(|(t, m)| t == &topic && m == "carried"),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|(_, m)| m == "forged" || m == "from-the-unit"),
        "{seen:?}"
    );

    // a wrong signature or another type is not a credential
    let other = pepeunit::token::TokenKey::new("not-the-key")
        .bridge_token(bridge["uuid"].as_str().unwrap().parse().unwrap());
    assert!(MqttDevice::connect(mqtt_port(&p.b), "x1", &other)
        .await
        .is_err());
    // EMQX's authorization endpoint gives the same answers
    for (t, action, want) in [
        (topic.as_str(), "publish", "allow"),
        (topic.as_str(), "subscribe", "deny"),
        (own_input.as_str(), "publish", "deny"),
    ] {
        let (s, v) =
            p.b.post(
                "/units/auth",
                None,
                json!({"token": credential, "topic": t, "action": action}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["result"], want, "{t} {action}: {v}");
    }
    let (s, v) =
        p.b.post(
            "/units/mqtt_authn",
            None,
            json!({"username": credential, "clientid": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], "allow", "{v}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_leave_nothing_behind() {
    let p = pair(Backend::Sqlite).await;
    let (_, carol) = p.b.user("carol").await;

    // a stranger on B cannot bridge into bob's Input (even a Public one)
    let (s, v) =
        p.b.patch(
            &format!("/unit_nodes/{}", p.input),
            Some(&p.bob),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_detail(&p.bridge(&carol, &p.output, &p.input).await, 403, "creator");
    // no token at all
    let (s, _) = p
        .b
        .post(
            "/federation/bridges",
            None,
            json!({"output_domain": p.a.domain, "output_node_uuid": p.output, "input_node_uuid": p.input}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // bad input
    let (s, v) = p
        .b
        .post(
            "/federation/bridges",
            Some(&p.bob),
            json!({"output_domain": p.a.domain, "output_node_uuid": "nope", "input_node_uuid": p.input}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_detail(
        &p.bridge(&p.bob, &p.output, &unknown).await,
        404,
        "does not exist",
    );
    let b_output = node(&p.b, &p.bob, &p.b_unit, "current_temp/pepeunit").await;
    assert_detail(
        &p.bridge(&p.bob, &p.output, &b_output).await,
        422,
        "Input node",
    );
    for bad in ["", "a b", "http://x", "x/y", "user@host"] {
        let (s, v) = p
            .b
            .post(
                "/federation/bridges",
                Some(&p.bob),
                json!({"output_domain": bad, "output_node_uuid": p.output, "input_node_uuid": p.input}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {v}");
    }
    let (s, v) = p
        .b
        .post(
            "/federation/bridges",
            Some(&p.bob),
            json!({"output_domain": p.b.domain, "output_node_uuid": p.output, "input_node_uuid": p.input}),
        )
        .await;
    assert_detail(&(s, v), 422, "create_unit_node_edge");

    // A refuses: unknown node, an Input node, a node that is not Public
    assert_detail(
        &p.bridge(&p.bob, &unknown, &p.input).await,
        422,
        "does not exist",
    );
    let a_input = node(&p.a, &p.alice, &p.a_unit, "set_fan_state/pepeunit").await;
    assert_detail(
        &p.bridge(&p.bob, &a_input, &p.input).await,
        422,
        "Output node",
    );
    let (s, v) = p
        .a
        .post(
            "/units",
            Some(&p.alice),
            json!({"repo_uuid": p.a_unit["repo_uuid"], "visibility_level": "Internal", "name": "inside_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let internal = node(&p.a, &p.alice, &v, "current_temp/pepeunit").await;
    assert_detail(&p.bridge(&p.bob, &internal, &p.input).await, 422, "Public");

    // an address where nothing answers, and something that is not an instance
    let dead = format!("127.0.0.1:{}", common::free_port());
    let (s, v) = p
        .b
        .post(
            "/federation/bridges",
            Some(&p.bob),
            json!({"output_domain": dead, "output_node_uuid": p.output, "input_node_uuid": p.input}),
        )
        .await;
    assert_detail(&(s, v), 422, "did not accept the bridge");
    let garbage = common::StaticServer::start(std::env::temp_dir()).await;
    let (s, v) = p
        .b
        .post(
            "/federation/bridges",
            Some(&p.bob),
            json!({"output_domain": garbage.base.trim_start_matches("http://"), "output_node_uuid": p.output, "input_node_uuid": p.input}),
        )
        .await;
    assert_detail(&(s, v), 422, "did not accept the bridge");

    // B's policy denies A
    let (s, v) =
        p.b.call(
            "PUT",
            "/federation/domains/federation",
            Some(&p.bob),
            Some(json!({"mode": "deny", "domains": [p.a.domain]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_detail(&p.bridge(&p.bob, &p.output, &p.input).await, 422, "policy");

    // none of that left a bridge on either side
    assert!(bridges(&p.b, &p.bob).await.is_empty());
    assert!(bridges(&p.a, &p.alice).await.is_empty());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requests_must_be_signed_by_an_instance() {
    let p = pair(Backend::Sqlite).await;
    let url = format!("{}/federation/peer/bridges", p.a.api);
    let offer = json!({
        "uuid": uuid::Uuid::new_v4(), "output_node_uuid": p.output,
        "mqtt_host": "127.0.0.1", "mqtt_port": 1883, "credential": "x.y.z"
    });
    // unsigned
    let r = p.a.http.post(&url).json(&offer).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // a signature header naming B's key but signed by nobody
    let r = p
        .a
        .http
        .post(&url)
        .header("date", httpdate::fmt_http_date(std::time::SystemTime::now()))
        .header(
            "signature",
            format!(
                "keyId=\"http://{}/pepeunit/ap/instance#main-key\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date digest\",signature=\"AAAA\"",
                p.b.domain
            ),
        )
        .json(&offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r =
        p.a.http
            .delete(format!("{url}/{}", uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // and a user's token is no signature
    let r =
        p.a.http
            .post(&url)
            .header("x-auth-token", &p.alice)
            .json(&offer)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(bridges(&p.a, &p.alice).await.is_empty());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_on_the_output_side_tells_the_input_side() {
    let p = pair(Backend::Sqlite).await;
    let (s, bridge) = p.bridge(&p.bob, &p.output, &p.input).await;
    assert_eq!(s, StatusCode::CREATED, "{bridge}");
    let uuid = bridge["uuid"].as_str().unwrap();
    // the same link twice is refused; the same Output node into another Input node is not
    assert_detail(
        &p.bridge(&p.bob, &p.output, &p.input).await,
        422,
        "Bridge exist",
    );
    let raw_input = node(&p.b, &p.bob, &p.b_unit, "raw_input").await;
    let (s, second) = p.bridge(&p.bob, &p.output, &raw_input).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    assert_eq!(second["topic"], bridge["topic"]);
    assert_eq!(bridges(&p.a, &p.alice).await.len(), 2);
    // only the owner of the Output node may remove A's side
    let (_, mallory) = p.a.user("mallory").await;
    let got =
        p.a.delete(&format!("/federation/bridges/{uuid}"), Some(&mallory))
            .await;
    assert_detail(&got, 403, "creator");
    let (s, v) =
        p.a.delete(&format!("/federation/bridges/{uuid}"), Some(&p.alice))
            .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    for (inst, token) in [(&p.a, &p.alice), (&p.b, &p.bob)] {
        let left = bridges(inst, token).await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0]["uuid"], second["uuid"]);
    }
    let (s, _) =
        p.b.delete(&format!("/federation/bridges/{uuid}"), Some(&p.bob))
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    p.stop().await;
}

async fn side(inst: &TestInstance, token: &str, uuid: &str) -> Value {
    bridges(inst, token)
        .await
        .into_iter()
        .find(|b| b["uuid"] == uuid)
        .expect("the side is kept")
}

/// Publishes on A until B's device gets a message on `topic` (bounded), returns the payload.
async fn carried(
    a_device: &MqttDevice,
    b_device: &mut MqttDevice,
    topic: &str,
    what: &str,
) -> String {
    for i in 0..60 {
        a_device.publish(topic, format!("{what}-{i}")).await;
        if let Some(payload) = b_device.recv_on(topic, Duration::from_millis(500)).await {
            return String::from_utf8(payload).unwrap();
        }
    }
    panic!("{what}: nothing published on A reached B within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_reconnects_after_the_peer_restarts() {
    let mut p = pair(Backend::Sqlite).await;
    let (s, bridge) = p.bridge(&p.bob, &p.output, &p.input).await;
    assert_eq!(s, StatusCode::CREATED, "{bridge}");
    let topic = bridge["topic"].as_str().unwrap().to_string();
    let uuid = bridge["uuid"].as_str().unwrap().to_string();
    let b_token = unit_token(&p.b, &p.b_unit);
    let a_device = MqttDevice::connect(mqtt_port(&p.a), "a-device", &unit_token(&p.a, &p.a_unit))
        .await
        .unwrap();
    let mut b_device = MqttDevice::connect(mqtt_port(&p.b), "b-device", &b_token)
        .await
        .unwrap();
    assert!(b_device.subscribe(&topic).await);
    carried(&a_device, &mut b_device, &topic, "before").await;
    drop(b_device);

    // B goes away: A's side says why, then recovers by itself once B is back
    p.b.running.take().unwrap().stop().await.unwrap();
    let down = eventually("A's side in Error while B is down", || async {
        let side = side(&p.a, &p.alice, &uuid).await;
        (side["state"] == "Error").then_some(side)
    })
    .await;
    let reason = down["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains(&p.b.domain), "{down}");
    p.b.running = Some(
        pepeunit::server::RunningInstance::start(p.b.config.clone())
            .await
            .expect("B restarts"),
    );
    let mut b_device = eventually("B's device reconnects", || async {
        MqttDevice::connect(mqtt_port(&p.b), "b-device", &b_token)
            .await
            .ok()
    })
    .await;
    assert!(b_device.subscribe(&topic).await);
    let got = carried(&a_device, &mut b_device, &topic, "after").await;
    assert!(got.starts_with("after-"), "{got}");
    eventually("A's side Active again", || async {
        (side(&p.a, &p.alice, &uuid).await["state"] == "Active").then_some(())
    })
    .await;
    p.stop().await;
}
