//! Administrative writes across `kill -9` (issue 16, part 5): the instance, a separate `pepeunit
//! serve` process, is killed with SIGKILL in the middle of an account import and started again
//! on the same data. No half-visible state may remain: per table, the database holds either
//! everything the import writes or nothing of it, and the import can be repeated.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::archive::{export, with_log_lines};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::serve::{log_text, logs, Server};
use common::{Backend, TestInstance};
use pepeunit::store::transfer::TABLES;
use serde_json::{json, Value};
use sqlx::Connection;

const UNITS: usize = 6;
/// 150,000 lines in all: seconds of writing, so that a kill lands inside the import.
const LINES_PER_UNIT: usize = 25_000;

/// Rows per exported table in the whole database, read over a connection of the test's own.
async fn table_counts(inst: &TestInstance) -> BTreeMap<&'static str, i64> {
    let mut conn = sqlx::AnyConnection::connect(&inst.config.database_url)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for t in TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        out.insert(t.name, n);
    }
    conn.close().await.unwrap();
    out
}

fn delta(
    after: &BTreeMap<&'static str, i64>,
    before: &BTreeMap<&'static str, i64>,
) -> BTreeMap<&'static str, i64> {
    after.iter().map(|(t, n)| (*t, n - before[t])).collect()
}

/// `POST /users/import` that may not get an answer (the server is killed under it).
async fn upload(inst: &TestInstance, token: &str, archive: Vec<u8>) -> Result<(u16, Value), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = client
        .post(inst.url("/users/import"))
        .header("x-auth-token", token)
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// Where in the import the server is killed, read from its `import progress` log lines.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// The first table is written (the transaction is open).
    FirstTable,
    /// At least this many log lines are written.
    Logs(u64),
}

impl KillAt {
    fn reached(self, log: &str) -> bool {
        log.lines()
            .filter(|l| l.contains("import progress"))
            .any(|l| match self {
                KillAt::FirstTable => true,
                KillAt::Logs(n) => {
                    l.contains("table=\"unit_logs\"")
                        && l.split("records=")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next())
                            .and_then(|r| r.parse::<u64>().ok())
                            .is_some_and(|r| r >= n)
                }
            })
    }
}

/// An account of `UNITS` units (their nodes, one repo, one registry) exported with 150,000
/// log lines is imported into another account while the server is killed at `points`, each
/// time started again: the database then holds none of the import or all of it, never part.
/// Then the import runs to the end and everything is there.
async fn import_killed(backend: Backend) {
    let mut inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let (_, importer) = inst.user("importer1").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &owner, &firmware, "src", "Private").await;
    let mut units = vec![unit["uuid"].as_str().unwrap().to_string()];
    for d in 1..UNITS {
        let (s, u) = inst
            .post(
                "/units",
                Some(&owner),
                json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": format!("src_unit_{d}"), "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s.as_u16(), 201, "{u}");
        units.push(u["uuid"].as_str().unwrap().to_string());
    }
    let (s, archive) = export(&inst, &owner, json!({})).await;
    assert_eq!(s, 200);
    let archive = with_log_lines(&archive, &units, LINES_PER_UNIT);
    inst.running.take().unwrap().stop().await.unwrap();

    let mut run = 0;
    let mut server = Server::start(&inst, run).await;
    for at in [KillAt::FirstTable, KillAt::Logs(40_000)] {
        let before = table_counts(&inst).await;
        let dir = inst.data.path().to_path_buf();
        let killer = async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !at.reached(&log_text(&dir, run)) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the import never reached {at:?}: {}",
                    logs(&dir)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.kill_tree().await;
            let log = log_text(&dir, run);
            let last = log.lines().rfind(|l| l.contains("import progress"));
            eprintln!("killed at {at:?}, the last progress: {last:?}");
        };
        let (answer, ()) = tokio::join!(upload(&inst, &importer, archive.clone()), killer);
        assert!(
            answer.is_err(),
            "killed at {at:?} before the import answered: {answer:?}"
        );
        run += 1;
        server = Server::start(&inst, run).await;
        let after = table_counts(&inst).await;
        let d = delta(&after, &before);
        assert!(
            d.values().all(|n| *n == 0),
            "killed at {at:?}: the import left part of itself: {d:?}"
        );
    }

    // the import can be repeated, and then everything is there
    let before = table_counts(&inst).await;
    let (status, report) = upload(&inst, &importer, archive.clone()).await.unwrap();
    assert_eq!(status, 200, "{report}");
    let d = delta(&table_counts(&inst).await, &before);
    assert_eq!(d["units"], UNITS as i64, "{d:?}");
    assert_eq!(d["repos"], 1, "{d:?}");
    assert_eq!(d["unit_logs"], (UNITS * LINES_PER_UNIT) as i64, "{d:?}");
    assert!(d["unit_nodes"] > 0, "{d:?}");
    for (table, n) in report["created"].as_object().unwrap() {
        assert_eq!(
            d[table.as_str()],
            n.as_i64().unwrap(),
            "{table}: the report and the database agree"
        );
    }
    // and it is usable: the imported units and their lines through the API
    let (s, v) = inst
        .get(
            &format!("/units?creator_uuid={}", report["user_uuid"].as_str().unwrap()),
            Some(&importer),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["count"].as_i64(), Some(UNITS as i64), "{v}");
    let mine = v["units"].as_array().unwrap();
    let (s, v) = inst
        .get(
            &format!("/units/log_list/?uuid={}&limit=1", mine[0]["uuid"].as_str().unwrap()),
            Some(&importer),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["count"].as_i64(), Some(LINES_PER_UNIT as i64), "{v}");
    server.kill().await;
    inst.stop().await;
}

both_backends!(import_killed);
