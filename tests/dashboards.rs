//! Grafana dashboards (issue 19, part 1, first slice): a user's dashboards at upstream's REST
//! paths and GraphQL fields, behind `PU_FF_GRAFANA_INTEGRATION_ENABLE`. Panels, node links and
//! the sync to Grafana are not built yet.

mod common;

use common::graphql::{data, error, gql};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn dashboards(backend: Backend) {
    let inst =
        TestInstance::start_with(backend, &[("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true")]).await;
    let (_, admin) = inst.user("admin1").await;
    let (owner_uuid, owner) = inst.user("owner1").await;
    let (_, other) = inst.user("other1").await;
    let (_, info) = inst.get(&format!("{}/pepeunit", inst.base), None).await;
    assert_eq!(
        info["feature_flags"]["pu_ff_grafana_integration_enable"], true,
        "{info}"
    );

    // created, with upstream's DashboardRead fields
    let mut made = Vec::new();
    for name in ["Greenhouse", "Garage door", "Теплица дома"] {
        let (s, d) = inst
            .post(
                "/grafana/create_dashboard",
                Some(&owner),
                json!({"name": name}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
        assert_eq!(d["name"], name);
        assert_eq!(d["creator_uuid"], owner_uuid.as_str());
        assert_ne!(d["grafana_uuid"], d["uuid"]);
        for unset in [
            "dashboard_url",
            "inc_last_version",
            "sync_status",
            "sync_error",
            "sync_last_datetime",
        ] {
            assert_eq!(d[unset], Value::Null, "{unset}: {d}");
        }
        made.push(d);
    }
    for bad in [
        json!({"name": "x"}),
        json!({"name": "a\u{7}bcd"}),
        json!({"name": "n".repeat(101)}),
        json!({}),
    ] {
        let (s, e) = inst
            .post("/grafana/create_dashboard", Some(&owner), bad.clone())
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
    }
    let (s, _) = inst
        .post(
            "/grafana/create_dashboard",
            None,
            json!({"name": "Nobody's"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    inst.post(
        "/grafana/create_dashboard",
        Some(&other),
        json!({"name": "Not yours"}),
    )
    .await;

    // only the creator reads it
    let first = made[0]["uuid"].as_str().unwrap();
    let (s, d) = inst
        .get(&format!("/grafana/get_dashboard/{first}"), Some(&owner))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d, made[0]);
    for who in [&other, &admin] {
        let (s, _) = inst
            .get(&format!("/grafana/get_dashboard/{first}"), Some(who))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, _) = inst
        .get(
            &format!("/grafana/get_dashboard/{}", uuid::Uuid::new_v4()),
            Some(&owner),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // the list: one's own, newest first, searched, paged
    let names = |v: &Value| -> Vec<String> {
        v["dashboards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, all) = inst.get("/grafana/get_dashboards", Some(&owner)).await;
    assert_eq!(all["count"], 3, "{all}");
    assert_eq!(names(&all), ["Теплица дома", "Garage door", "Greenhouse"]);
    let (_, asc) = inst
        .get(
            "/grafana/get_dashboards?order_by_create_date=asc&offset=1&limit=1",
            Some(&owner),
        )
        .await;
    assert_eq!(
        (asc["count"].clone(), names(&asc)),
        (json!(3), vec!["Garage door".to_string()])
    );
    let (_, found) = inst
        .get("/grafana/get_dashboards?search_string=GREEN", Some(&owner))
        .await;
    assert_eq!(names(&found), ["Greenhouse"]);
    let (s, _) = inst
        .get("/grafana/get_dashboards?limit=-1", Some(&owner))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // GraphQL: the same objects
    let got = gql(
        &inst,
        Some(&owner),
        "query($f: DashboardFilterInput!) { getDashboards(filters: $f) { count dashboards { uuid name grafanaUuid syncStatus creatorUuid createDatetime } } }",
        json!({"f": {"searchString": "door"}}),
    )
    .await;
    let list = &data(&got)["getDashboards"];
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["dashboards"][0]["uuid"], made[1]["uuid"]);
    assert_eq!(
        list["dashboards"][0]["grafanaUuid"],
        made[1]["grafana_uuid"]
    );
    assert_eq!(
        list["dashboards"][0]["createDatetime"],
        made[1]["create_datetime"]
    );
    let created = gql(
        &inst,
        Some(&owner),
        "mutation { createDashboard(dashboard: {name: \"Cellar\"}) { uuid name } }",
        json!({}),
    )
    .await;
    let cellar = data(&created)["createDashboard"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let one = gql(
        &inst,
        Some(&owner),
        "query($u: UUID!) { getDashboard(uuid: $u) { name } }",
        json!({"u": cellar}),
    )
    .await;
    assert_eq!(data(&one)["getDashboard"]["name"], "Cellar");
    let theirs = gql(
        &inst,
        Some(&other),
        "query($u: UUID!) { getDashboard(uuid: $u) { name } }",
        json!({"u": cellar}),
    )
    .await;
    assert!(error(&theirs).contains("403"), "{}", theirs.1);
    let gone = gql(
        &inst,
        Some(&owner),
        "mutation($u: UUID!) { deleteDashboard(uuid: $u) { isNone } }",
        json!({"u": cellar}),
    )
    .await;
    assert_eq!(data(&gone)["deleteDashboard"]["isNone"], true);

    // deleted by its creator only
    let (s, _) = inst
        .delete(&format!("/grafana/delete_dashboard/{first}"), Some(&other))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = inst
        .delete(&format!("/grafana/delete_dashboard/{first}"), Some(&owner))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = inst
        .get(&format!("/grafana/get_dashboard/{first}"), Some(&owner))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, left) = inst.get("/grafana/get_dashboards", Some(&owner)).await;
    assert_eq!(left["count"], 2, "{left}");
}

both_backends!(dashboards);

/// Without the flag every dashboard operation answers FeatureDisabled, as upstream's flag does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_without_the_flag() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let (_, owner) = inst.user("owner1").await;
    let (s, e) = inst
        .post(
            "/grafana/create_dashboard",
            Some(&owner),
            json!({"name": "Greenhouse"}),
        )
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{e}");
    let (s, _) = inst.get("/grafana/get_dashboards", Some(&owner)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let got = gql(
        &inst,
        Some(&owner),
        "{ getDashboards(filters: {}) { count } }",
        json!({}),
    )
    .await;
    assert!(error(&got).contains("Feature"), "{}", got.1);
}
