//! Local mirror clones of remote git repositories ("repository registries"), driven through
//! the `git` CLI.
//!
//! Every invocation runs with a hardened environment (only `http`/`https` transports, no
//! system or global config, no prompts), a timeout and `kill_on_drop`; credentials travel as an
//! `http.extraHeader` given through `GIT_CONFIG_*` environment variables, never on argv nor in
//! the mirror's config. User-supplied branch, tag, commit and path values are validated in Rust
//! (see [`validate_remote_url`] and the `validate` module) before they reach a command line.

mod cache;
mod command;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::Mutex;
use uuid::Uuid;

use command::{remote_error, GitCommand};
pub use validate::validate_remote_url;
use validate::{validate_branch, validate_commit, validate_path, validate_tag};

/// Basic-auth credentials for a private remote (a username and a personal access token).
#[derive(Clone)]
pub struct GitCredentials {
    pub username: String,
    pub pat_token: String,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentials")
            .field("username", &self.username)
            .field("pat_token", &"***")
            .finish()
    }
}

/// One commit of a branch's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    /// Full commit id.
    pub commit: String,
    /// The commit's subject line, up to its first `|` (as upstream).
    pub summary: String,
    /// The lexicographically smallest tag pointing at this commit, if any.
    pub tag: Option<String>,
}

