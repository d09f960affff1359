//! Release assets read from the platform APIs at each registry sync (API.md §5.2 step 4), and
//! what they drive: `releases_data`, `available_platforms` and `target_firmware_platform` of
//! units of compilable repos (§4, §5.3). GitLab and GitHub are fakes served on loopback that
//! answer in the platforms' real JSON shapes. Every test runs on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{json, Value};

use common::fixtures::FirmwareRepo;
use common::{git, Backend, StaticServer, TestInstance};

type Answer = (StatusCode, Value);

/// What a fake release API answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Releases,
    /// `[]`
    Empty,
    /// HTTP 500
    Fail,
    /// 200 with a body that is not JSON
    Garbage,
    /// 200 with a valid but oversized (6 MB) JSON body
    Huge,
}

/// One request a fake API received.
#[derive(Clone, Debug)]
struct Seen {
    /// Path and query as sent (still percent-encoded).
    raw: String,
    header: BTreeMap<String, String>,
}

struct FakeState {
    mode: Mode,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn new() -> Fake {
        Fake(Arc::new(Mutex::new(FakeState {
            mode: Mode::Releases,
            seen: Vec::new(),
        })))
    }
    fn set(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }
    /// Records the request and returns the current mode.
    fn record(&self, uri: &Uri, headers: &HeaderMap) -> Mode {
        let header = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut state = self.0.lock().unwrap();
        state.seen.push(Seen {
            raw: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            header,
        });
        state.mode
    }
}

fn answer(mode: Mode, releases: Value) -> Response {
    match mode {
        Mode::Releases => axum::Json(releases).into_response(),
        Mode::Empty => axum::Json(json!([])).into_response(),
        Mode::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"message": "500 Internal Server Error"})),
        )
            .into_response(),
        Mode::Garbage => (
            [("content-type", "application/json")],
            "<html><body>Bad gateway</body></html>",
        )
            .into_response(),
        Mode::Huge => {
            let mut body = String::from("[");
            body.push_str(&" ".repeat(6 * 1024 * 1024));
            body.push(']');
            ([("content-type", "application/json")], body).into_response()
        }
    }
}

const GITLAB_PROJECT: &str = "group/sub/firmware";
const GL: &str = "https://gitlab.example.com/group/sub/firmware";
const GH: &str = "https://github.com/octo/firmware/releases/download";

/// `GET /api/v4/projects/{id}/releases` in GitLab's shape: v0.2.0 with four sources and two
/// links, v0.1.0 with sources only.
fn gitlab_releases() -> Value {
    let sources = |tag: &str| {
        json!(["zip", "tar.gz", "tar.bz2", "tar"]
            .iter()
            .map(
                |f| json!({"format": f, "url": format!("{GL}/-/archive/{tag}/firmware-{tag}.{f}")})
            )
            .collect::<Vec<_>>())
    };
    let author = json!({"id": 1, "username": "pepe", "name": "Pepe", "state": "active",
        "avatar_url": null, "web_url": "https://gitlab.example.com/pepe"});
    json!([
        {
            "name": "Release 0.2.0",
            "tag_name": "v0.2.0",
            "description": "Second version",
            "created_at": "2025-01-02T10:00:00.000Z",
            "released_at": "2025-01-02T10:00:00.000Z",
            "upcoming_release": false,
            "author": author,
            "commit": {"id": "0000000000000000000000000000000000000002", "short_id": "00000000",
                       "title": "second version", "message": "second version"},
            "commit_path": "/group/sub/firmware/-/commit/0000000000000000000000000000000000000002",
            "tag_path": "/group/sub/firmware/-/tags/v0.2.0",
            "assets": {
                "count": 6,
                "sources": sources("v0.2.0"),
                "links": [
                    {"id": 11, "name": "esp32.bin", "url": format!("{GL}/-/package_files/11/download"),
                     "direct_asset_url": format!("{GL}/-/releases/v0.2.0/downloads/esp32.bin"),
                     "link_type": "package"},
                    {"id": 12, "name": "rp2040.uf2", "url": format!("{GL}/-/package_files/12/download"),
                     "direct_asset_url": format!("{GL}/-/releases/v0.2.0/downloads/rp2040.uf2"),
                     "link_type": "package"}
                ]
            },
            "evidences": [],
            "_links": {"self": format!("{GL}/-/releases/v0.2.0")}
        },
        {
            "name": "Release 0.1.0",
            "tag_name": "v0.1.0",
            "description": "",
            "created_at": "2025-01-01T10:00:00.000Z",
            "released_at": "2025-01-01T10:00:00.000Z",
            "upcoming_release": false,
            "author": author,
            "assets": {"count": 4, "sources": sources("v0.1.0"), "links": []},
            "evidences": [],
            "_links": {"self": format!("{GL}/-/releases/v0.1.0")}
        }
    ])
}

