//! A ClickHouse server of one test: its own config.xml/users.xml in a temporary folder (data
//! there too), HTTP on a free loopback port, no native TCP or interserver listener, killed
//! when dropped. The binary comes from `PU_TEST_CLICKHOUSE` (scripts/test.sh exports
//! `/usr/sbin/clickhouse-server`, Debian's 18.16); unset, tests skip, or fail under
//! `PU_TEST_REQUIRE_ALL=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{free_port, require_all};

/// How long the server may take to answer `/ping` (it starts in about 0.3 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_LINES: usize = 50;

pub struct ClickHouse {
    pub port: u16,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClickHouse {
    /// The server binary, or None (then ClickHouse tests skip, or fail when everything is
    /// required).
    pub fn binary() -> Option<PathBuf> {
        match std::env::var("PU_TEST_CLICKHOUSE") {
            Ok(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ if require_all() => {
                panic!("PU_TEST_CLICKHOUSE is not set but PU_TEST_REQUIRE_ALL=1")
            }
            _ => None,
        }
    }

    /// Starts a server and waits until `/ping` answers; None when there is no binary.
    pub async fn start() -> Option<ClickHouse> {
        let Some(bin) = Self::binary() else {
            eprintln!("skipped: PU_TEST_CLICKHOUSE not set");
            return None;
        };
        // the free port is found by binding and releasing it; if another process takes it in
        // between, the server exits and the next attempt picks another
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin).await {
                Ok(c) => return Some(c),
                Err(e) => last_error = e,
            }
        }
        panic!("clickhouse ({}) did not start: {last_error}", bin.display());
    }

    async fn try_start(bin: &Path) -> Result<ClickHouse, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let port = free_port();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{port}</http_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709</mark_cache_size>
    <uncompressed_cache_size>0</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#;
        let conf = dir.path().join("config.xml");
        std::fs::write(&conf, config).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("users.xml"), users).map_err(|e| e.to_string())?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(bin, dir.path(), &log, port)?;
        let mut server = ClickHouse {
            port,
            child,
            log,
            http: reqwest::Client::new(),
            bin: bin.to_path_buf(),
            _dir: dir,
        };
        server.wait_ready().await.map(|()| server)
    }

    /// Kills the server (SIGKILL): its port refuses connections until [`ClickHouse::resume`].
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) {
        self.child =
            spawn(&self.bin, self._dir.path(), &self.log, self.port).expect("clickhouse restarts");
        self.wait_ready().await.expect("clickhouse answers again");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let server = self;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(format!("exited with {status}:\n{}", server.log_text()));
            }
            let ping = server
                .http
                .get(format!("{}/ping", server.url()))
                .send()
                .await;
            if ping.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no answer on {}/ping within {START_TIMEOUT:?}:\n{}",
                    server.url(),
                    server.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:{port}`, what `PU_CLICKHOUSE_URL` takes.
    /// The instance database to run beside ClickHouse (PostgreSQL when there is one) and the
    /// settings that put the telemetry into `database` on this server.
    #[allow(dead_code)]
    pub fn instance_settings(&self, database: &str) -> (super::Backend, Vec<(String, String)>) {
        let backend = if super::postgres_admin_url().is_some() {
            super::Backend::Postgres
        } else {
            super::Backend::Sqlite
        };
        let vars = vec![
            ("PU_CLICKHOUSE_URL".to_string(), self.url()),
            ("PU_CLICKHOUSE_DATABASE".to_string(), database.to_string()),
        ];
        (backend, vars)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs one statement over HTTP and returns the answer's text (TSV for SELECTs); panics
    /// on an error answer.
    pub async fn sql(&self, sql: &str) -> String {
        let r = self
            .http
            .post(format!("{}/", self.url()))
            .body(sql.to_string())
            .send()
            .await
            .expect("clickhouse answers");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {status} {text}");
        text
    }

    /// The server's recent output.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        // SIGKILL now; tokio reaps the process in the background
        let _ = self.child.start_kill();
    }
}

fn spawn(
    bin: &Path,
    dir: &Path,
    log: &Arc<Mutex<Vec<String>>>,
    port: u16,
) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    forward(child.stdout.take(), log.clone(), port);
    forward(child.stderr.take(), log.clone(), port);
    Ok(child)
}

fn forward<R>(stream: Option<R>, log: Arc<Mutex<Vec<String>>>, port: u16)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("clickhouse:{port}: {line}");
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.remove(0);
            }
            log.push(line);
        }
    });
}