/// Everything that can go wrong. Messages are short and never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("repository URL not allowed: {0}")]
    UrlNotAllowed(String),
    #[error("access to the remote repository denied: {0}")]
    Auth(String),
    #[error("remote repository not found: {0}")]
    NotFound(String),
    #[error("remote repository unreachable: {0}")]
    Remote(String),
    #[error("repository is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("git command timed out")]
    Timeout,
    #[error("repository is not cloned yet")]
    NoClone,
    #[error("branch not found: {0}")]
    BranchNotFound(String),
    #[error("commit not found: {0}")]
    CommitNotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("git {command} failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// Largest file `read_file` returns (env_example.json and schema_example.json are far smaller).
const MAX_READ_FILE: u64 = 1024 * 1024;

/// The mirror store. Cheap to clone; clones share the per-registry locks.
#[derive(Clone)]
pub struct Git {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    max_repository_size: u64,
    timeout: Duration,
    /// `PU_ALLOW_LOCAL_NETWORK`: remotes may be anywhere, git resolves names itself.
    allow_local_network: bool,
    locks: StdMutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    cache: cache::ReadCache,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git")
            .field("root", &self.inner.root)
            .field("max_repository_size", &self.inner.max_repository_size)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The `http.curloptResolve` entry pinning `host:port` to `addrs` (IPv6 in brackets, as curl
/// reads them), or None for an address literal, which curl does not resolve.
fn curl_resolve(host: &str, port: u16, addrs: &[std::net::SocketAddr]) -> Option<String> {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let list: Vec<String> = addrs
        .iter()
        .map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        })
        .collect();
    Some(format!("{host}:{port}:{}", list.join(",")))
}

/// A file in a mirror while a fetch into it runs: found by the next sync when the fetch did
/// not end by itself.
const FETCH_MARKER: &str = "pepeunit-fetching";

/// Prefix of the scratch directories of one registry (clones in progress, removals).
fn scratch_prefix(registry: Uuid) -> String {
    format!(".tmp-{registry}-")
}

impl Git {
    /// `root` holds the mirrors (created on first sync; made absolute here). Each command is
    /// killed after `timeout`; a mirror above `max_repository_size` bytes is refused. Unless
    /// `allow_local_network`, a remote's name is resolved and checked before every network
    /// command (`crate::net`), which then connects only to those addresses.
    pub fn new(
        root: PathBuf,
        max_repository_size: u64,
        timeout: Duration,
        allow_local_network: bool,
    ) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        Self {
            inner: Arc::new(Inner {
                root,
                max_repository_size,
                timeout,
                allow_local_network,
                locks: StdMutex::new(HashMap::new()),
                cache: cache::ReadCache::default(),
            }),
        }
    }

    /// `{root}/{uuid}.git`
    pub fn repo_path(&self, registry: Uuid) -> PathBuf {
        self.inner.root.join(format!("{registry}.git"))
    }

    /// Whether a mirror of this registry is on disk.
    pub fn exists(&self, registry: Uuid) -> bool {
        self.repo_path(registry).join("HEAD").is_file()
    }

    fn cmd<'a>(&self) -> GitCommand<'a> {
        GitCommand::new(self.inner.timeout)
    }

    /// Where a network command for `url` may connect: None when local addresses are allowed
    /// (git resolves the name), else the checked addresses, pinned.
    async fn guard(&self, url: &str) -> Result<Option<command::Guard>, GitError> {
        if self.inner.allow_local_network {
            return Ok(None);
        }
        let (host, port, addrs) = crate::net::resolve_url(url, false)
            .await
            .map_err(|e| GitError::UrlNotAllowed(e.to_string()))?;
        Ok(Some(command::Guard {
            resolve: curl_resolve(&host, port, &addrs),
        }))
    }

    /// A command against the mirror of `registry`, which must exist.
    fn repo_cmd<'a>(&self, registry: Uuid) -> Result<GitCommand<'a>, GitError> {
        if !self.exists(registry) {
            return Err(GitError::NoClone);
        }
        Ok(self.cmd().git_dir(&self.repo_path(registry)))
    }

    /// Runs `f` holding the registry's lock; the lock's map entry goes when nobody uses it.
    async fn locked<T, F>(&self, registry: Uuid, f: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let slot = LockSlot::new(&self.inner.locks, registry);
        let _guard = slot.lock.lock().await;
        f.await
    }

    /// Clones the remote as a mirror when missing, else fetches it (`+refs/*:refs/*` with
    /// pruning). A clone goes to a scratch directory renamed into place only when complete; a
    /// failed fetch leaves the previous mirror as it was. A mirror that ends up (or grows, while
    /// transferring) above the size limit is removed and [`GitError::TooLarge`] returned.
    /// Returns the mirror's size in bytes.
    pub async fn sync(
        &self,
        registry: Uuid,
        url: &str,
        creds: Option<&GitCredentials>,
    ) -> Result<u64, GitError> {
        validate_remote_url(url)?;
        let guard = self.guard(url).await?;
        let _invalidate = self.inner.cache.invalidate_on_drop(registry);
        self.locked(registry, self.sync_locked(registry, url, creds, guard))
            .await
    }

    async fn sync_locked(
        &self,
        registry: Uuid,
        url: &str,
        creds: Option<&GitCredentials>,
        guard: Option<command::Guard>,
    ) -> Result<u64, GitError> {
        let root = &self.inner.root;
        let limit = self.inner.max_repository_size;
        tokio::fs::create_dir_all(root).await?;
        self.clean_scratch(registry).await;
        let path = self.repo_path(registry);

        if self.exists(registry) {
            let marker = path.join(FETCH_MARKER);
            if tokio::fs::symlink_metadata(&marker).await.is_ok() {
                // the last fetch did not end by itself (the process died, or git was killed
                // on a timeout): the lock files it held are stale, and every fetch would
                // refuse to run ("cannot lock ref ... File exists")
                let removed = remove_lock_files(&path).await;
                remove_tmp_packs(&path).await;
                tracing::warn!(%registry, locks = removed, "the previous fetch into this mirror was interrupted; its lock files are removed");
            }
            tokio::fs::write(&marker, b"").await?;
            let result = self
                .fetch_locked(registry, &path, url, creds, guard, limit)
                .await;
            // git ended by itself (done or refused): it took its locks with it
            if !matches!(result, Err(GitError::Timeout | GitError::Io(_))) {
                let _ = tokio::fs::remove_file(&marker).await;
            }
            return result;
        }

        // A directory without HEAD is debris, not a mirror.
        if tokio::fs::symlink_metadata(&path).await.is_ok() {
            self.remove_locked(registry).await?;
        }
        let scratch = ScratchDir::new(root.join(format!(
            "{}{}.git",
            scratch_prefix(registry),
            Uuid::new_v4().simple()
        )));
        match self.clone_into(scratch.path(), url, creds, guard).await {
            Ok(size) => {
                tokio::fs::rename(scratch.path(), &path).await?;
                scratch.disarm();
                tracing::debug!(%registry, size, "repository cloned");
                Ok(size)
            }
            Err(e) => {
                scratch.remove().await;
                Err(e)
            }
        }
    }

    /// The fetch into an existing mirror and the update of its recorded remote. Lock held.
    async fn fetch_locked(
        &self,
        registry: Uuid,
        path: &Path,
        url: &str,
        creds: Option<&GitCredentials>,
        guard: Option<command::Guard>,
        limit: u64,
    ) -> Result<u64, GitError> {
        let fetched = self
            .cmd()
            .git_dir(path)
            .creds(creds)
            .guard(guard)
            .args(["fetch", "--prune", "--quiet", "--no-write-fetch-head"])
            .arg("--end-of-options")
            .arg(url)
            .arg("+refs/*:refs/*")
            .watch_size(path, limit)
            .run()
            .await;
        match fetched {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                remove_tmp_packs(path).await;
                return Err(remote_error(&out.stderr, creds));
            }
            Err(GitError::TooLarge { size, limit }) => {
                self.remove_locked(registry).await?;
                return Err(GitError::TooLarge { size, limit });
            }
            Err(e) => {
                remove_tmp_packs(path).await;
                return Err(e);
            }
        }
        // Keep the recorded remote in step with the registry's URL (no secrets in it).
        self.cmd()
            .git_dir(path)
            .args(["config", "--replace-all", "remote.origin.url"])
            .arg(url)
            .run_ok()
            .await?;
        let size = dir_size_async(path).await?;
        if size > limit {
            self.remove_locked(registry).await?;
            return Err(GitError::TooLarge { size, limit });
        }
        Ok(size)
    }

    /// `git clone --mirror` into `dir`, then the size check. Lock held.
    async fn clone_into(
        &self,
        dir: &Path,
        url: &str,
        creds: Option<&GitCredentials>,
        guard: Option<command::Guard>,
    ) -> Result<u64, GitError> {
        let limit = self.inner.max_repository_size;
        let out = self
            .cmd()
            .outside_repo(&self.inner.root)
            .creds(creds)
            .guard(guard)
            .args(["clone", "--mirror", "--quiet", "--template=", "--"])
            .arg(url)
            .arg(dir)
            .watch_size(dir, limit)
            .run()
            .await?;
        if !out.status.success() {
            return Err(remote_error(&out.stderr, creds));
        }
        let size = dir_size_async(dir).await?;
        if size > limit {
            return Err(GitError::TooLarge { size, limit });
        }
        Ok(size)
    }

    /// Removes leftovers of interrupted clones and removals of this registry. Lock held.
    async fn clean_scratch(&self, registry: Uuid) {
        let prefix = scratch_prefix(registry);
        let Ok(mut entries) = tokio::fs::read_dir(&self.inner.root).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }

    /// `git ls-remote` against the URL: `Ok` when it is reachable with these credentials.
    pub async fn check_access(
        &self,
        url: &str,
        creds: Option<&GitCredentials>,
    ) -> Result<(), GitError> {
        validate_remote_url(url)?;
        let guard = self.guard(url).await?;
        // Run outside any repository, in a directory that surely exists.
        let cwd = std::env::temp_dir();
        let out = self
            .cmd()
            .outside_repo(&cwd)
            .creds(creds)
            .guard(guard)
            .args(["ls-remote", "--quiet", "--"])
            .arg(url)
            .arg("HEAD")
            .run()
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(remote_error(&out.stderr, creds))
        }
    }

    /// Deletes the mirror (no error when there is none).
    pub async fn remove(&self, registry: Uuid) -> Result<(), GitError> {
        let _invalidate = self.inner.cache.invalidate_on_drop(registry);
        self.locked(registry, self.remove_locked(registry)).await
    }

    async fn remove_locked(&self, registry: Uuid) -> Result<(), GitError> {
        let path = self.repo_path(registry);
        if tokio::fs::symlink_metadata(&path).await.is_err() {
            return Ok(());
        }
        // Rename first so that readers never see a half-deleted mirror.
        let trash = self.inner.root.join(format!(
            "{}{}.del",
            scratch_prefix(registry),
            Uuid::new_v4().simple()
        ));
        tokio::fs::rename(&path, &trash).await?;
        remove_dir_retrying(&trash).await?;
        Ok(())
    }

    /// Bytes used on disk by the mirror (sum of file sizes).
    pub async fn size(&self, registry: Uuid) -> Result<u64, GitError> {
        if !self.exists(registry) {
            return Err(GitError::NoClone);
        }
        dir_size_async(&self.repo_path(registry)).await
    }

    /// Branch names of the mirror (`refs/heads`), sorted.
    async fn branches_uncached(&self, registry: Uuid) -> Result<Vec<String>, GitError> {
        let out = self
            .repo_cmd(registry)?
            .args(["for-each-ref", "--format=%(refname:strip=2)", "refs/heads/"])
            .run_ok()
            .await?;
        let mut branches: Vec<String> = out
            .stdout_str()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        branches.sort();
        Ok(branches)
    }

    /// Fails with [`GitError::BranchNotFound`] unless `refs/heads/<branch>` exists.
    async fn ensure_branch(&self, registry: Uuid, branch: &str) -> Result<String, GitError> {
        validate_branch(branch)?;
        let full = format!("refs/heads/{branch}");
        let out = self
            .repo_cmd(registry)?
            .args(["show-ref", "--verify", "--quiet"])
            .arg(&full)
            .run()
            .await?;
        if out.status.success() {
            Ok(full)
        } else {
            Err(GitError::BranchNotFound(branch.to_string()))
        }
    }

    /// Full id of the commit that the hex `commit` abbreviates. Only objects are looked at
    /// (never a ref that happens to be named like hex); an unknown, ambiguous or non-commit id
    /// is [`GitError::CommitNotFound`].
    pub async fn resolve_commit(&self, registry: Uuid, commit: &str) -> Result<String, GitError> {
        let commit = validate_commit(commit)?;
        let not_found = || GitError::CommitNotFound(commit.clone());
        let out = self
            .repo_cmd(registry)?
            .arg("rev-parse")
            .arg(format!("--disambiguate={commit}"))
            .run()
            .await?;
        let candidates = out.stdout_str();
        if !out.status.success() || candidates.trim().is_empty() {
            return Err(not_found());
        }
        let out = self
            .repo_cmd(registry)?
            .args(["cat-file", "--batch-check"])
            .stdin(candidates.into_bytes())
            .run_ok()
            .await?;
        let commits: Vec<String> = out
            .stdout_str()
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                match (it.next(), it.next()) {
                    (Some(id), Some("commit")) => Some(id.to_string()),
                    _ => None,
                }
            })
            .collect();
        match commits.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(not_found()),
        }
    }

    /// Every tag of the mirror, as commit id -> tag names (annotated tags peeled fully).
    async fn tag_map(&self, registry: Uuid) -> Result<HashMap<String, Vec<String>>, GitError> {
        let out = self
            .repo_cmd(registry)?
            .args(["show-ref", "--tags", "--dereference"])
            .run()
            .await?;
        // Exit code 1 with no output: no tags at all.
        if !out.status.success() && !out.stdout.is_empty() {
            return Err(GitError::Command {
                command: "show-ref".into(),
                stderr: command::clean_stderr(&out.stderr, None),
            });
        }
        // name -> (direct target, peeled target)
        let mut targets: HashMap<String, (String, Option<String>)> = HashMap::new();
        for line in out.stdout_str().lines() {
            let Some((id, name)) = line.split_once(' ') else {
                continue;
            };
            let Some(name) = name.strip_prefix("refs/tags/") else {
                continue;
            };
            if let Some(name) = name.strip_suffix("^{}") {
                targets.entry(name.to_string()).or_default().1 = Some(id.to_string());
            } else {
                targets.entry(name.to_string()).or_default().0 = id.to_string();
            }
        }
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (name, (direct, peeled)) in targets {
            map.entry(peeled.unwrap_or(direct)).or_default().push(name);
        }
        for names in map.values_mut() {
            names.sort();
        }
        Ok(map)
    }

    /// Commits reachable from `branch`, newest first (`git log` order). `only_tag` keeps the
    /// tagged ones; then `offset` commits are skipped and at most `limit` returned (0: all).
    async fn commits_uncached(
        &self,
        registry: Uuid,
        branch: &str,
        only_tag: bool,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let full = self.ensure_branch(registry, branch).await?;
        let tags = self.tag_map(registry).await?;
        let mut cmd = self.repo_cmd(registry)?.args([
            "log",
            "--no-color",
            "--encoding=UTF-8",
            "--format=%H %s",
        ]);
        if !only_tag {
            // Paging done by git itself: cheap on long histories.
            if offset > 0 {
                cmd = cmd.arg(format!("--skip={offset}"));
            }
            if limit > 0 {
                cmd = cmd.arg(format!("--max-count={limit}"));
            }
        }
        let out = cmd
            .arg("--end-of-options")
            .arg(&full)
            .arg("--")
            .run_ok()
            .await?;
        let stdout = out.stdout_str();
        let commits = stdout.lines().filter_map(|line| {
            let (commit, summary) = line.split_once(' ').unwrap_or((line, ""));
            if commit.is_empty() {
                return None;
            }
            let tag = tags.get(commit).and_then(|names| names.first().cloned());
            Some(CommitInfo {
                commit: commit.to_string(),
                // upstream's CommitRead.summary is the subject up to the first `|`
                summary: summary
                    .split('|')
                    .next()
                    .unwrap_or("")
                    .trim_end()
                    .to_string(),
                tag,
            })
        });
        Ok(if only_tag {
            let tagged = commits.filter(|c| c.tag.is_some()).skip(offset);
            if limit > 0 {
                tagged.take(limit).collect()
            } else {
                tagged.collect()
            }
        } else {
            commits.collect()
        })
    }

    /// Tags pointing at a commit (annotated tags dereferenced), sorted.
    async fn tags_of_uncached(
        &self,
        registry: Uuid,
        commit: &str,
    ) -> Result<Vec<String>, GitError> {
        let commit = self.resolve_commit(registry, commit).await?;
        let mut tags = self.tag_map(registry).await?;
        Ok(tags.remove(&commit).unwrap_or_default())
    }

    /// The commit a tag points at (annotated tags dereferenced); `None` when there is no such
    /// tag or it does not point at a commit.
    pub async fn tag_commit(&self, registry: Uuid, tag: &str) -> Result<Option<String>, GitError> {
        validate_tag(tag)?;
        let out = self
            .repo_cmd(registry)?
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("refs/tags/{tag}^{{commit}}"))
            .run()
            .await?;
        let id = out.stdout_str().trim().to_string();
        Ok((out.status.success() && !id.is_empty()).then_some(id))
    }

    /// Whether `commit` is reachable from `branch`. An unknown branch or commit is an error.
    async fn is_commit_on_branch_uncached(
        &self,
        registry: Uuid,
        commit: &str,
        branch: &str,
    ) -> Result<bool, GitError> {
        let full = self.ensure_branch(registry, branch).await?;
        let commit = self.resolve_commit(registry, commit).await?;
        let out = self
            .repo_cmd(registry)?
            .args(["merge-base", "--is-ancestor", "--end-of-options"])
            .arg(&commit)
            .arg(&full)
            .run()
            .await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(GitError::Command {
                command: "merge-base".into(),
                stderr: command::clean_stderr(&out.stderr, None),
            }),
        }
    }

    /// The content of the file at `path` in `commit`; `None` when there is no file there
    /// (missing, a directory or a submodule).
    async fn read_file_uncached(
        &self,
        registry: Uuid,
        commit: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let path = validate_path(path)?;
        let commit = self.resolve_commit(registry, commit).await?;
        // size first: a small repository can hold a huge, well-compressed blob
        let check = self
            .repo_cmd(registry)?
            .args(["cat-file", "--batch-check"])
            .stdin(format!("{commit}:{path}\n").into_bytes())
            .run_ok()
            .await?;
        let header = check.stdout_str();
        let mut fields = header.split_whitespace();
        let (_id, kind, size) = (fields.next(), fields.next(), fields.next());
        if kind != Some("blob") {
            return Ok(None);
        }
        let size: u64 = size.and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        if size > MAX_READ_FILE {
            return Err(GitError::TooLarge {
                size,
                limit: MAX_READ_FILE,
            });
        }
        let out = self
            .repo_cmd(registry)?
            .args(["cat-file", "--batch"])
            .stdin(format!("{commit}:{path}\n").into_bytes())
            .run_ok()
            .await?;
        let Some(eol) = out.stdout.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let header = String::from_utf8_lossy(&out.stdout[..eol]);
        let mut fields = header.split(' ');
        let (_id, kind, size) = (fields.next(), fields.next(), fields.next());
        if kind != Some("blob") {
            return Ok(None);
        }
        let size: usize = size
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GitError::Command {
                command: "cat-file".into(),
                stderr: "unexpected output".into(),
            })?;
        let body = out
            .stdout
            .get(eol + 1..eol + 1 + size)
            .ok_or_else(|| GitError::Command {
                command: "cat-file".into(),
                stderr: "truncated output".into(),
            })?;
        Ok(Some(body.to_vec()))
    }

    /// Branch names of the mirror (`refs/heads`), sorted. Cached until the next sync.
    pub async fn branches(&self, registry: Uuid) -> Result<Vec<String>, GitError> {
        let key = "branches".to_string();
        self.inner
            .cache
            .get_or_load(registry, key, self.branches_uncached(registry))
            .await
    }

    /// Commits reachable from `branch`, newest first (`git log` order). `only_tag` keeps the
    /// tagged ones; then `offset` commits are skipped and at most `limit` returned (0: all).
    /// Cached until the next sync.
    pub async fn commits(
        &self,
        registry: Uuid,
        branch: &str,
        only_tag: bool,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let key = format!("commits\0{branch}\0{only_tag}\0{offset}\0{limit}");
        let load = self.commits_uncached(registry, branch, only_tag, offset, limit);
        self.inner.cache.get_or_load(registry, key, load).await
    }

    /// Tags pointing at a commit (annotated tags dereferenced), sorted. Cached until the next sync.
    pub async fn tags_of(&self, registry: Uuid, commit: &str) -> Result<Vec<String>, GitError> {
        let key = format!("tags_of\0{commit}");
        let load = self.tags_of_uncached(registry, commit);
        self.inner.cache.get_or_load(registry, key, load).await
    }

    /// Whether `commit` is reachable from `branch`. An unknown branch or commit is an error.
    pub async fn is_commit_on_branch(
        &self,
        registry: Uuid,
        commit: &str,
        branch: &str,
    ) -> Result<bool, GitError> {
        let key = format!("on_branch\0{commit}\0{branch}");
        let load = self.is_commit_on_branch_uncached(registry, commit, branch);
        self.inner.cache.get_or_load(registry, key, load).await
    }

    /// The content of the file at `path` in `commit`; `None` when there is no file there
    /// (missing, a directory or a submodule). Cached until the next sync.
    pub async fn read_file(
        &self,
        registry: Uuid,
        commit: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let key = format!("file\0{commit}\0{path}");
        let load = self.read_file_uncached(registry, commit, path);
        self.inner.cache.get_or_load(registry, key, load).await
    }

    /// `git archive --format=tar <commit>`, refused when the files at that commit add up to
    /// more than the repository size limit (a small pack can expand enormously).
    pub async fn archive_tar(&self, registry: Uuid, commit: &str) -> Result<Vec<u8>, GitError> {
        let commit = self.resolve_commit(registry, commit).await?;
        let listing = self
            .repo_cmd(registry)?
            .args(["ls-tree", "-r", "-l", "-z", "--end-of-options"])
            .arg(&commit)
            .run_ok()
            .await?;
        let total: u64 = listing
            .stdout
            .split(|&b| b == 0)
            .filter_map(|entry| {
                // "<mode> <type> <object> <size>\t<path>"; size is "-" for submodules
                let meta = entry.split(|&b| b == b'\t').next()?;
                let meta = std::str::from_utf8(meta).ok()?;
                meta.split_whitespace().nth(3)?.parse::<u64>().ok()
            })
            .sum();
        let limit = self.inner.max_repository_size;
        if total > limit {
            return Err(GitError::TooLarge { size: total, limit });
        }
        let out = self
            .repo_cmd(registry)?
            .args(["archive", "--format=tar", "--end-of-options"])
            .arg(&commit)
            .run_ok()
            .await?;
        Ok(out.stdout)
    }
}

