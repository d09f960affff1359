//! Data pipes (issue 17) end to end: configs over REST and GraphQL, node values from a device
//! through the embedded broker into the shards' pipelines, the rows they keep, CSV export and
//! import, clearing, config changes taking effect at once, open windows across a clean
//! restart. The pipeline rules themselves are table tests in `src/domain/datapipe`.

mod common;

use std::io::Read;
use std::time::Duration;

use common::fixtures::{output_node, registry_repo_unit, FirmwareRepo};
use common::graphql;
use common::mqtt::{unit_token, MqttDevice};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

const N_RECORDS: &str = "active_period:
  type: Permanent
filters:
  type_input_value: Number
  max_rate: 0
  max_size: 100
processing_policy:
  policy_type: NRecords
  n_records_count: 3
";

const LAST_VALUE_TIMES_TEN: &str = "active_period:
  type: Permanent
filters:
  type_input_value: Number
  max_rate: 0
  max_size: 100
transformations:
  multiplication_ratio: 10
processing_policy:
  policy_type: LastValue
";

const TIME_WINDOW: &str = "active_period:
  type: Permanent
filters:
  type_input_value: Text
  max_rate: 0
  max_size: 100
processing_policy:
  policy_type: TimeWindow
  time_window_size: 600
";

const AGGREGATION: &str = "active_period:
  type: Permanent
filters:
  type_input_value: Number
  max_rate: 0
  max_size: 100
processing_policy:
  policy_type: Aggregation
  time_window_size: 60
  aggregation_functions: Sum
";

/// A unit with an Output `/pepeunit` node, its device connected: (user token, node uuid,
/// node topic, device).
struct Setup {
    user: String,
    unit: String,
    node: String,
    topic: String,
    device: MqttDevice,
}

async fn setup(inst: &TestInstance, firmware: &FirmwareRepo, login: &str) -> Setup {
    let (_, user) = inst.user(login).await;
    let (_, _, unit) = registry_repo_unit(inst, &user, firmware, login, "Private").await;
    let node = output_node(inst, &user, &unit, "current_temp/pepeunit").await;
    let port = inst.config.mqtt_bind.port();
    let device = MqttDevice::connect(port, login, &unit_token(inst, &unit))
        .await
        .unwrap();
    let topic = format!("{}/{node}/pepeunit", inst.domain);
    Setup {
        user,
        unit: unit["uuid"].as_str().unwrap().to_string(),
        node,
        topic,
        device,
    }
}

