//! The official Python device client (`pepeunit-client` 1.3.x from PyPI) against our server,
//! for real: env.json, schema.json, the firmware archive and state storage over REST.
//!
//! The interpreter comes from `PU_TEST_PYTHON` (a venv with `pepeunit-client[all]`, made by
//! scripts/test.sh). Without it the test is skipped, or fails when `PU_TEST_REQUIRE_ALL=1`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{python, Backend, TestInstance};
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/device/client_rest.py");
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the client script on `work`, killing it after [`PYTHON_TIMEOUT`]; returns its summary.
async fn run_client(python: &str, work: &std::path::Path) -> Value {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(SCRIPT)
        .arg(work)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        // loopback only: no proxy may sit between the client and the instance
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let out = match tokio::time::timeout(PYTHON_TIMEOUT, cmd.output()).await {
        Ok(out) => out.expect("the Python interpreter starts"),
        // dropping the output future kills the process (kill_on_drop)
        Err(_) => panic!("the Python client did not finish within {PYTHON_TIMEOUT:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{stderr}"));
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {line}\nstderr:\n{stderr}"))
}

async fn python_client_over_rest(backend: Backend) {
    let Some(python) = python() else {
        eprintln!("skipped: PU_TEST_PYTHON not set (scripts/test.sh creates the venv)");
        return;
    };
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let head = firmware.head("main");

    // the owner hands the device its env.json
    let (s, env) = inst.get(&format!("/units/env/{uuid}"), Some(&token)).await;
    assert_eq!(s, 200, "{env}");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("env.json"),
        serde_json::to_vec_pretty(&env).unwrap(),
    )
    .unwrap();

    let summary = run_client(&python, work.path()).await;

    assert_eq!(summary["unit_uuid"], uuid.as_str());
    assert_eq!(summary["settings_commit"], head.as_str());
    assert_eq!(summary["settings_mqtt_port"], inst.config.mqtt_port);

    // env.json as the unit downloaded it with its own token
    let got_env = &summary["env"];
    let keys: BTreeSet<&str> = got_env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, want);
    assert_eq!(got_env["PU_AUTH_TOKEN"], env["PU_AUTH_TOKEN"]);
    assert_eq!(got_env["PU_DOMAIN"], inst.domain.as_str());
    assert_eq!(got_env["PU_COMMIT_VERSION"], head.as_str());
    assert_eq!(got_env["WIFI_SSID"], "ssid");

    // schema.json is what the server computes
    let (s, schema) = inst
        .get(&format!("/units/get_current_schema/{uuid}"), Some(&token))
        .await;
    assert_eq!(s, 200, "{schema}");
    assert_eq!(summary["schema"], schema);
    let schema_keys: BTreeSet<&str> = summary["schema"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        schema_keys,
        BTreeSet::from([
            "input_base_topic",
            "output_base_topic",
            "input_topic",
            "output_topic"
        ])
    );

    // the archive, extracted by the client's own FileManager (zlib wbits=9, tarfile 'data' filter)
    let files: BTreeSet<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for name in [
        "main.py",
        "env.json",
        "schema.json",
        "env_example.json",
        "schema_example.json",
        ".pepeignore",
    ] {
        assert!(files.contains(name), "{name} missing: {files:?}");
    }
    for name in &files {
        assert!(!name.ends_with(".md"), "{files:?}");
        assert!(!name.starts_with("docs"), "{files:?}");
        assert!(!name.starts_with("LINK:"), "{files:?}");
        assert!(!name.contains("passwd"), "{files:?}");
    }
    assert_eq!(summary["main_py"], "print('v2')\n");
    assert_eq!(summary["archive_env_commit"], head.as_str());
    assert_eq!(summary["archive_schema"], schema);

    // state storage round trip through the client
    assert_eq!(summary["state_round_trip"], summary["state_sent"]);
    let (_, stored) = inst
        .get(&format!("/units/get_state_storage/{uuid}"), Some(&token))
        .await;
    assert_eq!(stored, summary["state_sent"]);
    let sent: Value = serde_json::from_str(summary["state_sent"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"counter": 3, "note": "fan ✓"}));

    // link queries the client makes: nothing is linked yet; its own unit owns its output
    assert_eq!(summary["inputs_by_output"]["count"], 0, "{summary}");
    assert_eq!(summary["units_by_nodes"]["count"], 1, "{summary}");
    let listed = &summary["units_by_nodes"]["units"][0];
    assert_eq!(listed["uuid"], uuid.as_str());
    assert_eq!(
        listed["unit_nodes"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    inst.stop().await;
}

both_backends!(python_client_over_rest);
