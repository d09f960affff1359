//! The archive format (docs/EXPORT-FORMAT.md): a gzip-compressed tar of `.jsonl` members and
//! `manifest.json`, written member by member (each member's table, record count, size and
//! sha256 go into the manifest), read back with caps on size and member count; and the record
//! form of a log line.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::export::ExportSummary;
use crate::domain;
use crate::error::{AppError, AppResult};
use crate::store::transfer::Table;
use crate::store::unit_logs::{NewUnitLog, UnitLog};

/// `format` of the manifest.
pub const FORMAT: &str = "pepeunit-account-export";
/// Manifest version this build writes for an account; import accepts versions up to it.
/// Version 2 added the dashboards (an instance that reads only version 1 refuses such an
/// archive by its version, not as broken).
pub const VERSION: u64 = 2;
/// What a Unit move writes: its tables are version 1's, so older peers still take it.
pub const UNIT_VERSION: u64 = 1;
/// Log records per `unit_logs/NNNNNN.jsonl` member.
pub(super) const LOG_CHUNK: i64 = 20_000;
pub(super) const MAX_MEMBERS: usize = 100_000;

/// A tar.gz written member by member; each call hands back the compressed bytes so far.
pub(super) struct TarGz {
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    pub(super) written: u64,
}

impl TarGz {
    pub(super) fn new() -> Self {
        TarGz {
            tar: tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::new(6))),
            written: 0,
        }
    }

    pub(super) fn add(&mut self, path: &str, data: &[u8]) -> std::io::Result<Bytes> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, path, data)?;
        Ok(self.drain())
    }

    fn drain(&mut self) -> Bytes {
        let out = std::mem::take(self.tar.get_mut().get_mut());
        self.written += out.len() as u64;
        Bytes::from(out)
    }

    pub(super) fn finish(mut self) -> std::io::Result<(Bytes, u64)> {
        self.tar.finish()?;
        let gz = self.tar.into_inner()?;
        let rest = gz.finish()?;
        self.written += rest.len() as u64;
        Ok((Bytes::from(rest), self.written))
    }
}

/// Writes `.jsonl` members into the archive and the chunks to the receiver, recording each
/// member for the manifest.
pub(super) struct MemberWriter {
    pub(super) tar: TarGz,
    pub(super) files: Vec<Value>,
    pub(super) out: mpsc::Sender<Bytes>,
}

impl MemberWriter {
    /// `false` when the receiver is gone (the download was abandoned).
    pub(super) async fn write(
        &mut self,
        table: &Table,
        path: &str,
        records: &[Map<String, Value>],
    ) -> AppResult<bool> {
        let data = jsonl(records);
        self.files.push(json!({
            "path": path,
            "table": table.name,
            "records": records.len(),
            "bytes": data.len(),
            "sha256": sha256_hex(&data),
        }));
        let bytes = self.tar.add(path, &data).map_err(io_err)?;
        Ok(self.out.send(bytes).await.is_ok())
    }

    pub(super) fn summary(&self, records: BTreeMap<String, usize>) -> ExportSummary {
        ExportSummary {
            records,
            bytes: self.tar.written,
        }
    }
}

pub(super) fn io_err(e: std::io::Error) -> AppError {
    AppError::internal(format!("archive: {e}"))
}

/// A log line as an archive record (the columns of `tables::LOGS`).
pub(super) fn log_record(l: &UnitLog) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), Value::String(l.uuid.to_string()));
    m.insert("unit_uuid".into(), Value::String(l.unit_uuid.to_string()));
    m.insert("level".into(), Value::String(l.level.as_str().into()));
    m.insert("text".into(), Value::String(l.text.clone()));
    m.insert(
        "create_datetime".into(),
        Value::String(l.create_datetime.clone()),
    );
    m.insert(
        "expiration_datetime".into(),
        Value::String(l.expiration_datetime.clone()),
    );
    m
}

/// An archive record (checked against `tables::LOGS`) as a line to store.
pub(super) fn new_log(rec: &Map<String, Value>) -> AppResult<NewUnitLog> {
    let text = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or_default();
    let bad = |k: &str| AppError::transfer(format!("unit_logs: invalid {k}"));
    Ok(NewUnitLog {
        uuid: text("uuid").parse().map_err(|_| bad("uuid"))?,
        unit_uuid: text("unit_uuid").parse().map_err(|_| bad("unit_uuid"))?,
        level: text("level").parse().map_err(|_| bad("level"))?,
        text: text("text").to_string(),
        // normalised to the stored format (archives may carry fewer fraction digits)
        create_datetime: domain::parse_time(text("create_datetime"))
            .map(domain::format_time)
            .ok_or_else(|| bad("create_datetime"))?,
        expiration_datetime: domain::parse_time(text("expiration_datetime"))
            .map(domain::format_time)
            .ok_or_else(|| bad("expiration_datetime"))?,
    })
}

fn jsonl(records: &[Map<String, Value>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("JSON of JSON");
        out.push(b'\n');
    }
    out
}

/// The hex sha256 the manifest records for a member.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    crate::crypto::hex(&Sha256::digest(data))
}

pub(super) fn broken(msg: impl Into<String>) -> AppError {
    AppError::transfer(format!(
        "The archive is broken or tampered with: {}",
        msg.into()
    ))
}

/// The archive unpacks into more than the instance accepts.
pub(super) fn too_large(max_bytes: u64) -> AppError {
    AppError::transfer(format!(
        "The archive is larger than PU_IMPORT_MAX_BYTES ({max_bytes} bytes unpacked)"
    ))
}

/// The members of a tar.gz archive by path: regular files only, each once, at most
/// `MAX_MEMBERS`, at most `max_bytes` unpacked (blocking).
pub(super) fn read_members(bytes: &[u8], max_bytes: u64) -> AppResult<HashMap<String, Vec<u8>>> {
    let mut members: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    // every byte read out of the gzip stream counts, tar headers and PAX/GNU extensions
    // included (their sizes are not in `header().size()`): a small upload cannot unpack into
    // more than the cap
    let limit = max_bytes.saturating_add(MAX_MEMBERS as u64 * 2048 + 1024 * 1024);
    let mut archive = tar::Archive::new(GzDecoder::new(bytes).take(limit));
    let entries = archive
        .entries()
        .map_err(|e| broken(format!("not a tar.gz archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| broken(format!("not a tar.gz archive ({e})")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(broken("it holds something other than regular files"));
        }
        let path = entry
            .path()
            .map_err(|e| broken(e.to_string()))?
            .to_string_lossy()
            .to_string();
        if members.len() >= MAX_MEMBERS {
            return Err(broken(format!("more than {MAX_MEMBERS} members")));
        }
        // `Entry::size` honours a PAX size override, which the header's field does not show
        let size = entry.size();
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(too_large(max_bytes));
        }
        let mut data = Vec::with_capacity(size.min(1024 * 1024) as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| broken(format!("member {path} cannot be read ({e})")))?;
        if members.insert(path.clone(), data).is_some() {
            return Err(broken(format!("member {path} appears twice")));
        }
    }
    Ok(members)
}

/// Writes a whole archive to a `Vec` (tests, moves).
pub async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.write_all(&b).expect("Vec write");
    }
    out
}