async fn set_config(inst: &TestInstance, s: &Setup, yaml: &str) -> (StatusCode, String) {
    let (status, body) = inst
        .post_file(
            &format!("/unit_nodes/set_data_pipe_config?uuid={}", s.node),
            Some(&s.user),
            "data",
            yaml.as_bytes(),
        )
        .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn activate(inst: &TestInstance, s: &Setup) {
    let (status, body) = inst
        .patch(
            &format!("/unit_nodes/{}", s.node),
            Some(&s.user),
            json!({"is_data_pipe_active": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn data(inst: &TestInstance, s: &Setup, query: &str) -> Value {
    let (status, body) = inst
        .get(
            &format!("/unit_nodes/get_data_pipe_data/?uuid={}&{query}", s.node),
            Some(&s.user),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls the node's data until `done` holds (bounded).
async fn data_until(
    inst: &TestInstance,
    s: &Setup,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = data(inst, s, query).await;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn states(body: &Value) -> Vec<String> {
    body["pipe_data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn configs_values_and_csv(backend: Backend) {
    configs_values_and_csv_with(backend, &[]).await;
}

/// The same with the rows in ClickHouse (PostgreSQL as the instance database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_values_and_csv_clickhouse() {
    let Some(ch) = common::clickhouse::ClickHouse::start().await else {
        return;
    };
    let (backend, vars) = ch.instance_settings("pipes");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    configs_values_and_csv_with(backend, &vars).await;
}

async fn configs_values_and_csv_with(backend: Backend, extra: &[(&str, &str)]) {
    let inst = TestInstance::start_with(backend, extra).await;
    let firmware = FirmwareRepo::create().await;
    let s = setup(&inst, &firmware, "pipeowner").await;
    let (_, stranger) = inst.user("stranger").await;

    // checking a config: any agent, the list of {stage, message}
    let (status, body) = inst
        .post_file(
            "/unit_nodes/check_data_pipe_config",
            None,
            "data",
            N_RECORDS.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!([]));
    let bad = N_RECORDS.replace("n_records_count: 3", "n_records_count: 5000");
    let (status, body) = inst
        .post_file(
            "/unit_nodes/check_data_pipe_config",
            None,
            "data",
            bad.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let errors: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(errors[0]["stage"], "ProcessingPolicy", "{errors}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("1024"),
        "{errors}"
    );

    // unknown keys are named; an oversized file is refused before it is parsed
    let unknown = format!("{N_RECORDS}colour: red\n");
    let (_, body) = inst
        .post_file(
            "/unit_nodes/check_data_pipe_config",
            None,
            "data",
            unknown.as_bytes(),
        )
        .await;
    let errors: Value = serde_json::from_slice(&body).unwrap();
    assert!(errors.to_string().contains("colour"), "{errors}");
    let huge = format!("{N_RECORDS}# {}\n", "x".repeat(70 * 1024));
    let (status, body) = inst
        .post_file(
            "/unit_nodes/check_data_pipe_config",
            None,
            "data",
            huge.as_bytes(),
        )
        .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("larger than 65536 bytes"), "{body}");

    // a node must have its pipe activated first; only its creator sets the config
    let (status, body) = set_config(&inst, &s, N_RECORDS).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    activate(&inst, &s).await;
    let (status, _) = inst
        .post_file(
            &format!("/unit_nodes/set_data_pipe_config?uuid={}", s.node),
            Some(&stranger),
            "data",
            N_RECORDS.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = set_config(&inst, &s, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("DataPipe Validation Error"), "{body}");
    let (status, body) = set_config(&inst, &s, N_RECORDS).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // the config comes back as YAML, to who may see the node only
    let (status, yaml) = inst
        .call_raw(
            "GET",
            &format!("/unit_nodes/get_data_pipe_config/{}", s.node),
            Some(&s.user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let yaml = String::from_utf8(yaml).unwrap();
    assert!(
        yaml.contains("NRecords") && yaml.contains("n_records_count: 3"),
        "{yaml}"
    );
    let (status, _) = inst
        .get(
            &format!("/unit_nodes/get_data_pipe_config/{}", s.node),
            Some(&stranger),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a private node's config");

    // NRecords keeps the last three values
    for v in ["1", "2", "3", "4", "5"] {
        s.device.publish(&s.topic, v).await;
    }
    let body = data_until(&inst, &s, "type=NRecords", |b| states(b) == ["3", "4", "5"]).await;
    assert_eq!(body["count"], 3, "{body}");
    assert_eq!(body["pipe_data"][0]["max_count"], 3, "{body}");
    assert_eq!(body["pipe_data"][0]["state_type"], "Number", "{body}");
    let newest = data(&inst, &s, "type=NRecords&order_by_create_date=desc&limit=1").await;
    assert_eq!(states(&newest), ["5"], "{newest}");
    // the SQL store trims a node every 8 rows (count 3): what it holds stays bounded
    for v in 6..=30 {
        s.device.publish(&s.topic, v.to_string()).await;
    }
    data_until(&inst, &s, "type=NRecords", |b| {
        states(b) == ["28", "29", "30"]
    })
    .await;
    let pool = &inst.running.as_ref().unwrap().instance.db.pool;
    let held: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pipe_n_records WHERE unit_node_uuid = $1")
            .bind(&s.node)
            .fetch_one(pool)
            .await
            .unwrap();
    // (0 with ClickHouse, whose janitor trims)
    assert!(held <= 3 + 8, "30 values, count 3: {held} rows held");
    // switched off, the pipeline stops at once: the next value is only the node's state
    let (status, body) = inst
        .patch(
            &format!("/unit_nodes/{}", s.node),
            Some(&s.user),
            json!({"is_data_pipe_active": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.device.publish(&s.topic, "31").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, node) = inst
            .get(&format!("/unit_nodes/{}", s.node), Some(&s.user))
            .await;
        if node["state"] == "31" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{node}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        states(&data(&inst, &s, "type=NRecords").await),
        ["28", "29", "30"],
        "no row for a value sent while the pipe was off"
    );
    activate(&inst, &s).await;
    // the running pipe shows in the MQTT core's report (refreshed every second)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, m) = inst.get("/metrics/mqtt", Some(&s.user)).await;
        if m["pipes"]["active"] == 1 && m["pipes"]["memory_bytes"].as_u64() > Some(0) {
            assert_eq!(m["counters"]["pipe_rows_stored"], 30, "{m}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = inst
        .get(
            &format!(
                "/unit_nodes/get_data_pipe_data/?uuid={}&type=NRecords",
                s.node
            ),
            Some(&stranger),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the creator reads the data"
    );

    // CSV out: a zip holding dp_data_<uuid>.csv
    let (status, zip) = inst
        .call_raw(
            "GET",
            &format!("/unit_nodes/get_data_pipe_data_csv/{}", s.node),
            Some(&s.user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&zip));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    assert_eq!(archive.len(), 1);
    let mut file = archive.by_index(0).unwrap();
    let name = file.name().to_string();
    assert!(
        name.starts_with("dp_data_") && name.ends_with(".csv"),
        "{name}"
    );
    let mut csv = String::new();
    file.read_to_string(&mut csv).unwrap();
    drop(file);
    assert_eq!(csv.lines().count(), 4, "header and three rows: {csv}");

    // DELETE clears; the same CSV back restores the rows
    let (status, _) = inst
        .delete(
            &format!("/unit_nodes/delete_data_pipe_data/{}", s.node),
            Some(&s.user),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(data(&inst, &s, "type=NRecords").await["count"], 0);
    let import = format!("/unit_nodes/set_data_pipe_data_csv?uuid={}", s.node);
    let (status, body) = inst
        .post_file(&import, Some(&s.user), "data", csv.as_bytes())
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        states(&data(&inst, &s, "type=NRecords").await),
        ["28", "29", "30"]
    );
    // a bad row refuses the whole file, naming the row; what was stored stays
    let broken = csv.replacen(",30,", ",not a number,", 1);
    assert_ne!(broken, csv, "the edit applies: {csv}");
    let (status, body) = inst
        .post_file(&import, Some(&s.user), "data", broken.as_bytes())
        .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains('3'), "the bad row's number: {body}");
    assert_eq!(
        states(&data(&inst, &s, "type=NRecords").await),
        ["28", "29", "30"]
    );
    // the same over GraphQL: clear, then import
    let cleared = graphql::gql(
        &inst,
        Some(&s.user),
        "mutation($u: UUID!) { deleteDataPipeData(uuid: $u) { isNone } }",
        json!({"u": s.node}),
    )
    .await;
    graphql::data(&cleared);
    assert_eq!(data(&inst, &s, "type=NRecords").await["count"], 0);
    let imported = graphql::upload(
        &inst,
        Some(&s.user),
        "mutation($u: UUID!, $file: Upload!) { setDataPipeDataCsv(uuid: $u, file: $file) { isNone } }",
        json!({"u": s.node}),
        "data.csv",
        csv.as_bytes(),
    )
    .await;
    graphql::data(&imported);
    assert_eq!(
        states(&data(&inst, &s, "type=NRecords").await),
        ["28", "29", "30"]
    );

    // a new config takes effect at once: LastValue, multiplied, becomes the node's state
    // (upstream formats a multiplied value with Go's %f: six decimals)
    let (status, body) = set_config(&inst, &s, LAST_VALUE_TIMES_TEN).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    s.device.publish(&s.topic, "2.5").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, node) = inst
            .get(&format!("/unit_nodes/{}", s.node), Some(&s.user))
            .await;
        if node["state"] == "25.000000" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state never 25.000000: {node}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = data(&inst, &s, "type=LastValue").await;
    assert_eq!(last["pipe_data"][0]["state"], "25.000000", "{last}");

    // TimeWindow rows carry their expiry; this config set over GraphQL
    let set = graphql::upload(
        &inst,
        Some(&s.user),
        "mutation($u: UUID!, $file: Upload!) { setDataPipeConfig(uuid: $u, file: $file) { isNone } }",
        json!({"u": s.node}),
        "pipe.yml",
        TIME_WINDOW.as_bytes(),
    )
    .await;
    graphql::data(&set);
    s.device.publish(&s.topic, "héllo").await;
    let body = data_until(&inst, &s, "type=TimeWindow", |b| b["count"] == 1).await;
    assert_eq!(body["pipe_data"][0]["state"], "héllo", "{body}");
    assert!(
        body["pipe_data"][0]["expiration_datetime"].is_string(),
        "{body}"
    );

    // GraphQL reads the same rows
    let got = graphql::gql(
        &inst,
        Some(&s.user),
        "query($u: UUID!) { getPipeData(filters: {uuid: $u, type: TIME_WINDOW}) { count pipeData { ... on TimeWindowType { state size } } } getDataPipeConfig(uuid: $u) }",
        json!({"u": s.node}),
    )
    .await;
    let body = graphql::data(&got);
    assert_eq!(body["getPipeData"]["count"], 1, "{body}");
    assert_eq!(
        body["getPipeData"]["pipeData"][0]["state"], "héllo",
        "{body}"
    );
    assert_eq!(
        body["getPipeData"]["pipeData"][0]["size"], 6,
        "bytes: {body}"
    );
    assert!(
        body["getDataPipeConfig"]
            .as_str()
            .unwrap()
            .contains("TimeWindow"),
        "{body}"
    );

    // deleting the unit removes what its nodes' pipelines kept
    let (status, _) = inst
        .delete(&format!("/units/{}", s.unit), Some(&s.user))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let pool = &inst.running.as_ref().unwrap().instance.db.pool;
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pipe_window_entries WHERE unit_node_uuid = $1")
            .bind(&s.node)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "the deleted node's rows are gone");
    inst.stop().await;
}

both_backends!(configs_values_and_csv);

/// An Aggregation window open at a clean stop is saved and restored, also across a second
/// restart while the node is silent: values from before and after land in the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_windows_survive_a_clean_restart() {
    let mut inst = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let mut s = setup(&inst, &firmware, "aggowner").await;
    activate(&inst, &s).await;
    let (status, body) = set_config(&inst, &s, AGGREGATION).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // not in a window's last seconds, so that both halves share one window
    loop {
        let secs = chrono::Utc::now().timestamp() % 60;
        if (2..40).contains(&secs) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let window = chrono::Utc::now().timestamp() / 60;
    for v in ["1", "2", "3"] {
        s.device.publish(&s.topic, v).await;
    }
    // the values reached the pipeline before the stop
    let admin_counters = || async {
        let instance = &inst.running.as_ref().unwrap().instance;
        instance
            .mqtt_stats
            .counters
            .pipe_values_accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while admin_counters().await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "values never reached the pipeline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    inst.restart(Duration::from_millis(100)).await;
    // a second restart before the node sends again: the restored, still unclaimed windows
    // are saved again
    inst.restart(Duration::from_millis(100)).await;
    let port = inst.config.mqtt_bind.port();
    let (_, units) = inst.get("/units?limit=1", Some(&s.user)).await;
    let unit = units["units"][0].clone();
    s.device = MqttDevice::connect(port, "aggowner2", &unit_token(&inst, &unit))
        .await
        .unwrap();
    s.device.publish(&s.topic, "4").await;
    assert_eq!(
        chrono::Utc::now().timestamp() / 60,
        window,
        "the restart took too long to share the window"
    );
    // the window closes at the next minute; its sum counts both halves
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let body = loop {
        let body = data(&inst, &s, "type=Aggregation").await;
        if body["count"].as_i64().unwrap_or(0) > 0 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no window closed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let row = &body["pipe_data"][0];
    assert_eq!(row["aggregation_type"], "Sum", "{body}");
    assert_eq!(row["time_window_size"], 60, "{body}");
    assert_eq!(
        row["state"].as_f64(),
        Some(10.0),
        "1+2+3 before, 4 after: {body}"
    );
    inst.stop().await;
}

/// With `PU_FF_DATAPIPE_ENABLE=false` the endpoints answer the feature flag's 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feature_flag_turns_data_pipes_off() {
    let inst =
        TestInstance::start_with(Backend::Sqlite, &[("PU_FF_DATAPIPE_ENABLE", "false")]).await;
    let (_, root) = inst
        .call("GET", &format!("{}/pepeunit", inst.base), None, None)
        .await;
    assert_eq!(
        root["feature_flags"]["pu_ff_datapipe_enable"], false,
        "{root}"
    );
    let (status, _) = inst
        .post_file(
            "/unit_nodes/check_data_pipe_config",
            None,
            "data",
            N_RECORDS.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    inst.stop().await;
}

/// One node flooded with values (a pipeline with no rate limit over a 24 h sliding window):
/// every value reaches the pipeline (its memory bound is the engine's, tested there), and the
/// same device's log line sent after the flood is stored as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_node_leaves_other_traffic_alone() {
    const FLOOD: u64 = 3_000;
    let inst = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let s = setup(&inst, &firmware, "floodowner").await;
    activate(&inst, &s).await;
    let sliding = AGGREGATION
        .replace("time_window_size: 60", "time_window_size: 86400")
        .replace(
            "aggregation_functions: Sum",
            "aggregation_functions: Avg\n  time_window_step: 60",
        );
    let (status, body) = set_config(&inst, &s, &sliding).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for i in 0..FLOOD {
        s.device.publish(&s.topic, format!("{}", i % 97)).await;
    }
    let log_topic = common::mqtt::base_topic(&inst, s.unit.as_str(), "output_base_topic", "log");
    s.device
        .publish(
            &log_topic,
            r#"{"level": "Info", "text": "after the flood", "create_datetime": "2026-12-06T12:00:00"}"#,
        )
        .await;
    let counters = || {
        let instance = &inst.running.as_ref().unwrap().instance;
        instance
            .mqtt_stats
            .counters
            .pipe_values_accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log_list = format!("/units/log_list/?uuid={}&limit=10", s.unit);
    loop {
        let (_, logs) = inst.get(&log_list, Some(&s.user)).await;
        let logged = logs["unit_logs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["text"] == "after the flood"));
        if logged && counters() == FLOOD {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepted {} of {FLOOD}; logs {logs}",
            counters()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    inst.stop().await;
}

/// The janitor frees the space of expired TimeWindow rows (SQL: deleted; ClickHouse: their
/// expiry-day partitions dropped) and, in ClickHouse, trims an NRecords node far past the
/// largest count; readers never saw those rows anyway.
async fn janitor_on(extra: &[(&str, &str)]) {
    use pepeunit::domain::datapipe::{
        NRecordsEntry, PipeRow, ProcessingPolicyType, TypeInputValue, WindowEntry,
    };
    use pepeunit::store::pipe_data::PipeQuery;
    let inst = TestInstance::start_with(Backend::Sqlite, extra).await;
    let instance = &inst.running.as_ref().unwrap().instance;
    let node = uuid::Uuid::new_v4();
    let now = chrono::Utc::now().naive_utc();
    let day = chrono::Duration::days(1);
    let window = |at: chrono::NaiveDateTime, expires: chrono::NaiveDateTime| {
        PipeRow::Window(WindowEntry {
            unit_node_uuid: node,
            state: "x".into(),
            state_type: TypeInputValue::Text,
            create_datetime: at,
            expiration_datetime: expires,
            size: 1,
        })
    };
    let rows = vec![
        window(now - day * 3, now - day * 2),
        window(now - day * 3 + chrono::Duration::seconds(1), now - day * 2),
        window(now, now + day * 2),
    ];
    instance.logs.insert_pipe_rows(&rows).await.unwrap();
    let purged = instance.purge_expired_pipe_rows().await.unwrap();
    assert_eq!(purged, 2, "the two rows that expired two days ago");
    let (visible, _) = instance
        .logs
        .pipe_rows(&PipeQuery::all(node, ProcessingPolicyType::TimeWindow), now)
        .await
        .unwrap();
    assert_eq!(visible, 1);

    if extra.is_empty() {
        inst.stop().await;
        return;
    }
    // ClickHouse: 2,100 NRecords rows of one node are trimmed to the newest 1,024
    let n_rows: Vec<PipeRow> = (0..2_100)
        .map(|i| {
            PipeRow::NRecords(NRecordsEntry {
                unit_node_uuid: node,
                state: i.to_string(),
                state_type: TypeInputValue::Number,
                create_datetime: now - chrono::Duration::seconds(3_000 - i),
                max_count: 1024,
                size: 4,
            })
        })
        .collect();
    instance.logs.insert_pipe_rows(&n_rows).await.unwrap();
    instance.purge_expired_pipe_rows().await.unwrap();
    let query = PipeQuery::all(node, ProcessingPolicyType::NRecords);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // the mutation runs in the background on 18.16
        // the count and the page are two queries; the mutation may finish between them
        let (count, rows) = instance.logs.pipe_rows(&query, now).await.unwrap();
        if count == 1024 && rows.len() == 1024 {
            let PipeRow::NRecords(first) = &rows[0] else {
                panic!("{rows:?}")
            };
            assert_eq!(first.state, "1076", "the oldest kept is the 1,024th newest");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{count} rows left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    inst.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_sqlite() {
    janitor_on(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_clickhouse() {
    let Some(ch) = common::clickhouse::ClickHouse::start().await else {
        return;
    };
    let url = ch.url();
    janitor_on(&[
        ("PU_CLICKHOUSE_URL", &url),
        ("PU_CLICKHOUSE_DATABASE", "janitor"),
    ])
    .await;
}
