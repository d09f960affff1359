//! Tests against real repositories built with the git CLI and served over "dumb" HTTP by a
//! tiny static file server on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::command::{self, auth_header, clean_stderr, GitCommand};
use super::validate::{validate_branch, validate_commit, validate_path, validate_tag};
use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);
const BIG: u64 = 1 << 30;

// ---------------------------------------------------------------- static HTTP server

/// Serves files under `base` (GET only). With `auth`, requests without exactly that
/// `Authorization` header get 401. Aborted, with all its connections, on drop.
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(base: PathBuf, auth: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropped (so every connection task aborted) when this task is aborted.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream, base.clone(), auth.clone()));
            }
        });
        Self { addr, task }
    }

    /// A server that accepts connections and never answers.
    async fn start_silent() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path)
    }
}

async fn serve(mut stream: TcpStream, base: PathBuf, auth: Option<String>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request.next(), request.next().unwrap_or("/"));
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());

    let (status, extra, body) = if method != Some("GET") {
        ("405 Method Not Allowed", "", Vec::new())
    } else if auth.is_some() && authorization != auth {
        (
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"test\"\r\n",
            Vec::new(),
        )
    } else {
        let path = target.split('?').next().unwrap_or_default();
        let safe = path.split('/').all(|c| c != "..");
        let file = base.join(path.trim_start_matches('/'));
        match tokio::fs::read(&file).await {
            Ok(bytes) if safe => ("200 OK", "", bytes),
            _ => ("404 Not Found", "", Vec::new()),
        }
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

// ---------------------------------------------------------------- source repositories

static CLOCK: AtomicU64 = AtomicU64::new(0);

/// Runs git synchronously for fixture building (fixed identity, no user config).
fn sh(dir: &Path, args: &[&str]) -> String {
    let date = format!(
        "@{} +0000",
        1_700_000_000 + 60 * CLOCK.fetch_add(1, Ordering::Relaxed)
    );
    let out = StdCommand::new("git")
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit_file(work: &Path, file: &str, content: &str, message: &str) -> String {
    let path = work.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    sh(work, &["add", "--", file]);
    sh(work, &["commit", "-q", "-m", message]);
    sh(work, &["rev-parse", "HEAD"])
}

/// The source repository, its served bare copy, and the commits by name.
///
/// main: c1 (tag v0.0.1, lightweight) - c2 (v0.1, annotated) - c3 (v1.0 annotated + alpha
/// lightweight) - c4; dev: c2 - d1.
struct Fixture {
    dir: TempDir,
    work: PathBuf,
    bare: PathBuf,
    c: HashMap<&'static str, String>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        sh(&work, &["init", "-q", "-b", "main"]);
        let mut c = HashMap::new();
        std::fs::create_dir_all(work.join("config")).unwrap();
        std::fs::write(work.join("config/env_example.json"), "{\"A\": 1}\n").unwrap();
        sh(&work, &["add", "config"]);
        c.insert(
            "c1",
            commit_file(&work, "README.md", "hello\n", "initial commit"),
        );
        sh(&work, &["tag", "v0.0.1"]);
        c.insert(
            "c2",
            commit_file(&work, "src/app.txt", "app v1\n", "add feature"),
        );
        sh(&work, &["tag", "-a", "-m", "first minor", "v0.1"]);
        sh(&work, &["checkout", "-q", "-b", "dev"]);
        c.insert("d1", commit_file(&work, "dev.txt", "dev\n", "dev work"));
        sh(&work, &["checkout", "-q", "main"]);
        c.insert(
            "c3",
            commit_file(&work, "src/app.txt", "app v2\n", "release one"),
        );
        sh(&work, &["tag", "-a", "-m", "release", "v1.0"]);
        sh(&work, &["tag", "alpha"]);
        c.insert(
            "c4",
            commit_file(&work, "src/app.txt", "app v3\n", "untagged tip"),
        );

        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let bare = srv.join("repo.git");
        sh(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        sh(&bare, &["update-server-info"]);
        Self { dir, work, bare, c }
    }

    fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    fn git(&self, limit: u64) -> Git {
        // the test server is on loopback
        Git::new(self.dir.path().join("mirrors"), limit, TIMEOUT, true)
    }

    /// Pushes the work tree's branches to the served copy.
    fn publish(&self) {
        let bare = self.bare.to_str().unwrap();
        sh(&self.work, &["push", "-q", "--force", bare, "main"]);
        sh(&self.bare, &["update-server-info"]);
    }

    fn sha(&self, name: &str) -> String {
        self.c[name].clone()
    }
}

fn ids(commits: &[CommitInfo]) -> Vec<String> {
    commits.iter().map(|c| c.commit.clone()).collect()
}

fn invalid<T>(r: Result<T, GitError>) -> bool {
    matches!(r, Err(GitError::InvalidArgument(_)))
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn sync_then_query_the_mirror() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let git = fx.git(BIG);
    let reg = Uuid::new_v4();
    assert!(!git.exists(reg));
    assert!(matches!(git.branches(reg).await, Err(GitError::NoClone)));

    git.check_access(&server.url("repo.git"), None)
        .await
        .unwrap();
    let size = git.sync(reg, &server.url("repo.git"), None).await.unwrap();
    assert!(size > 0);
    assert!(git.exists(reg));
    assert_eq!(
        git.repo_path(reg),
        fx.dir.path().join("mirrors").join(format!("{reg}.git"))
    );
    assert_eq!(git.size(reg).await.unwrap(), size);
    // Only the mirror is left in the root, no scratch directories.
    assert_eq!(
        entries(&fx.dir.path().join("mirrors")),
        vec![format!("{reg}.git")]
    );

    assert_eq!(git.branches(reg).await.unwrap(), vec!["dev", "main"]);

    let (c1, c2, c3, c4, d1) = (
        fx.sha("c1"),
        fx.sha("c2"),
        fx.sha("c3"),
        fx.sha("c4"),
        fx.sha("d1"),
    );
    let all = git.commits(reg, "main", false, 0, 0).await.unwrap();
    assert_eq!(
        ids(&all),
        vec![c4.clone(), c3.clone(), c2.clone(), c1.clone()]
    );
    let summaries: Vec<_> = all.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        summaries,
        vec![
            "untagged tip",
            "release one",
            "add feature",
            "initial commit"
        ]
    );
    let tags: Vec<_> = all.iter().map(|c| c.tag.as_deref()).collect();
    // c3 has both "v1.0" (annotated) and "alpha": the smallest wins.
    assert_eq!(
        tags,
        vec![None, Some("alpha"), Some("v0.1"), Some("v0.0.1")]
    );

    // Paging.
    let page = git.commits(reg, "main", false, 1, 2).await.unwrap();
    assert_eq!(ids(&page), vec![c3.clone(), c2.clone()]);
    let tail = git.commits(reg, "main", false, 3, 0).await.unwrap();
    assert_eq!(ids(&tail), vec![c1.clone()]);
    assert!(git
        .commits(reg, "main", false, 10, 5)
        .await
        .unwrap()
        .is_empty());

    // Only tagged commits, paged after filtering.
    let tagged = git.commits(reg, "main", true, 0, 0).await.unwrap();
    assert_eq!(ids(&tagged), vec![c3.clone(), c2.clone(), c1.clone()]);
    let tagged_page = git.commits(reg, "main", true, 1, 1).await.unwrap();
    assert_eq!(ids(&tagged_page), vec![c2.clone()]);
    assert_eq!(tagged_page[0].tag.as_deref(), Some("v0.1"));

    let dev = git.commits(reg, "dev", false, 0, 0).await.unwrap();
    assert_eq!(ids(&dev), vec![d1.clone(), c2.clone(), c1.clone()]);
    assert!(matches!(
        git.commits(reg, "nope", false, 0, 0).await,
        Err(GitError::BranchNotFound(b)) if b == "nope"
    ));

    // Tags.
    assert_eq!(git.tags_of(reg, &c3).await.unwrap(), vec!["alpha", "v1.0"]);
    assert_eq!(
        git.tags_of(reg, &c3[..8]).await.unwrap(),
        vec!["alpha", "v1.0"]
    );
    assert_eq!(
        git.tags_of(reg, &c3.to_uppercase()).await.unwrap(),
        vec!["alpha", "v1.0"]
    );
    assert!(git.tags_of(reg, &c4).await.unwrap().is_empty());
    assert_eq!(git.tag_commit(reg, "v1.0").await.unwrap(), Some(c3.clone()));
    assert_eq!(git.tag_commit(reg, "v0.1").await.unwrap(), Some(c2.clone()));
    assert_eq!(
        git.tag_commit(reg, "v0.0.1").await.unwrap(),
        Some(c1.clone())
    );
    assert_eq!(git.tag_commit(reg, "missing").await.unwrap(), None);

    // Reachability.
    assert!(git.is_commit_on_branch(reg, &c2, "dev").await.unwrap());
    assert!(git.is_commit_on_branch(reg, &d1, "dev").await.unwrap());
    assert!(!git.is_commit_on_branch(reg, &d1, "main").await.unwrap());
    assert!(!git.is_commit_on_branch(reg, &c4, "dev").await.unwrap());
    assert!(git
        .is_commit_on_branch(reg, &c4[..7], "main")
        .await
        .unwrap());
    assert!(matches!(
        git.is_commit_on_branch(reg, "deadbeef", "main").await,
        Err(GitError::CommitNotFound(_))
    ));
    assert!(matches!(
        git.is_commit_on_branch(reg, &c4, "gone").await,
        Err(GitError::BranchNotFound(_))
    ));

    // Files.
    assert_eq!(
        git.read_file(reg, &c1, "README.md")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"hello\n"[..])
    );
    assert_eq!(
        git.read_file(reg, &c1, "./config//env_example.json")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{\"A\": 1}\n"[..])
    );
    assert_eq!(git.read_file(reg, &c1, "src/app.txt").await.unwrap(), None);
    assert_eq!(
        git.read_file(reg, &c3, "src/app.txt")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"app v2\n"[..])
    );
    assert_eq!(git.read_file(reg, &c3, "config").await.unwrap(), None);
    assert!(matches!(
        git.read_file(reg, "0000000000", "README.md").await,
        Err(GitError::CommitNotFound(_))
    ));

    // Archive: a tar stream (512-byte blocks) holding the files of that commit.
    let tar = git.archive_tar(reg, &c3).await.unwrap();
    assert!(!tar.is_empty());
    assert_eq!(tar.len() % 512, 0);
    let has = |needle: &[u8]| tar.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"src/app.txt"));
    assert!(has(b"app v2\n"));
    assert!(!has(b"dev.txt"));

    // Removal.
    git.remove(reg).await.unwrap();
    assert!(!git.exists(reg));
    assert!(matches!(git.size(reg).await, Err(GitError::NoClone)));
    assert!(matches!(
        git.commits(reg, "main", false, 0, 0).await,
        Err(GitError::NoClone)
    ));
    git.remove(reg).await.unwrap();
    assert!(entries(&fx.dir.path().join("mirrors")).is_empty());
}

