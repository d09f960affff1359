//! Account export and import between two instances of our server: the archive re-creates
//! everything field by field, uuids and names are remapped when taken, and broken, tampered
//! or wrongly unlocked archives change nothing.

mod common;

use std::collections::BTreeMap;

use common::archive::{export, import, pack, sha256_hex, unpack};
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::unit_token;
use common::{Backend, TestInstance};
use pepeunit::service::Instance;
use pepeunit::store::transfer::TABLES;
use serde_json::{json, Map, Value};

const PASS: &str = "correct horse battery";

fn instance(t: &TestInstance) -> &Instance {
    &t.running.as_ref().unwrap().instance
}

/// Every row of the exported tables, keyed by table then uuid, secrets decrypted.
async fn snapshot(inst: &Instance) -> BTreeMap<String, BTreeMap<String, Map<String, Value>>> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        let mut q = t.select();
        q.push("1 = 1");
        let rows = q.fetch_all(inst.pool()).await.unwrap();
        let mut by = BTreeMap::new();
        for r in &rows {
            let mut rec = t.record(r).unwrap();
            for f in ["cipher_env", "cipher_state_storage", "cipher_credentials"] {
                if let Some(Value::String(s)) = rec.get(f) {
                    let plain = inst.cipher.decrypt(s).unwrap();
                    rec.insert(f.into(), Value::String(plain));
                }
            }
            by.insert(rec["uuid"].as_str().unwrap().to_string(), rec);
        }
        out.insert(t.name.to_string(), by);
    }
    out
}

