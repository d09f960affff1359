//! `pepeunit load ramp` (issue 18 part 4) end to end against a real instance: short ramps on
//! REST and GraphQL at tiny rates, the binary writing its JSON and self-contained HTML reports
//! and publishing, the public `GET /load_limit` (no token) showing the newest report per channel
//! with the grade, the instance's own capacity computation, refusals, and the link from NodeInfo
//! and the instance actor. No timing is asserted: the bounds are set so that every step stays
//! within them, and only counts, shapes and contents are checked.

mod common;

use axum::http::StatusCode;
use serde_json::{json, Value};

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use pepeunit::load::ramp::{publish, ramp, RampLoad};

fn args(inst: &TestInstance, token: &str, graphql: bool) -> RampLoad {
    RampLoad {
        url: inst.base.clone(),
        token: token.to_string(),
        rest: !graphql,
        graphql,
        mqtt: false,
        unit: None,
        connections: 2,
        // generous bounds: the steps never pass them, so no timing decides the outcome
        p99_ms: 60_000.0,
        max_error_percent: 0.0,
        step_seconds: 0.3,
        start_rate: 5,
        factor: 2.0,
        max_rate: 20,
        max_steps: 10,
        json: None,
        html: None,
        publish: false,
        allow_remote: false,
        quiet: true,
        prefix: "/pepeunit/api/v1".into(),
        graphql_path: "/pepeunit/graphql".into(),
    }
}