#[tokio::test]
async fn second_sync_fetches_and_prunes() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let git = fx.git(BIG);
    let reg = Uuid::new_v4();
    let url = server.url("repo.git");

    // Two syncs at once of a missing mirror: both succeed, one clones, one fetches.
    let other = git.clone();
    let (a, b) = tokio::join!(git.sync(reg, &url, None), other.sync(reg, &url, None));
    a.unwrap();
    b.unwrap();
    assert!(git.inner.locks.lock().unwrap().is_empty());
    assert_eq!(
        entries(&fx.dir.path().join("mirrors")),
        vec![format!("{reg}.git")]
    );

    let c5 = commit_file(&fx.work, "src/app.txt", "app v4\n", "newer work");
    fx.publish();
    sh(&fx.bare, &["branch", "-D", "dev"]);
    sh(&fx.bare, &["tag", "v2.0", &c5]);
    sh(&fx.bare, &["update-server-info"]);

    git.sync(reg, &url, None).await.unwrap();
    let main = git.commits(reg, "main", false, 0, 1).await.unwrap();
    assert_eq!(main[0].commit, c5);
    assert_eq!(main[0].summary, "newer work");
    assert_eq!(main[0].tag.as_deref(), Some("v2.0"));
    assert_eq!(git.branches(reg).await.unwrap(), vec!["main"]);
    assert!(matches!(
        git.commits(reg, "dev", false, 0, 0).await,
        Err(GitError::BranchNotFound(_))
    ));

    // A failing fetch keeps the mirror as it was.
    let dead = "http://127.0.0.1:1/repo.git";
    assert!(git.sync(reg, dead, None).await.is_err());
    assert!(git.exists(reg));
    assert_eq!(
        git.commits(reg, "main", false, 0, 1).await.unwrap()[0].commit,
        c5
    );
}

