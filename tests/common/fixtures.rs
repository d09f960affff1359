//! A firmware repository like a Unit developer would publish, served over loopback HTTP.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{git, StaticServer};

pub const SCHEMA_EXAMPLE: &str = r#"{
  "input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit"],
  "output_base_topic": ["state/pepeunit", "log/pepeunit"],
  "input_topic": ["set_fan_state/pepeunit", "raw_input"],
  "output_topic": ["current_temp/pepeunit", "raw_output"]
}"#;

pub const ENV_EXAMPLE: &str = r#"{"WIFI_SSID": "ssid", "WIFI_PASS": "pass", "PU_DOMAIN": "unit.example.com", "SENSOR_PERIOD": 5}"#;

/// A work repository plus its bare copy served at `{server.base}/firmware.git`.
pub struct FirmwareRepo {
    pub work: PathBuf,
    pub bare: PathBuf,
    pub server: StaticServer,
    _dir: tempfile::TempDir,
}

impl FirmwareRepo {
    /// main: two commits, the first tagged v0.1.0, the second v0.2.0; branch `dev` one more.
    pub async fn create() -> FirmwareRepo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let served = dir.path().join("served");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&served).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        write(&work, "env_example.json", ENV_EXAMPLE);
        write(&work, "schema_example.json", SCHEMA_EXAMPLE);
        write(&work, "main.py", "print('v1')\n");
        write(&work, "README.md", "# Fan controller\n");
        write(&work, "docs/notes.md", "internal notes\n");
        write(&work, ".pepeignore", "*.md\ndocs/\n");
        std::os::unix::fs::symlink("/etc/passwd", work.join("passwd_link")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first version"]);
        git(&work, &["tag", "v0.1.0"]);
        write(&work, "main.py", "print('v2')\n");
        git(&work, &["commit", "-q", "-am", "second version"]);
        git(&work, &["tag", "-a", "v0.2.0", "-m", "release 0.2.0"]);
        git(&work, &["checkout", "-q", "-b", "dev"]);
        write(&work, "main.py", "print('dev')\n");
        git(&work, &["commit", "-q", "-am", "dev work"]);
        git(&work, &["checkout", "-q", "main"]);
        let bare = served.join("firmware.git");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        git(&bare, &["update-server-info"]);
        let server = StaticServer::start(served).await;
        FirmwareRepo {
            work,
            bare,
            server,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/firmware.git", self.server.base)
    }

    pub fn head(&self, branch: &str) -> String {
        git(&self.work, &["rev-parse", branch])
    }

    /// Commits a change on main, tags it, and publishes it to the served bare repository.
    pub fn publish(&self, file: &str, content: &str, tag: Option<&str>) -> String {
        write(&self.work, file, content);
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("change {file}")],
        );
        if let Some(t) = tag {
            git(&self.work, &["tag", t]);
        }
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--tags",
                self.bare.to_str().unwrap(),
                "main",
                "dev",
            ],
        );
        git(&self.bare, &["update-server-info"]);
        self.head("main")
    }
}

pub fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Creates registry, repo and unit through the API as `token`; returns (registry, repo, unit) JSON.
pub async fn registry_repo_unit(
    inst: &super::TestInstance,
    token: &str,
    firmware: &FirmwareRepo,
    name: &str,
    visibility: &str,
) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let (s, registry) = inst
        .post(
            "/repository_registry",
            Some(token),
            json!({"platform": "Gitlab", "repository_url": firmware.url(), "is_public_repository": true, "credentials": null}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{registry}");
    assert_eq!(registry["sync_status"], "Updated", "{registry}");
    let (s, repo) = inst
        .post(
            "/repos",
            Some(token),
            json!({"repository_registry_uuid": registry["uuid"], "default_branch": "main", "visibility_level": visibility, "name": format!("{name}_repo"), "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{repo}");
    let (s, unit) = inst
        .post(
            "/units",
            Some(token),
            json!({"repo_uuid": repo["uuid"], "visibility_level": visibility, "name": format!("{name}_unit"), "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{unit}");
    (registry, repo, unit)
}

/// Creates Private units on `repo` through the API as `token`, one per name; returns their
/// uuids.
pub async fn add_units(
    inst: &super::TestInstance,
    token: &str,
    repo: &serde_json::Value,
    names: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut uuids = Vec::new();
    for name in names {
        let (s, u) = inst
            .post(
                "/units",
                Some(token),
                json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": name, "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s.as_u16(), 201, "{u}");
        uuids.push(u["uuid"].as_str().unwrap().to_string());
    }
    uuids
}

/// The uuid of the unit's Output node named `topic_name`.
#[allow(dead_code)]
pub async fn output_node(
    inst: &super::TestInstance,
    token: &str,
    unit: &serde_json::Value,
    topic_name: &str,
) -> String {
    let (_, list) = inst
        .get(
            &format!(
                "/unit_nodes?unit_uuid={}&type=Output",
                unit["uuid"].as_str().unwrap()
            ),
            Some(token),
        )
        .await;
    list["unit_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topic_name"] == topic_name)
        .unwrap_or_else(|| panic!("node {topic_name} in {list}"))["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Turns the node's data pipe on and uploads `yaml` as its config.
#[allow(dead_code)]
pub async fn pipe_config(inst: &super::TestInstance, token: &str, node: &str, yaml: &str) {
    let (s, body) = inst
        .patch(
            &format!("/unit_nodes/{node}"),
            Some(token),
            json!({"is_data_pipe_active": true}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{body}");
    let (s, body) = inst
        .post_file(
            &format!("/unit_nodes/set_data_pipe_config?uuid={node}"),
            Some(token),
            "data",
            yaml.as_bytes(),
        )
        .await;
    assert!(s.is_success(), "{}", String::from_utf8_lossy(&body));
}

/// A Number NRecords pipeline keeping `count` values, every value accepted.
#[allow(dead_code)]
pub fn n_records_config(count: u32) -> String {
    format!(
        "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 0\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: {count}\n"
    )
}

/// Imports `(created, value)` rows into an NRecords node of `max_count` through the CSV
/// import (the REST path).
#[allow(dead_code)]
pub async fn import_n_records(
    inst: &super::TestInstance,
    token: &str,
    node: &str,
    max_count: u32,
    rows: &[(chrono::NaiveDateTime, String)],
) {
    let mut csv = String::from("unit_node_uuid,state,state_type,create_datetime,max_count,size\n");
    for (at, value) in rows {
        csv.push_str(&format!(
            "{node},{value},Number,{},{max_count},{}\n",
            at.format("%Y-%m-%d %H:%M:%S"),
            value.len()
        ));
    }
    let (s, body) = inst
        .post_file(
            &format!("/unit_nodes/set_data_pipe_data_csv?uuid={node}"),
            Some(token),
            "data",
            csv.as_bytes(),
        )
        .await;
    assert!(s.is_success(), "{}", String::from_utf8_lossy(&body));
}
