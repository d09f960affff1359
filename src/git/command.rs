//! Running one `git` process: hardened environment, credentials through the environment,
//! timeout, optional on-disk size watch, and killing of the whole process group on abort.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::{dir_size, GitCredentials, GitError};

/// How often a size-watched command (clone, fetch) has its directory measured.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest error text taken from git's stderr into a [`GitError`].
const MAX_ERROR_LEN: usize = 300;

/// One git invocation, built up and then [`run`](GitCommand::run).
pub(crate) struct GitCommand<'a> {
    args: Vec<OsString>,
    git_dir: Option<PathBuf>,
    cwd: Option<PathBuf>,
    creds: Option<&'a GitCredentials>,
    stdin: Option<Vec<u8>>,
    watch: Option<(PathBuf, u64)>,
    timeout: Duration,
    guard: Option<Guard>,
}

/// How a network command is held to the checked addresses of its remote (`crate::net`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    /// `host:port:addr[,addr]` for `http.curloptResolve`: curl connects only there. None for a
    /// remote named by an address literal (nothing is resolved).
    pub resolve: Option<String>,
}

/// What a finished git process left behind.
pub(crate) struct GitOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl GitOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl<'a> GitCommand<'a> {
    pub fn new(timeout: Duration) -> Self {
        Self {
            args: Vec::new(),
            git_dir: None,
            cwd: None,
            creds: None,
            stdin: None,
            watch: None,
            timeout,
            guard: None,
        }
    }

    /// Connect only to checked addresses: resolution pinned (`http.curloptResolve`), no
    /// redirects (they could lead anywhere), no proxy from the environment (it would resolve
    /// the name itself).
    pub fn guard(mut self, guard: Option<Guard>) -> Self {
        self.guard = guard;
        self
    }

    /// Run against this (bare) repository: `git --git-dir=<dir> ...`.
    pub fn git_dir(mut self, dir: &Path) -> Self {
        self.git_dir = Some(dir.to_path_buf());
        self
    }

    /// Run outside any repository, in `dir` (repository discovery is stopped above it).
    pub fn outside_repo(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn creds(mut self, creds: Option<&'a GitCredentials>) -> Self {
        self.creds = creds;
        self
    }

    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Kill the command and fail with [`GitError::TooLarge`] as soon as `dir` grows above
    /// `limit` bytes.
    pub fn watch_size(mut self, dir: &Path, limit: u64) -> Self {
        self.watch = Some((dir.to_path_buf(), limit));
        self
    }

    /// The subcommand name, for error messages.
    fn name(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy())
            .find(|a| !a.starts_with('-'))
            .map(|a| a.into_owned())
            .unwrap_or_else(|| "git".into())
    }

    fn build(&self) -> Command {
        let mut cmd = Command::new("git");
        // Nothing inherited may steer git: GIT_DIR, GIT_CONFIG_PARAMETERS, GIT_ASKPASS,
        // GIT_SSH_COMMAND, GIT_EXEC_PATH, tracing to files...
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("GIT_") || k == "SSH_ASKPASS" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "http:https")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C")
            // A stalled transfer aborts on its own, even in a helper process that outlived us.
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1")
            .env(
                "GIT_HTTP_LOW_SPEED_TIME",
                self.timeout.as_secs().max(1).to_string(),
            );
        // configuration only through the environment (never argv, never the mirror's config)
        let mut config: Vec<(&str, String)> = vec![
            // the maintenance a fetch starts (gc --auto) stays in the foreground, inside the
            // command's process group and timeout: no git process outlives its command in a
            // mirror, so a sync that finds a fetch's leftovers knows they are stale
            ("gc.autoDetach", "false".into()),
            ("maintenance.autoDetach", "false".into()),
        ];
        if let Some(creds) = self.creds {
            config.push(("http.extraHeader", auth_header(creds)));
        }
        if let Some(guard) = &self.guard {
            config.push(("http.followRedirects", "false".into()));
            if let Some(resolve) = &guard.resolve {
                config.push(("http.curloptResolve", resolve.clone()));
            }
            for var in [
                "http_proxy",
                "HTTP_PROXY",
                "https_proxy",
                "HTTPS_PROXY",
                "all_proxy",
                "ALL_PROXY",
            ] {
                cmd.env_remove(var);
            }
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        if let Some(dir) = &self.git_dir {
            let mut flag = OsString::from("--git-dir=");
            flag.push(dir.as_os_str());
            cmd.arg(flag);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
            if let Some(parent) = cwd.parent() {
                cmd.env("GIT_CEILING_DIRECTORIES", parent);
            }
        }
        cmd.args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group, so that a timeout also reaches git's helpers
            // (git-remote-http, index-pack...).
            .process_group(0);
        cmd
    }

