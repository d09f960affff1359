//! Federation between two instances of our server on loopback (SPEC §11, issue 4): follows,
//! the hub following Creates, Updates and Deletes, domain policy both ways, the durable
//! delivery queue across restarts, and the refusal of local peers without
//! PU_FEDERATION_ALLOW_LOCAL.

mod common;

use std::time::Duration;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

const LOCAL: &[(&str, &str)] = &[
    ("PU_FEDERATION_ALLOW_LOCAL", "true"),
    ("PU_FEDERATION_RETRY_BASE", "1"),
];

async fn start(backend: Backend, extra: &[(&str, &str)]) -> TestInstance {
    let mut vars = LOCAL.to_vec();
    vars.extend_from_slice(extra);
    TestInstance::start_with(backend, &vars).await
}

/// Polls `probe` every 100 ms for up to 20 s until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn search(inst: &TestInstance, query: &str) -> Value {
    let (s, v) = inst.get(&format!("/hub/search?{query}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

async fn follow_and_wait(follower: &TestInstance, admin: &str, followed: &TestInstance) {
    let (s, v) = follower
        .post(
            "/federation/follow",
            Some(admin),
            json!({"domain": followed.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "Pending");
    assert_eq!(v["domain"], followed.domain);
    eventually("the follow to be accepted", || async {
        let (_, v) = follower.get("/federation/follow", Some(admin)).await;
        (v[0]["state"] == "Accepted").then_some(())
    })
    .await;
}

async fn hub_sees(inst: &TestInstance, query: &str, name: &str) -> Value {
    eventually(&format!("{name} in the hub of {}", inst.domain), || async {
        let page = search(inst, query).await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
    })
    .await
}

async fn hub_lacks(inst: &TestInstance, query: &str, name: &str) {
    eventually(
        &format!("{name} gone from the hub of {}", inst.domain),
        || async {
            let page = search(inst, query).await;
            (!names(&page).iter().any(|n| n == name)).then_some(())
        },
    )
    .await
}

async fn two_instances_share_public_repos_and_units(backend: Backend) {
    let a = start(backend, &[]).await;
    let b = start(backend, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let (_, b_admin) = b.user("bobby").await;
    let firmware = FirmwareRepo::create().await;

    // created before the follow: reaches B through the backfill after Accept
    let (_, repo, unit) = registry_repo_unit(&a, &a_admin, &firmware, "weather", "Public").await;
    // private ones never leave A
    let (s, hidden) = a
        .post(
            "/repos",
            Some(&a_admin),
            json!({"repository_registry_uuid": repo["repository_registry_uuid"], "default_branch": "main", "visibility_level": "Private", "name": "secret_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hidden}");

    follow_and_wait(&b, &b_admin, &a).await;
    let hit = hub_sees(&b, "q=weather&kind=Repo", "weather_repo").await;
    let repo_url = format!(
        "http://{}/pepeunit/ap/repos/{}",
        a.domain,
        repo["uuid"].as_str().unwrap()
    );
    assert_eq!(hit["url"], repo_url);
    assert_eq!(hit["instance"], a.domain);
    assert_eq!(hit["kind"], "Repo");
    assert_eq!(hit["uuid"], repo["uuid"]);
    let hit = hub_sees(&b, "q=weather&kind=Unit", "weather_unit").await;
    assert_eq!(hit["kind"], "Unit");
    assert_eq!(
        hit["url"],
        format!(
            "http://{}/pepeunit/ap/units/{}",
            a.domain,
            unit["uuid"].as_str().unwrap()
        )
    );
    let all = search(&b, &format!("instance={}", a.domain)).await;
    assert!(!names(&all).contains(&"secret_repo".to_string()), "{all}");
    // A's own search sees its public objects too
    hub_sees(&a, "q=weather", "weather_repo").await;

    // created after the follow: a Create
    let (s, later) = a
        .post(
            "/repos",
            Some(&a_admin),
            json!({"repository_registry_uuid": repo["repository_registry_uuid"], "default_branch": "main", "visibility_level": "Public", "name": "greenhouse_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{later}");
    hub_sees(&b, "q=greenhouse", "greenhouse_repo").await;

    // an Update: renamed
    let later_uuid = later["uuid"].as_str().unwrap();
    let (s, v) = a
        .patch(
            &format!("/repos/{later_uuid}"),
            Some(&a_admin),
            json!({"name": "orchard_repo"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    hub_sees(&b, "q=orchard", "orchard_repo").await;
    hub_lacks(&b, "q=greenhouse", "greenhouse_repo").await;

    // a Unit made Private: a Delete
    let unit_uuid = unit["uuid"].as_str().unwrap();
    let (s, v) = a
        .patch(
            &format!("/units/{unit_uuid}"),
            Some(&a_admin),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    hub_lacks(&b, "q=weather&kind=Unit", "weather_unit").await;
    hub_lacks(&a, "q=weather&kind=Unit", "weather_unit").await;

    // a Repo deleted: a Delete
    let (s, v) = a
        .delete(&format!("/repos/{later_uuid}"), Some(&a_admin))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    hub_lacks(&b, "q=orchard", "orchard_repo").await;

    // nothing is left in A's queue: everything was delivered
    let (_, queued) = a.get("/federation/deliveries", Some(&a_admin)).await;
    assert_eq!(queued, json!([]), "{queued}");

    // unfollow drops what B learned from A
    let (s, _) = b
        .delete(&format!("/federation/follow/{}", a.domain), Some(&b_admin))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    hub_lacks(&b, "q=weather", "weather_repo").await;

    a.stop().await;
    b.stop().await;
}

both_backends!(two_instances_share_public_repos_and_units);
