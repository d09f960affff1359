//! Shared harness of the integration tests: instances of our server on free loopback ports,
//! on SQLite or on a fresh PostgreSQL database, git repositories served over loopback HTTP,
//! and a small HTTP client speaking the API's conventions.
#![allow(dead_code)]

pub mod api;
pub mod archive;
pub mod clickhouse;
pub mod device;
pub mod federation;
pub mod fixtures;
pub mod grafana;
pub mod graphql;
pub mod mosquitto;
pub mod mqtt;
pub mod private_pg;
pub mod serve;
pub mod telegram;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use pepeunit::config::Config;
use pepeunit::server::RunningInstance;
use serde_json::{json, Value};
use sqlx::Executor;

/// The venv interpreter with `pepeunit-client` (`PU_TEST_PYTHON`, made by scripts/test.sh), or
/// None (then the test skips, or fails when everything is required).
pub fn python() -> Option<String> {
    match std::env::var("PU_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if require_all() => panic!("PU_TEST_PYTHON is not set but PU_TEST_REQUIRE_ALL=1"),
        _ => None,
    }
}

/// A loopback port free at the time of asking (for listeners configured by address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root (needed to mount a tmpfs; PostgreSQL tools then run as
/// `postgres`).
pub fn as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Which relational backend a test instance uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `PU_TEST_REQUIRE_ALL=1` (set by scripts/test.sh) turns skips into failures.
pub fn require_all() -> bool {
    std::env::var("PU_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The admin URL of the test PostgreSQL, or None (then PostgreSQL tests skip, or fail when
/// everything is required).
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("PU_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if require_all() => panic!("PU_TEST_POSTGRES_URL is not set but PU_TEST_REQUIRE_ALL=1"),
        _ => None,
    }
}

/// Generates one test per backend from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Sqlite).await }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::common::postgres_admin_url().is_none() {
                        eprintln!("skipped: PU_TEST_POSTGRES_URL not set");
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await
                }
            )+
        }
    };
}

/// A running instance with its own data dir and database.
pub struct TestInstance {
    pub base: String,
    pub api: String,
    pub domain: String,
    pub running: Option<RunningInstance>,
    pub data: tempfile::TempDir,
    pg_db: Option<String>,
    pub http: reqwest::Client,
    pub config: Config,
    /// The environment the instance was configured from (to run the same instance as a
    /// separate `pepeunit serve` process).
    pub vars: Vec<(String, String)>,
}

impl TestInstance {
    pub async fn start(backend: Backend) -> TestInstance {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> TestInstance {
        init_logging();
        let data = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let domain = format!("localhost:{}", addr.port());
        let mqtt_port = free_port();
        let mut vars: Vec<(String, String)> = vec![
            ("PU_DATA_DIR".into(), data.path().display().to_string()),
            ("PU_HTTP_BIND".into(), addr.to_string()),
            ("PU_DOMAIN".into(), domain.clone()),
            ("PU_GIT_TIMEOUT".into(), "60".into()),
            // never the real GitHub: a closed loopback port unless a test serves a fake one
            ("PU_GITHUB_API_URL".into(), "http://127.0.0.1:9".into()),
            // the embedded broker on a free port, announced as such in env.json
            ("PU_MQTT_BIND".into(), format!("127.0.0.1:{mqtt_port}")),
            ("PU_MQTT_HOST".into(), "127.0.0.1".into()),
            ("PU_MQTT_PORT".into(), mqtt_port.to_string()),
            ("PU_MQTT_SHARDS".into(), "2".into()),
            // git servers, fake platform APIs, peers and brokers all run on loopback; a test
            // of the production rule passes ("PU_ALLOW_LOCAL_NETWORK", "false")
            ("PU_ALLOW_LOCAL_NETWORK".into(), "true".into()),
            // devices in tests publish faster than SPEC §8's limits allow a real one: tests of
            // throttling (tests/throttle.rs) set rules, and ("PU_THROTTLE_RULES", "") gives
            // the defaults (tests/device_client.rs runs the official client under them)
            ("PU_THROTTLE_RULES".into(), "off".into()),
        ];
        let mut pg_db = None;
        if backend == Backend::Postgres {
            let admin = postgres_admin_url().expect("postgres tests need PU_TEST_POSTGRES_URL");
            let name = format!("pu_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL");
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            vars.push(("PU_DATABASE_URL".into(), replace_db_name(&admin, &name)));
            pg_db = Some(name);
        }
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars.clone()).expect("test config");
        let running = RunningInstance::start_on(config.clone(), listener)
            .await
            .expect("instance starts");
        let base = format!("http://{addr}");
        TestInstance {
            api: format!("{base}/pepeunit/api/v1"),
            base,
            domain,
            running: Some(running),
            data,
            pg_db,
            http: reqwest::Client::new(),
            config,
            vars,
        }
    }

