//! A mosquitto broker of one test: its own config in a temporary folder, a free loopback port,
//! killed when dropped. The binary comes from `PU_TEST_MOSQUITTO` (scripts/test.sh exports
//! `/usr/sbin/mosquitto`).
//!
//! The config raises mosquitto's queues (INFRA-NOTES: its default queue of 1000 silently drops
//! QoS 1 messages for a slow subscriber) and logs to stderr, which goes to the test's output
//! (not to a file: see below; not to stdout: through a pipe mosquitto's stdout is
//! block-buffered, lines would arrive only when it exits and be lost when it is killed).
//! Run as root, mosquitto drops its privileges to the user `mosquitto` after it has read the
//! config and opened the listener; it writes nothing afterwards (no persistence, no log file),
//! so that works as long as the user exists. Where it does not (mosquitto built by hand), the
//! config keeps it as root rather than letting it exit.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::require_all;

/// How long mosquitto may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Output lines kept for the message of a failed start.
const LOG_LINES: usize = 50;

pub struct Mosquitto {
    pub port: u16,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// The broker binary, or None (then MQTT tests skip, or fail when everything is required).
    pub fn binary() -> Option<PathBuf> {
        match std::env::var("PU_TEST_MOSQUITTO") {
            Ok(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ if require_all() => panic!("PU_TEST_MOSQUITTO is not set but PU_TEST_REQUIRE_ALL=1"),
            _ => None,
        }
    }

    /// Starts a broker and waits until it accepts connections; None when there is no binary.
    pub async fn start() -> Option<Mosquitto> {
        let bin = Self::binary()?;
        // the free port is found by binding and releasing it; if another process takes it in
        // between, mosquitto exits and the next attempt picks another
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin).await {
                Ok(m) => return Some(m),
                Err(e) => last_error = e,
            }
        }
        panic!("mosquitto ({}) did not start: {last_error}", bin.display());
    }

    async fn try_start(bin: &Path) -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // readable by the user mosquitto switches to
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut config = format!(
            "# one test's broker\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             max_inflight_messages 100\n\
             max_queued_messages 1000000\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             connection_messages true\n"
        );
        if running_as_root() && !user_exists("mosquitto") {
            config.push_str("user root\n");
        }
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;

        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(bin, &conf, &log, port)?;
        let mut broker = Mosquitto {
            port,
            child,
            log,
            bin: bin.to_path_buf(),
            _dir: dir,
        };
        broker.wait_ready().await.map(|()| broker)
    }

    /// Kills the broker (SIGKILL: its sessions and queues are gone, it keeps nothing on disk)
    /// and starts it again on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let conf = self._dir.path().join("mosquitto.conf");
        self.child = spawn(&self.bin, &conf, &self.log, self.port).expect("mosquitto restarts");
        self.wait_ready()
            .await
            .expect("mosquitto accepts connections again");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let port = self.port;
        let broker = self;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                // let the readers catch the last lines
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(format!("exited with {status}:\n{}", broker.log_text()));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no connection on 127.0.0.1:{port} within {START_TIMEOUT:?}:\n{}",
                    broker.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `mqtt://127.0.0.1:{port}`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's recent output.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // SIGKILL now; tokio reaps the process in the background
        let _ = self.child.start_kill();
    }
}

fn spawn(
    bin: &Path,
    conf: &Path,
    log: &Arc<Mutex<Vec<String>>>,
    port: u16,
) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(conf)
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

/// Copies the broker's output to the test's output and keeps its last lines.
fn forward<R>(stream: Option<R>, log: Arc<Mutex<Vec<String>>>, port: u16)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("mosquitto:{port}: {line}");
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.remove(0);
            }
            log.push(line);
        }
    });
}

fn running_as_root() -> bool {
    // the owner of /proc/self is the process's effective user
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|passwd| passwd.lines().any(|l| l.split(':').next() == Some(name)))
}