#[tokio::test]
async fn size_limit_removes_the_mirror() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let url = server.url("repo.git");
    let mirrors = fx.dir.path().join("mirrors");
    let reg = Uuid::new_v4();

    // Clone path: refused, nothing left behind.
    let small = fx.git(1);
    let err = small.sync(reg, &url, None).await.unwrap_err();
    assert!(
        matches!(err, GitError::TooLarge { limit: 1, .. }),
        "{err:?}"
    );
    assert!(!small.exists(reg));
    assert!(entries(&mirrors).is_empty(), "{:?}", entries(&mirrors));

    // Fetch path: a mirror that is now over the limit goes away.
    let size = fx.git(BIG).sync(reg, &url, None).await.unwrap();
    let tight = fx.git(size);
    assert_eq!(tight.sync(reg, &url, None).await.unwrap(), size);
    commit_file(&fx.work, "big.bin", &"x".repeat(200_000), "big file");
    fx.publish();
    let err = tight.sync(reg, &url, None).await.unwrap_err();
    assert!(matches!(err, GitError::TooLarge { .. }), "{err:?}");
    assert!(!tight.exists(reg));
    assert!(entries(&mirrors).is_empty(), "{:?}", entries(&mirrors));
    assert!(err.to_string().starts_with("repository is too large"));
}

