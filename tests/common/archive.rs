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
