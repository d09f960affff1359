//! `/units` and `/unit_nodes` over HTTP: units and their rules, env.json, schema.json, firmware
//! archives, state storage, commands, unit nodes and the edges between them (API.md §3-§6).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use base64::Engine;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::MqttDevice;
use common::{assert_detail, Backend, TestInstance};
use serde_json::{json, Value};

/// An instance with one user, a Public repo `fan_repo` on the fixture firmware and a unit
/// `fan_unit` of the requested visibility.
struct World {
    inst: TestInstance,
    firmware: FirmwareRepo,
    owner: String,
    token: String,
    repo: Value,
    unit: Value,
}

impl World {
    async fn new(backend: Backend, unit_visibility: &str) -> World {
        Self::new_with(backend, unit_visibility, &[]).await
    }

    async fn new_with(backend: Backend, unit_visibility: &str, extra: &[(&str, &str)]) -> World {
        let inst = TestInstance::start_with(backend, extra).await;
        let firmware = FirmwareRepo::create().await;
        let (owner, token) = inst.user("owner1").await;
        let (_, repo, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
        let mut world = World {
            inst,
            firmware,
            owner,
            token,
            repo,
            unit,
        };
        if unit_visibility != "Public" {
            let (s, unit) = world
                .inst
                .patch(
                    &format!("/units/{}", world.unit_uuid()),
                    Some(&world.token),
                    json!({"visibility_level": unit_visibility}),
                )
                .await;
            assert_eq!(s, 200, "{unit}");
            world.unit = unit;
        }
        world
    }

    async fn stop(self) {
        self.inst.stop().await;
    }

    fn unit_uuid(&self) -> String {
        self.unit["uuid"].as_str().unwrap().to_string()
    }

    fn repo_uuid(&self) -> String {
        self.repo["uuid"].as_str().unwrap().to_string()
    }

    /// Creates another unit on the repo as the owner.
    async fn add_unit(&self, name: &str, visibility: &str) -> Value {
        let (s, unit) = self
            .inst
            .post(
                "/units",
                Some(&self.token),
                json!({"repo_uuid": self.repo["uuid"], "visibility_level": visibility, "name": name, "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s, 201, "{unit}");
        unit
    }

    /// The unit's own token, as a device gets it: `PU_AUTH_TOKEN` of its env.json.
    async fn unit_token(&self, unit: &str) -> String {
        let (s, env) = self
            .inst
            .get(&format!("/units/env/{unit}"), Some(&self.token))
            .await;
        assert_eq!(s, 200, "{env}");
        env["PU_AUTH_TOKEN"].as_str().unwrap().to_string()
    }

    /// A unit's nodes, keyed by topic name.
    async fn nodes(&self, unit: &str) -> BTreeMap<String, Value> {
        let (s, list) = self
            .inst
            .get(&format!("/unit_nodes?unit_uuid={unit}"), Some(&self.token))
            .await;
        assert_eq!(s, 200, "{list}");
        list["unit_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["topic_name"].as_str().unwrap().to_string(), n.clone()))
            .collect()
    }

    async fn node_uuid(&self, unit: &str, topic: &str) -> String {
        self.nodes(unit).await[topic]["uuid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn target_version(&self, unit: &str) -> Value {
        let (s, v) = self
            .inst
            .get(
                &format!("/units/get_target_version/{unit}"),
                Some(&self.token),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn schema(&self, unit: &str) -> Value {
        let (s, v) = self
            .inst
            .get(
                &format!("/units/get_current_schema/{unit}"),
                Some(&self.token),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// The commit a tag points at.
    fn tag_commit(&self, tag: &str) -> String {
        self.firmware.head(&format!("{tag}^{{commit}}"))
    }
}

fn names(list: &Value, key: &str) -> BTreeSet<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{list} has no {key} list"))
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// units

async fn unit_create_and_rules(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let unit = &w.unit;
    assert_eq!(unit["name"], "fan_unit");
    assert_eq!(unit["visibility_level"], "Public");
    assert_eq!(unit["is_auto_update_from_repo_unit"], true);
    assert_eq!(unit["repo_branch"], Value::Null);
    assert_eq!(unit["repo_commit"], Value::Null);
    assert_eq!(unit["creator_uuid"], w.owner.as_str());
    assert_eq!(unit["repo_uuid"], w.repo["uuid"]);
    assert_eq!(unit["unit_nodes"], json!([]));
    assert_eq!(unit["unit_state"], Value::Null);
    assert_eq!(unit["firmware_update_status"], Value::Null);

    // one node per input_topic / output_topic of schema_example.json
    let nodes = w.nodes(&w.unit_uuid()).await;
    let expected = [
        ("set_fan_state/pepeunit", "Input"),
        ("raw_input", "Input"),
        ("current_temp/pepeunit", "Output"),
        ("raw_output", "Output"),
    ];
    assert_eq!(nodes.len(), expected.len(), "{nodes:?}");
    for (topic, ty) in expected {
        let n = &nodes[topic];
        assert_eq!(n["type"], ty, "{n}");
        assert_eq!(n["visibility_level"], "Public", "{n}");
        assert_eq!(n["max_connections"], 10, "{n}");
        assert_eq!(n["is_rewritable_input"], false, "{n}");
        assert_eq!(n["state"], Value::Null, "{n}");
        assert_eq!(n["unit_uuid"], unit["uuid"], "{n}");
        assert_eq!(n["creator_uuid"], w.owner.as_str(), "{n}");
    }

    // auto-updating: the repo's target, the newest tag of main
    assert_eq!(
        w.target_version(&w.unit_uuid()).await,
        json!({"commit": w.firmware.head("main"), "tag": "v0.2.0"})
    );

    let create = |name: &str, extra: Value| {
        let mut body = json!({"repo_uuid": w.repo["uuid"], "visibility_level": "Public", "name": name, "is_auto_update_from_repo_unit": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    // name rules
    for bad in ["abc", "bad name", "x".repeat(21).as_str(), "ünicode", ""] {
        let got = inst
            .post("/units", Some(&w.token), create(bad, json!({})))
            .await;
        assert_detail(
            &got,
            422,
            "422: 7: Unit Validation Error: Name is not correct",
        );
    }
    let got = inst
        .post("/units", Some(&w.token), create("fan_unit", json!({})))
        .await;
    assert_detail(
        &got,
        422,
        "422: 7: Unit Validation Error: Name is not unique",
    );

    // only users create units
    let got = inst
        .post("/units", None, create("bot_unit", json!({})))
        .await;
    assert_detail(&got, 403, "403: 1: No Access");
    let unit_token = w.unit_token(&w.unit_uuid()).await;
    let got = inst
        .post("/units", Some(&unit_token), create("unit_unit", json!({})))
        .await;
    assert_detail(&got, 403, "403: 1: No Access");

    // a unit may not be less strict than its repo
    let (s, internal_repo) = inst
        .post(
            "/repos",
            Some(&w.token),
            json!({"repository_registry_uuid": w.repo["repository_registry_uuid"], "default_branch": "main", "visibility_level": "Internal", "name": "internal_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, 201, "{internal_repo}");
    let got = inst
        .post(
            "/units",
            Some(&w.token),
            create("weak_unit", json!({"repo_uuid": internal_repo["uuid"]})),
        )
        .await;
    assert_detail(
        &got,
        422,
        "422: 2: Validation Error: The visibility level of the parent object internal_repo is lower than that of the child object weak_unit",
    );
    let (s, strict) = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "strict_unit",
                json!({"repo_uuid": internal_repo["uuid"], "visibility_level": "Private"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{strict}");

    // manual units need a branch and a commit of that branch
    let manual = json!({"is_auto_update_from_repo_unit": false});
    let got = inst
        .post("/units", Some(&w.token), create("manual_unit", manual))
        .await;
    assert_detail(
        &got,
        422,
        "422: 7: Unit Validation Error: Unit updated manually requires branch and commit to be filled out",
    );
    let got = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "manual_unit",
                json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main"}),
            ),
        )
        .await;
    assert_detail(&got, 422, "422: 7: ");
    let dev_only = w.firmware.head("dev");
    let got = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "manual_unit",
                json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main", "repo_commit": dev_only}),
            ),
        )
        .await;
    assert_detail(&got, 422, "422: 5: Git Repo Validation Error");
    let got = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "manual_unit",
                json!({"is_auto_update_from_repo_unit": false, "repo_branch": "nope", "repo_commit": dev_only}),
            ),
        )
        .await;
    assert_detail(&got, 422, "422: 5: Git Repo Validation Error");

    // pinned to the v0.1.0 commit
    let v1 = w.tag_commit("v0.1.0");
    let (s, pinned) = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "pinned_unit",
                json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main", "repo_commit": v1}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{pinned}");
    assert_eq!(pinned["is_auto_update_from_repo_unit"], false);
    assert_eq!(pinned["repo_branch"], "main");
    assert_eq!(pinned["repo_commit"], v1.as_str());
    let pinned_uuid = pinned["uuid"].as_str().unwrap();
    assert_eq!(
        w.target_version(pinned_uuid).await,
        json!({"commit": v1, "tag": "v0.1.0"})
    );
    let (s, env) = inst
        .get(&format!("/units/env/{pinned_uuid}"), Some(&w.token))
        .await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["PU_COMMIT_VERSION"], v1.as_str());

    // an abbreviated commit names the same version: stored and served as the full sha
    let (s, short) = inst
        .post(
            "/units",
            Some(&w.token),
            create(
                "short_unit",
                json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main", "repo_commit": &v1[..10]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{short}");
    assert_eq!(short["repo_commit"], v1.as_str());
    let short_uuid = short["uuid"].as_str().unwrap();
    assert_eq!(
        w.target_version(short_uuid).await,
        json!({"commit": v1, "tag": "v0.1.0"})
    );

    w.stop().await;
}

async fn unit_get_visibility_and_list(backend: Backend) {
    let w = World::new(backend, "Private").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let path = format!("/units/{uuid}");
    let (_, other) = inst.user("other1").await;

    let (s, got) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["visibility_level"], "Private");
    assert_eq!(got["uuid"], uuid.as_str());
    let got = inst.get(&path, Some(&other)).await;
    assert_detail(&got, 403, "Private visibility level is not allowed");
    let got = inst.get(&path, None).await;
    assert_detail(&got, 403, "403: 1: No Access");
    // the unit sees itself
    let unit_token = w.unit_token(&uuid).await;
    let (s, got) = inst.get(&path, Some(&unit_token)).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["name"], "fan_unit");
    // missing
    let got = inst
        .get(&format!("/units/{}", uuid::Uuid::new_v4()), Some(&w.token))
        .await;
    assert_detail(&got, 404, "The object does not exist");
    let got = inst.get("/units/not-a-uuid", Some(&w.token)).await;
    assert_eq!(got.0, 422, "{}", got.1);

    // an Internal unit is visible to users, not to the Bot
    let internal = w.add_unit("internal_unit", "Internal").await;
    let ipath = format!("/units/{}", internal["uuid"].as_str().unwrap());
    assert_eq!(inst.get(&ipath, Some(&other)).await.0, 200);
    let got = inst.get(&ipath, None).await;
    assert_detail(&got, 403, "Internal visibility level is not allowed");
    w.add_unit("public_unit", "Public").await;
    w.add_unit("pump_device", "Public").await;

    // lists
    let (s, all) = inst.get("/units", Some(&w.token)).await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["count"], 4, "{all}");
    assert_eq!(
        names(&all, "units"),
        set(&["fan_unit", "internal_unit", "public_unit", "pump_device"])
    );
    // default order: name ascending
    let ordered: Vec<&str> = all["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ordered,
        ["fan_unit", "internal_unit", "public_unit", "pump_device"]
    );
    let (_, list) = inst.get("/units", Some(&other)).await;
    assert_eq!(
        names(&list, "units"),
        set(&["internal_unit", "public_unit", "pump_device"])
    );
    let (_, list) = inst.get("/units", None).await;
    assert_eq!(names(&list, "units"), set(&["public_unit", "pump_device"]));
    let (_, list) = inst.get("/units", Some(&unit_token)).await;
    assert!(names(&list, "units").contains("fan_unit"), "{list}");

    let (_, list) = inst.get("/units?search_string=UNIT", Some(&w.token)).await;
    assert_eq!(
        names(&list, "units"),
        set(&["fan_unit", "internal_unit", "public_unit"])
    );
    let (_, list) = inst
        .get("/units?search_string=fan%20UNI", Some(&w.token))
        .await;
    assert_eq!(names(&list, "units"), set(&["fan_unit"]));
    let (_, list) = inst
        .get("/units?search_string=nothing_like_it", Some(&w.token))
        .await;
    assert_eq!(list["count"], 0, "{list}");

    let (_, list) = inst
        .get(
            &format!("/units?repo_uuid={}", w.repo_uuid()),
            Some(&w.token),
        )
        .await;
    assert_eq!(list["count"], 4, "{list}");
    let (_, list) = inst
        .get(
            &format!("/units?repo_uuid={}", uuid::Uuid::new_v4()),
            Some(&w.token),
        )
        .await;
    assert_eq!(list["count"], 0, "{list}");

    let (_, list) = inst
        .get("/units?visibility_level=Private", Some(&w.token))
        .await;
    assert_eq!(names(&list, "units"), set(&["fan_unit"]));
    let (_, list) = inst
        .get(
            "/units?visibility_level=Private&visibility_level=Internal",
            Some(&w.token),
        )
        .await;
    assert_eq!(names(&list, "units"), set(&["fan_unit", "internal_unit"]));
    let (_, list) = inst
        .get("/units?visibility_level=Private", Some(&other))
        .await;
    assert_eq!(list["count"], 0, "{list}");
    let (_, list) = inst.get("/units?limit=2&offset=1", Some(&w.token)).await;
    assert_eq!(list["count"], 4, "{list}");
    let paged: Vec<&str> = list["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(paged, ["internal_unit", "public_unit"]);

    w.stop().await;
}

async fn unit_update_and_delete(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let path = format!("/units/{uuid}");
    let (_, other) = inst.user("other1").await;

    let (s, got) = inst
        .patch(&path, Some(&w.token), json!({"name": "renamed_unit"}))
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["name"], "renamed_unit");
    assert_eq!(got["visibility_level"], "Public", "missing fields keep");
    let got = inst
        .patch(&path, Some(&w.token), json!({"name": "no"}))
        .await;
    assert_detail(
        &got,
        422,
        "422: 7: Unit Validation Error: Name is not correct",
    );
    w.add_unit("second_unit", "Public").await;
    let got = inst
        .patch(&path, Some(&w.token), json!({"name": "second_unit"}))
        .await;
    assert_detail(
        &got,
        422,
        "422: 7: Unit Validation Error: Name is not unique",
    );
    let got = inst
        .patch(&path, Some(&other), json!({"name": "stolen_unit"}))
        .await;
    assert_detail(&got, 403, "403: 1: No Access");
    let got = inst.patch(&path, None, json!({"name": "bot_unit"})).await;
    assert_detail(&got, 403, "403: 1: No Access");

    // stricter unit: its nodes follow
    let (s, got) = inst
        .patch(
            &path,
            Some(&w.token),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["visibility_level"], "Private");
    let nodes = w.nodes(&uuid).await;
    assert_eq!(nodes.len(), 4);
    for n in nodes.values() {
        assert_eq!(n["visibility_level"], "Private", "{n}");
    }
    let node_uuids: BTreeSet<String> = nodes
        .values()
        .map(|n| n["uuid"].as_str().unwrap().to_string())
        .collect();

    // pinned to v0.1.0, then back to following the repo
    let v1 = w.tag_commit("v0.1.0");
    let (s, got) = inst
        .patch(
            &path,
            Some(&w.token),
            json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main", "repo_commit": v1}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["is_auto_update_from_repo_unit"], false);
    assert_eq!(got["repo_commit"], v1.as_str());
    assert_eq!(
        w.target_version(&uuid).await,
        json!({"commit": v1, "tag": "v0.1.0"})
    );
    // the annotated tag of a pinned commit is found too
    let head = w.firmware.head("main");
    let (s, got) = inst
        .patch(&path, Some(&w.token), json!({"repo_commit": head}))
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        w.target_version(&uuid).await,
        json!({"commit": head, "tag": "v0.2.0"})
    );
    let (s, got) = inst
        .patch(&path, Some(&w.token), json!({"repo_commit": v1}))
        .await;
    assert_eq!(s, 200, "{got}");
    // same schema in both versions: the very same nodes
    let after: BTreeSet<String> = w
        .nodes(&uuid)
        .await
        .values()
        .map(|n| n["uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, node_uuids);
    let got = inst
        .patch(
            &path,
            Some(&w.token),
            json!({"repo_commit": w.firmware.head("dev")}),
        )
        .await;
    assert_detail(&got, 422, "422: 5: Git Repo Validation Error");
    assert_eq!(
        w.target_version(&uuid).await["commit"],
        v1.as_str(),
        "a refused PATCH changes nothing"
    );
    let (s, got) = inst
        .patch(
            &path,
            Some(&w.token),
            json!({"is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        w.target_version(&uuid).await,
        json!({"commit": w.firmware.head("main"), "tag": "v0.2.0"})
    );

    // delete
    let node = nodes["set_fan_state/pepeunit"]["uuid"].as_str().unwrap();
    let got = inst.delete(&path, Some(&other)).await;
    assert_detail(&got, 403, "403: 1: No Access");
    let (s, body) = inst.delete(&path, Some(&w.token)).await;
    assert_eq!(s, 204, "{body}");
    assert_eq!(body, Value::Null);
    let got = inst.get(&path, Some(&w.token)).await;
    assert_detail(&got, 404, "The object does not exist");
    let got = inst
        .get(&format!("/unit_nodes/{node}"), Some(&w.token))
        .await;
    assert_detail(&got, 404, "The object does not exist");
    let (_, list) = inst
        .get(&format!("/unit_nodes?unit_uuid={uuid}"), Some(&w.token))
        .await;
    assert_eq!(list["count"], 0, "{list}");
    let got = inst.delete(&path, Some(&w.token)).await;
    assert_detail(&got, 404, "The object does not exist");
    // the repo has one unit left
    let (_, list) = inst
        .get(
            &format!("/units?repo_uuid={}", w.repo_uuid()),
            Some(&w.token),
        )
        .await;
    assert_eq!(names(&list, "units"), set(&["second_unit"]));

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// env.json

async fn unit_env(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let path = format!("/units/env/{uuid}");
    let (_, other) = inst.user("other1").await;
    let second = w.add_unit("second_unit", "Public").await;
    let second_token = w.unit_token(second["uuid"].as_str().unwrap()).await;

    let (s, env) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(s, 200, "{env}");
    let keys: BTreeSet<String> = env.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        set(&[
            "PU_DOMAIN",
            "PU_HTTP_TYPE",
            "PU_APP_PREFIX",
            "PU_API_ACTUAL_PREFIX",
            "PU_MQTT_HOST",
            "PU_MQTT_PORT",
            "PU_MQTT_PING_INTERVAL",
            "PU_MQTT_KEEPALIVE",
            "PU_AUTH_TOKEN",
            "PU_SECRET_KEY",
            "PU_ENCRYPT_KEY",
            "PU_STATE_SEND_INTERVAL",
            "PU_MIN_LOG_LEVEL",
            "PU_MAX_LOG_LENGTH",
            "PU_COMMIT_VERSION",
            "WIFI_SSID",
            "WIFI_PASS",
            "SENSOR_PERIOD",
        ])
    );
    // generated values beat the example's PU_DOMAIN
    assert_eq!(env["PU_DOMAIN"], inst.domain.as_str());
    assert_eq!(env["PU_HTTP_TYPE"], "http");
    assert_eq!(env["PU_APP_PREFIX"], "/pepeunit");
    assert_eq!(env["PU_API_ACTUAL_PREFIX"], "/api/v1");
    assert!(env["PU_MQTT_HOST"].is_string(), "{env}");
    assert!(env["PU_MQTT_PORT"].is_u64(), "{env}");
    assert_eq!(env["PU_MQTT_PORT"], inst.config.mqtt_port);
    assert_eq!(env["PU_MQTT_PING_INTERVAL"], 20);
    assert_eq!(env["PU_MQTT_KEEPALIVE"], 60);
    assert_eq!(env["PU_STATE_SEND_INTERVAL"], 60);
    assert_eq!(env["PU_MIN_LOG_LEVEL"], "Debug");
    assert_eq!(env["PU_MAX_LOG_LENGTH"], 64);
    assert_eq!(env["PU_COMMIT_VERSION"], w.firmware.head("main").as_str());
    for key in ["PU_SECRET_KEY", "PU_ENCRYPT_KEY"] {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(env[key].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{key} is not base64: {e}"));
        assert_eq!(raw.len(), 32, "{key}");
    }
    let token = env["PU_AUTH_TOKEN"].as_str().unwrap();
    let payload = token.split('.').nth(1).expect("a JWT");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(r#"{{"uuid":"{uuid}","type":"Unit"}}"#)
    );
    // example keys with their defaults, numbers staying numbers
    assert_eq!(env["WIFI_SSID"], "ssid");
    assert_eq!(env["WIFI_PASS"], "pass");
    assert_eq!(env["SENSOR_PERIOD"], 5);

    // the unit reads its own env; nobody else does
    let (s, own) = inst.get(&path, Some(token)).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(own["PU_AUTH_TOKEN"], token);
    assert_eq!(own["WIFI_SSID"], "ssid");
    assert_detail(
        &inst.get(&path, Some(&other)).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(&inst.get(&path, None).await, 403, "403: 1: No Access");
    assert_detail(
        &inst.get(&path, Some(&second_token)).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst
            .get(
                &format!("/units/env/{}", uuid::Uuid::new_v4()),
                Some(&w.token),
            )
            .await,
        404,
        "The object does not exist",
    );

    // fresh keys on every GET until an env is saved
    let (_, again) = inst.get(&path, Some(&w.token)).await;
    assert_ne!(again["PU_SECRET_KEY"], env["PU_SECRET_KEY"]);
    assert_ne!(again["PU_ENCRYPT_KEY"], env["PU_ENCRYPT_KEY"]);
    assert_eq!(again["PU_AUTH_TOKEN"], env["PU_AUTH_TOKEN"]);

    // only the creator writes it
    let body = json!({"env_json_string": "{\"WIFI_SSID\": \"home\", \"NOT_DECLARED\": 1, \"PU_COMMIT_VERSION\": \"bogus\"}"});
    assert_detail(
        &inst.patch(&path, Some(token), body.clone()).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst.patch(&path, Some(&other), body.clone()).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst.patch(&path, None, body.clone()).await,
        403,
        "403: 1: No Access",
    );
    let (s, out) = inst.patch(&path, Some(&w.token), body).await;
    assert_eq!(s, 204, "{out}");
    assert_eq!(out, Value::Null);
    let (_, saved) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(saved["WIFI_SSID"], "home");
    assert_eq!(saved["WIFI_PASS"], "pass");
    assert_eq!(saved["SENSOR_PERIOD"], 5);
    assert!(saved.get("NOT_DECLARED").is_none(), "{saved}");
    assert_eq!(saved["PU_COMMIT_VERSION"], w.firmware.head("main").as_str());
    assert_eq!(saved["PU_MQTT_PORT"], inst.config.mqtt_port);
    let (_, saved_again) = inst.get(&path, Some(token)).await;
    assert_eq!(saved_again, saved, "a saved env is stable");

    // a second save merges over the stored one
    let (s, _) = inst
        .patch(
            &path,
            Some(&w.token),
            json!({"env_json_string": "{\"WIFI_PASS\": \"secret\"}"}),
        )
        .await;
    assert_eq!(s, 204);
    let (_, merged) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(merged["WIFI_SSID"], "home");
    assert_eq!(merged["WIFI_PASS"], "secret");
    assert_eq!(merged["PU_SECRET_KEY"], saved["PU_SECRET_KEY"]);

    // not a JSON object
    for text in ["{not json", "[1, 2]", "\"text\"", "", "42"] {
        let got = inst
            .patch(&path, Some(&w.token), json!({"env_json_string": text}))
            .await;
        assert_detail(
            &got,
            422,
            "422: 9: JSON Decode Error: Data env.json is invalid",
        );
    }
    let got = inst
        .patch(&path, Some(&w.token), json!({"env_json_string": 5}))
        .await;
    assert_eq!(got.0, 422, "{}", got.1);
    let (_, unchanged) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(unchanged, merged, "refused PATCHes change nothing");

    // reset
    assert_detail(
        &inst.delete(&path, Some(token)).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst.delete(&path, Some(&other)).await,
        403,
        "403: 1: No Access",
    );
    let (s, _) = inst.delete(&path, Some(&w.token)).await;
    assert_eq!(s, 204);
    let (_, reset) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(reset["WIFI_SSID"], "ssid");
    assert_eq!(reset["WIFI_PASS"], "pass");
    let (_, reset_again) = inst.get(&path, Some(&w.token)).await;
    assert_ne!(reset["PU_SECRET_KEY"], reset_again["PU_SECRET_KEY"]);
    assert_ne!(reset["PU_SECRET_KEY"], saved["PU_SECRET_KEY"]);

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// schema.json

async fn unit_schema(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let d = &inst.domain;
    let nodes = w.nodes(&uuid).await;
    let node = |t: &str| nodes[t]["uuid"].as_str().unwrap().to_string();
    let expected = json!({
        "input_base_topic": {
            "update/pepeunit": [format!("{d}/input_base_topic/{uuid}/update/pepeunit")],
            "env_update/pepeunit": [format!("{d}/input_base_topic/{uuid}/env_update/pepeunit")],
            "schema_update/pepeunit": [format!("{d}/input_base_topic/{uuid}/schema_update/pepeunit")],
            "log_sync/pepeunit": [format!("{d}/input_base_topic/{uuid}/log_sync/pepeunit")],
        },
        "output_base_topic": {
            "state/pepeunit": [format!("{d}/output_base_topic/{uuid}/state/pepeunit")],
            "log/pepeunit": [format!("{d}/output_base_topic/{uuid}/log/pepeunit")],
        },
        "input_topic": {
            "set_fan_state/pepeunit": [format!("{d}/{}/pepeunit", node("set_fan_state/pepeunit"))],
            "raw_input": [format!("{d}/{}", node("raw_input"))],
        },
        "output_topic": {
            "current_temp/pepeunit": [format!("{d}/{}/pepeunit", node("current_temp/pepeunit"))],
            "raw_output": [format!("{d}/{}", node("raw_output"))],
        },
    });
    let path = format!("/units/get_current_schema/{uuid}");
    let (s, schema) = inst.get(&path, Some(&w.token)).await;
    assert_eq!(s, 200, "{schema}");
    assert_eq!(schema, expected);

    let unit_token = w.unit_token(&uuid).await;
    let (s, own) = inst.get(&path, Some(&unit_token)).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(own, expected);
    let (_, other) = inst.user("other1").await;
    assert_detail(
        &inst.get(&path, Some(&other)).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(&inst.get(&path, None).await, 403, "403: 1: No Access");
    let second = w.add_unit("second_unit", "Public").await;
    let second_token = w.unit_token(second["uuid"].as_str().unwrap()).await;
    assert_detail(
        &inst.get(&path, Some(&second_token)).await,
        403,
        "403: 1: No Access",
    );
    // target version: creator and self only
    let tv = format!("/units/get_target_version/{uuid}");
    assert_eq!(inst.get(&tv, Some(&unit_token)).await.0, 200);
    assert_detail(&inst.get(&tv, Some(&other)).await, 403, "403: 1: No Access");
    assert_detail(&inst.get(&tv, None).await, 403, "403: 1: No Access");

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// unit_nodes and edges

async fn unit_nodes_and_edges(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let (_, other) = inst.user("other1").await;
    let a = w.unit_uuid();
    let b_unit = w.add_unit("pump_unit", "Private").await;
    let b = b_unit["uuid"].as_str().unwrap().to_string();
    let a_token = w.unit_token(&a).await;
    let b_token = w.unit_token(&b).await;

    // list by unit and type
    let (s, list) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={a}&type=Input"),
            Some(&w.token),
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    let topics: BTreeSet<String> = list["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["type"], "Input");
            n["topic_name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(topics, set(&["set_fan_state/pepeunit", "raw_input"]));
    let (_, list) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={a}&type=Output&search_string=TEMP"),
            Some(&w.token),
        )
        .await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["unit_nodes"][0]["topic_name"], "current_temp/pepeunit");
    // B's nodes are Private: hidden from other users and the Bot
    let (_, list) = inst
        .get(&format!("/unit_nodes?unit_uuid={b}"), Some(&other))
        .await;
    assert_eq!(list["count"], 0, "{list}");
    let (_, list) = inst.get(&format!("/unit_nodes?unit_uuid={b}"), None).await;
    assert_eq!(list["count"], 0, "{list}");
    let (_, list) = inst
        .get(&format!("/unit_nodes?unit_uuid={b}"), Some(&b_token))
        .await;
    assert_eq!(list["count"], 4, "{list}");

    let a_out = w.node_uuid(&a, "current_temp/pepeunit").await;
    let a_raw_out = w.node_uuid(&a, "raw_output").await;
    let a_in = w.node_uuid(&a, "set_fan_state/pepeunit").await;
    let a_raw_in = w.node_uuid(&a, "raw_input").await;
    let b_in = w.node_uuid(&b, "set_fan_state/pepeunit").await;
    let b_raw_in = w.node_uuid(&b, "raw_input").await;
    let b_out = w.node_uuid(&b, "current_temp/pepeunit").await;

    // GET one
    let (s, node) = inst.get(&format!("/unit_nodes/{a_out}"), None).await;
    assert_eq!(s, 200, "{node}");
    assert_eq!(node["uuid"], a_out.as_str());
    assert_eq!(node["type"], "Output");
    assert_eq!(node["unit_uuid"], a.as_str());
    let (s, _) = inst
        .get(&format!("/unit_nodes/{b_in}"), Some(&w.token))
        .await;
    assert_eq!(s, 200);
    assert_detail(
        &inst.get(&format!("/unit_nodes/{b_in}"), Some(&other)).await,
        403,
        "Private visibility level is not allowed",
    );
    assert_detail(
        &inst.get(&format!("/unit_nodes/{b_in}"), None).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst
            .get(
                &format!("/unit_nodes/{}", uuid::Uuid::new_v4()),
                Some(&w.token),
            )
            .await,
        404,
        "The object does not exist",
    );

    // PATCH
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_out}"),
            Some(&w.token),
            json!({"is_rewritable_input": true}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    let (s, patched) = inst
        .patch(
            &format!("/unit_nodes/{a_in}"),
            Some(&w.token),
            json!({"is_rewritable_input": true, "max_connections": 3}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["is_rewritable_input"], true);
    assert_eq!(patched["max_connections"], 3);
    assert_eq!(patched["visibility_level"], "Public");
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_in}"),
            Some(&w.token),
            json!({"max_connections": 0}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_in}"),
            Some(&w.token),
            json!({"max_connections": -1}),
        )
        .await;
    assert_eq!(got.0, 422, "{}", got.1);
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_raw_in}"),
            Some(&w.token),
            json!({"is_data_pipe_active": true}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    let (s, private_node) = inst
        .patch(
            &format!("/unit_nodes/{a_raw_in}"),
            Some(&w.token),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_eq!(s, 200, "{private_node}");
    assert_eq!(private_node["visibility_level"], "Private");
    assert_detail(
        &inst
            .get(&format!("/unit_nodes/{a_raw_in}"), Some(&other))
            .await,
        403,
        "Private visibility level is not allowed",
    );
    let got = inst
        .patch(
            &format!("/unit_nodes/{b_in}"),
            Some(&w.token),
            json!({"visibility_level": "Public"}),
        )
        .await;
    assert_detail(&got, 422, "422: 2: Validation Error: The visibility level");
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_in}"),
            Some(&other),
            json!({"max_connections": 5}),
        )
        .await;
    assert_detail(&got, 403, "403: 1: No Access");
    let got = inst
        .patch(
            &format!("/unit_nodes/{a_in}"),
            Some(&a_token),
            json!({"max_connections": 5}),
        )
        .await;
    assert_detail(&got, 403, "403: 1: No Access");
    let (_, node) = inst
        .get(&format!("/unit_nodes/{a_in}"), Some(&w.token))
        .await;
    assert_eq!(node["max_connections"], 3, "refused PATCHes change nothing");

    // edges
    let edge_body = json!({"node_output_uuid": a_out, "node_input_uuid": b_in});
    assert_detail(
        &inst
            .post("/unit_nodes/create_unit_node_edge", None, edge_body.clone())
            .await,
        403,
        "403: 1: No Access",
    );
    let (s, edge) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            edge_body.clone(),
        )
        .await;
    assert_eq!(s, 201, "{edge}");
    assert_eq!(edge["node_output_uuid"], a_out.as_str());
    assert_eq!(edge["node_input_uuid"], b_in.as_str());
    let edge_uuid = edge["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        edge.as_object().unwrap().len(),
        3,
        "UnitNodeEdgeRead: {edge}"
    );
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            edge_body,
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error: Edge exist");
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": b_in, "node_input_uuid": a_out}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": a_out, "node_input_uuid": b_out}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": a_out, "node_input_uuid": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_detail(&got, 404, "The object does not exist");

    // another user may not link into a Private node they cannot see
    let (s, c_unit) = inst
        .post(
            "/units",
            Some(&other),
            json!({"repo_uuid": w.repo["uuid"], "visibility_level": "Public", "name": "other_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, 201, "{c_unit}");
    let c = c_unit["uuid"].as_str().unwrap();
    let (_, c_nodes) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={c}&type=Output&search_string=current_temp"),
            Some(&other),
        )
        .await;
    let c_out = c_nodes["unit_nodes"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&other),
            json!({"node_output_uuid": c_out, "node_input_uuid": b_in}),
        )
        .await;
    assert_detail(&got, 403, "Private visibility level is not allowed");

    // max_connections caps the edges of a node
    let (s, _) = inst
        .patch(
            &format!("/unit_nodes/{a_raw_out}"),
            Some(&w.token),
            json!({"max_connections": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, raw_edge) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": a_raw_out, "node_input_uuid": b_raw_in}),
        )
        .await;
    assert_eq!(s, 201, "{raw_edge}");
    let got = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": a_raw_out, "node_input_uuid": a_in}),
        )
        .await;
    assert_detail(&got, 422, "max_connections");

    // B's schema: its own topic first, then A's output
    let d = &inst.domain;
    let schema = w.schema(&b).await;
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"],
        json!([
            format!("{d}/{b_in}/pepeunit"),
            format!("{d}/{a_out}/pepeunit")
        ])
    );
    assert_eq!(
        schema["input_topic"]["raw_input"],
        json!([format!("{d}/{b_raw_in}"), format!("{d}/{a_raw_out}")])
    );
    // A's schema is unchanged by being a source
    assert_eq!(
        w.schema(&a).await["output_topic"]["current_temp/pepeunit"],
        json!([format!("{d}/{a_out}/pepeunit")])
    );

    // what a device asks: the inputs fed by its output (B's input is Private, A's unit was
    // granted access to it by the edge)
    for token in [&w.token, &a_token] {
        let (s, list) = inst
            .get(
                &format!(
                    "/unit_nodes?order_by_create_date=desc&output_uuid={a_out}&limit=100&offset=0"
                ),
                Some(token),
            )
            .await;
        assert_eq!(s, 200, "{list}");
        assert_eq!(list["count"], 1, "{list}");
        assert_eq!(list["unit_nodes"][0]["uuid"], b_in.as_str());
    }
    let (_, list) = inst
        .get(&format!("/unit_nodes?output_uuid={a_out}"), Some(&other))
        .await;
    assert_eq!(list["count"], 0, "Private stays hidden: {list}");

    // ... and the units owning given nodes, with those nodes
    for token in [&w.token, &b_token] {
        let (s, list) = inst
            .get(
                &format!("/units?is_include_output_unit_nodes=true&order_by_unit_name=asc&unit_node_uuids={a_out}&limit=100&offset=0"),
                Some(token),
            )
            .await;
        assert_eq!(s, 200, "{list}");
        assert_eq!(list["count"], 1, "{list}");
        let unit = &list["units"][0];
        assert_eq!(unit["uuid"], a.as_str());
        let listed: Vec<&str> = unit["unit_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["uuid"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [a_out.as_str()], "{unit}");
    }
    // by type: every unit with Output nodes, each listing only its Output nodes
    let (_, list) = inst
        .get(
            "/units?is_include_output_unit_nodes=true&unit_node_type=Output",
            Some(&w.token),
        )
        .await;
    assert_eq!(
        names(&list, "units"),
        set(&["fan_unit", "pump_unit", "other_unit"])
    );
    for unit in list["units"].as_array().unwrap() {
        let nodes = unit["unit_nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{unit}");
        assert!(nodes.iter().all(|n| n["type"] == "Output"), "{unit}");
    }
    // the units feeding an input, with the linked outputs
    let (_, list) = inst
        .get(
            &format!("/units?is_include_output_unit_nodes=true&unit_node_input_uuid={b_in}"),
            Some(&w.token),
        )
        .await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["units"][0]["uuid"], a.as_str());
    assert_eq!(list["units"][0]["unit_nodes"][0]["uuid"], a_out.as_str());
    assert_eq!(list["units"][0]["unit_nodes"].as_array().unwrap().len(), 1);
    // without the flag the node filters are ignored and unit_nodes stay empty
    let (_, list) = inst
        .get(&format!("/units?unit_node_uuids={a_out}"), Some(&w.token))
        .await;
    assert_eq!(list["count"], 3, "{list}");
    assert!(
        list["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["unit_nodes"] == json!([])),
        "{list}"
    );

    // delete the edge
    let del = format!("/unit_nodes/delete_unit_node_edge/{edge_uuid}");
    assert_detail(
        &inst.delete(&del, Some(&other)).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(&inst.delete(&del, None).await, 403, "403: 1: No Access");
    let (s, _) = inst.delete(&del, Some(&w.token)).await;
    assert_eq!(s, 204);
    assert_detail(
        &inst.delete(&del, Some(&w.token)).await,
        404,
        "The object does not exist",
    );
    let schema = w.schema(&b).await;
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"],
        json!([format!("{d}/{b_in}/pepeunit")])
    );
    let (_, list) = inst
        .get(&format!("/unit_nodes?output_uuid={a_out}"), Some(&w.token))
        .await;
    assert_eq!(list["count"], 0, "{list}");
    // the same link can be made again
    let (s, _) = inst
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&w.token),
            json!({"node_output_uuid": a_out, "node_input_uuid": b_in}),
        )
        .await;
    assert_eq!(s, 201);

    // deleting a unit takes its edges with it
    let (s, _) = inst.delete(&format!("/units/{a}"), Some(&w.token)).await;
    assert_eq!(s, 204);
    let schema = w.schema(&b).await;
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"],
        json!([format!("{d}/{b_in}/pepeunit")])
    );
    assert_eq!(
        schema["input_topic"]["raw_input"],
        json!([format!("{d}/{b_raw_in}")])
    );

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// firmware archives

/// GET returning (status, content type, body bytes).
async fn download(inst: &TestInstance, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = inst.http.get(inst.url(path));
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.bytes().await.unwrap().to_vec())
}

/// Entries of a tar: raw name -> (entry type, content).
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let ty = entry.header().entry_type();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(name, (ty, data));
    }
    out
}

/// Files of a tar, keyed by path without the `./` prefix (which every entry must have).
fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (name, (ty, data)) in tar_entries(bytes) {
        assert!(name.starts_with("./"), "tar entry {name:?} lacks ./");
        assert!(
            ty == tar::EntryType::Regular || ty == tar::EntryType::Directory,
            "tar entry {name:?} has type {ty:?}"
        );
        if ty == tar::EntryType::Regular {
            files.insert(name[2..].to_string(), data);
        }
    }
    files
}

fn zip_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().to_string();
        assert!(
            !name.starts_with("./") && !name.starts_with('/'),
            "zip entry {name:?}"
        );
        if f.is_symlink() {
            panic!("zip entry {name:?} is a symlink");
        }
        if !f.is_dir() {
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
    }
    files
}

fn json_4(value: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser).unwrap();
    String::from_utf8(out).unwrap()
}

/// The contents every firmware archive of the fixture repo must have.
fn check_firmware(files: &BTreeMap<String, Vec<u8>>, main_py: &str, commit: &str, schema: &Value) {
    let listing: Vec<&String> = files.keys().collect();
    assert_eq!(
        files
            .get("main.py")
            .map(|m| String::from_utf8_lossy(m).into_owned()),
        Some(main_py.to_string()),
        "{listing:?}"
    );
    for name in [
        "env.json",
        "schema.json",
        "env_example.json",
        "schema_example.json",
        ".pepeignore",
    ] {
        assert!(files.contains_key(name), "{name} missing: {listing:?}");
    }
    // .pepeignore: `*.md` and `docs/`; the symlink to /etc/passwd is never followed or kept
    for name in files.keys() {
        assert!(!name.ends_with(".md"), "{name} is ignored: {listing:?}");
        assert!(!name.starts_with("docs"), "{name} is ignored: {listing:?}");
        assert!(!name.contains("passwd_link"), "symlink kept: {listing:?}");
    }
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        let first = passwd.lines().next().unwrap_or_default().as_bytes();
        if !first.is_empty() {
            for (name, data) in files {
                assert!(
                    !data.windows(first.len()).any(|w| w == first),
                    "{name} carries /etc/passwd"
                );
            }
        }
    }
    let env_text = String::from_utf8(files["env.json"].clone()).unwrap();
    let env: Value = serde_json::from_str(&env_text).expect("env.json is JSON");
    assert_eq!(env["PU_COMMIT_VERSION"], commit);
    assert!(env["PU_AUTH_TOKEN"].is_string());
    assert_eq!(env_text, json_4(&env), "env.json is indented by 4");
    let schema_text = String::from_utf8(files["schema.json"].clone()).unwrap();
    let got: Value = serde_json::from_str(&schema_text).expect("schema.json is JSON");
    assert_eq!(&got, schema);
    assert_eq!(schema_text, json_4(&got), "schema.json is indented by 4");
}

fn inflate(bytes: &[u8], wbits: i32) -> Vec<u8> {
    let mut out = Vec::new();
    match wbits {
        9..=15 => {
            // exactly what Python's zlib.decompressobj(wbits=9) accepts when wbits is 9: a
            // stream declaring a larger window fails here
            let mut d = flate2::Decompress::new_with_window_bits(true, wbits as u8);
            out.reserve(bytes.len() * 20 + 4096);
            loop {
                let consumed = d.total_in() as usize;
                if out.capacity() == out.len() {
                    out.reserve(out.len() + 4096);
                }
                let status = d
                    .decompress_vec(
                        &bytes[consumed..],
                        &mut out,
                        flate2::FlushDecompress::Finish,
                    )
                    .expect("a zlib stream with the requested window");
                if status == flate2::Status::StreamEnd {
                    break;
                }
            }
            assert_eq!(d.total_in() as usize, bytes.len(), "trailing bytes");
        }
        25..=31 => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        -15..=-9 => {
            flate2::read::DeflateDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("raw deflate");
        }
        _ => unreachable!(),
    }
    out
}

async fn unit_firmware(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let head = w.firmware.head("main");
    let schema = w.schema(&uuid).await;
    let v2 = "print('v2')\n";

    let (s, ctype, zip) =
        download(inst, &format!("/units/firmware/zip/{uuid}"), Some(&w.token)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&zip));
    assert_eq!(ctype, "application/zip");
    check_firmware(&zip_files(&zip), v2, &head, &schema);

    let (s, ctype, tar) =
        download(inst, &format!("/units/firmware/tar/{uuid}"), Some(&w.token)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&tar));
    assert_eq!(ctype, "application/x-tar");
    check_firmware(&tar_files(&tar), v2, &head, &schema);

    let tgz = |q: &str| format!("/units/firmware/tgz/{uuid}{q}");
    let (s, ctype, body) = download(inst, &tgz(""), Some(&w.token)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ctype, "application/x-tar");
    assert_eq!(body[0], 0x18, "zlib header of a 2^9 window");
    check_firmware(&tar_files(&inflate(&body, 9)), v2, &head, &schema);
    // also what a plain zlib reader sees
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .unwrap();
    check_firmware(&tar_files(&plain), v2, &head, &schema);

    for (query, wbits) in [
        ("?wbits=9&level=9", 9),
        ("?wbits=15&level=0", 15),
        ("?wbits=31", 31),
        ("?wbits=-15&level=-1", -15),
        ("?wbits=-9", -9),
    ] {
        let (s, _, body) = download(inst, &tgz(query), Some(&w.token)).await;
        assert_eq!(s, 200, "{query}: {}", String::from_utf8_lossy(&body));
        if wbits == 31 {
            assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
        }
        check_firmware(&tar_files(&inflate(&body, wbits)), v2, &head, &schema);
    }
    for query in [
        "?wbits=8",
        "?wbits=20",
        "?wbits=16",
        "?wbits=-8",
        "?wbits=32",
        "?level=10",
        "?level=-2",
    ] {
        let got = inst.get(&tgz(query), Some(&w.token)).await;
        assert_detail(&got, 422, "422: 7: Unit Validation Error");
    }
    let got = inst.get(&tgz("?wbits=abc"), Some(&w.token)).await;
    assert_eq!(got.0, 422, "{}", got.1);

    // the unit downloads its own firmware; nobody else does
    let unit_token = w.unit_token(&uuid).await;
    let (_, other) = inst.user("other1").await;
    for kind in ["zip", "tar", "tgz"] {
        let path = format!("/units/firmware/{kind}/{uuid}");
        let (s, _, _) = download(inst, &path, Some(&unit_token)).await;
        assert_eq!(s, 200, "{path}");
        assert_detail(
            &inst.get(&path, Some(&other)).await,
            403,
            "403: 1: No Access",
        );
        assert_detail(&inst.get(&path, None).await, 403, "403: 1: No Access");
    }

    // a saved env travels in the archive
    let (s, _) = inst
        .patch(
            &format!("/units/env/{uuid}"),
            Some(&w.token),
            json!({"env_json_string": "{\"WIFI_SSID\": \"home\"}"}),
        )
        .await;
    assert_eq!(s, 204);
    let (_, _, tar) = download(inst, &format!("/units/firmware/tar/{uuid}"), Some(&w.token)).await;
    let env: Value = serde_json::from_slice(&tar_files(&tar)["env.json"]).unwrap();
    assert_eq!(env["WIFI_SSID"], "home");

    // pinned to v0.1.0: that version's files
    let v1 = w.tag_commit("v0.1.0");
    let (s, got) = inst
        .patch(
            &format!("/units/{uuid}"),
            Some(&w.token),
            json!({"is_auto_update_from_repo_unit": false, "repo_branch": "main", "repo_commit": v1}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    let (s, _, zip) = download(inst, &format!("/units/firmware/zip/{uuid}"), Some(&w.token)).await;
    assert_eq!(s, 200);
    check_firmware(&zip_files(&zip), "print('v1')\n", &v1, &schema);
    let (s, _, body) = download(inst, &tgz(""), Some(&unit_token)).await;
    assert_eq!(s, 200);
    check_firmware(
        &tar_files(&inflate(&body, 9)),
        "print('v1')\n",
        &v1,
        &schema,
    );

    // compilable repos ship only the generated files
    let (s, repo) = inst
        .patch(
            &format!("/repos/{}", w.repo_uuid()),
            Some(&w.token),
            json!({"is_compilable_repo": true}),
        )
        .await;
    assert_eq!(s, 200, "{repo}");
    let (s, _, tar) = download(inst, &format!("/units/firmware/tar/{uuid}"), Some(&w.token)).await;
    assert_eq!(s, 200);
    let files = tar_files(&tar);
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["env.json", "schema.json"]
    );
    let env: Value = serde_json::from_slice(&files["env.json"]).unwrap();
    assert_eq!(env["PU_COMMIT_VERSION"], v1.as_str());
    let (s, _, zip) = download(inst, &format!("/units/firmware/zip/{uuid}"), Some(&w.token)).await;
    assert_eq!(s, 200);
    assert_eq!(
        zip_files(&zip)
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["env.json", "schema.json"]
    );

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// state storage

async fn unit_state_storage(backend: Backend) {
    let w = World::new(backend, "Public").await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let set_path = format!("/units/set_state_storage/{uuid}");
    let get_path = format!("/units/get_state_storage/{uuid}");
    let unit_token = w.unit_token(&uuid).await;
    let second = w.add_unit("second_unit", "Public").await;
    let second_token = w.unit_token(second["uuid"].as_str().unwrap()).await;
    let (_, other) = inst.user("other1").await;

    let (s, empty) = inst.get(&get_path, Some(&w.token)).await;
    assert_eq!(s, 200, "{empty}");
    assert_eq!(empty, json!(""));

    let (s, body) = inst
        .post(&set_path, Some(&w.token), json!({"state": "{\"a\":1}"}))
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, raw) = inst.call_raw("GET", &get_path, Some(&w.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(String::from_utf8(raw).unwrap(), r#""{\"a\":1}""#);
    let (_, got) = inst.get(&get_path, Some(&unit_token)).await;
    assert_eq!(got, json!("{\"a\":1}"));

    // the unit writes its own
    let (s, _) = inst
        .post(
            &set_path,
            Some(&unit_token),
            json!({"state": "from the device ✓"}),
        )
        .await;
    assert_eq!(s, 204);
    let (_, got) = inst.get(&get_path, Some(&w.token)).await;
    assert_eq!(got, json!("from the device ✓"));

    // nobody else reads or writes it
    for token in [Some(second_token.as_str()), Some(other.as_str()), None] {
        assert_detail(&inst.get(&get_path, token).await, 403, "403: 1: No Access");
        assert_detail(
            &inst.post(&set_path, token, json!({"state": "x"})).await,
            403,
            "403: 1: No Access",
        );
    }
    let (_, got) = inst.get(&get_path, Some(&w.token)).await;
    assert_eq!(got, json!("from the device ✓"));

    // "" clears
    let (s, _) = inst
        .post(&set_path, Some(&w.token), json!({"state": ""}))
        .await;
    assert_eq!(s, 204);
    let (_, got) = inst.get(&get_path, Some(&unit_token)).await;
    assert_eq!(got, json!(""));

    let got = inst.post(&set_path, Some(&w.token), json!({})).await;
    assert_eq!(got.0, 422, "{}", got.1);
    let got = inst
        .get(
            &format!("/units/get_state_storage/{}", uuid::Uuid::new_v4()),
            Some(&w.token),
        )
        .await;
    assert_detail(&got, 404, "The object does not exist");

    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// commands

/// Commands while the backend cannot reach its broker: refused with an MQTT error, nothing
/// pretends to be sent (the working path is in tests/mqtt_core.rs).
async fn unit_commands_without_broker(backend: Backend) {
    let closed = common::free_port().to_string();
    let w = World::new_with(
        backend,
        "Public",
        &[
            ("PU_MQTT_MODE", "external"),
            ("PU_MQTT_BACKEND_PORT", &closed),
        ],
    )
    .await;
    let inst = &w.inst;
    let uuid = w.unit_uuid();
    let unit_token = w.unit_token(&uuid).await;
    let (_, other) = inst.user("other1").await;
    let cmd = |c: &str| format!("/units/send_command_to_input_base_topic/{uuid}?command={c}");

    for c in ["Update", "EnvUpdate", "SchemaUpdate", "LogSync"] {
        let got = inst.call("POST", &cmd(c), Some(&w.token), None).await;
        assert_detail(&got, 422, "422: 10: MQTT Error");
        assert_detail(&got, 422, "not connected to the MQTT broker");
    }
    let got = inst
        .call("POST", &cmd("Update"), Some(&unit_token), None)
        .await;
    assert_detail(&got, 422, "422: 10: MQTT Error");
    // a failed Update shows on the unit
    let (_, unit) = inst.get(&format!("/units/{uuid}"), Some(&w.token)).await;
    assert_eq!(unit["firmware_update_status"], "Error", "{unit}");
    assert!(
        unit["firmware_update_error"]
            .as_str()
            .is_some_and(|e| e.contains("MQTT")),
        "{unit}"
    );
    assert_eq!(unit["last_firmware_update_datetime"], Value::Null, "{unit}");

    let got = inst.call("POST", &cmd("Bogus"), Some(&w.token), None).await;
    assert_eq!(got.0, 422, "{}", got.1);
    assert!(got.1["detail"].is_array(), "{}", got.1);
    let got = inst
        .call(
            "POST",
            &format!("/units/send_command_to_input_base_topic/{uuid}"),
            Some(&w.token),
            None,
        )
        .await;
    assert_eq!(got.0, 422, "{}", got.1);
    assert_detail(
        &inst.call("POST", &cmd("Update"), Some(&other), None).await,
        403,
        "403: 1: No Access",
    );
    assert_detail(
        &inst.call("POST", &cmd("Update"), None, None).await,
        403,
        "403: 1: No Access",
    );

    // set_state_input publishes first: refused, and the node keeps its state
    let input = w.node_uuid(&uuid, "set_fan_state/pepeunit").await;
    let output = w.node_uuid(&uuid, "current_temp/pepeunit").await;
    let path = format!("/unit_nodes/set_state_input/{input}");
    let got = inst
        .patch(&path, Some(&w.token), json!({"state": "on"}))
        .await;
    assert_detail(&got, 422, "422: 10: MQTT Error");
    let (_, node) = inst
        .get(&format!("/unit_nodes/{input}"), Some(&w.token))
        .await;
    assert_eq!(node["state"], Value::Null, "{node}");
    assert_eq!(node["visibility_level"], "Public");
    let got = inst
        .patch(
            &format!("/unit_nodes/set_state_input/{output}"),
            Some(&w.token),
            json!({"state": "on"}),
        )
        .await;
    assert_detail(&got, 422, "422: 8: UnitNode Validation Error");
    // a unit writes only rewritable inputs
    let got = inst
        .patch(&path, Some(&unit_token), json!({"state": "on"}))
        .await;
    assert_detail(&got, 403, "403: 1: No Access");
    let got = inst.patch(&path, None, json!({"state": "on"})).await;
    assert_detail(&got, 403, "403: 1: No Access");
    let (s, _) = inst
        .patch(
            &format!("/unit_nodes/{input}"),
            Some(&w.token),
            json!({"is_rewritable_input": true}),
        )
        .await;
    assert_eq!(s, 200);
    let got = inst
        .patch(&path, Some(&unit_token), json!({"state": "on"}))
        .await;
    assert_detail(&got, 422, "422: 10: MQTT Error");
    let (_, node) = inst
        .get(&format!("/unit_nodes/{input}"), Some(&w.token))
        .await;
    assert_eq!(node["state"], Value::Null, "{node}");
    assert_eq!(node["is_rewritable_input"], true, "{node}");

    w.stop().await;
}

/// Without `PU_MQTT_PORT`, env.json names the embedded broker's own port, so that devices
/// reach it: a non-default listener port, and port 0 (the port the broker took at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_names_the_embedded_brokers_port() {
    let fixed = common::free_port();
    for bind in [format!("127.0.0.1:{fixed}"), "127.0.0.1:0".to_string()] {
        // an empty value is an unset one: no PU_MQTT_PORT and no PU_MQTT_HOST
        let inst = TestInstance::start_with(
            Backend::Sqlite,
            &[
                ("PU_MQTT_BIND", &bind),
                ("PU_MQTT_PORT", ""),
                ("PU_MQTT_HOST", ""),
            ],
        )
        .await;
        let firmware = FirmwareRepo::create().await;
        let (_, token) = inst.user("owner").await;
        let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
        let uuid = unit["uuid"].as_str().unwrap();
        let (s, env) = inst.get(&format!("/units/env/{uuid}"), Some(&token)).await;
        assert_eq!(s, 200, "{env}");
        let port = env["PU_MQTT_PORT"].as_u64().expect("a port") as u16;
        if bind.ends_with(":0") {
            assert!(port != 0 && port != 1883, "{bind}: {env}");
        } else {
            assert_eq!(port, fixed, "{bind}: {env}");
        }
        // the host is the domain's, where devices reach this instance
        assert_eq!(env["PU_MQTT_HOST"], "localhost", "{env}");
        // the port is the broker's: a device with this env connects, and so did the core
        let device = MqttDevice::connect(port, uuid, env["PU_AUTH_TOKEN"].as_str().unwrap()).await;
        assert!(device.is_ok(), "{bind}: port {port}: {:?}", device.err());
        let (s, mqtt) = inst.get("/metrics/mqtt", Some(&token)).await;
        assert_eq!(s, 200, "{mqtt}");
        assert_eq!(mqtt["backend_connected"], true, "{bind}: {mqtt}");
        drop(device);
        inst.stop().await;
    }
}

both_backends!(
    unit_create_and_rules,
    unit_get_visibility_and_list,
    unit_update_and_delete,
    unit_env,
    unit_schema,
    unit_nodes_and_edges,
    unit_firmware,
    unit_state_storage,
    unit_commands_without_broker,
);