    /// Stops the server gracefully and starts it again on the same ports, data and database.
    pub async fn restart(&mut self, down_for: std::time::Duration) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        tokio::time::sleep(down_for).await;
        self.running = Some(
            RunningInstance::start(self.config.clone())
                .await
                .expect("instance restarts"),
        );
    }

    /// Waits (bounded) until the MQTT core can publish and its subscriptions are acknowledged.
    pub async fn wait_mqtt_ready(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let instance = &self.running.as_ref().expect("running").instance;
        while !(instance.outbox.is_connected()
            && instance
                .mqtt_stats
                .backend_subscribed
                .load(std::sync::atomic::Ordering::Relaxed))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the MQTT core never connected"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and drops the PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        if let Some(name) = self.pg_db.take() {
            let admin = postgres_admin_url().unwrap();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.call_raw(method, path, token, body).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            self.url(path)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// POSTs a `multipart/form-data` body with one file field; returns status and body.
    pub async fn post_file(
        &self,
        path: &str,
        token: Option<&str>,
        field: &str,
        content: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        const BOUNDARY: &str = "pepeunit-test-boundary-7f3a";
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let mut req = self
            .http
            .post(self.url(path))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        let resp = req.send().await.expect("request sent");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call("GET", path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, token, Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call("PATCH", path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call("DELETE", path, token, None).await
    }

    /// GETs `path` (each answer must be 200) until `done` holds; fails after 10 s.
    #[allow(dead_code)]
    pub async fn get_until(
        &self,
        path: &str,
        token: Option<&str>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = self.get(path, token).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            if done(&body) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path}: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Registers a user and returns (uuid, token).
    pub async fn user(&self, login: &str) -> (String, String) {
        let (s, v) = self
            .post(
                "/users",
                None,
                json!({"login": login, "password": "password-1"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, t) = self
            .post(
                "/users/auth",
                None,
                json!({"credentials": login, "password": "password-1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{t}");
        (
            v["uuid"].as_str().unwrap().to_string(),
            t["token"].as_str().unwrap().to_string(),
        )
    }
}

/// Server logs go to the test's captured output (shown when a test fails).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PU_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

fn replace_db_name(admin: &str, name: &str) -> String {
    let (head, query) = match admin.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (admin, None),
    };
    let base = match head.rfind('/') {
        Some(i) if i > head.find("://").map(|s| s + 2).unwrap_or(0) => &head[..i],
        _ => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Asserts an error answer: status and the `detail` text containing `needle`.
pub fn assert_detail(got: &(StatusCode, Value), status: u16, needle: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    let detail = got.1["detail"].to_string();
    assert!(detail.contains(needle), "detail {detail} lacks {needle:?}");
}

/// Serves a folder over plain HTTP (git's dumb protocol needs only GET of files).
pub struct StaticServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl StaticServer {
    pub async fn start(root: PathBuf) -> StaticServer {
        Self::start_with(root, axum::Router::new()).await
    }

    /// Serves `routes`, and the files of `root` for every other path (a fake platform API on
    /// the same host as the git remote).
    pub async fn start_with(root: PathBuf, routes: axum::Router) -> StaticServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let files = axum::Router::new()
            .fallback(serve_file)
            .with_state(Arc::new(root));
        let app = routes.fallback_service(files);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StaticServer {
            base: format!("http://{addr}"),
            task,
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_file(State(root): State<Arc<PathBuf>>, uri: Uri) -> axum::response::Response {
    let rel = uri.path().trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match tokio::fs::read(root.join(rel)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Runs git in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
