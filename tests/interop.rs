//! Interop with an ActivityPub server this project did not write: bovine-herd 0.5.19 (PyPI),
//! driven by tests/interop/peer.py (protocol and measured facts in
//! tests/interop/BOVINE-NOTES.md). Its actor `alice` fetches our actors with signed GETs,
//! follows one of our Repos (we fetch her actor signed, verify her signature and send a signed
//! Accept that bovine verifies), receives the Repo's Update, unfollows, and has an unsupported
//! activity refused with a 4xx.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One bovine-herd peer (peer.py) with its actor `alice`.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    ready: Value,
    _dir: tempfile::TempDir,
}

impl Peer {
    async fn start() -> Option<Peer> {
        let Ok(python) = std::env::var("PU_TEST_BOVINE_PYTHON") else {
            assert!(
                !common::require_all(),
                "PU_TEST_BOVINE_PYTHON is not set (scripts/test.sh installs bovine-herd)"
            );
            eprintln!("skipped: PU_TEST_BOVINE_PYTHON not set");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/peer.py");
        let mut child = Command::new(python)
            .args([script, "--port", "0", "--workdir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("peer.py starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("bovine ready within 90 s")
            .unwrap()
            .expect("a ready line");
        let ready: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
        Some(Peer {
            child,
            stdin,
            lines,
            ready,
            _dir: dir,
        })
    }

    async fn cmd(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(150), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("peer answers {command}"))
            .unwrap()
            .expect("a reply line");
        serde_json::from_str(&reply).unwrap()
    }

    async fn quit(mut self) {
        let _ = self.cmd(json!({"cmd": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

async fn followers(inst: &TestInstance, actor: &str) -> Vec<Value> {
    let res = inst
        .http
        .get(format!("{actor}/followers?page=1"))
        .header("accept", "application/activity+json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    v["orderedItems"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bovine_herd_fetches_follows_and_receives_updates() {
    let Some(mut alice) = Peer::start().await else {
        return;
    };
    let inst = TestInstance::start_with(
        Backend::Sqlite,
        &[
            ("PU_FEDERATION_ALLOW_LOCAL", "true"),
            ("PU_FEDERATION_RETRY_BASE", "1"),
        ],
    )
    .await;
    let (_, admin) = inst.user("admin").await;
    let firmware = FirmwareRepo::create().await;
    let (_, repo, _) = registry_repo_unit(&inst, &admin, &firmware, "interop", "Public").await;
    let origin = format!("http://{}", inst.domain);
    let repo_actor = format!(
        "{origin}/pepeunit/ap/repos/{}",
        repo["uuid"].as_str().unwrap()
    );
    let alice_id = alice.ready["id"].as_str().unwrap().to_string();

    // bovine fetches our documents with signed GETs
    let got = alice
        .cmd(json!({"cmd": "fetch", "url": format!("{origin}/pepeunit/ap/instance")}))
        .await;
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["json"]["type"], "Application", "{got}");
    let got = alice.cmd(json!({"cmd": "fetch", "url": repo_actor})).await;
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["json"]["type"], "Repository");
    assert_eq!(got["json"]["name"], "interop_repo");
    assert_eq!(
        got["json"]["publicKey"]["id"],
        format!("{repo_actor}#main-key")
    );
    let got = alice
        .cmd(json!({"cmd": "fetch", "url": format!("{origin}/.well-known/nodeinfo"), "signed": false, "accept": "application/json"}))
        .await;
    assert_eq!(got["ok"], true, "{got}");

    // alice follows the Repo: we verify her signature (fetching her actor, signed), accept,
    // and bovine verifies our signed Accept before it lands in her inbox
    let followed = alice
        .cmd(json!({"cmd": "follow", "object": repo_actor}))
        .await;
    assert_eq!(followed["ok"], true, "{followed}");
    assert_eq!(followed["deliveries"][0]["status"], 202, "{followed}");
    let accept = alice
        .cmd(json!({"cmd": "wait_inbox", "type": "Accept", "timeout": 30}))
        .await;
    assert_eq!(accept["ok"], true, "{accept}");
    assert_eq!(followers(&inst, &repo_actor).await, vec![json!(alice_id)]);

    // the Repo changes: its followers get an Update from the Repo actor
    let (s, v) = inst
        .patch(
            &format!("/repos/{}", repo["uuid"].as_str().unwrap()),
            Some(&admin),
            json!({"name": "interop_renamed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let update = alice
        .cmd(json!({"cmd": "wait_inbox", "type": "Update", "timeout": 30}))
        .await;
    assert_eq!(update["ok"], true, "{update}");
    let item = &update["item"];
    assert_eq!(item["actor"], repo_actor, "{item}");

    // an activity type we do not handle is refused with a 4xx, signature checked first
    let like = alice
        .cmd(json!({"cmd": "send", "to": format!("{origin}/pepeunit/ap/inbox"), "activity": {"type": "Like", "object": repo_actor}}))
        .await;
    assert_eq!(like["status"], 400, "{like}");

    // unfollow: Undo(Follow) removes alice from the Repo's followers
    let undone = alice
        .cmd(json!({"cmd": "unfollow", "object": repo_actor, "follow": followed["id"]}))
        .await;
    assert_eq!(undone["ok"], true, "{undone}");
    let mut left = false;
    for _ in 0..100 {
        if followers(&inst, &repo_actor).await.is_empty() {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left, "alice is still a follower after Undo");

    alice.quit().await;
    inst.stop().await;
}
