//! Account archives taken apart and put back together (tar.gz members), for tests that
//! tamper with them.

use std::io::{Read, Write};

use serde_json::Value;

use super::TestInstance;

/// Unpacks an archive into (path, bytes) members.
pub fn unpack(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            (p, d)
        })
        .collect()
}

pub fn pack(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (p, d) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, p, d.as_slice()).unwrap();
    }
    let mut gz = b.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

pub fn sha256_hex(d: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /users/export` as `token`: status and the archive.
pub async fn export(inst: &TestInstance, token: &str, body: Value) -> (u16, Vec<u8>) {
    let res = inst
        .http
        .post(inst.url("/users/export"))
        .header("x-auth-token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

/// `POST /users/import` of `archive` as `token`: status and the answer. Each import on a new
/// connection: under load, CI once saw an import fail with IncompleteMessage, most likely a
/// pooled connection the server had just closed (it closes after refusing an oversized
/// archive without reading the rest), reused in that moment.
pub async fn import(
    inst: &TestInstance,
    token: &str,
    archive: Vec<u8>,
    passphrase: Option<&str>,
) -> (u16, Value) {
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut req = fresh
        .post(inst.url("/users/import"))
        .header("x-auth-token", token)
        .header("content-type", "application/gzip")
        .body(archive);
    if let Some(p) = passphrase {
        req = req.header("x-passphrase", p);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `archive` (one without a passphrase: no MAC to renew) with `per_unit` generated log lines
/// for each of `units` in place of its own, in members of 20,000 lines as export writes them,
/// and the manifest entries to match.
pub fn with_log_lines(archive: &[u8], units: &[String], per_unit: usize) -> Vec<u8> {
    let mut members: Vec<(String, Vec<u8>)> = unpack(archive)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("unit_logs/"))
        .collect();
    let manifest_at = members
        .iter()
        .position(|(p, _)| p == "manifest.json")
        .expect("a manifest");
    let (_, raw) = members.remove(manifest_at);
    let mut manifest: Value = serde_json::from_slice(&raw).unwrap();
    let files = manifest["files"].as_array_mut().unwrap();
    files.retain(|f| f["table"] != "unit_logs");
    let start = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for unit in units {
        for i in 0..per_unit {
            let at = start + chrono::Duration::microseconds(i as i64);
            let line = serde_json::json!({
                "uuid": uuid::Uuid::new_v4(),
                "unit_uuid": unit,
                "level": "Info",
                "text": format!("imported line {i}"),
                "create_datetime": at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
                "expiration_datetime": "2099-01-01T00:00:00.000000",
            });
            lines.push(serde_json::to_vec(&line).unwrap());
        }
    }
    for (n, chunk) in lines.chunks(20_000).enumerate() {
        let path = format!("unit_logs/{:06}.jsonl", n + 1);
        let data: Vec<u8> = chunk
            .iter()
            .flat_map(|l| [&l[..], b"\n"].concat())
            .collect();
        files.push(serde_json::json!({
            "path": path,
            "table": "unit_logs",
            "records": chunk.len(),
            "bytes": data.len(),
            "sha256": sha256_hex(&data),
        }));
        members.push((path, data));
    }
    members.push((
        "manifest.json".to_string(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    pack(&members)
}

/// Records per table of an archive, from its members (the user record included).
pub fn record_counts(archive: &[u8]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (path, data) in unpack(archive) {
        let Some(stem) = path.strip_suffix(".jsonl") else {
            continue;
        };
        let table = match stem.split_once('/') {
            Some((dir, _)) => dir.to_string(),
            None if stem == "user" => "users".to_string(),
            None => stem.to_string(),
        };
        let n = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        *counts.entry(table).or_insert(0) += n;
    }
    counts
}
