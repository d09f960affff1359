//! A private PostgreSQL cluster for one test (`initdb` + `pg_ctl` from `PU_TEST_PG_BIN`), on a
//! free loopback port, so a fault test can restart it without touching the shared one. Runs as
//! the `postgres` user when the tests run as root (PostgreSQL refuses root). Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{as_root, free_port, require_all};

pub struct PrivatePg {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePg {
    /// None (the test skips) when `PU_TEST_PG_BIN` is not set, unless every service is required.
    pub async fn start() -> Option<PrivatePg> {
        let bin = match std::env::var("PU_TEST_PG_BIN") {
            Ok(b) if !b.is_empty() => PathBuf::from(b),
            _ if require_all() => panic!("PU_TEST_PG_BIN is not set but PU_TEST_REQUIRE_ALL=1"),
            _ => {
                eprintln!("skipped: PU_TEST_PG_BIN not set");
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", &dir.path().display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster dir");
        }
        let pg = PrivatePg {
            port: free_port(),
            bin,
            dir,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        pg.start_server().await;
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL tool (as `postgres` when root); panics with its output on failure.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    /// The cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (connections are cut), waits `down`, starts it again.
    pub async fn restart(&self, down: Duration) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        tokio::time::sleep(down).await;
        self.start_server().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}