#[tokio::test]
async fn refused_urls() {
    for url in [
        "file:///etc",
        "/srv/repo.git",
        "ssh://git@example.com/repo.git",
        "git@example.com:repo.git",
        "ftp://example.com/repo.git",
        "ext::sh -c touch% /tmp/pwned",
        "http://exa mple.com/repo.git",
        "http://example.com/repo.git\n",
        "-uhttp://x",
        "--upload-pack=touch /tmp/x",
        "http://",
        "http:///path",
        "https://user:secret@example.com/repo.git",
        "https://token@example.com/repo.git",
        "HTTP://example.com/repo.git",
        "http://example.com:port/repo.git",
        "",
    ] {
        let err = validate_remote_url(url).unwrap_err();
        assert!(matches!(err, GitError::UrlNotAllowed(_)), "{url:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let long = format!("https://example.com/{}", "a".repeat(2048));
    assert!(validate_remote_url(&long).is_err());
    for url in [
        "https://github.com/pepeunit/pepeunit.git",
        "http://127.0.0.1:8080/repo.git",
        "https://[::1]:443/repo",
        "https://gitlab.example.com/group/sub/repo",
    ] {
        validate_remote_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    // Refused before anything runs: nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let git = Git::new(dir.path().join("m"), BIG, TIMEOUT, false);
    let reg = Uuid::new_v4();
    assert!(matches!(
        git.sync(reg, "file:///etc", None).await,
        Err(GitError::UrlNotAllowed(_))
    ));
    assert!(matches!(
        git.check_access("ssh://localhost/x", None).await,
        Err(GitError::UrlNotAllowed(_))
    ));
    assert!(!dir.path().join("m").exists());
}

#[tokio::test]
async fn unreachable_and_missing_remotes_fail_cleanly() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let git = fx.git(BIG);
    let reg = Uuid::new_v4();

    let err = git
        .sync(reg, "http://127.0.0.1:1/repo.git", None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Remote(_)), "{err:?}");
    assert!(!git.exists(reg));
    assert!(git
        .check_access("http://127.0.0.1:1/repo.git", None)
        .await
        .is_err());

    let err = git
        .sync(reg, &server.url("missing.git"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotFound(_)), "{err:?}");
    let err = git
        .check_access(&server.url("missing.git"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotFound(_)), "{err:?}");
    assert!(entries(&fx.dir.path().join("mirrors")).is_empty());
}

#[tokio::test]
async fn private_repository_needs_the_right_credentials() {
    let fx = Fixture::new();
    let good = GitCredentials {
        username: "pepe".into(),
        pat_token: "glpat-right-token-123".into(),
    };
    let bad = GitCredentials {
        username: "pepe".into(),
        pat_token: "glpat-wrong-token-456".into(),
    };
    let server = TestServer::start(
        fx.srv(),
        Some(auth_header(&good)["Authorization: ".len()..].to_string()),
    )
    .await;
    let git = fx.git(BIG);
    let reg = Uuid::new_v4();
    let url = server.url("repo.git");

    for creds in [None, Some(&bad)] {
        let err = git.check_access(&url, creds).await.unwrap_err();
        assert!(matches!(err, GitError::Auth(_)), "{err:?}");
        let err = git.sync(reg, &url, creds).await.unwrap_err();
        assert!(matches!(err, GitError::Auth(_)), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("wrong-token") && !text.contains("right-token"),
            "{text}"
        );
        assert!(!git.exists(reg));
    }

    git.check_access(&url, Some(&good)).await.unwrap();
    git.sync(reg, &url, Some(&good)).await.unwrap();
    assert_eq!(git.branches(reg).await.unwrap(), vec!["dev", "main"]);
    // Fetch path with credentials too.
    git.sync(reg, &url, Some(&good)).await.unwrap();
    // And the token was stored nowhere in the mirror's config.
    let config = std::fs::read_to_string(git.repo_path(reg).join("config")).unwrap();
    assert!(
        !config.contains("right-token") && !config.contains("xtraheader"),
        "{config}"
    );
    assert!(!config.contains(&auth_header(&good)));
    // Without credentials, the fetch is refused and the mirror kept.
    assert!(matches!(
        git.sync(reg, &url, None).await,
        Err(GitError::Auth(_))
    ));
    assert!(git.exists(reg));
    assert!(!format!("{good:?}").contains("right-token"));
}

#[tokio::test]
async fn user_arguments_are_validated() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let git = fx.git(BIG);
    let reg = Uuid::new_v4();
    git.sync(reg, &server.url("repo.git"), None).await.unwrap();
    let c1 = fx.sha("c1");

    for branch in [
        "--upload-pack=x",
        "-x",
        "main..dev",
        "a b",
        "a:b",
        "a~1",
        "a^",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "/main",
        "main/",
        "ma\nin",
        "main.lock",
        ".hidden",
        "a//b",
        "HEAD",
        "@",
        "a@{1}",
        "",
    ] {
        assert!(invalid(validate_branch(branch)), "{branch:?}");
        assert!(
            invalid(git.commits(reg, branch, false, 0, 0).await),
            "{branch:?}"
        );
        assert!(
            invalid(git.is_commit_on_branch(reg, &c1, branch).await),
            "{branch:?}"
        );
    }
    for ok in ["main", "feature/x-1", "release_2.0", "v1.0"] {
        validate_branch(ok).unwrap();
        validate_tag(ok).unwrap();
    }
    for tag in ["--sort=x", "v1..2", "v1 0", "-d"] {
        assert!(invalid(git.tag_commit(reg, tag).await), "{tag:?}");
    }
    for commit in [
        "--all",
        "HEAD",
        "main",
        "abc",
        "xyz12345",
        "c0ffee~1",
        &"a".repeat(65),
    ] {
        assert!(invalid(validate_commit(commit)), "{commit:?}");
        assert!(invalid(git.tags_of(reg, commit).await), "{commit:?}");
        assert!(invalid(git.archive_tar(reg, commit).await), "{commit:?}");
    }
    for path in [
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "",
        ".",
        "a\nb",
        "a/..",
    ] {
        assert!(invalid(validate_path(path)), "{path:?}");
        assert!(invalid(git.read_file(reg, &c1, path).await), "{path:?}");
    }
    assert_eq!(validate_path("./a//b/./c").unwrap(), "a/b/c");
    // A path that looks like an option is just a (missing) path.
    assert_eq!(git.read_file(reg, &c1, "--output=x").await.unwrap(), None);
}