/// A registry's entry in the lock map, removed on drop (also on cancellation) when no other
/// task holds or waits for it.
struct LockSlot<'a> {
    locks: &'a StdMutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    registry: Uuid,
    lock: Arc<Mutex<()>>,
}

impl<'a> LockSlot<'a> {
    fn new(locks: &'a StdMutex<HashMap<Uuid, Arc<Mutex<()>>>>, registry: Uuid) -> Self {
        let lock = locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(registry)
            .or_default()
            .clone();
        Self {
            locks,
            registry,
            lock,
        }
    }
}

impl Drop for LockSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under the map lock: 2 means the map's and ours.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.registry);
        }
    }
}

/// Removes a scratch directory on drop unless disarmed (also when the future is cancelled).
struct ScratchDir(Option<PathBuf>);

impl ScratchDir {
    fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(mut self) {
        self.0 = None;
    }

    /// Removes the directory now (best effort; what remains is swept by the next sync).
    async fn remove(mut self) {
        if let Some(path) = self.0.take() {
            let _ = remove_dir_retrying(&path).await;
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let Some(path) = self.0.take() else { return };
        let remove = move || {
            let _ = std::fs::remove_dir_all(&path);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// Drops the partial packs (`objects/pack/tmp_*`) an interrupted fetch leaves behind; the
/// registry's lock is held, so no other writer can own them.
async fn remove_tmp_packs(repo: &Path) {
    let pack_dir = repo.join("objects").join("pack");
    let Ok(mut entries) = tokio::fs::read_dir(&pack_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name().to_string_lossy().starts_with("tmp_") {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

/// Removes every `*.lock` file under a mirror (refs, packed-refs, config, HEAD, shallow,
/// commit-graph...); returns how many. Only for a mirror no git process works in.
async fn remove_lock_files(repo: &Path) -> usize {
    let repo = repo.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        let mut dirs = vec![repo];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if entry.file_name().to_string_lossy().ends_with(".lock")
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    })
    .await
    .unwrap_or(0)
}

/// `remove_dir_all`, retried briefly: a just-killed git may still be writing into the directory.
async fn remove_dir_retrying(dir: &Path) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sum of the sizes of the files under `dir` (symlinks not followed).
pub(crate) fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            // Files come and go while git runs: skip the vanished ones.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

async fn dir_size_async(dir: &Path) -> Result<u64, GitError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || dir_size(&dir))
        .await
        .map_err(|e| GitError::Io(io::Error::other(e)))?
        .map_err(GitError::Io)
}
