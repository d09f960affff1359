//! The test instance as its own `pepeunit serve` process (the instance's `vars`), so that a
//! test can kill it for real (SIGKILL: no shutdown path runs) and start it again on the same
//! data. Each run logs to `{data}/serve-{run}.log`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::TestInstance;

pub struct Server {
    child: tokio::process::Child,
}

impl Server {
    /// Starts run `run` and waits (bounded) until it answers HTTP.
    pub async fn start(inst: &TestInstance, run: usize) -> Server {
        let log = std::fs::File::create(log_path(inst.data.path(), run)).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(inst.vars.iter().cloned())
            .env("PU_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pepeunit serve starts");
        let server = Server { child };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = inst
                .http
                .get(format!("{}/pepeunit", inst.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the instance did not come up: {}",
                logs(inst.data.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL for the server process alone: no shutdown path runs.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// SIGKILL for the server and every process under it (git and its helpers), all stopped
    /// first so that none of them reacts to another's death: the machine or the container
    /// going down.
    pub async fn kill_tree(mut self) {
        let pid = self.child.id().expect("running");
        signal("STOP", &[pid]);
        let tree = descendants(pid);
        signal("STOP", &tree);
        signal("KILL", &tree);
        signal("KILL", &[pid]);
        let _ = self.child.wait().await;
    }
}

fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .status();
}

/// Every process under `pid`, read from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the name may hold spaces and parentheses
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            out.push(*p);
            frontier.push(*p);
        }
    }
    out
}

pub fn log_path(dir: &Path, run: usize) -> std::path::PathBuf {
    dir.join(format!("serve-{run}.log"))
}

/// The whole log of run `run` so far.
pub fn log_text(dir: &Path, run: usize) -> String {
    std::fs::read_to_string(log_path(dir, run)).unwrap_or_default()
}

/// The last lines of every run's log, for failure messages.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for run in 0..16 {
        if let Ok(text) = std::fs::read_to_string(log_path(dir, run)) {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("\n--- run {run} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