    /// Runs the command to completion. A non-zero exit is not an error here: see
    /// [`GitCommand::run_ok`].
    pub async fn run(self) -> Result<GitOutput, GitError> {
        let mut child = self.build().spawn()?;
        let pid = child.id();
        if let Some(input) = &self.stdin {
            if let Some(mut stdin) = child.stdin.take() {
                // The inputs are a line or two, far below a pipe buffer.
                let _ = stdin.write_all(input).await;
            }
        }
        let wait = child.wait_with_output();
        tokio::pin!(wait);
        // Declared after `wait`, so dropped before it: the group is killed while the child is
        // not yet reaped and its process-group id cannot have been reused.
        let killer = GroupKiller(pid);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let output = loop {
            tokio::select! {
                out = &mut wait => break out?,
                _ = &mut deadline => {
                    tracing::warn!(command = %self.name(), "git command timed out");
                    // `killer` and the dropped `wait` (kill_on_drop) end the processes.
                    return Err(GitError::Timeout);
                }
                _ = tick.tick(), if self.watch.is_some() => {
                    let (dir, limit) = self.watch.clone().unwrap_or_default();
                    let size = tokio::task::spawn_blocking(move || dir_size(&dir))
                        .await
                        .unwrap_or(Ok(0))
                        .unwrap_or(0);
                    if size > limit {
                        return Err(GitError::TooLarge { size, limit });
                    }
                }
            }
        };
        killer.disarm();
        Ok(GitOutput {
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    /// Runs the command and turns a non-zero exit into [`GitError::Command`].
    pub async fn run_ok(self) -> Result<GitOutput, GitError> {
        let name = self.name();
        let creds = self.creds.cloned();
        let out = self.run().await?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(GitError::Command {
                command: name,
                stderr: clean_stderr(&out.stderr, creds.as_ref()),
            })
        }
    }
}

/// On drop (timeout, size watch, cancelled future), SIGKILLs the process group of the child.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        // std has no killpg; `kill -- -PGID` does it. Spawned, never waited on the runtime:
        // reaped by a blocking task when there is a runtime, else left to the OS.
        let spawned = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || child.wait());
                }
                Err(_) => {
                    let _ = child.wait();
                }
            }
        }
    }
}

/// `Authorization: Basic base64(user:token)`.
pub(crate) fn auth_header(creds: &GitCredentials) -> String {
    let raw = format!("{}:{}", creds.username, creds.pat_token);
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Replaces every occurrence of a secret by `***`.
pub(crate) fn scrub(text: &str, creds: Option<&GitCredentials>) -> String {
    let mut out = text.to_string();
    if let Some(creds) = creds {
        let header = auth_header(creds);
        let encoded = header
            .trim_start_matches("Authorization: Basic ")
            .to_string();
        let pair = format!("{}:{}", creds.username, creds.pat_token);
        for secret in [header, encoded, pair, creds.pat_token.clone()] {
            if secret.len() >= 2 {
                out = out.replace(&secret, "***");
            }
        }
    }
    scrub_url_userinfo(&out)
}

/// `scheme://user:pass@host` -> `scheme://***@host`, wherever it appears.
fn scrub_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// git's stderr made into a short, single-line, secret-free message.
pub(crate) fn clean_stderr(stderr: &[u8], creds: Option<&GitCredentials>) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let joined = lines
        .iter()
        .map(|l| {
            l.trim_start_matches("fatal: ")
                .trim_start_matches("error: ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut msg: String = scrub(&joined, creds)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if msg.chars().count() > MAX_ERROR_LEN {
        msg = msg.chars().take(MAX_ERROR_LEN).collect::<String>() + "...";
    }
    if msg.is_empty() {
        msg = "git failed without a message".into();
    }
    msg
}

/// Maps a failed network command (clone, fetch, ls-remote) to the closest error.
pub(crate) fn remote_error(stderr: &[u8], creds: Option<&GitCredentials>) -> GitError {
    let msg = clean_stderr(stderr, creds);
    let lower = msg.to_ascii_lowercase();
    if lower.contains("authentication failed")
        || lower.contains("could not read username")
        || lower.contains("could not read password")
        || lower.contains("terminal prompts disabled")
        || lower.contains("error: 401")
        || lower.contains("error: 403")
        || lower.contains("access denied")
    {
        GitError::Auth(msg)
    } else if lower.contains("not found")
        || lower.contains("error: 404")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("repository not exported")
    {
        GitError::NotFound(msg)
    } else {
        GitError::Remote(msg)
    }
}