/// `GET /repos/{owner}/{repo}/releases` in GitHub's shape: v0.2.0 with two assets, v0.1.0
/// without any.
fn github_releases() -> Value {
    let asset = |id: u64, name: &str| {
        json!({
            "url": format!("https://api.github.com/repos/octo/firmware/releases/assets/{id}"),
            "id": id, "node_id": "RA_x", "name": name, "label": "", "uploader": {"login": "octo", "id": 1},
            "content_type": "application/octet-stream", "state": "uploaded", "size": 1024,
            "download_count": 3, "created_at": "2025-01-02T10:00:00Z", "updated_at": "2025-01-02T10:00:00Z",
            "browser_download_url": format!("{GH}/v0.2.0/{name}")
        })
    };
    json!([
        {
            "url": "https://api.github.com/repos/octo/firmware/releases/2",
            "html_url": "https://github.com/octo/firmware/releases/tag/v0.2.0",
            "assets_url": "https://api.github.com/repos/octo/firmware/releases/2/assets",
            "id": 2, "node_id": "RE_2", "tag_name": "v0.2.0", "target_commitish": "main",
            "name": "v0.2.0", "draft": false, "prerelease": false,
            "created_at": "2025-01-02T10:00:00Z", "published_at": "2025-01-02T10:00:00Z",
            "author": {"login": "octo", "id": 1},
            "assets": [asset(21, "esp32.bin"), asset(22, "rp2040.uf2")],
            "tarball_url": "https://api.github.com/repos/octo/firmware/tarball/v0.2.0",
            "zipball_url": "https://api.github.com/repos/octo/firmware/zipball/v0.2.0",
            "body": "Second version"
        },
        {
            "url": "https://api.github.com/repos/octo/firmware/releases/1",
            "id": 1, "tag_name": "v0.1.0", "target_commitish": "main", "name": "v0.1.0",
            "draft": false, "prerelease": false, "assets": [],
            "tarball_url": "https://api.github.com/repos/octo/firmware/tarball/v0.1.0",
            "zipball_url": "https://api.github.com/repos/octo/firmware/zipball/v0.1.0",
            "body": ""
        }
    ])
}

async fn gitlab_api(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mode = fake.record(&uri, &headers);
    if id != GITLAB_PROJECT {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "404 Project Not Found"})),
        )
            .into_response();
    }
    answer(mode, gitlab_releases())
}

async fn github_api(
    State(fake): State<Fake>,
    Path((owner, repo)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mode = fake.record(&uri, &headers);
    if !matches!(owner.as_str(), "octo" | "secret") || repo != "firmware" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"})),
        )
            .into_response();
    }
    answer(mode, github_releases())
}

/// The fixture firmware served by a fake GitLab (git files and API on one host) at
/// `group/sub/firmware.git`, and for GitHub at `octo/firmware.git` and `secret/firmware.git`
/// with a fake GitHub API on another port.
struct Platforms {
    firmware: FirmwareRepo,
    git: StaticServer,
    gitlab: Fake,
    github_api: StaticServer,
    github: Fake,
    _root: tempfile::TempDir,
}

impl Platforms {
    async fn start() -> Platforms {
        let firmware = FirmwareRepo::create().await;
        let root = tempfile::tempdir().unwrap();
        for dir in ["group/sub", "octo", "secret"] {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&firmware.bare, dir.join("firmware.git")).unwrap();
        }
        let gitlab = Fake::new();
        let routes = axum::Router::new()
            .route("/api/v4/projects/{id}/releases", get(gitlab_api))
            .with_state(gitlab.clone());
        let git = StaticServer::start_with(root.path().to_path_buf(), routes).await;
        let github = Fake::new();
        let routes = axum::Router::new()
            .route("/repos/{owner}/{repo}/releases", get(github_api))
            .with_state(github.clone());
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let github_api = StaticServer::start_with(PathBuf::from(&empty), routes).await;
        Platforms {
            firmware,
            git,
            gitlab,
            github_api,
            github,
            _root: root,
        }
    }

    fn gitlab_url(&self) -> String {
        format!("{}/group/sub/firmware.git", self.git.base)
    }

    fn github_url(&self, owner: &str) -> String {
        format!("{}/{owner}/firmware.git", self.git.base)
    }

    async fn instance(&self, backend: Backend) -> TestInstance {
        TestInstance::start_with(backend, &[("PU_GITHUB_API_URL", &self.github_api.base)]).await
    }

    /// The commit a tag points at.
    fn commit_of(&self, tag: &str) -> String {
        git(
            &self.firmware.work,
            &["rev-parse", &format!("{tag}^{{commit}}")],
        )
    }
}

