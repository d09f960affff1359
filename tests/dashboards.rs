//! Grafana dashboards (issue 19, part 1): a user's dashboards, panels and node links at
//! upstream's REST paths and GraphQL fields, behind `PU_FF_GRAFANA_INTEGRATION_ENABLE`; the sync
//! against a fake Grafana that speaks Grafana's HTTP API; the datasource Grafana reads with a
//! link's token.

mod common;

use common::archive::{export, import, pack, sha256_hex, unpack};
use common::fixtures::{
    add_units, import_n_records, n_records_config, output_node, pipe_config, registry_repo_unit,
    FirmwareRepo,
};
use common::grafana::FakeGrafana;
use common::graphql::{data, error, gql};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn dashboards(backend: Backend) {
    let inst = TestInstance::start_with(
        backend,
        &[
            ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true"),
            ("PU_GRAFANA_ADMIN_USER", "admin"),
            ("PU_GRAFANA_ADMIN_PASSWORD", "secret"),
        ],
    )
    .await;
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
        if bad.get("name").is_some() {
            // upstream's GrafanaError, as for panel titles
            assert!(
                e["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("422: 18: Grafana Error: Name is not correct"),
                "{bad}: {e}"
            );
        }
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

/// Panels, links (limit, duplicates, owners), the sync against a fake Grafana (organisation,
/// user, membership, datasource, dashboard JSON, versions, a Grafana that is down) and the
/// datasource read with the tokens the dashboard carries.
async fn panels_links_and_sync(backend: Backend) {
    let grafana = FakeGrafana::start().await;
    let mut env = grafana.env();
    env.push(("PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL", "2".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = TestInstance::start_with(backend, &env).await;
    let (owner_uuid, owner) = inst.user("owner1").await;
    let (_, other) = inst.user("other1").await;
    let (_, info) = inst.get(&format!("{}/pepeunit", inst.base), None).await;
    assert_eq!(
        info["settings"]["pu_grafana_limit_unit_node_per_one_panel"], 2,
        "{info}"
    );
    let firmware = FirmwareRepo::create().await;
    let (_, repo, unit) =
        registry_repo_unit(&inst, &owner, &firmware, "greenhouse", "Private").await;
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let more = add_units(
        &inst,
        &owner,
        &repo,
        ["cellar".to_string(), "attic".to_string()],
    )
    .await;
    let mut more_nodes = Vec::new();
    for u in &more {
        more_nodes
            .push(output_node(&inst, &owner, &json!({"uuid": u}), "current_temp/pepeunit").await);
    }
    let firmware2 = FirmwareRepo::create().await;
    let (_, _, theirs) =
        registry_repo_unit(&inst, &other, &firmware2, "neighbour", "Private").await;
    let their_node = output_node(&inst, &other, &theirs, "current_temp/pepeunit").await;

    let (_, d) = inst
        .post(
            "/grafana/create_dashboard",
            Some(&owner),
            json!({"name": "Greenhouse"}),
        )
        .await;
    let dash = d["uuid"].as_str().unwrap().to_string();
    let uid = d["grafana_uuid"].as_str().unwrap().to_string();
    let sync = |token: String| {
        let inst = &inst;
        let dash = dash.clone();
        async move {
            inst.post(
                &format!("/grafana/sync_dashboard?uuid={dash}"),
                Some(&token),
                json!(null),
            )
            .await
        }
    };

    // nothing to push yet: refused before Grafana is called
    let (s, e) = sync(owner.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e.to_string().contains("Dashboard does not have Panels"),
        "{e}"
    );
    assert!(grafana.calls().is_empty(), "{:?}", grafana.calls());

    // panels: upstream's plugin ids, a title of 4+ characters, the creator's dashboard only
    let (s, panel) = inst
        .post(
            "/grafana/create_dashboard_panel",
            Some(&owner),
            json!({"dashboard_uuid": dash, "title": "Temperatures", "type": "timeseries"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{panel}");
    assert_eq!(panel["type"], "timeseries");
    assert_eq!(panel["unit_nodes_for_panel"], json!([]));
    assert_eq!(panel["creator_uuid"], owner_uuid.as_str());
    let panel_uuid = panel["uuid"].as_str().unwrap().to_string();
    for (who, body, status) in [
        (
            &owner,
            json!({"dashboard_uuid": dash, "title": "x", "type": "timeseries"}),
            422,
        ),
        (
            &owner,
            json!({"dashboard_uuid": dash, "title": "Fine title", "type": "TimeSeries"}),
            422,
        ),
        (
            &owner,
            json!({"dashboard_uuid": uuid::Uuid::new_v4(), "title": "Fine title", "type": "gauge"}),
            404,
        ),
        (
            &other,
            json!({"dashboard_uuid": dash, "title": "Fine title", "type": "gauge"}),
            403,
        ),
    ] {
        let (s, e) = inst
            .post("/grafana/create_dashboard_panel", Some(who), body.clone())
            .await;
        assert_eq!(s.as_u16(), status, "{body}: {e}");
    }

    // links: the node's creator only, each node once, at most 2 per panel (the setting)
    let link = |token: &str, node: &str| {
        let body = json!({"unit_node_uuid": node, "dashboard_panels_uuid": panel_uuid, "is_last_data": false, "is_forced_to_json": false});
        let token = token.to_string();
        let inst = &inst;
        async move {
            inst.post("/grafana/link_unit_node_to_panel", Some(&token), body)
                .await
        }
    };
    let (s, l) = link(&owner, &node).await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    assert_eq!(
        l["unit_with_unit_node_name"],
        "greenhouse_unit@current_temp/pepeunit"
    );
    assert_eq!(l["unit_node"]["uuid"], node.as_str());
    let (s, e) = link(&owner, &node).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("already linked"), "{e}");
    let (s, _) = link(&owner, &their_node).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "someone else's node");
    let (s, _) = link(&other, &their_node).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "someone else's panel");
    let (s, _) = link(&owner, &more_nodes[0]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = link(&owner, &more_nodes[1]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e.to_string().contains("Limit UnitNode for one panel is 2"),
        "{e}"
    );

    let (s, panels) = inst
        .get(
            &format!("/grafana/get_dashboard_panels/{dash}"),
            Some(&owner),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(panels["count"], 1, "{panels}");
    let names: Vec<&str> = panels["panels"][0]["unit_nodes_for_panel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["unit_with_unit_node_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "greenhouse_unit@current_temp/pepeunit",
            "cellar@current_temp/pepeunit"
        ]
    );
    let (s, _) = inst
        .get(
            &format!("/grafana/get_dashboard_panels/{dash}"),
            Some(&other),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // unlinking frees a place; the path segment is upstream's and unread
    let unlink = format!(
        "/grafana/delete_link/ignored?unit_node_uuid={}&dashboard_panel_uuid={panel_uuid}",
        more_nodes[0]
    );
    let (s, _) = inst.delete(&unlink, Some(&other)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = inst.delete(&unlink, Some(&owner)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = inst.delete(&unlink, Some(&owner)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // a linked node without an active pipeline cannot be charted
    let (s, e) = sync(owner.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e.to_string()
            .contains("greenhouse_unit@current_temp/pepeunit has no active DataPipe"),
        "{e}"
    );
    let (s, _) = sync(other.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // with data: the first sync provisions Grafana and pushes the dashboard
    pipe_config(&inst, &owner, &node, &n_records_config(100)).await;
    let now = chrono::Utc::now().naive_utc();
    let rows: Vec<_> = ["20.5", "21", "22.25"]
        .iter()
        .enumerate()
        .map(|(i, v)| (now - chrono::Duration::minutes(3 - i as i64), v.to_string()))
        .collect();
    import_n_records(&inst, &owner, &node, 100, &rows).await;
    let (s, synced) = sync(owner.clone()).await;
    assert_eq!(s, StatusCode::OK, "{synced}");
    assert_eq!(synced["sync_status"], "Success", "{synced}");
    assert_eq!(synced["sync_error"], Value::Null);
    assert_eq!(synced["inc_last_version"], 1);
    assert!(
        synced["dashboard_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/grafana/d/{uid}/")),
        "{synced}"
    );
    assert!(synced["sync_last_datetime"].is_string());
    let (_, me) = inst
        .get(&format!("/users/{owner_uuid}"), Some(&owner))
        .await;
    let org_name = me["grafana_org_name"].as_str().unwrap().to_string();
    let org = grafana
        .org_named(&org_name)
        .expect("the user's organisation");
    assert_eq!(me["grafana_org_id"], org.id.to_string(), "{me}");
    // the Grafana user is the account's uuid, never its login (which can be renamed and
    // registered again by someone else)
    assert_eq!(
        org.members.get(&owner_uuid.to_string()).map(String::as_str),
        Some("Editor")
    );
    assert!(grafana.user_exists(&owner_uuid.to_string()));
    assert!(!grafana.user_exists("owner1"));
    let ds = grafana.datasources(org.id);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["name"], "InfinityAPI");
    assert_eq!(ds[0]["type"], "yesoreyeram-infinity-datasource");
    let ds_url = ds[0]["url"].as_str().unwrap();
    assert!(
        ds_url.starts_with("http://localhost:")
            && ds_url.ends_with("/pepeunit/api/v1/grafana/datasource/"),
        "{ds_url}"
    );
    assert!(ds[0]["jsonData"]["customHealthCheckUrl"]
        .as_str()
        .unwrap()
        .ends_with("/pepeunit"));
    let (version, saved) = grafana
        .dashboard(org.id, &uid)
        .expect("the dashboard in the user's org");
    assert_eq!(version, 1);
    assert_eq!(saved["title"], "Greenhouse");
    let targets = saved["panels"][0]["targets"].as_array().unwrap().clone();
    assert_eq!(saved["panels"][0]["type"], "timeseries");
    assert_eq!(targets.len(), 1, "{saved}");
    assert_eq!(targets[0]["refId"], "A");
    assert_eq!(
        targets[0]["columns"][1],
        json!({"selector": "value", "text": "", "type": "number"})
    );
    let token = targets[0]["url_options"]["headers"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();

    // a second sync replaces the dashboard (version 2) and provisions nothing twice
    let orgs = grafana.orgs();
    let (_, again) = sync(owner.clone()).await;
    assert_eq!(again["inc_last_version"], 2, "{again}");
    assert_eq!(grafana.orgs(), orgs);
    assert_eq!(grafana.datasources(org.id).len(), 1);

    // Grafana reads the node with the dashboard's token, and with nothing else
    let read = |token: Option<String>, query: &str| {
        let url = format!("{}/grafana/datasource/?{query}", inst.api);
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(t) = token {
                req = req.header("x-auth-token", t);
            }
            let resp = req.send().await.unwrap();
            (
                resp.status(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, points) = read(
        Some(token.clone()),
        "format=timeseries&order_by_create_date=asc",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{points}");
    let values: Vec<f64> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [20.5, 21.0, 22.25]);
    let times: Vec<i64> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]) && times[0] > 1_700_000_000_000,
        "{times:?}"
    );
    let (_, newest) = read(Some(token.clone()), "format=timeseries&limit=1").await;
    assert_eq!(newest[0]["value"], 22.25);
    let (s, _) = read(Some(token.clone()), "format=table").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = read(Some(owner.clone()), "format=timeseries").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a user's token");
    let (s, _) = read(None, "format=timeseries").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no token");
    let mut forged = token.clone();
    forged.pop();
    let (s, _) = read(Some(forged), "format=timeseries").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a forged token");

    // GraphQL sees the same panels
    let got = gql(
        &inst,
        Some(&owner),
        "query($u: UUID!) { getDashboardPanels(uuid: $u) { count panels { uuid type title unitNodesForPanel { unitWithUnitNodeName isForcedToJson unitNode { uuid topicName } } } } }",
        json!({"u": dash}),
    )
    .await;
    let p = &data(&got)["getDashboardPanels"];
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["panels"][0]["type"], "TIME_SERIES");
    assert_eq!(
        p["panels"][0]["unitNodesForPanel"][0]["unitNode"]["uuid"],
        node.as_str()
    );
    let made = gql(
        &inst,
        Some(&owner),
        "mutation($d: UUID!) { createDashboardPanel(dashboardPanel: {dashboardUuid: $d, title: \"Levels\", type: GAUGE}) { uuid type } }",
        json!({"d": dash}),
    )
    .await;
    let gauge = data(&made)["createDashboardPanel"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(data(&made)["createDashboardPanel"]["type"], "GAUGE");
    let linked = gql(
        &inst,
        Some(&owner),
        "mutation($n: UUID!, $p: UUID!) { linkUnitNodeToPanel(dashboard: {unitNodeUuid: $n, dashboardPanelsUuid: $p, isLastData: true, isForcedToJson: false}) { isLastData unitWithUnitNodeName } }",
        json!({"n": node, "p": gauge}),
    )
    .await;
    assert_eq!(data(&linked)["linkUnitNodeToPanel"]["isLastData"], true);
    let gone = gql(
        &inst,
        Some(&owner),
        "mutation($n: UUID!, $p: UUID!) { deleteLink(unitNodeUuid: $n, dashboardPanelUuid: $p) { isNone } }",
        json!({"n": node, "p": gauge}),
    )
    .await;
    assert_eq!(data(&gone)["deleteLink"]["isNone"], true);
    let gone = gql(
        &inst,
        Some(&owner),
        "mutation($p: UUID!) { deletePanel(uuid: $p) { isNone } }",
        json!({"p": gauge}),
    )
    .await;
    assert_eq!(data(&gone)["deletePanel"]["isNone"], true);

    // unlinked, the token reads nothing
    let (s, _) = inst
        .delete(
            &format!(
                "/grafana/delete_link?unit_node_uuid={node}&dashboard_panel_uuid={panel_uuid}"
            ),
            Some(&owner),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = read(Some(token), "format=timeseries").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the link is gone");

    // Grafana down: the sync answers the dashboard with the error recorded
    let (s, _) = link(&owner, &node).await;
    assert_eq!(s, StatusCode::CREATED);
    drop(grafana);
    let (s, failed) = sync(owner.clone()).await;
    assert_eq!(s, StatusCode::OK, "{failed}");
    assert_eq!(failed["sync_status"], "Error", "{failed}");
    assert!(
        failed["sync_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{failed}"
    );
    assert_eq!(failed["inc_last_version"], 2, "the last good version stays");
    let (_, stored) = inst
        .get(&format!("/grafana/get_dashboard/{dash}"), Some(&owner))
        .await;
    assert_eq!(stored["sync_status"], "Error");

    // deleting the panel deletes its links
    let (s, _) = inst
        .delete(&format!("/grafana/delete_panel/{panel_uuid}"), Some(&other))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = inst
        .delete(&format!("/grafana/delete_panel/{panel_uuid}"), Some(&owner))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, panels) = inst
        .get(
            &format!("/grafana/get_dashboard_panels/{dash}"),
            Some(&owner),
        )
        .await;
    assert_eq!(panels["count"], 0, "{panels}");
    inst.stop().await;
}

/// Concurrent requests for the last place: exactly the limit gets in, for node links (the
/// per-panel setting, 1 here) and for panels (100 per dashboard).
async fn last_place_races(backend: Backend) {
    let grafana = FakeGrafana::start().await;
    let mut env = grafana.env();
    env.push(("PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = TestInstance::start_with(backend, &env).await;
    let (_, owner) = inst.user("owner1").await;
    let firmware = FirmwareRepo::create().await;
    let (_, repo, unit) = registry_repo_unit(&inst, &owner, &firmware, "race0", "Private").await;
    let mut nodes = vec![output_node(&inst, &owner, &unit, "current_temp/pepeunit").await];
    for u in add_units(&inst, &owner, &repo, (1..8).map(|i| format!("race{i}"))).await {
        nodes.push(output_node(&inst, &owner, &json!({"uuid": u}), "current_temp/pepeunit").await);
    }
    let (_, d) = inst
        .post(
            "/grafana/create_dashboard",
            Some(&owner),
            json!({"name": "Races"}),
        )
        .await;
    let dash = d["uuid"].as_str().unwrap().to_string();
    let new_panel = |title: String| {
        let (inst, owner, dash) = (&inst, &owner, &dash);
        async move {
            inst.post(
                "/grafana/create_dashboard_panel",
                Some(owner),
                json!({"dashboard_uuid": dash, "title": title, "type": "timeseries"}),
            )
            .await
        }
    };
    let (s, panel) = new_panel("Panel 0".into()).await;
    assert_eq!(s, StatusCode::CREATED, "{panel}");
    let links = futures_util::future::join_all(nodes.iter().map(|node| {
        inst.post(
            "/grafana/link_unit_node_to_panel",
            Some(&owner),
            json!({"unit_node_uuid": node, "dashboard_panels_uuid": panel["uuid"], "is_last_data": false, "is_forced_to_json": false}),
        )
    }))
    .await;
    let linked = links
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(linked, 1, "{links:?}");
    for (s, e) in links.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e.to_string().contains("Limit UnitNode for one panel is 1"),
            "{e}"
        );
    }
    for i in 1..96 {
        let (s, e) = new_panel(format!("Panel {i}")).await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
    }
    let racing =
        futures_util::future::join_all((96..104).map(|i| new_panel(format!("Panel {i}")))).await;
    let created = racing
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 4, "{racing:?}");
    let (_, panels) = inst
        .get(
            &format!("/grafana/get_dashboard_panels/{dash}"),
            Some(&owner),
        )
        .await;
    assert_eq!(panels["count"], 100, "{panels}");
    inst.stop().await;
}

both_backends!(
    dashboards,
    panels_links_and_sync,
    dashboards_travel_with_the_account,
    last_place_races
);

/// An account export carries the dashboards, their panels and links (not their sync state);
/// the import gives each dashboard a Grafana uid of its own, maps the links to the imported
/// nodes, and refuses a garbage title in the archive.
async fn dashboards_travel_with_the_account(backend: Backend) {
    let env = [
        ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true"),
        ("PU_GRAFANA_ADMIN_USER", "admin"),
        ("PU_GRAFANA_ADMIN_PASSWORD", "secret"),
    ];
    let a = TestInstance::start_with(backend, &env).await;
    let b = TestInstance::start_with(backend, &env).await;
    let (_, token) = a.user("owner1").await;
    let firmware = FirmwareRepo::create().await;
    let (_, _, unit) = registry_repo_unit(&a, &token, &firmware, "greenhouse", "Private").await;
    let node = output_node(&a, &token, &unit, "current_temp/pepeunit").await;
    let (_, d) = a
        .post(
            "/grafana/create_dashboard",
            Some(&token),
            json!({"name": "Greenhouse"}),
        )
        .await;
    let dash = d["uuid"].as_str().unwrap().to_string();
    let mut panels = Vec::new();
    for (title, ty) in [("Temperatures", "timeseries"), ("Levels", "gauge")] {
        let (s, p) = a
            .post(
                "/grafana/create_dashboard_panel",
                Some(&token),
                json!({"dashboard_uuid": dash, "title": title, "type": ty}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        panels.push(p["uuid"].as_str().unwrap().to_string());
    }
    let (s, l) = a
        .post(
            "/grafana/link_unit_node_to_panel",
            Some(&token),
            json!({"unit_node_uuid": node, "dashboard_panels_uuid": panels[0], "is_last_data": true, "is_forced_to_json": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{l}");

    let (s, archive) = export(&a, &token, json!({})).await;
    assert_eq!(s, 200);
    let names: Vec<String> = unpack(&archive).into_iter().map(|(p, _)| p).collect();
    for member in [
        "dashboards.jsonl",
        "dashboard_panels.jsonl",
        "dashboard_panel_nodes.jsonl",
    ] {
        assert!(names.iter().any(|n| n == member), "{member} in {names:?}");
    }
    let (_, b_token) = b.user("owner2").await;
    let (s, report) = import(&b, &b_token, archive.clone(), None).await;
    assert_eq!(s, 200, "{report}");
    for (table, n) in [
        ("dashboards", 1),
        ("dashboard_panels", 2),
        ("dashboard_panel_nodes", 1),
    ] {
        assert_eq!(report["created"][table], n, "{table}: {report}");
    }
    let (_, list) = b.get("/grafana/get_dashboards", Some(&b_token)).await;
    assert_eq!(list["count"], 1, "{list}");
    let got = &list["dashboards"][0];
    assert_eq!(got["name"], "Greenhouse");
    assert_ne!(
        got["grafana_uuid"], d["grafana_uuid"],
        "a Grafana uid of its own"
    );
    assert_eq!(got["sync_status"], Value::Null);
    let (_, p) = b
        .get(
            &format!(
                "/grafana/get_dashboard_panels/{}",
                got["uuid"].as_str().unwrap()
            ),
            Some(&b_token),
        )
        .await;
    assert_eq!(p["count"], 2, "{p}");
    let titles: Vec<&str> = p["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Temperatures", "Levels"]);
    let linked = &p["panels"][0]["unit_nodes_for_panel"][0];
    assert_eq!(
        linked["unit_with_unit_node_name"], "greenhouse_unit@current_temp/pepeunit",
        "{p}"
    );
    assert_eq!(linked["is_forced_to_json"], true);
    assert_eq!(linked["is_last_data"], true);

    // a garbage title in the archive: refused whole, nothing written
    let (_, fresh) = b.user("owner3").await;
    let mut members = unpack(&archive);
    let bad: Vec<u8> = {
        let (_, data) = members
            .iter()
            .find(|(p, _)| p == "dashboards.jsonl")
            .expect("dashboards.jsonl");
        String::from_utf8(data.clone())
            .unwrap()
            .replace("\"Greenhouse\"", "\"x\"")
            .into_bytes()
    };
    let digest = sha256_hex(&bad);
    for (path, data) in members.iter_mut() {
        if path == "dashboards.jsonl" {
            *data = bad.clone();
        }
        if path == "manifest.json" {
            let mut m: Value = serde_json::from_slice(data).unwrap();
            for f in m["files"].as_array_mut().unwrap() {
                if f["path"] == "dashboards.jsonl" {
                    f["sha256"] = json!(digest);
                    f["bytes"] = json!(bad.len());
                }
            }
            *data = serde_json::to_vec(&m).unwrap();
        }
    }
    let (s, e) = import(&b, &fresh, pack(&members), None).await;
    assert_eq!(s, 422, "{e}");
    assert!(e.to_string().contains("not a valid title"), "{e}");
    let (_, list) = b.get("/grafana/get_dashboards", Some(&fresh)).await;
    assert_eq!(list["count"], 0, "{list}");
    a.stop().await;
    b.stop().await;
}

/// The Grafana client against the fake, call by call: every step keeps what exists, a
/// datasource whose address changed is pointed at the new one, refusals and an unreachable
/// Grafana are errors that say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_client_steps_are_idempotent() {
    use common::grafana::{ADMIN, PASSWORD};
    use pepeunit::grafana::{GrafanaApi, GrafanaError};
    let grafana = FakeGrafana::start().await;
    let api = GrafanaApi::new(&format!("{}/", grafana.url), ADMIN, PASSWORD);
    let org = api.ensure_org("team a/ü").await.unwrap();
    assert_eq!(api.ensure_org("team a/ü").await.unwrap(), org);
    assert_eq!(
        api.org_name(org).await.unwrap().as_deref(),
        Some("team a/ü")
    );
    assert_eq!(api.org_name(999).await.unwrap(), None);
    // two first-time setups at once (a sign-in and a sync): both get the one organisation
    let (a, b) = tokio::join!(api.ensure_org("raced"), api.ensure_org("raced"));
    assert_eq!(a.unwrap(), b.unwrap());
    for _ in 0..2 {
        api.ensure_user("alice", "Alice", "a-long-password")
            .await
            .unwrap();
        api.ensure_member(org, "alice", "Editor").await.unwrap();
    }
    assert_eq!(
        grafana
            .org_named("team a/ü")
            .unwrap()
            .members
            .get("alice")
            .map(String::as_str),
        Some("Editor")
    );
    let (old, new) = (
        "http://old.example/api/grafana/datasource/",
        "http://new.example/api/grafana/datasource/",
    );
    // created, kept as it is, then pointed at the new address
    for (url, health) in [
        (old, "http://old.example"),
        (old, "http://old.example"),
        (new, "http://new.example"),
    ] {
        api.ensure_datasource(
            org,
            "InfinityAPI",
            "yesoreyeram-infinity-datasource",
            url,
            health,
        )
        .await
        .unwrap();
    }
    let ds = grafana.datasources(org);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["url"], new);
    assert_eq!(
        ds[0]["jsonData"]["customHealthCheckUrl"],
        "http://new.example"
    );
    let puts = grafana
        .calls()
        .iter()
        .filter(|c| c.starts_with("PUT /api/datasources/uid/"))
        .count();
    assert_eq!(puts, 1, "an unchanged datasource is left alone");

    let body = json!({"dashboard": {"id": null, "uid": "abc", "title": "Home", "panels": []}, "overwrite": true});
    let first = api.save_dashboard(org, &body).await.unwrap();
    let second = api.save_dashboard(org, &body).await.unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(second.url, "/grafana/d/abc/home");

    // refusals name the call and Grafana's message
    let wrong = GrafanaApi::new(&grafana.url, ADMIN, "wrong");
    let e = wrong.ensure_org("x-org").await.unwrap_err();
    assert!(
        matches!(e, GrafanaError::Refused { status: 401, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("Invalid username or password"),
        "{e}"
    );
    let e = api
        .save_dashboard(org, &json!({"dashboard": {"uid": "abc", "title": ""}}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("Dashboard title cannot be empty"),
        "{e}"
    );
    let e = api
        .ensure_member(org, "nobody", "Editor")
        .await
        .unwrap_err();
    assert!(
        matches!(e, GrafanaError::Refused { status: 404, .. }),
        "{e}"
    );
    // a closed port: three attempts, then unreachable
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = GrafanaApi::new(&format!("http://127.0.0.1:{port}"), ADMIN, PASSWORD);
    let e = gone.ensure_org("x-org").await.unwrap_err();
    assert!(matches!(e, GrafanaError::Unreachable { .. }), "{e}");
}
