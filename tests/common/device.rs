//! The official Python device client as a process (tests/device/mqtt_device.py): its JSON
//! event lines are read as they happen.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::TestInstance;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/device/mqtt_device.py");
pub const WAIT: Duration = Duration::from_secs(30);

/// One running device process and its event lines.
pub struct Device {
    pub name: &'static str,
    pub child: tokio::process::Child,
    pub events: mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
}

impl Device {
    pub fn spawn(python: &str, name: &'static str, work: &Path, args: &[&str]) -> Device {
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(SCRIPT)
            .arg(work)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        let mut child = cmd.spawn().expect("python starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Device {
            name,
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event (from now on, or already seen) matching `pred`.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!(
                    "device {} ended before {what}; events: {:#?}",
                    self.name, self.seen
                ),
                Err(_) => panic!(
                    "device {} never showed {what}; events: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    pub async fn exit_code(&mut self) -> i32 {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("device exits")
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

/// env.json and schema.json downloaded the way a device owner does it, into a fresh dir.
pub async fn workdir(inst: &TestInstance, unit: &str, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, file) in [
        (format!("/units/env/{unit}"), "env.json"),
        (format!("/units/get_current_schema/{unit}"), "schema.json"),
    ] {
        let (s, body) = inst.get(&path, Some(token)).await;
        assert_eq!(s.as_u16(), 200, "{body}");
        std::fs::write(
            dir.path().join(file),
            serde_json::to_vec_pretty(&body).unwrap(),
        )
        .unwrap();
    }
    dir
}