#[track_caller]
fn assert_err(got: &Answer, status: u16, code: u16, needle: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    let detail = got.1["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("{status}: {code}: ")),
        "{detail:?} is not code {code}"
    );
    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

/// A public registry that synced; returns its JSON.
async fn registry(inst: &TestInstance, token: &str, platform: &str, url: &str) -> Value {
    registry_with(inst, token, platform, url, None).await
}

async fn registry_with(
    inst: &TestInstance,
    token: &str,
    platform: &str,
    url: &str,
    credentials: Option<Value>,
) -> Value {
    let (st, v) = inst
        .post(
            "/repository_registry",
            Some(token),
            json!({"platform": platform, "repository_url": url,
                   "is_public_repository": credentials.is_none(), "credentials": credentials}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["sync_status"], "Updated", "{v}");
    assert_eq!(v["sync_error"], Value::Null, "{v}");
    v
}

/// `releases_data` parsed: tag -> [(asset name, url)].
fn releases(registry: &Value) -> BTreeMap<String, Vec<(String, String)>> {
    serde_json::from_str(s(&registry["releases_data"])).expect("releases_data is the JSON format")
}

fn names(assets: &[(String, String)]) -> Vec<&str> {
    assets.iter().map(|(n, _)| n.as_str()).collect()
}

async fn compilable_repo(inst: &TestInstance, token: &str, registry: &Value, name: &str) -> String {
    let (st, v) = inst
        .post(
            "/repos",
            Some(token),
            json!({"repository_registry_uuid": registry["uuid"], "default_branch": "main",
                   "visibility_level": "Public", "name": name, "is_compilable_repo": true}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s(&v["uuid"]).to_string()
}

/// `available_platforms` as (name, link) pairs.
async fn platforms(
    inst: &TestInstance,
    token: &str,
    repo: &str,
    query: &str,
) -> Vec<(String, String)> {
    let (st, v) = inst
        .get(
            &format!("/repos/available_platforms/{repo}{query}"),
            Some(token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|p| (s(&p["name"]).to_string(), s(&p["link"]).to_string()))
        .collect()
}

async fn create_unit(inst: &TestInstance, token: &str, body: Value) -> Answer {
    inst.post("/units", Some(token), body).await
}

const SOURCES: [&str; 4] = ["zip", "tar.gz", "tar.bz2", "tar"];

async fn gitlab_releases_drive_platforms_and_units(backend: Backend) {
    let p = Platforms::start().await;
    let inst = p.instance(backend).await;
    let (_, token) = inst.user("owner").await;

    let reg = registry(&inst, &token, "Gitlab", &p.gitlab_url()).await;
    // asked on the registry's host, the project named by its url-encoded full path
    let seen = p.gitlab.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].raw,
        "/api/v4/projects/group%2Fsub%2Ffirmware/releases?per_page=100"
    );
    assert!(!seen[0].header.contains_key("private-token"), "{seen:?}");
    assert!(
        seen[0].header["user-agent"].starts_with("pepeunit/"),
        "{seen:?}"
    );
    assert!(p.github.seen().is_empty());

    // stored as upstream's json.dumps writes it, sources first, then links
    let text = s(&reg["releases_data"]);
    assert!(
        text.starts_with(&format!(
            r#"{{"v0.2.0": [["zip", "{GL}/-/archive/v0.2.0/firmware-v0.2.0.zip"], ["tar.gz", "#
        )),
        "{text}"
    );
    let data = releases(&reg);
    assert_eq!(
        names(&data["v0.2.0"]),
        ["zip", "tar.gz", "tar.bz2", "tar", "esp32.bin", "rp2040.uf2"]
    );
    assert_eq!(
        data["v0.2.0"][4],
        (
            "esp32.bin".to_string(),
            format!("{GL}/-/package_files/11/download")
        )
    );
    assert_eq!(names(&data["v0.1.0"]), SOURCES);
    assert_eq!(data.len(), 2);
    let (_, again) = inst
        .get(&format!("/repository_registry/{}", s(&reg["uuid"])), None)
        .await;
    assert_eq!(again["releases_data"], reg["releases_data"]);

    // a compilable repo targets the newest tag, v0.2.0
    let repo = compilable_repo(&inst, &token, &reg, "fw_repo").await;
    let all = platforms(&inst, &token, &repo, "").await;
    assert_eq!(
        names(&all),
        ["zip", "tar.gz", "tar.bz2", "tar", "esp32.bin", "rp2040.uf2"]
    );
    assert_eq!(all, data["v0.2.0"]);
    let old = platforms(&inst, &token, &repo, "?target_tag=v0.1.0").await;
    assert_eq!(names(&old), SOURCES);
    let by_commit = format!("?target_commit={}", p.commit_of("v0.1.0"));
    assert_eq!(platforms(&inst, &token, &repo, &by_commit).await, old);
    let by_commit = format!("?target_commit={}", p.commit_of("v0.2.0"));
    assert_eq!(platforms(&inst, &token, &repo, &by_commit).await, all);
    // the tag wins over the commit
    let both = format!("?target_tag=v0.1.0&target_commit={}", p.commit_of("v0.2.0"));
    assert_eq!(platforms(&inst, &token, &repo, &both).await, old);
    assert!(platforms(&inst, &token, &repo, "?target_tag=v9.9.9")
        .await
        .is_empty());
    // an untagged commit has no release
    let dev = format!("?target_commit={}", p.firmware.head("dev"));
    assert!(platforms(&inst, &token, &repo, &dev).await.is_empty());

    // a repo that is not compilable has no platforms, releases or not
    let (st, plain) = inst
        .post(
            "/repos",
            Some(&token),
            json!({"repository_registry_uuid": reg["uuid"], "default_branch": "main",
                   "visibility_level": "Public", "name": "plain_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{plain}");
    assert!(platforms(&inst, &token, s(&plain["uuid"]), "")
        .await
        .is_empty());

    // units of the compilable repo pick an asset of their target version's release
    let (st, unit) = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "esp_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "esp32.bin"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{unit}");
    assert_eq!(unit["target_firmware_platform"], "esp32.bin");
    let (st, unit) = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "src_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "tar.gz"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{unit}");
    let got = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "stm_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "stm32.hex"}),
    )
    .await;
    assert_err(&got, 422, 7, "stm32.hex");
    // a unit pinned to v0.1.0 is checked against v0.1.0's release, which has no rp2040.uf2
    let pinned = |name: &str, platform: &str| {
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": name,
               "is_auto_update_from_repo_unit": false, "repo_branch": "main",
               "repo_commit": p.commit_of("v0.1.0"), "target_firmware_platform": platform})
    };
    let got = create_unit(&inst, &token, pinned("rp_unit", "rp2040.uf2")).await;
    assert_err(&got, 422, 7, "rp2040.uf2");
    let (st, unit) = create_unit(&inst, &token, pinned("old_unit", "zip")).await;
    assert_eq!(st, StatusCode::CREATED, "{unit}");
    assert_eq!(unit["target_firmware_platform"], "zip");
    inst.stop().await;
}