#[tokio::test]
async fn timeout_kills_git() {
    let server = TestServer::start_silent().await;
    let dir = tempfile::tempdir().unwrap();
    let git = Git::new(dir.path().join("m"), BIG, Duration::from_millis(800), true);
    let reg = Uuid::new_v4();
    let url = server.url(&format!("{reg}.git"));
    let started = std::time::Instant::now();
    let err = git.sync(reg, &url, None).await.unwrap_err();
    assert!(matches!(err, GitError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        git.check_access(&url, None).await,
        Err(GitError::Timeout)
    ));
    assert!(!git.exists(reg));
    assert!(entries(&dir.path().join("m")).is_empty());
    // No git process (the remote helper included) outlives the timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = StdCommand::new("pgrep")
        .args(["-f", &reg.to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn stderr_is_trimmed_and_scrubbed() {
    let creds = GitCredentials {
        username: "bob".into(),
        pat_token: "s3cr3t-token".into(),
    };
    let header = auth_header(&creds);
    let stderr = format!(
        "hint: something\nfatal: unable to access 'https://bob:s3cr3t-token@example.com/x.git/': \
         The requested URL returned error: 403\nerror: {header}\n"
    );
    let msg = clean_stderr(stderr.as_bytes(), Some(&creds));
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(
        !msg.contains(&header["Authorization: Basic ".len()..]),
        "{msg}"
    );
    assert!(!msg.contains("hint"), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(msg.contains("error: 403"), "{msg}");
    // Even without known credentials, userinfo in URLs goes.
    let msg = clean_stderr(b"fatal: https://u:p4ss@host/x failed", None);
    assert_eq!(msg, "https://***@host/x failed");
    let long = clean_stderr("x".repeat(5000).as_bytes(), None);
    assert!(long.len() < 400);
    assert!(matches!(
        command::remote_error(b"fatal: Authentication failed for 'x'", None),
        GitError::Auth(_)
    ));
}

/// A blob that compresses to almost nothing must not be expanded into memory: a 3 MB file of
/// zeros keeps the mirror tiny, but reading it or archiving its commit is refused.
#[tokio::test]
async fn expanding_content_is_refused() {
    let fx = Fixture::new();
    let zeros = commit_file(&fx.work, "zeros.bin", &"\0".repeat(3 * 1024 * 1024), "bomb");
    fx.publish();
    let server = TestServer::start(fx.srv(), None).await;
    let reg = Uuid::new_v4();
    let size = fx
        .git(BIG)
        .sync(reg, &server.url("repo.git"), None)
        .await
        .unwrap();
    assert!(size < 1024 * 1024, "the mirror stays small: {size}");

    let git = fx.git(2 * 1024 * 1024);
    let err = git.read_file(reg, &zeros, "zeros.bin").await.unwrap_err();
    assert!(matches!(err, GitError::TooLarge { .. }), "{err:?}");
    let err = git.archive_tar(reg, &zeros).await.unwrap_err();
    assert!(matches!(err, GitError::TooLarge { .. }), "{err:?}");
    // small files of the same commit are still readable, and older commits still archive
    assert!(git
        .read_file(reg, &zeros, "README.md")
        .await
        .unwrap()
        .is_some());
    assert!(!git
        .archive_tar(reg, &fx.sha("c4"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn local_remotes_are_refused_unless_allowed() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let git = Git::new(dir.path().join("m"), BIG, TIMEOUT, false);
    let reg = Uuid::new_v4();
    let by_name = format!("http://localhost:{}/repo.git", server.addr.port());
    for url in [server.url("repo.git"), by_name] {
        for err in [
            git.sync(reg, &url, None).await.unwrap_err(),
            git.check_access(&url, None).await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, GitError::UrlNotAllowed(m) if m.contains("loopback") && m.contains("PU_ALLOW_LOCAL_NETWORK")),
                "{url}: {err:?}"
            );
        }
    }
    assert!(!git.exists(reg));
    assert!(!dir.path().join("m").exists());
    // the same remote with local addresses allowed
    fx.git(BIG)
        .check_access(&server.url("repo.git"), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn guarded_commands_connect_to_the_pinned_address() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let port = server.addr.port();
    // a name no resolver knows: only the pin can take git to the server
    let url = format!("http://pinned.pepeunit.invalid:{port}/repo.git");
    let ls = |guard: Option<command::Guard>| {
        GitCommand::new(TIMEOUT)
            .outside_repo(&std::env::temp_dir())
            .guard(guard)
            .args(["ls-remote", "--quiet", "--"])
            .arg(&url)
            .arg("HEAD")
            .run()
    };
    let addrs = ["127.0.0.1:0".parse().unwrap()];
    let pin = curl_resolve("pinned.pepeunit.invalid", port, &addrs);
    assert_eq!(
        pin.as_deref(),
        Some(format!("pinned.pepeunit.invalid:{port}:127.0.0.1").as_str())
    );
    let out = ls(Some(command::Guard { resolve: pin })).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout_str().contains("HEAD"));
    let out = ls(None).await.unwrap();
    assert!(!out.status.success(), "the name resolved without the pin");
}

#[test]
fn curl_resolve_entries() {
    let v4: std::net::SocketAddr = "93.184.215.14:0".parse().unwrap();
    let v6: std::net::SocketAddr = "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:0"
        .parse()
        .unwrap();
    assert_eq!(
        curl_resolve("example.org", 443, &[v4, v6]).unwrap(),
        "example.org:443:93.184.215.14,[2606:2800:21f:cb07:6820:80da:af6b:8b2c]"
    );
    // address literals are not resolved by curl: nothing to pin
    assert_eq!(curl_resolve("93.184.215.14", 80, &[v4]), None);
    assert_eq!(
        curl_resolve("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]", 80, &[v6]),
        None
    );
}

/// Answers every request with a 301 to the same path on `to`.
async fn redirecting_server(to: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                let reply = format!(
                    "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{to}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn guarded_commands_follow_no_redirect() {
    let fx = Fixture::new();
    let server = TestServer::start(fx.srv(), None).await;
    let (redirector, task) = redirecting_server(server.addr).await;
    let url = format!("http://{redirector}/repo.git");
    let ls = |guard: Option<command::Guard>| {
        GitCommand::new(TIMEOUT)
            .outside_repo(&std::env::temp_dir())
            .guard(guard)
            .args(["ls-remote", "--quiet", "--"])
            .arg(&url)
            .arg("HEAD")
            .run()
    };
    // unguarded, git follows the redirect (its default), which could lead anywhere
    let out = ls(None).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ls(Some(command::Guard::default())).await.unwrap();
    assert!(
        !out.status.success(),
        "a guarded command followed a redirect"
    );
    task.abort();
}
