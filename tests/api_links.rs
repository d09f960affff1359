//! Links between Private units: the grants a link creates let each unit reach the other
//! side, and deleting the link takes them away again (a unit's own nodes stay reachable).

mod common;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use serde_json::{json, Value};

async fn unit_token(inst: &TestInstance, owner: &str, unit: &str) -> String {
    let (s, env) = inst.get(&format!("/units/env/{unit}"), Some(owner)).await;
    assert_eq!(s, 200, "{env}");
    env["PU_AUTH_TOKEN"].as_str().unwrap().to_string()
}

async fn node(
    inst: &TestInstance,
    owner: &str,
    unit: &str,
    node_type: &str,
    topic: &str,
) -> String {
    let (s, list) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={unit}&type={node_type}"),
            Some(owner),
        )
        .await;
    assert_eq!(s, 200, "{list}");
    list["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"] == topic)
        .map(|n| n["uuid"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {node_type} {topic} in {list}"))
}

async fn link_grants_follow_the_link(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("linkowner").await;
    let (_, repo, a) = registry_repo_unit(&inst, &owner, &firmware, "lnka", "Private").await;
    let (s, b) = inst
        .post(
            "/units",
            Some(&owner),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "lnkb_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (a, b) = (a["uuid"].as_str().unwrap(), b["uuid"].as_str().unwrap());
    let (a_token, b_token) = (
        unit_token(&inst, &owner, a).await,
        unit_token(&inst, &owner, b).await,
    );
    let a_out = node(&inst, &owner, a, "Output", "current_temp/pepeunit").await;
    let a_in = node(&inst, &owner, a, "Input", "set_fan_state/pepeunit").await;
    let b_in = node(&inst, &owner, b, "Input", "set_fan_state/pepeunit").await;

    let get = |token: String, node: String| {
        let inst = &inst;
        async move {
            inst.get(&format!("/unit_nodes/{node}"), Some(&token))
                .await
                .0
                .as_u16()
        }
    };
    // private nodes of another unit are closed before linking
    assert_eq!(get(a_token.clone(), b_in.clone()).await, 403);

    let link = |output: String, input: String| {
        let inst = &inst;
        let owner = owner.clone();
        async move {
            let (s, edge): (_, Value) = inst
                .post(
                    "/unit_nodes/create_unit_node_edge",
                    Some(&owner),
                    json!({"node_output_uuid": output, "node_input_uuid": input}),
                )
                .await;
            assert_eq!(s, 201, "{edge}");
            edge["uuid"].as_str().unwrap().to_string()
        }
    };
    let cross = link(a_out.clone(), b_in.clone()).await;
    let own = link(a_out.clone(), a_in.clone()).await;
    assert_eq!(get(a_token.clone(), b_in.clone()).await, 200);
    assert_eq!(get(b_token.clone(), a_out.clone()).await, 200);

    for edge in [cross, own] {
        let (s, v) = inst
            .delete(
                &format!("/unit_nodes/delete_unit_node_edge/{edge}"),
                Some(&owner),
            )
            .await;
        assert_eq!(s, 204, "{v}");
    }
    // the link is gone and so is the access it gave
    assert_eq!(get(a_token.clone(), b_in.clone()).await, 403);
    assert_eq!(get(b_token.clone(), a_out.clone()).await, 403);
    // a unit's own nodes stay reachable after unlinking it from itself
    assert_eq!(get(a_token.clone(), a_in.clone()).await, 200);
    assert_eq!(get(a_token, a_out).await, 200);

    // deleting a unit leaves no grant on or by its nodes behind
    let (s, v) = inst.delete(&format!("/units/{b}"), Some(&owner)).await;
    assert_eq!(s, 204, "{v}");
    let pool = &inst.running.as_ref().unwrap().instance.db.pool;
    for gone in [b.to_string(), b_in] {
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM permissions WHERE resource_uuid = $1 OR agent_uuid = $1",
        )
        .bind(gone.clone())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "grants left for {gone}");
    }
    inst.stop().await;
}

both_backends!(link_grants_follow_the_link);
