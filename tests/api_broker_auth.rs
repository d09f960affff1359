//! `POST /units/auth`: the broker access rules of API.md §5.4 as EMQX's HTTP authorization
//! source sees them, with publish and subscribe told apart when the action is sent.

mod common;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use serde_json::json;

async fn decide(inst: &TestInstance, token: &str, topic: &str, action: Option<&str>) -> String {
    let mut body = json!({"token": token, "topic": topic});
    if let Some(a) = action {
        body["action"] = json!(a);
    }
    let (s, v) = inst.post("/units/auth", None, body).await;
    assert_eq!(s, 200, "{v}");
    v["result"].as_str().unwrap().to_string()
}

async fn broker_access_rules(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("brokerowner").await;
    let (_, repo, a) = registry_repo_unit(&inst, &owner, &firmware, "bra", "Private").await;
    let (s, b) = inst
        .post(
            "/units",
            Some(&owner),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "brb_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (a, b) = (a["uuid"].as_str().unwrap(), b["uuid"].as_str().unwrap());
    let env = inst.get(&format!("/units/env/{a}"), Some(&owner)).await.1;
    let a_token = env["PU_AUTH_TOKEN"].as_str().unwrap().to_string();
    let d = &inst.domain;
    let schema = |unit: &str| {
        let inst = &inst;
        let owner = owner.clone();
        let unit = unit.to_string();
        async move {
            inst.get(&format!("/units/get_current_schema/{unit}"), Some(&owner))
                .await
                .1
        }
    };
    let (sa, sb) = (schema(a).await, schema(b).await);
    let topic = |s: &serde_json::Value, kind: &str, name: &str| {
        s[kind][name][0].as_str().unwrap().to_string()
    };

    // base topics: its own only, commands subscribed, state published
    let update = topic(&sa, "input_base_topic", "update/pepeunit");
    let state = topic(&sa, "output_base_topic", "state/pepeunit");
    assert_eq!(
        decide(&inst, &a_token, &update, Some("subscribe")).await,
        "allow"
    );
    assert_eq!(decide(&inst, &a_token, &update, None).await, "allow");
    assert_eq!(
        decide(&inst, &a_token, &update, Some("publish")).await,
        "deny"
    );
    assert_eq!(
        decide(&inst, &a_token, &state, Some("publish")).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &a_token, &state, Some("subscribe")).await,
        "deny"
    );
    let b_update = topic(&sb, "input_base_topic", "update/pepeunit");
    assert_eq!(decide(&inst, &a_token, &b_update, None).await, "deny");
    assert_eq!(
        decide(
            &inst,
            &a_token,
            &format!("{d}/input_base_topic/+/update/pepeunit"),
            None
        )
        .await,
        "deny"
    );
    assert_eq!(
        decide(
            &inst,
            &a_token,
            &format!("other.example/input_base_topic/{a}/update/pepeunit"),
            None
        )
        .await,
        "deny"
    );
    assert_eq!(
        decide(&inst, &a_token, &update, Some("delete")).await,
        "deny"
    );

    // node topics: own output published, own input subscribed, the other Private unit closed
    let a_out = topic(&sa, "output_topic", "current_temp/pepeunit");
    let a_in = topic(&sa, "input_topic", "set_fan_state/pepeunit");
    let b_out = topic(&sb, "output_topic", "current_temp/pepeunit");
    assert_eq!(
        decide(&inst, &a_token, &a_out, Some("publish")).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &a_token, &a_in, Some("subscribe")).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &a_token, &b_out, Some("subscribe")).await,
        "deny"
    );
    // the suffix must match the node's own spelling
    assert_eq!(
        decide(&inst, &a_token, a_out.trim_end_matches("/pepeunit"), None).await,
        "deny"
    );
    assert_eq!(
        decide(
            &inst,
            &a_token,
            &format!("{d}/+/pepeunit"),
            Some("subscribe")
        )
        .await,
        "deny"
    );

    // linking B's output to A's input opens B's output to A for reading, not for writing
    let b_out_uuid = b_out.split('/').nth(1).unwrap();
    let a_in_uuid = a_in.split('/').nth(1).unwrap();
    let (s, e) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&owner),
            json!({"node_output_uuid": b_out_uuid, "node_input_uuid": a_in_uuid}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(
        decide(&inst, &a_token, &b_out, Some("subscribe")).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &a_token, &b_out, Some("publish")).await,
        "deny"
    );

    // the backend's own token: wildcards and everything of its domain
    let backend_token = pepeunit::token::TokenKey::new(&inst.config.secret_key).backend_token(d);
    assert_eq!(
        decide(&inst, &backend_token, &format!("{d}/+/+/+/pepeunit"), None).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &backend_token, &format!("{d}/+/pepeunit"), None).await,
        "allow"
    );
    assert_eq!(
        decide(&inst, &backend_token, &b_out, Some("publish")).await,
        "allow"
    );

    // users, garbage and forged tokens never get a topic
    assert_eq!(decide(&inst, &owner, &a_out, None).await, "deny");
    assert_eq!(decide(&inst, "garbage", &a_out, None).await, "deny");
    let forged =
        pepeunit::token::TokenKey::new("another-secret-key-1").unit_token(a.parse().unwrap());
    assert_eq!(decide(&inst, &forged, &a_out, None).await, "deny");

    // a body without the topic is a request error, not a decision
    let (s, _) = inst
        .post("/units/auth", None, json!({"token": a_token}))
        .await;
    assert_eq!(s, 422);
    inst.stop().await;
}

both_backends!(broker_access_rules);