#[track_caller]
fn check_steps(report: &Value, channel: &str) {
    assert_eq!(report["channel"], channel, "{report}");
    let steps = report["steps"].as_array().expect("steps");
    let offered: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(offered, [5.0, 10.0, 20.0], "{report}");
    for s in steps {
        assert!(s["requests"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(s["within_bounds"], true, "{s}");
        assert!(s["p99_ms"].as_f64().unwrap() >= s["p50_ms"].as_f64().unwrap());
    }
    assert_eq!(report["capacity"]["offered_rate"], 20.0, "{report}");
    assert!(
        report["stop_reason"]
            .as_str()
            .unwrap()
            .contains("--max-rate 20"),
        "{report}"
    );
}

async fn load_ramp_runs(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, admin) = inst.user("rampadmin").await; // the first user is the Admin
    let (_, user) = inst.user("rampuser").await;

    // the library on both HTTP channels, as a plain user (nothing published)
    for graphql in [false, true] {
        let report = ramp(&args(&inst, &user, graphql)).await.expect("ramp runs");
        let v = serde_json::to_value(&report).unwrap();
        check_steps(&v, if graphql { "graphql" } else { "rest" });
        // a user's token cannot read the machine
        assert!(v["machine"]["cpus"].is_null(), "{v}");
    }

    // flags are checked with messages naming them; the URL must be on loopback
    for (change, needle) in [
        (
            (|a: &mut RampLoad| a.factor = 1.0) as fn(&mut RampLoad),
            "--factor",
        ),
        (|a| a.start_rate = 0, "--start-rate"),
        (|a| a.start_rate = 50, "--start-rate"),
        (|a| a.max_rate = 1_000_000, "--max-rate"),
        (|a| a.step_seconds = 0.0, "--step-seconds"),
        (|a| a.p99_ms = f64::NAN, "--p99-ms"),
        (|a| a.max_error_percent = 101.0, "--max-error-percent"),
        (|a| a.max_steps = 0, "--max-steps"),
        (|a| a.graphql = true, "exactly one channel"),
        (|a| a.connections = 0, "--connections"),
        (
            |a| {
                a.rest = false;
                a.mqtt = true
            },
            "--mqtt needs --unit",
        ),
        (|a| a.url = "http://192.0.2.1:80".into(), "loopback"),
    ] {
        let mut a = args(&inst, &user, false);
        change(&mut a);
        let err = ramp(&a).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err} lacks {needle}");
    }
    // a token that is not valid fails the probe before any step
    let err = ramp(&args(&inst, "not-a-token", false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("probe") && err.contains("HTTP 4"), "{err}");

    // the binary: table, JSON, HTML, and --publish with the admin's token
    let dir = tempfile::tempdir().unwrap();
    let (json_path, html_path) = (dir.path().join("ramp.json"), dir.path().join("ramp.html"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"))
        .args([
            "load",
            "ramp",
            "--url",
            &inst.base,
            "--token",
            &admin,
            "--rest",
            "--p99-ms",
            "60000",
            "--max-error-percent",
            "0",
            "--step-seconds",
            "0.3",
            "--start-rate",
            "5",
            "--factor",
            "2",
            "--max-rate",
            "20",
            "--json",
            json_path.to_str().unwrap(),
            "--html",
            html_path.to_str().unwrap(),
            "--publish",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("offered/s") && stdout.contains("capacity: 20/s"),
        "{stdout}"
    );
    assert!(stdout.contains("published: GET"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    check_steps(&report, "rest");
    // an admin's token reads the instance's machine into the report
    assert!(report["machine"]["cpus"].as_u64().unwrap() > 0, "{report}");
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg ").count(), 3, "three charts");
    assert_eq!(
        page.matches("<polyline ").count(),
        5,
        "offered, achieved, p50, p99, errors"
    );
    for step in 1..=3 {
        assert!(
            page.contains(&format!("<tr class=\"ok\"><td>{step}</td>")),
            "step {step}"
        );
    }
    // self-contained: no scripts, stylesheets, images or links to fetch
    for external in ["<script", "<link", "<img", " src=", " href=", "url("] {
        assert!(!page.contains(external), "{external} in the page");
    }
    assert!(!page
        .replace("http://www.w3.org/2000/svg", "")
        .contains("http"));

    // the public report: no token, the newest report per channel with the grade
    let (s, limit) = inst.get("/load_limit", None).await;
    assert_eq!(s, StatusCode::OK, "{limit}");
    assert_eq!(limit["domain"], inst.domain);
    assert_eq!(limit["grade"]["currency"], "USD");
    assert_eq!(limit["grade"]["price_per_mps"], 0.0);
    let channels = limit["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{limit}");
    assert_eq!(channels[0]["channel"], "rest");
    assert_eq!(channels[0]["capacity"]["offered_rate"], 20.0);
    assert_eq!(channels[0]["steps"].as_array().unwrap().len(), 3);
    assert_eq!(channels[0]["machine"], report["machine"]);
    assert!(channels[0]["published"].is_string());

    // the grade the admin sets is what load_limit shows
    let (s, g) = inst
        .patch(
            "/grade",
            Some(&admin),
            json!({"price_per_mps": 0.5, "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");

    // the instance computes the capacity itself: a step beyond the bounds never counts, and
    // the publisher's own claim is ignored
    let crafted = json!({
        "channel": "graphql", "operation": "crafted", "started": "a", "finished": "b",
        "bounds": {"p99_ms": 50.0, "max_error_percent": 1.0},
        "steps": [
            step(10.0, 5.0, 0.0), step(20.0, 40.0, 0.5), step(40.0, 80.0, 0.0), step(80.0, 10.0, 30.0)
        ],
        "stop_reason": "crafted",
        "capacity": step(80.0, 10.0, 30.0)
    });
    let (s, stored) = inst
        .post("/load_limit", Some(&admin), crafted.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["capacity"]["offered_rate"], 20.0, "{stored}");
    let (_, limit) = inst.get("/load_limit", None).await;
    let names: Vec<&str> = limit["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rest", "graphql"], "{limit}");
    assert_eq!(limit["channels"][1]["capacity"]["offered_rate"], 20.0);
    assert_eq!(limit["grade"]["price_per_mps"], 0.5);
    assert_eq!(limit["grade"]["currency"], "EUR");

    // refusals: a user or nobody may not publish; a bad report is named
    let (s, _) = inst.post("/load_limit", Some(&user), crafted.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = inst.post("/load_limit", None, crafted.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (field, value, loc) in [
        ("channel", json!("smtp"), json!(["body", "channel"])),
        ("steps", json!([]), json!(["body", "steps"])),
    ] {
        let mut bad = crafted.clone();
        bad[field] = value;
        let (s, v) = inst.post("/load_limit", Some(&admin), bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["detail"][0]["loc"], loc, "{v}");
    }
    let mut bad = crafted.clone();
    bad["steps"][0]["error_percent"] = json!(150.0);
    let (s, v) = inst.post("/load_limit", Some(&admin), bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["detail"][0]["loc"], json!(["body", "steps.0"]), "{v}");

    // MQTT: QoS 1 states of a unit over two connections, each acknowledged (= stored)
    let firmware = FirmwareRepo::create().await;
    let (_, _, unit) = registry_repo_unit(&inst, &admin, &firmware, "ramp", "Private").await;
    let unit: uuid::Uuid = unit["uuid"].as_str().unwrap().parse().unwrap();
    inst.wait_mqtt_ready().await;
    let mut a = args(&inst, &admin, false);
    (a.rest, a.mqtt, a.unit) = (false, true, Some(unit));
    let report = ramp(&a).await.expect("the MQTT ramp runs");
    let v = serde_json::to_value(&report).unwrap();
    check_steps(&v, "mqtt");
    // it publishes the values of the unit's Output node on its /pepeunit topic, which the
    // instance stores (PUBACK after the commit; the read may come from a cache: wait for it)
    let (_, nodes) = inst
        .get(
            &format!("/unit_nodes?unit_uuid={unit}&type=Output"),
            Some(&admin),
        )
        .await;
    let node = nodes["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"].as_str().unwrap().ends_with("/pepeunit"))
        .expect("the fixture's schema has an Output /pepeunit node")
        .clone();
    assert!(
        report.operation.contains(node["uuid"].as_str().unwrap()),
        "{v}"
    );
    common::federation::eventually("the ramp's node values stored", || async {
        let (_, n) = inst
            .get(
                &format!("/unit_nodes/{}", node["uuid"].as_str().unwrap()),
                Some(&admin),
            )
            .await;
        let value: u64 = n["state"].as_str()?.parse().ok()?;
        (20..37).contains(&value).then_some(())
    })
    .await;
    publish(&a, &report).await.expect("published");
    let (_, limit) = inst.get("/load_limit", None).await;
    let names: Vec<&str> = limit["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rest", "graphql", "mqtt"], "{limit}");
    // with the topic throttled, the dropped messages are still acknowledged (MQTT 3.1.1):
    // the ramp reads the unit's throttled count and reports them as errors
    let (s, set) = inst
        .call(
            "PUT",
            "/throttle",
            Some(&admin),
            Some(json!({"rules": [{"pattern": "{domain}/+/pepeunit", "rate": 1, "burst": 3}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    let throttled = ramp(&a).await.expect("the throttled MQTT ramp runs");
    let v = serde_json::to_value(&throttled).unwrap();
    // (which step meets the limit first depends on how fast the probe and the first step
    // follow each other; the largest, 6 messages against a burst of 3, always does)
    let steps = v["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert!(last["errors"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(last["within_bounds"], false, "{v}");
    assert!(
        v["stop_reason"]
            .as_str()
            .unwrap()
            .contains("throttled by the instance"),
        "{v}"
    );
    // a unit the token's user cannot read fails the probe
    a.unit = Some(uuid::Uuid::new_v4());
    let err = ramp(&a).await.unwrap_err().to_string();
    assert!(err.contains("env.json"), "{err}");

    // federated peers find it: NodeInfo's metadata and the instance actor link it
    let load_limit_url = format!("{}/load_limit", inst.api);
    let nodeinfo: Value = inst
        .http
        .get(format!("{}/pepeunit/ap/nodeinfo/2.1", inst.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        nodeinfo["metadata"]["loadLimit"].as_str(),
        Some(load_limit_url.replace("127.0.0.1", "localhost").as_str()),
        "{nodeinfo}"
    );
    let actor: Value = inst
        .http
        .get(format!("{}/pepeunit/ap/instance", inst.base))
        .header("accept", "application/activity+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        actor["loadLimit"], nodeinfo["metadata"]["loadLimit"],
        "{actor}"
    );
    assert!(actor["@context"].to_string().contains("pepeunit:loadLimit"));
    inst.stop().await;
}

fn step(offered: f64, p99: f64, errors: f64) -> Value {
    json!({
        "offered_rate": offered, "achieved_rate": offered, "requests": 100, "errors": 0,
        "error_percent": errors, "p50_ms": p99 / 2.0, "p99_ms": p99, "max_ms": p99,
        "seconds": 1.0, "within_bounds": true
    })
}

both_backends!(load_ramp_runs);