async fn github_releases_come_from_the_configured_api(backend: Backend) {
    let p = Platforms::start().await;
    let inst = p.instance(backend).await;
    let (_, token) = inst.user("owner").await;

    let reg = registry(&inst, &token, "Github", &p.github_url("octo")).await;
    let seen = p.github.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].raw, "/repos/octo/firmware/releases?per_page=100");
    assert_eq!(seen[0].header["accept"], "application/vnd.github+json");
    assert!(
        seen[0].header["user-agent"].starts_with("pepeunit/"),
        "{seen:?}"
    );
    assert!(!seen[0].header.contains_key("authorization"), "{seen:?}");
    // GitHub registries never ask the git host for a GitLab API
    assert!(p.gitlab.seen().is_empty());
    assert_eq!(
        s(&reg["releases_data"]),
        format!(
            r#"{{"v0.2.0": [["esp32.bin", "{GH}/v0.2.0/esp32.bin"], ["rp2040.uf2", "{GH}/v0.2.0/rp2040.uf2"]], "v0.1.0": []}}"#
        )
    );

    let repo = compilable_repo(&inst, &token, &reg, "gh_repo").await;
    assert_eq!(
        platforms(&inst, &token, &repo, "").await,
        [
            ("esp32.bin".to_string(), format!("{GH}/v0.2.0/esp32.bin")),
            ("rp2040.uf2".to_string(), format!("{GH}/v0.2.0/rp2040.uf2")),
        ]
    );
    assert!(platforms(&inst, &token, &repo, "?target_tag=v0.1.0")
        .await
        .is_empty());
    let (st, unit) = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "rp_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "rp2040.uf2"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{unit}");
    let got = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "zip_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "zip"}),
    )
    .await;
    assert_err(&got, 422, 7, "zip");

    // a private registry's releases are read with basic auth of its credentials
    let reg = registry_with(
        &inst,
        &token,
        "Github",
        &p.github_url("secret"),
        Some(json!({"username": "octo-bot", "pat_token": "ghp_secret123"})),
    )
    .await;
    assert_eq!(releases(&reg).len(), 2);
    let seen = p.github.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.raw, "/repos/secret/firmware/releases?per_page=100");
    let basic = base64::engine::general_purpose::STANDARD.encode("octo-bot:ghp_secret123");
    assert_eq!(last.header["authorization"], format!("Basic {basic}"));
    inst.stop().await;
}

