//! GraphQL subscriptions (issue 15 part 5): over WebSocket (`graphql-transport-ws`), a unit's
//! state, its log lines with a level filter and a node's values arrive as a device publishes
//! them over MQTT; access is checked at subscribe time and again when it changes; a slow
//! subscriber is dropped with a message. Every test runs on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::graphql::{connect, next, send, subscribe, Socket};
use common::mqtt::{base_topic, unit_token, MqttDevice};
use common::{Backend, TestInstance};

/// Runs `publish` every 300 ms until a `next` message of subscription `id` arrives (the
/// subscription is registered asynchronously), for at most 20 s; returns its `data`.
async fn first_event<F, Fut>(ws: &mut Socket, id: &str, mut publish: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..66 {
        publish().await;
        while let Some(m) = next(ws, Duration::from_millis(300)).await {
            assert_ne!(m["type"], "error", "{m}");
            if m["id"] == id && m["type"] == "next" {
                assert!(m["payload"].get("errors").is_none(), "{m}");
                return m["payload"]["data"].clone();
            }
        }
    }
    panic!("no event on subscription {id}");
}

async fn live_feeds_follow_the_device(backend: Backend) {
    let inst = TestInstance::start_with(backend, &[("PU_STATE_SEND_INTERVAL", "1")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let (_, nodes) = inst
        .get(&format!("/unit_nodes?unit_uuid={uuid}"), Some(&owner))
        .await;
    let temp = nodes["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"] == "current_temp/pepeunit")
        .expect("the schema's output node")["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = MqttDevice::connect(inst.config.mqtt_port, &uuid, &unit_token(&inst, &unit))
        .await
        .unwrap();

    let mut ws = connect(&inst.base, Some(&owner)).await;
    subscribe(
        &mut ws,
        "logs",
        "subscription($u: UUID!) { unitLogs(uuid: $u, level: [ERROR, CRITICAL]) { uuid level text unitUuid createDatetime expirationDatetime } }",
        json!({"u": uuid}),
    )
    .await;
    // lines below the filter never arrive; the first one at or above it does
    let log_topic = base_topic(&inst, &unit, "output_base_topic", "log");
    let mut n = 0;
    let line = first_event(&mut ws, "logs", || {
        n += 1;
        let payload = json!([
            {"level": "Info", "text": format!("routine {n}")},
            {"level": "Error", "text": format!("sensor failed {n}")},
        ])
        .to_string();
        let (dev, topic) = (&dev, log_topic.clone());
        async move { dev.publish(&topic, payload).await }
    })
    .await;
    let line = &line["unitLogs"];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(line["text"].as_str().unwrap().starts_with("sensor failed"));
    assert_eq!(line["unitUuid"], uuid.as_str());
    // what arrived live is what is stored
    let (_, stored) = inst
        .get(
            &format!("/units/log_list?uuid={uuid}&level=Error"),
            Some(&owner),
        )
        .await;
    assert!(
        stored["unit_logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["uuid"] == line["uuid"] && l["text"] == line["text"]),
        "{line} not in {stored}"
    );

    subscribe(
        &mut ws,
        "state",
        "subscription($u: UUID!) { unitState(uuid: $u) { unitUuid currentCommitVersion lastUpdateDatetime unitState { millis memFree ifconfig puCommitVersion } } }",
        json!({"u": uuid}),
    )
    .await;
    let head = firmware.head("main");
    let state_topic = base_topic(&inst, &unit, "output_base_topic", "state");
    let mut millis = 0;
    let state = first_event(&mut ws, "state", || {
        millis += 1000;
        let payload = json!({"pu_commit_version": head, "millis": millis, "mem_free": 5.5, "ifconfig": ["10.0.0.2"]}).to_string();
        let (dev, topic) = (&dev, state_topic.clone());
        async move { dev.publish(&topic, payload).await }
    })
    .await;
    let state = &state["unitState"];
    assert_eq!(state["unitUuid"], uuid.as_str());
    assert_eq!(state["currentCommitVersion"], head.as_str());
    assert_eq!(state["unitState"]["memFree"], 5.5);
    assert_eq!(state["unitState"]["ifconfig"], json!(["10.0.0.2"]));

    subscribe(
        &mut ws,
        "node",
        "subscription($n: UUID!) { unitNodeValue(uuid: $n) { unitNodeUuid state lastUpdateDatetime } }",
        json!({"n": temp}),
    )
    .await;
    let node_topic = format!("{}/{temp}/pepeunit", inst.domain);
    let mut t = 20;
    let value = first_event(&mut ws, "node", || {
        t += 1;
        let (dev, topic) = (&dev, node_topic.clone());
        async move { dev.publish(&topic, t.to_string()).await }
    })
    .await;
    let value = &value["unitNodeValue"];
    assert_eq!(value["unitNodeUuid"], temp.as_str());
    let v: i64 = value["state"].as_str().unwrap().parse().unwrap();
    assert!((21..=t).contains(&v), "{value}");

    // the feeds are counted on the graphql channel
    let (_, node) = inst.get("/metrics/node", Some(&owner)).await;
    assert!(
        node["channels"]["graphql"]["total"].as_u64().unwrap() >= 3,
        "{node}"
    );
    // `complete` from the client ends a feed: nothing more arrives on it
    send(&mut ws, json!({"id": "node", "type": "complete"})).await;
    dev.publish(&node_topic, "99").await;
    while let Some(m) = next(&mut ws, Duration::from_millis(1500)).await {
        assert!(m["id"] != "node" || m["type"] == "complete", "{m}");
    }
    drop(ws);
    inst.stop().await;
}

async fn access_is_checked_at_start_and_when_it_changes(backend: Backend) {
    let inst = TestInstance::start_with(backend, &[("PU_STATE_SEND_INTERVAL", "1")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (other_uuid, other) = inst.user("other").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let query = "subscription($u: UUID!) { unitState(uuid: $u) { unitUuid } }";
    let logs = "subscription($u: UUID!) { unitLogs(uuid: $u) { text } }";

    // without access: refused at once with REST's text; without a token too
    for token in [Some(other.as_str()), None, Some("garbage")] {
        let mut ws = connect(&inst.base, token).await;
        subscribe(&mut ws, "s", query, json!({"u": uuid})).await;
        let m = next(&mut ws, Duration::from_secs(10))
            .await
            .expect("answer");
        let text = m.to_string();
        assert!(
            text.contains("403: 1: No Access") || text.contains("401") || text.contains("Token"),
            "{token:?}: {m}"
        );
    }

    // a grant lets another user read the unit, not its logs: those are its creator's (and the
    // unit's own), as over REST
    let (s, grant) = inst
        .post(
            "/permission",
            Some(&owner),
            json!({"agent_uuid": other_uuid, "agent_type": "User", "resource_uuid": uuid, "resource_type": "Unit"}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{grant}");
    let rest = inst
        .get(&format!("/units/log_list?uuid={uuid}"), Some(&other))
        .await;
    let mut ws = connect(&inst.base, Some(&other)).await;
    subscribe(&mut ws, "logs", logs, json!({"u": uuid})).await;
    let m = next(&mut ws, Duration::from_secs(10))
        .await
        .expect("answer");
    let detail = rest.1["detail"].as_str().expect("REST refuses the logs");
    assert!(m.to_string().contains(detail), "{m} lacks {detail}");
    // the unit itself may follow its own logs
    let mut own = connect(&inst.base, Some(&unit_token(&inst, &unit))).await;
    subscribe(&mut own, "logs", logs, json!({"u": uuid})).await;

    // with the grant the state feed runs; revoking the grant ends it with a message
    let dev = MqttDevice::connect(inst.config.mqtt_port, &uuid, &unit_token(&inst, &unit))
        .await
        .unwrap();
    let state_topic = base_topic(&inst, &unit, "output_base_topic", "state");
    let log_topic = base_topic(&inst, &unit, "output_base_topic", "log");
    subscribe(&mut ws, "s", query, json!({"u": uuid})).await;
    let head = firmware.head("main");
    let mut millis = 0;
    first_event(&mut ws, "s", || {
        millis += 1000;
        let payload = json!({"pu_commit_version": head, "millis": millis}).to_string();
        let (dev, topic) = (&dev, state_topic.clone());
        async move { dev.publish(&topic, payload).await }
    })
    .await;
    first_event(&mut own, "logs", || {
        let (dev, topic) = (&dev, log_topic.clone());
        async move {
            dev.publish(&topic, json!({"level": "Info", "text": "mine"}).to_string())
                .await
        }
    })
    .await;
    let (s, _) = inst
        .call(
            "DELETE",
            &format!("/permission/x?agent_uuid={other_uuid}&resource_uuid={uuid}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    let mut ended = None;
    while let Some(m) = next(&mut ws, Duration::from_secs(10)).await {
        if m["id"] == "s" && m.to_string().contains("Subscription ended") {
            ended = Some(m);
            break;
        }
    }
    let ended = ended.expect("the feed ends when the grant is revoked");
    assert!(ended.to_string().contains("No Access"), "{ended}");
    // and it is over: the server completes it
    let done = next(&mut ws, Duration::from_secs(10))
        .await
        .expect("complete");
    assert_eq!(done["type"], "complete", "{done}");
    drop(ws);
    inst.stop().await;
}

/// A subscriber that does not read falls behind and is dropped with a message; the instance's
/// memory does not grow with it (the feed is bounded).
async fn a_slow_subscriber_is_dropped(backend: Backend) {
    use pepeunit::service::live::{LiveEvent, CAPACITY};
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let uuid: uuid::Uuid = unit["uuid"].as_str().unwrap().parse().unwrap();
    let instance = inst.running.as_ref().unwrap().instance.clone();
    let schema = pepeunit::graphql::schema(instance.clone());
    let request = async_graphql::Request::new(format!(
        "subscription {{ unitNodeValue(uuid: \"{}\") {{ state }} }}",
        // a node of the unit: the feed is keyed by node
        {
            let (_, nodes) = inst
                .get(&format!("/unit_nodes?unit_uuid={uuid}"), Some(&owner))
                .await;
            nodes["unit_nodes"][0]["uuid"].as_str().unwrap().to_string()
        }
    ));
    let node: uuid::Uuid = request.query.split('"').nth(1).unwrap().parse().unwrap();
    let request = pepeunit::graphql::as_caller(&instance, Some(owner.clone()), request).await;
    let mut stream = schema.execute_stream(request);
    // the subscription starts on the first poll; then nobody reads while values pour in
    tokio::select! {
        _ = stream.next() => panic!("no event yet"),
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    assert_eq!(instance.live.watchers(), 1);
    for i in 0..(CAPACITY + 50) {
        instance.live.publish(node, || LiveEvent::NodeValue {
            node,
            value: i.to_string().into(),
            at: "2026-12-06T00:00:00.000000".into(),
        });
    }
    let answer = stream.next().await.expect("an answer");
    let message = answer.errors[0].message.clone();
    assert!(
        message.contains("read too slowly") && message.contains("missed 50 events"),
        "{message}"
    );
    assert!(stream.next().await.is_none(), "the feed is over");
    drop(stream);
    assert_eq!(instance.live.watchers(), 0, "its place is free again");
    inst.stop().await;
}

/// Hostile WebSocket input: a frame (text or binary) whose document would overflow the parser
/// closes the connection and the instance serves on; one connection holds at most 32 feeds.
async fn hostile_sockets_are_cut_off(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Public").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let deep = format!(
        "#\rsubscription {{ unitState(uuid: {}\"x\"{}) {{ unitUuid }} }}",
        "[".repeat(20000),
        "]".repeat(20000)
    );
    let frame = json!({"id": "1", "type": "subscribe", "payload": {"query": deep}}).to_string();
    for binary in [false, true] {
        let mut ws = connect(&inst.base, None).await;
        let message = if binary {
            tokio_tungstenite::tungstenite::Message::Binary(frame.clone().into_bytes().into())
        } else {
            tokio_tungstenite::tungstenite::Message::Text(frame.clone().into())
        };
        futures_util::SinkExt::send(&mut ws, message).await.unwrap();
        assert!(
            next(&mut ws, Duration::from_secs(10)).await.is_none(),
            "binary {binary}: the connection is closed"
        );
        let (status, _) = inst.get("/metrics", Some(&owner)).await;
        assert_eq!(status.as_u16(), 200, "the instance still serves");
    }
    // one connection, 33 feeds: the 33rd is refused, the others run
    let mut ws = connect(&inst.base, Some(&owner)).await;
    let query = "subscription($u: UUID!) { unitState(uuid: $u) { unitUuid } }";
    for i in 0..33 {
        subscribe(&mut ws, &format!("s{i}"), query, json!({"u": uuid})).await;
    }
    // they start concurrently: which one is refused is not fixed, that one is
    let mut refused = 0;
    while let Some(m) = next(&mut ws, Duration::from_secs(3)).await {
        if m.to_string().contains("at most 32 subscriptions") {
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "exactly one feed past 32 is refused");
    let instance = inst.running.as_ref().unwrap().instance.clone();
    assert_eq!(instance.live.watchers(), 32);
    drop(ws);
    // the server notices the closed socket and frees the feeds
    for _ in 0..100 {
        if instance.live.watchers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(instance.live.watchers(), 0);
    inst.stop().await;
}

/// A feed ends when the token it was opened with expires.
async fn a_feed_ends_with_its_token(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (me, owner) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let instance = inst.running.as_ref().unwrap().instance.clone();
    let exp = chrono::Utc::now().timestamp() + 2;
    let short = instance.tokens.user_token(me.parse().unwrap(), exp);
    let schema = pepeunit::graphql::schema(instance.clone());
    let request = async_graphql::Request::new(format!(
        "subscription {{ unitState(uuid: \"{}\") {{ unitUuid }} }}",
        unit["uuid"].as_str().unwrap()
    ));
    let request = pepeunit::graphql::as_caller(&instance, Some(short), request).await;
    let mut stream = schema.execute_stream(request);
    let answer = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the feed ends by itself")
        .expect("an answer");
    assert!(
        answer.errors[0].message.contains("token expired"),
        "{:?}",
        answer.errors
    );
    assert!(stream.next().await.is_none());
    inst.stop().await;
}

both_backends!(
    a_feed_ends_with_its_token,
    hostile_sockets_are_cut_off,
    live_feeds_follow_the_device,
    access_is_checked_at_start_and_when_it_changes,
    a_slow_subscriber_is_dropped,
);