fn counts(s: &BTreeMap<String, BTreeMap<String, Map<String, Value>>>) -> BTreeMap<String, usize> {
    s.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

/// Changes one member with `f` and, when `fix_manifest`, updates its checksum too.
fn tamper(archive: &[u8], member: &str, f: impl Fn(&str) -> String, fix_manifest: bool) -> Vec<u8> {
    let mut members = unpack(archive);
    let mut new_sha = None;
    for (p, d) in members.iter_mut() {
        if p == member {
            *d = f(&String::from_utf8(d.clone()).unwrap()).into_bytes();
            new_sha = Some(sha256_hex(d));
        }
    }
    assert!(new_sha.is_some(), "no member {member}");
    if fix_manifest {
        for (p, d) in members.iter_mut() {
            if p == "manifest.json" {
                let mut m: Value = serde_json::from_slice(d).unwrap();
                for file in m["files"].as_array_mut().unwrap() {
                    if file["path"] == member {
                        file["sha256"] = json!(new_sha.clone().unwrap());
                    }
                }
                *d = serde_json::to_vec(&m).unwrap();
            }
        }
    }
    pack(&members)
}

async fn account_round_trip(backend: Backend) {
    let a = TestInstance::start(backend).await;
    let b = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (a_owner, a_token) = a.user("owner1").await;
    a.user("other1").await;
    let (_, repo, fan) = registry_repo_unit(&a, &a_token, &firmware, "fan", "Public").await;
    let (s, lamp) = a
        .post(
            "/units",
            Some(&a_token),
            json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": "lamp_unit", "is_auto_update_from_repo_unit": true}),
        )
        .await;
    assert_eq!(s, 201, "{lamp}");
    let fan_uuid = fan["uuid"].as_str().unwrap().to_string();
    let lamp_uuid = lamp["uuid"].as_str().unwrap().to_string();
    // env, state storage, an edge, a grant to another user, logs
    let (s, v) = a
        .patch(
            &format!("/units/env/{fan_uuid}"),
            Some(&a_token),
            json!({"env_json_string": "{\"WIFI_SSID\": \"home\", \"WIFI_PASS\": \"secret-pass\", \"SENSOR_PERIOD\": 7}"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let fan_token = unit_token(&a, fan_uuid.as_str());
    let (s, v) = a
        .post(
            &format!("/units/set_state_storage/{fan_uuid}"),
            Some(&fan_token),
            json!({"state": "{\"counter\": 41}"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = a
        .patch(
            &format!("/units/alerts/{fan_uuid}"),
            Some(&a_token),
            json!({"alert_log_level": "Warning", "mute_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let node = |unit: &str, ty: &str| {
        let unit = unit.to_string();
        let ty = ty.to_string();
        let a = &a;
        let t = a_token.clone();
        async move {
            let (_, l) = a
                .get(&format!("/unit_nodes?unit_uuid={unit}&type={ty}"), Some(&t))
                .await;
            l["unit_nodes"][0]["uuid"].as_str().unwrap().to_string()
        }
    };
    let out = node(&fan_uuid, "Output").await;
    let inp = node(&lamp_uuid, "Input").await;
    let (s, v) = a
        .post(
            "/unit_nodes/create_unit_node_edge",
            Some(&a_token),
            json!({"node_output_uuid": out, "node_input_uuid": inp}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let other_uuid =
        a.get("/users?search_string=other1", Some(&a_token)).await.1["users"][0]["uuid"].clone();
    let (s, v) = a
        .post(
            "/permission",
            Some(&a_token),
            json!({"agent_uuid": other_uuid, "agent_type": "User", "resource_uuid": fan_uuid, "resource_type": "Unit"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let now = chrono::Utc::now().naive_utc();
    let logs: Vec<_> = (0..25)
        .map(|i| pepeunit::store::unit_logs::NewUnitLog {
            uuid: uuid::Uuid::new_v4(),
            unit_uuid: fan_uuid.parse().unwrap(),
            level: if i % 5 == 0 {
                pepeunit::domain::LogLevel::Error
            } else {
                pepeunit::domain::LogLevel::Info
            },
            text: format!("line {i}"),
            create_datetime: pepeunit::domain::format_time(now + chrono::Duration::milliseconds(i)),
            expiration_datetime: pepeunit::domain::format_time(now + chrono::Duration::hours(1)),
        })
        .collect();
    instance(&a).store_unit_logs(logs).await.unwrap();

    // options are checked before anything streams
    let (s, _) = export(&a, &a_token, json!({"include_credentials": true})).await;
    assert_eq!(s, 422);
    let (s, _) = export(&a, &a_token, json!({"passphrase": "short"})).await;
    assert_eq!(s, 422);
    let (s, archive) = export(&a, &a_token, json!({"passphrase": PASS})).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&archive));
    let members = unpack(&archive);
    assert_eq!(members.last().unwrap().0, "manifest.json");
    let manifest: Value = serde_json::from_slice(&members.last().unwrap().1).unwrap();
    assert_eq!(manifest["format"], "pepeunit-account-export");
    assert_eq!(manifest["version"], 2, "version 2: with the dashboards");
    assert!(manifest["mac"].is_string());

    // import into B
    let (b_owner, b_token) = b.user("newowner").await;
    let before = snapshot(instance(&b)).await;
    // broken and tampered archives change nothing
    let (s, v) = import(&b, &b_token, b"not an archive at all".to_vec(), Some(PASS)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("not a tar.gz"),
        "{v}"
    );
    let bad = tamper(
        &archive,
        "units.jsonl",
        |t| t.replace("lamp_unit", "lamp_unix"),
        false,
    );
    let (s, v) = import(&b, &b_token, bad, Some(PASS)).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("sha256"), "{v}");
    // checksums fixed too: the passphrase MAC over the manifest catches it
    let bad = tamper(
        &archive,
        "units.jsonl",
        |t| t.replace("lamp_unit", "lamp_unix"),
        true,
    );
    let (s, v) = import(&b, &b_token, bad, Some(PASS)).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("passphrase"), "{v}");
    let (s, v) = import(&b, &b_token, archive.clone(), Some("wrong passphrase!")).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = import(&b, &b_token, archive.clone(), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("passphrase"), "{v}");
    // a truncated download
    let (s, v) = import(
        &b,
        &b_token,
        archive[..archive.len() / 2].to_vec(),
        Some(PASS),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(counts(&snapshot(instance(&b)).await), counts(&before));

    let (s, report) = import(&b, &b_token, archive.clone(), Some(PASS)).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["user_uuid"], b_owner);
    assert_eq!(report["source"], a.domain);
    assert_eq!(report["created"]["units"], 2, "{report}");
    assert_eq!(report["created"]["unit_logs"], 25, "{report}");
    assert_eq!(report["created"]["unit_node_edges"], 1, "{report}");
    assert_eq!(report["remapped"], json!([]), "{report}");
    assert_eq!(report["renamed"], json!([]), "{report}");
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        skipped.iter().any(|s| s["table"] == "permissions"
            && s["reason"].as_str().unwrap().contains("another user")),
        "{report}"
    );

    // field by field: every exported row of A is in B, owner swapped
    let sa = snapshot(instance(&a)).await;
    let sb = snapshot(instance(&b)).await;
    let mut compared = 0;
    for t in TABLES {
        if t.name == "users" {
            continue;
        }
        for (uuid, ra) in &sa[t.name] {
            let mine = ra.values().any(|v| v.as_str() == Some(a_owner.as_str()))
                || t.name == "unit_logs"
                || (t.name == "unit_nodes"
                    && ra["unit_uuid"]
                        .as_str()
                        .map(|u| u == fan_uuid || u == lamp_uuid)
                        == Some(true))
                || t.name == "repository_registries";
            let Some(rb) = sb[t.name].get(uuid) else {
                assert!(
                    !mine || t.name == "permissions",
                    "{} {uuid} missing on B: {ra:?}",
                    t.name
                );
                continue;
            };
            for (col, va) in ra {
                let vb = &rb[col];
                if va.as_str() == Some(a_owner.as_str()) {
                    assert_eq!(vb.as_str(), Some(b_owner.as_str()), "{}.{col}", t.name);
                } else if col == "cipher_env" && va.is_string() {
                    // the same env, except the keys that name the instance: they name B now
                    let mut ea: Value = serde_json::from_str(va.as_str().unwrap()).unwrap();
                    let mut eb: Value = serde_json::from_str(vb.as_str().unwrap()).unwrap();
                    assert_eq!(eb["PU_DOMAIN"], b.domain);
                    for k in pepeunit::service::unit_files::INSTANCE_ENV_KEYS {
                        ea.as_object_mut().unwrap().remove(*k);
                        eb.as_object_mut().unwrap().remove(*k);
                    }
                    assert_eq!(ea, eb, "env of {uuid}");
                } else {
                    assert_eq!(va, vb, "{}.{col} of {uuid}", t.name);
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 200, "compared only {compared} fields");
    // the device's secrets came along: the same env and state storage on B
    let b_env = instance(&b)
        .cipher
        .decrypt(sb["units"][&fan_uuid]["cipher_env"].as_str().unwrap());
    assert!(b_env.is_err(), "snapshot already decrypted");
    assert!(sb["units"][&fan_uuid]["cipher_env"]
        .as_str()
        .unwrap()
        .contains("secret-pass"));
    assert_eq!(
        sb["units"][&fan_uuid]["cipher_state_storage"],
        json!("{\"counter\": 41}")
    );
    assert_eq!(sb["units"][&fan_uuid]["alert_log_level"], "Warning");
    assert!(sb["units"][&fan_uuid]["alerts_muted_until"].is_string());
    // and B serves them once it has cloned the registry the import created
    let registry = sb["repository_registries"].keys().next().unwrap().clone();
    let mut synced = false;
    for _ in 0..200 {
        let (_, r) = b
            .get(&format!("/repository_registry/{registry}"), Some(&b_token))
            .await;
        if r["sync_status"] == "Updated" {
            synced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(synced, "B never cloned the imported registry");
    let (s, env) = b
        .get(&format!("/units/env/{fan_uuid}"), Some(&b_token))
        .await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["WIFI_PASS"], "secret-pass");
    assert_eq!(env["PU_DOMAIN"], b.domain);

    // importing again: everything is taken now, so it is remapped, renamed and reused
    let (s, again) = import(&b, &b_token, archive.clone(), Some(PASS)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["reused"].as_array().unwrap().len(), 1, "{again}");
    assert!(
        again["remapped"].as_array().unwrap().len() >= 2 + 8 + 25,
        "{again}"
    );
    let renamed: Vec<_> = again["renamed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["to"].as_str().unwrap().to_string())
        .collect();
    assert!(renamed.contains(&"lamp_unit-2".to_string()), "{again}");
    // the copy's edge links the copies' nodes
    let sb2 = snapshot(instance(&b)).await;
    assert_eq!(sb2["unit_node_edges"].len(), 2);
    for e in sb2["unit_node_edges"].values() {
        let o = &sb2["unit_nodes"][e["node_output_uuid"].as_str().unwrap()];
        let i = &sb2["unit_nodes"][e["node_input_uuid"].as_str().unwrap()];
        let ou = &sb2["units"][o["unit_uuid"].as_str().unwrap()];
        let iu = &sb2["units"][i["unit_uuid"].as_str().unwrap()];
        assert_eq!(
            ou["name"].as_str().unwrap().ends_with("-2"),
            iu["name"].as_str().unwrap().ends_with("-2"),
            "an edge crosses between original and copy"
        );
    }

    // without a passphrase the secrets stay home
    let (s, plain) = export(&a, &a_token, json!({})).await;
    assert_eq!(s, 200);
    let m: Value = serde_json::from_slice(&unpack(&plain).last().unwrap().1).unwrap();
    assert_eq!(m["sealed"], Value::Null);
    let units = unpack(&plain)
        .into_iter()
        .find(|(p, _)| p == "units.jsonl")
        .unwrap()
        .1;
    assert!(!String::from_utf8_lossy(&units).contains("cipher_env\":\""));
    // a consistent edit of an unsealed archive still has to be valid data
    let before_bad = snapshot(instance(&b)).await;
    let bad = tamper(
        &plain,
        "units.jsonl",
        |t| t.replace("\"Private\"", "\"Secret\""),
        true,
    );
    let (s, v) = import(&b, &b_token, bad, None).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("visibility_level"),
        "{v}"
    );
    // names follow the rules of the REST API (a non-ASCII name once panicked the renaming)
    let bad = tamper(
        &plain,
        "units.jsonl",
        |t| t.replace("lamp_unit", "lamp_unité"),
        true,
    );
    let (s, v) = import(&b, &b_token, bad, None).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("not a valid name"),
        "{v}"
    );
    // one member listed twice in the manifest (parsed twice: a cheap memory bomb)
    let mut members = unpack(&plain);
    for (p, d) in members.iter_mut() {
        if p == "manifest.json" {
            let mut m: Value = serde_json::from_slice(d).unwrap();
            let files = m["files"].as_array_mut().unwrap();
            let first = files[0].clone();
            files.push(first);
            *d = serde_json::to_vec(&m).unwrap();
        }
    }
    let (s, v) = import(&b, &b_token, pack(&members), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("listed twice"),
        "{v}"
    );
    assert_eq!(
        counts(&snapshot(instance(&b)).await),
        counts(&before_bad),
        "refused archives leave nothing"
    );

    a.stop().await;
    b.stop().await;
}

both_backends!(account_round_trip);

/// The CLI writes the same archive with progress, and reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_export_import() {
    let a = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = a.user("owner1").await;
    registry_repo_unit(&a, &token, &firmware, "fan", "Public").await;
    a.user("second").await;
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{PASS}\n")).unwrap();
    let out = dir.path().join("owner1.tar.gz");
    // the CLI works on a stopped instance (a running one holds the hub index)
    let mut a = a;
    let running = a.running.take().unwrap();
    running.stop().await.unwrap();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap());
        for (k, v) in [
            ("PU_DATA_DIR", a.data.path().display().to_string()),
            ("PU_DOMAIN", a.domain.clone()),
            ("PU_HTTP_BIND", a.config.http_bind.to_string()),
        ] {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let o = run(&[
        "export",
        "--login",
        "owner1",
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("units"), "progress shown: {stderr}");
    assert!(stderr.contains("exported"), "{stderr}");
    // into another account of the same instance: uuids and names are taken, all remapped
    let o = run(&[
        "import",
        "--login",
        "second",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["created"]["units"], 1, "{report}");
    assert_eq!(report["renamed"][0]["to"], "fan_repo-2", "{report}");
    assert_eq!(report["renamed"][1]["to"], "fan_unit-2", "{report}");
    assert_eq!(report["reused"].as_array().unwrap().len(), 1, "{report}");
    // an unknown login is a clear error
    let o = run(&["import", "--login", "nobody", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nobody"));
    a.restart(std::time::Duration::ZERO).await;
    let (s, units) = a.get("/units?search_string=fan_unit", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(units["count"], 2, "{units}");
    a.stop().await;
}

/// An archive cannot give access to a private registry that already exists here: the import
/// is refused until the importing account has its own valid credentials for it. Credentials
/// that come with an archive are checked against the remote, not taken on its word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_cannot_grant_a_private_registry() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let firmware = FirmwareRepo::create().await;
    let (_, alice) = inst.user("alice1").await;
    let (s, registry) = inst
        .post(
            "/repository_registry",
            Some(&alice),
            json!({"platform": "Gitlab", "repository_url": firmware.url(), "is_public_repository": false,
                   "credentials": {"username": "alice", "pat_token": "token-of-alice"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{registry}");
    let registry_uuid = registry["uuid"].as_str().unwrap().to_string();
    let (s, repo) = inst
        .post(
            "/repos",
            Some(&alice),
            json!({"repository_registry_uuid": registry_uuid, "default_branch": "main", "visibility_level": "Public", "name": "secret_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{repo}");
    let (s, archive) = export(&inst, &alice, json!({})).await;
    assert_eq!(s, 200);

    // carol has no credentials for alice's private registry: refused, nothing written
    let (_, carol) = inst.user("carol1").await;
    let (s, v) = import(&inst, &carol, archive.clone(), None).await;
    assert_eq!(s, 422, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("is private here"), "{v}");
    assert!(detail.contains(&firmware.url()), "{v}");
    let (_, repos) = inst
        .get("/repos?search_string=secret_repo", Some(&carol))
        .await;
    assert_eq!(repos["count"], 1, "only alice's: {repos}");

    // with her own credentials (checked against the remote) the same archive imports
    let (s, v) = inst
        .call(
            "PATCH",
            &format!("/repository_registry/set_credentials/{registry_uuid}"),
            Some(&carol),
            Some(json!({"username": "carol", "pat_token": "token-of-carol"})),
        )
        .await;
    assert_eq!(s.as_u16(), 204, "{v}");
    let (s, report) = import(&inst, &carol, archive, None).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        report["reused"][0]["repository_url"],
        firmware.url(),
        "{report}"
    );
    assert_eq!(report["renamed"][0]["to"], "secret_repo-2", "{report}");
    inst.stop().await;
}