async fn gitlab_private_registry_sends_its_token(backend: Backend) {
    let p = Platforms::start().await;
    let inst = p.instance(backend).await;
    let (_, token) = inst.user("owner").await;
    let reg = registry_with(
        &inst,
        &token,
        "Gitlab",
        &p.gitlab_url(),
        Some(json!({"username": "pepe", "pat_token": "glpat-secret"})),
    )
    .await;
    assert_eq!(releases(&reg).len(), 2);
    let seen = p.gitlab.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.header["private-token"], "glpat-secret");
    assert!(!last.header.contains_key("authorization"), "{seen:?}");
    inst.stop().await;
}

/// Re-syncs the registry and returns it.
async fn resync(inst: &TestInstance, token: &str, uuid: &str) -> Value {
    let (st, v) = inst
        .patch(
            &format!("/repository_registry/update_local_repository/{uuid}"),
            Some(token),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = inst
        .get(&format!("/repository_registry/{uuid}"), Some(token))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn failing_release_api_keeps_previous_releases(backend: Backend) {
    let p = Platforms::start().await;
    let inst = p.instance(backend).await;
    let (_, token) = inst.user("owner").await;
    let gitlab = registry(&inst, &token, "Gitlab", &p.gitlab_url()).await;
    let github = registry(&inst, &token, "Github", &p.github_url("octo")).await;
    let repo = compilable_repo(&inst, &token, &gitlab, "fw_repo").await;

    for (reg, fake) in [(&gitlab, &p.gitlab), (&github, &p.github)] {
        let uuid = s(&reg["uuid"]);
        let before = reg["releases_data"].clone();
        assert!(before.is_string(), "{reg}");
        for mode in [Mode::Fail, Mode::Garbage, Mode::Huge] {
            fake.set(mode);
            let asked = fake.seen().len();
            let now = resync(&inst, &token, uuid).await;
            assert_eq!(fake.seen().len(), asked + 1, "{mode:?}: API not asked");
            assert_eq!(now["sync_status"], "Updated", "{mode:?}: {now}");
            assert_eq!(now["sync_error"], Value::Null, "{mode:?}: {now}");
            assert_eq!(now["releases_data"], before, "{mode:?}");
            assert_ne!(now["sync_last_datetime"], Value::Null);
        }
        // platforms still come from the kept releases
        if reg["platform"] == "Gitlab" {
            assert_eq!(platforms(&inst, &token, &repo, "").await.len(), 6);
        }
        // an answer listing no releases is an answer: the registry has none now (as upstream)
        fake.set(Mode::Empty);
        let now = resync(&inst, &token, uuid).await;
        assert_eq!(now["sync_status"], "Updated", "{now}");
        assert_eq!(now["releases_data"], Value::Null, "{now}");
        fake.set(Mode::Releases);
        let now = resync(&inst, &token, uuid).await;
        assert_eq!(now["releases_data"], before);
    }

    // without releases a compilable repo has no platforms, and any platform is refused
    p.gitlab.set(Mode::Empty);
    resync(&inst, &token, s(&gitlab["uuid"])).await;
    assert!(platforms(&inst, &token, &repo, "").await.is_empty());
    let got = create_unit(
        &inst,
        &token,
        json!({"repo_uuid": repo, "visibility_level": "Public", "name": "esp_unit",
               "is_auto_update_from_repo_unit": true, "target_firmware_platform": "esp32.bin"}),
    )
    .await;
    assert_err(&got, 422, 7, "esp32.bin");
    inst.stop().await;
}

both_backends!(
    gitlab_releases_drive_platforms_and_units,
    github_releases_come_from_the_configured_api,
    gitlab_private_registry_sends_its_token,
    failing_release_api_keeps_previous_releases,
);
