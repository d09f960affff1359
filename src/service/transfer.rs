//! Account export and import (SPEC §11): one gzip-compressed tar archive of a user's data,
//! described by a versioned manifest (docs/EXPORT-FORMAT.md). Export streams: members are
//! written as they are read, logs in chunks, so memory stays bounded. Import checks the whole
//! archive (member list, sha256 of every member, the passphrase MAC, every field of every
//! record, every reference) before it writes anything, then writes everything in one
//! transaction: a broken or tampered archive changes nothing.
//!
//! The same code moves one Unit between instances (`ExportScope::Unit`, see `moves.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::crypto::Cipher;
use crate::domain::{self, CredentialStatus};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::transfer::{self as tables, Table};
use crate::store::unit_logs::{NewUnitLog, UnitLog};
use crate::store::Sql;

/// `format` of the manifest.
pub const FORMAT: &str = "pepeunit-account-export";
/// Manifest version this build writes; import accepts versions up to it.
pub const VERSION: u64 = 1;
/// Log records per `unit_logs/NNNNNN.jsonl` member.
const LOG_CHUNK: i64 = 20_000;
const KDF_ITERATIONS: u32 = 200_000;
const MIN_PASSPHRASE: usize = 8;
const MAX_MEMBERS: usize = 100_000;

/// What to export.
#[derive(Clone, Copy, Debug)]
pub enum ExportScope {
    /// Everything a user owns.
    Account(Uuid),
    /// One Unit with its nodes, repo and registry (what a move carries).
    Unit(Uuid),
}

/// `POST /users/export` body.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    /// Seals unit env, state storage and (when asked) registry credentials; at least 8
    /// characters. Without it those are left out.
    #[serde(default)]
    #[schema(min_length = 8)]
    pub passphrase: Option<String>,
    /// Include private registry credentials (requires `passphrase`).
    #[serde(default)]
    pub include_credentials: bool,
}

/// Progress of a long export or import, for the CLI.
#[derive(Clone, Debug)]
pub struct Progress {
    pub table: &'static str,
    pub records: usize,
}

/// What one export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub records: BTreeMap<String, usize>,
    pub bytes: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    /// Login and uuid of the account the data now belongs to.
    pub user_uuid: Uuid,
    /// Instance the archive came from.
    pub source: String,
    /// Rows created, per table.
    pub created: BTreeMap<String, usize>,
    /// Rows whose uuid was taken here and got a new one.
    pub remapped: Vec<Remapped>,
    /// Repos and Units whose name was taken here.
    pub renamed: Vec<Renamed>,
    /// Registries that already existed here (same URL) and were used instead.
    pub reused: Vec<Reused>,
    /// Rows not imported, with the reason.
    pub skipped: Vec<Skipped>,
    /// Every old uuid to its uuid here (unchanged ones included).
    #[serde(skip)]
    pub map: HashMap<String, String>,
    /// Registries created by the import (their mirrors still have to be cloned).
    #[serde(skip)]
    pub new_registries: Vec<Uuid>,
    /// Registries whose imported credentials wait for their check against the remote.
    #[serde(skip)]
    pub credentials_to_check: Vec<Uuid>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Remapped {
    pub table: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Renamed {
    pub table: String,
    pub uuid: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Reused {
    pub table: String,
    pub from: String,
    pub to: String,
    pub repository_url: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Skipped {
    pub table: String,
    pub uuid: String,
    pub reason: String,
}

/// Keys derived from the passphrase: AES-256-GCM for sealed fields, HMAC for the manifest.
struct Sealer {
    cipher: Cipher,
    mac_key: [u8; 32],
}

impl Sealer {
    fn new(passphrase: &str, salt: &[u8]) -> Sealer {
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, KDF_ITERATIONS, &mut out);
        let mut enc = [0u8; 32];
        enc.copy_from_slice(&out[..32]);
        let mut mac_key = [0u8; 32];
        mac_key.copy_from_slice(&out[32..]);
        Sealer {
            cipher: Cipher::new(&enc),
            mac_key,
        }
    }

    fn mac(&self, manifest: &Value) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(manifest.to_string().as_bytes());
        B64.encode(m.finalize().into_bytes())
    }

    fn verify(&self, manifest: &Value, mac: &str) -> bool {
        let Ok(raw) = B64.decode(mac) else {
            return false;
        };
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(manifest.to_string().as_bytes());
        m.verify_slice(&raw).is_ok()
    }
}

/// A tar.gz written member by member; each call hands back the compressed bytes so far.
struct TarGz {
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    written: u64,
}

impl TarGz {
    fn new() -> Self {
        TarGz {
            tar: tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::new(6))),
            written: 0,
        }
    }

    fn add(&mut self, path: &str, data: &[u8]) -> std::io::Result<Bytes> {
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

    fn finish(mut self) -> std::io::Result<(Bytes, u64)> {
        self.tar.finish()?;
        let gz = self.tar.into_inner()?;
        let rest = gz.finish()?;
        self.written += rest.len() as u64;
        Ok((Bytes::from(rest), self.written))
    }
}

/// Writes `.jsonl` members into the archive and the chunks to the receiver, recording each
/// member for the manifest.
struct MemberWriter {
    tar: TarGz,
    files: Vec<Value>,
    out: mpsc::Sender<Bytes>,
}

impl MemberWriter {
    /// `false` when the receiver is gone (the download was abandoned).
    async fn write(
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
            "sha256": crate::crypto::hex(&Sha256::digest(&data)),
        }));
        let bytes = self.tar.add(path, &data).map_err(io_err)?;
        Ok(self.out.send(bytes).await.is_ok())
    }

    fn summary(&self, records: BTreeMap<String, usize>) -> ExportSummary {
        ExportSummary {
            records,
            bytes: self.tar.written,
        }
    }
}

fn io_err(e: std::io::Error) -> AppError {
    AppError::internal(format!("archive: {e}"))
}

/// `WHERE` condition selecting the rows of `table` in `scope`; `None`: not exported.
fn condition(table: &Table, scope: ExportScope, owner: Uuid, credentials: bool) -> Option<Sql> {
    let mut q = Sql::new("");
    match scope {
        ExportScope::Account(u) => {
            let units = |q: &mut Sql| {
                q.push("(SELECT uuid FROM units WHERE creator_uuid = ")
                    .bind(u)
                    .push(")");
            };
            let nodes = |q: &mut Sql| {
                q.push("(SELECT n.uuid FROM unit_nodes n JOIN units x ON x.uuid = n.unit_uuid WHERE x.creator_uuid = ")
                    .bind(u)
                    .push(")");
            };
            match table.name {
                "users" => {
                    q.push("uuid = ").bind(u);
                }
                "repository_registries" => {
                    q.push("uuid IN (SELECT repository_registry_uuid FROM repos WHERE creator_uuid = ")
                        .bind(u)
                        .push(") OR uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.creator_uuid = ")
                        .bind(u)
                        .push(") OR creator_uuid = ")
                        .bind(u);
                }
                "registry_credentials" if credentials => {
                    q.push("user_uuid = ").bind(u);
                }
                "registry_credentials" => return None,
                "repos" => {
                    q.push("creator_uuid = ")
                        .bind(u)
                        .push(" OR uuid IN (SELECT repo_uuid FROM units WHERE creator_uuid = ")
                        .bind(u)
                        .push(")");
                }
                "units" => {
                    q.push("creator_uuid = ").bind(u);
                }
                "unit_nodes" => {
                    q.push("unit_uuid IN ");
                    units(&mut q);
                }
                "unit_node_edges" => {
                    q.push("node_output_uuid IN ");
                    nodes(&mut q);
                    q.push(" OR node_input_uuid IN ");
                    nodes(&mut q);
                }
                "permissions" => {
                    q.push("agent_uuid = ").bind(u).push(" OR agent_uuid IN ");
                    units(&mut q);
                    q.push(" OR resource_uuid IN ");
                    units(&mut q);
                    q.push(" OR resource_uuid IN ");
                    nodes(&mut q);
                    q.push(" OR resource_uuid IN (SELECT uuid FROM repos WHERE creator_uuid = ")
                        .bind(u)
                        .push(")");
                }
                // read unit by unit through the telemetry store, not with this condition
                "unit_logs" => {}
                _ => return None,
            }
        }
        ExportScope::Unit(x) => match table.name {
            "users" => {
                q.push("uuid = ").bind(owner);
            }
            "repository_registries" => {
                q.push("uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.uuid = ")
                    .bind(x)
                    .push(")");
            }
            "registry_credentials" if credentials => {
                q.push("user_uuid = ")
                    .bind(owner)
                    .push(" AND repository_registry_uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.uuid = ")
                    .bind(x)
                    .push(")");
            }
            "registry_credentials" => return None,
            "repos" => {
                q.push("uuid IN (SELECT repo_uuid FROM units WHERE uuid = ")
                    .bind(x)
                    .push(")");
            }
            "units" => {
                q.push("uuid = ").bind(x);
            }
            "unit_nodes" => {
                q.push("unit_uuid = ").bind(x);
            }
            "unit_node_edges" => {
                q.push("node_output_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ")
                    .bind(x)
                    .push(
                        ") AND node_input_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ",
                    )
                    .bind(x)
                    .push(")");
            }
            "permissions" => {
                q.push("(agent_uuid = ")
                    .bind(owner)
                    .push(" OR agent_uuid = ")
                    .bind(x)
                    .push(") AND (resource_uuid = ")
                    .bind(x)
                    .push(" OR resource_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ")
                    .bind(x)
                    .push(") OR resource_uuid IN (SELECT repo_uuid FROM units WHERE uuid = ")
                    .bind(x)
                    .push("))");
            }
            // a move carries the device, not its history: the logs stay until they expire
            _ => return None,
        },
    }
    Some(q)
}

/// Fields sealed with the passphrase (left out without one).
fn sealed_fields(table: &Table) -> &'static [&'static str] {
    match table.name {
        "units" => &["cipher_env", "cipher_state_storage"],
        "registry_credentials" => &["cipher_credentials"],
        _ => &[],
    }
}

/// A log line as an archive record (the columns of `tables::LOGS`).
fn log_record(l: &UnitLog) -> Map<String, Value> {
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
fn new_log(rec: &Map<String, Value>) -> AppResult<NewUnitLog> {
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

impl Instance {
    /// Checks export options before anything streams (so errors are proper 422s).
    pub fn check_export_options(&self, opts: &ExportOptions) -> AppResult<()> {
        if let Some(p) = &opts.passphrase {
            if p.chars().count() < MIN_PASSPHRASE {
                return Err(AppError::transfer(format!(
                    "The passphrase must have at least {MIN_PASSPHRASE} characters"
                )));
            }
        }
        if opts.include_credentials && opts.passphrase.is_none() {
            return Err(AppError::transfer(
                "Registry credentials are only exported sealed: give a passphrase",
            ));
        }
        Ok(())
    }

    /// The account of the calling user, for `POST /users/export`.
    pub fn export_scope_of(&self, agent: &Agent) -> AppResult<ExportScope> {
        Ok(ExportScope::Account(agent.user()?.uuid))
    }

    /// Writes the archive of `scope` into `out`, chunk by chunk. Stops early (Ok) when the
    /// receiver is gone.
    pub async fn export_archive(
        &self,
        scope: ExportScope,
        opts: &ExportOptions,
        out: mpsc::Sender<Bytes>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ExportSummary> {
        self.check_export_options(opts)?;
        let owner = match scope {
            ExportScope::Account(u) => u,
            ExportScope::Unit(x) => self.unit(x).await?.creator_uuid,
        };
        let user = crate::store::users::get(self.pool(), owner)
            .await?
            .ok_or_else(AppError::not_found)?;
        let (sealer, salt) = match &opts.passphrase {
            Some(p) => {
                let mut salt = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let s = salt.to_vec();
                let p = p.clone();
                let sealer = tokio::task::spawn_blocking(move || Sealer::new(&p, &s))
                    .await
                    .map_err(AppError::internal)?;
                (Some(sealer), Some(salt))
            }
            None => (None, None),
        };
        let mut w = MemberWriter {
            tar: TarGz::new(),
            files: Vec::new(),
            out,
        };
        let mut counts = BTreeMap::new();
        let mut unit_uuids: Vec<String> = Vec::new();
        let seal = |table: &Table, rec: &mut Map<String, Value>| -> AppResult<()> {
            for field in sealed_fields(table) {
                let stored = rec.get(*field).and_then(Value::as_str).map(str::to_string);
                let sealed = match (&sealer, stored) {
                    (Some(s), Some(v)) => {
                        Value::String(s.cipher.encrypt(&self.cipher.decrypt(&v)?)?)
                    }
                    _ => Value::Null,
                };
                rec.insert(field.to_string(), sealed);
            }
            Ok(())
        };
        for table in tables::TABLES {
            let Some(cond) = condition(table, scope, owner, opts.include_credentials) else {
                continue;
            };
            if table.name == "unit_logs" {
                // unit by unit through the telemetry store (SQL table or ClickHouse),
                // keyset-paged along its (unit, create_datetime, uuid) order, written in
                // members of LOG_CHUNK lines: constant memory, no big sorts
                let mut buf = Vec::new();
                let mut chunk = 0usize;
                let mut total = 0usize;
                let now = chrono::Utc::now().naive_utc();
                for unit in &unit_uuids {
                    let Ok(unit) = Uuid::parse_str(unit) else {
                        continue;
                    };
                    let mut after: Option<crate::telemetry::LogCursor> = None;
                    loop {
                        let page = self
                            .logs
                            .page_after(unit, after.as_ref(), LOG_CHUNK, now)
                            .await?;
                        let n = page.len();
                        if let Some(last) = page.last() {
                            after = Some((last.create_datetime.clone(), last.uuid));
                        }
                        buf.extend(page.iter().map(log_record));
                        while buf.len() >= LOG_CHUNK as usize {
                            let rest = buf.split_off(LOG_CHUNK as usize);
                            chunk += 1;
                            total += buf.len();
                            let path = format!("{}/{chunk:06}.jsonl", table.file);
                            if !w
                                .write(table, &path, &std::mem::replace(&mut buf, rest))
                                .await?
                            {
                                return Ok(w.summary(counts));
                            }
                            progress(Progress {
                                table: table.name,
                                records: total,
                            });
                        }
                        if (n as i64) < LOG_CHUNK {
                            break;
                        }
                    }
                }
                if !buf.is_empty() {
                    chunk += 1;
                    total += buf.len();
                    let path = format!("{}/{chunk:06}.jsonl", table.file);
                    if !w.write(table, &path, &buf).await? {
                        return Ok(w.summary(counts));
                    }
                }
                progress(Progress {
                    table: table.name,
                    records: total,
                });
                counts.insert(table.name.to_string(), total);
                continue;
            }
            let mut q = table.select();
            q.append(&cond);
            if table.columns.iter().any(|(c, _)| *c == "create_datetime") {
                q.push(" ORDER BY create_datetime, uuid");
            } else {
                q.push(" ORDER BY uuid");
            }
            let rows = q.fetch_all(self.pool()).await?;
            let mut records = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut rec = table.record(row)?;
                seal(table, &mut rec)?;
                records.push(rec);
            }
            drop(rows);
            if table.name == "units" {
                unit_uuids = records
                    .iter()
                    .filter_map(|r| r["uuid"].as_str().map(str::to_string))
                    .collect();
            }
            let path = format!("{}.jsonl", table.file);
            if !w.write(table, &path, &records).await? {
                return Ok(w.summary(counts));
            }
            progress(Progress {
                table: table.name,
                records: records.len(),
            });
            counts.insert(table.name.to_string(), records.len());
        }
        let files = std::mem::take(&mut w.files);
        let MemberWriter { mut tar, out, .. } = w;
        let mut manifest = json!({
            "format": FORMAT,
            "version": VERSION,
            "created": domain::now(),
            "source": {
                "domain": self.config.domain,
                "instance_actor": self.federation.actor_id(pepeunit_federation::backend::LocalRef::Instance).to_string(),
            },
            "scope": match scope { ExportScope::Account(_) => "account", ExportScope::Unit(_) => "unit" },
            "user": {"uuid": user.uuid, "login": user.login},
            "sealed": salt.map(|s| json!({
                "kdf": "pbkdf2-hmac-sha256",
                "iterations": KDF_ITERATIONS,
                "salt": B64.encode(s),
                "cipher": "aes-256-gcm",
                "fields": {"units": ["cipher_env", "cipher_state_storage"], "registry_credentials": ["cipher_credentials"]},
            })),
            "includes": {
                "secrets": sealer.is_some(),
                "credentials": opts.include_credentials,
            },
            "files": files,
        });
        if let Some(s) = &sealer {
            let mac = s.mac(&manifest);
            manifest["mac"] = Value::String(mac);
        }
        let data = serde_json::to_vec_pretty(&manifest).expect("JSON of JSON");
        let bytes = tar.add("manifest.json", &data).map_err(io_err)?;
        let _ = out.send(bytes).await;
        let (rest, total) = tar.finish().map_err(io_err)?;
        let _ = out.send(rest).await;
        Ok(ExportSummary {
            records: counts,
            bytes: total,
        })
    }

    /// Reads an archive into the account `target` (all or nothing).
    pub async fn import_archive(
        &self,
        target: Uuid,
        archive: Vec<u8>,
        passphrase: Option<String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let max = self.config.import_max_bytes;
        let checked = tokio::task::spawn_blocking(move || read_archive(&archive, max, passphrase))
            .await
            .map_err(AppError::internal)??;
        self.import_checked(target, checked, progress).await
    }

    async fn import_checked(
        &self,
        target: Uuid,
        a: CheckedArchive,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let source_user = a.source_user.clone();
        let mut report = ImportReport {
            user_uuid: target,
            source: a.source.clone(),
            ..Default::default()
        };
        // every uuid the archive defines, by table
        let mut defined: HashSet<String> = HashSet::new();
        for (table, recs) in &a.records {
            if *table == "users" {
                continue;
            }
            for r in recs {
                if let Some(u) = r.get("uuid").and_then(Value::as_str) {
                    defined.insert(u.to_string());
                }
            }
        }
        let mut tx = self.pool().begin().await?;
        let map = &mut report.map;
        map.insert(source_user.clone(), target.to_string());
        let mut names_used: HashSet<(String, String)> = HashSet::new();
        let mut new_registries = Vec::new();
        // private registries that already exist here (uuid here -> URL): the archive cannot
        // grant access to them, only the importer's own valid credentials here can
        let mut reused_private: HashMap<String, String> = HashMap::new();
        let importer = Agent::User(Box::new(
            store::users::get(self.pool(), target)
                .await?
                .ok_or_else(|| AppError::transfer("the target account does not exist"))?,
        ));
        let mut new_repos = Vec::new();
        let mut new_units = Vec::new();
        // (index among the archive's log records, unit uuid here)
        let mut pending_logs: Vec<(usize, String)> = Vec::new();
        let mut credentials_to_check = Vec::new();
        for table in tables::TABLES {
            if table.name == "users" {
                continue;
            }
            let Some(recs) = a.records.get(table.name) else {
                continue;
            };
            let mut created = 0usize;
            'rec: for (i, rec) in recs.iter().enumerate() {
                let mut rec = rec.clone();
                let old = rec["uuid"].as_str().unwrap_or_default().to_string();
                // references
                for col in table.references {
                    let Some(v) = rec.get(*col).and_then(Value::as_str).map(str::to_string) else {
                        continue;
                    };
                    let creatorish = matches!(*col, "creator_uuid" | "user_uuid");
                    let mapped = if v == source_user {
                        Some(target.to_string())
                    } else if let Some(m) = map.get(&v) {
                        Some(m.clone())
                    } else if creatorish {
                        // someone else's work on our objects: it is the importer's now
                        if table.name == "repository_registries" {
                            None
                        } else {
                            Some(target.to_string())
                        }
                    } else if defined.contains(&v) {
                        // defined but skipped (e.g. a permission to a skipped row)
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: format!("{col} {v} was not imported"),
                        });
                        continue 'rec;
                    } else if matches!(table.name, "unit_node_edges" | "permissions") {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: format!(
                                "{col} {v} is not in the archive (another user's object)"
                            ),
                        });
                        continue 'rec;
                    } else {
                        return Err(AppError::transfer(format!(
                            "{} record {}: {col} {v} is not in the archive",
                            table.name,
                            i + 1
                        )));
                    };
                    rec.insert(
                        col.to_string(),
                        mapped.map(Value::String).unwrap_or(Value::Null),
                    );
                }
                // log lines go to the telemetry store after the commit (below)
                if table.name == "unit_logs" {
                    let unit = rec["unit_uuid"].as_str().unwrap_or_default().to_string();
                    pending_logs.push((i, unit));
                    continue;
                }
                // credentials are the archive's word: checked against the remote after the
                // commit (`sync_imported`); one the importer has here already stays
                if table.name == "registry_credentials" {
                    let registry_uuid: Uuid = rec["repository_registry_uuid"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .map_err(AppError::internal)?;
                    if store::registries::get_credentials(self.pool(), target, registry_uuid)
                        .await?
                        .is_some()
                    {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: "credentials for this registry are already set here".into(),
                        });
                        continue 'rec;
                    }
                    rec.insert(
                        "status".into(),
                        Value::String(CredentialStatus::Error.as_str().into()),
                    );
                    credentials_to_check.push(registry_uuid);
                }
                // a Repo on a private registry that exists here needs the importer's access
                if table.name == "repos" {
                    let registry = rec["repository_registry_uuid"].as_str().unwrap_or_default();
                    if let Some(url) = reused_private.get(registry) {
                        let uuid = registry.parse().map_err(AppError::internal)?;
                        if self.registry_with_access(&importer, uuid).await.is_err() {
                            return Err(AppError::transfer(format!(
                                "repo {}: the registry {url} is private here and this account has no valid credentials for it; set them on this instance and import again",
                                rec["name"].as_str().unwrap_or_default()
                            )));
                        }
                    }
                }
                // registries are shared by URL
                if table.name == "repository_registries" {
                    let url = rec["repository_url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(row) = tables::registry_by_url(&url)
                        .fetch_optional(&mut *tx)
                        .await?
                    {
                        let existing: String = sqlx::Row::try_get(&row, 0)?;
                        let existing_uuid: Uuid = existing.parse().map_err(AppError::internal)?;
                        let is_public = store::registries::get(self.pool(), existing_uuid)
                            .await?
                            .is_some_and(|r| r.is_public_repository);
                        if !is_public {
                            reused_private.insert(existing.clone(), url.clone());
                        }
                        map.insert(old.clone(), existing.clone());
                        report.reused.push(Reused {
                            table: table.name.into(),
                            from: old,
                            to: existing,
                            repository_url: url,
                        });
                        continue;
                    }
                    self.check_git_host(&url).await.map_err(|e| {
                        AppError::transfer(format!("registry {url}: {}", e.message()))
                    })?;
                    self.check_registry_address(&url)
                        .await
                        .map_err(|e| AppError::transfer(format!("registry {url}: {e}")))?;
                }
                // secrets: from the passphrase to this instance's key
                for field in sealed_fields(table) {
                    if let Some(v) = rec.get(*field).and_then(Value::as_str).map(str::to_string) {
                        let sealer = a.sealer.as_ref().ok_or_else(|| {
                            AppError::transfer("The archive has sealed fields: give its passphrase")
                        })?;
                        let plain = sealer.cipher.decrypt(&v).map_err(|_| {
                            AppError::transfer(format!(
                                "{} record {}: {field} does not decrypt with the passphrase",
                                table.name,
                                i + 1
                            ))
                        })?;
                        rec.insert(
                            field.to_string(),
                            Value::String(self.cipher.encrypt(&plain)?),
                        );
                    }
                }
                if table.name == "registry_credentials" {
                    let mut q =
                        Sql::new("SELECT COUNT(*) FROM registry_credentials WHERE user_uuid = ");
                    q.bind(rec["user_uuid"].as_str().unwrap_or_default().to_string())
                        .push(" AND repository_registry_uuid = ")
                        .bind(
                            rec["repository_registry_uuid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        );
                    if q.fetch_i64(&mut *tx).await? > 0 {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old,
                            reason: "you already have credentials for this registry here".into(),
                        });
                        continue;
                    }
                }
                if table.name == "permissions" {
                    let mut q = Sql::new("SELECT COUNT(*) FROM permissions WHERE agent_uuid = ");
                    q.bind(rec["agent_uuid"].as_str().unwrap_or_default().to_string())
                        .push(" AND resource_uuid = ")
                        .bind(
                            rec["resource_uuid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        );
                    if q.fetch_i64(&mut *tx).await? > 0 {
                        continue;
                    }
                }
                // the row's own uuid
                let mut new = old.clone();
                if table.uuid_taken(&old).fetch_i64(&mut *tx).await? > 0 {
                    new = Uuid::new_v4().to_string();
                    report.remapped.push(Remapped {
                        table: table.name.into(),
                        from: old.clone(),
                        to: new.clone(),
                    });
                }
                rec.insert("uuid".into(), Value::String(new.clone()));
                map.insert(old.clone(), new.clone());
                // unique names
                if let Some(col) = table.unique_name {
                    let name = rec[col].as_str().unwrap_or_default().to_string();
                    let mut candidate = name.clone();
                    let mut n = 1;
                    loop {
                        let taken = names_used
                            .contains(&(table.name.to_string(), candidate.clone()))
                            || table
                                .name_taken(&candidate)
                                .expect("unique_name is set")
                                .fetch_i64(&mut *tx)
                                .await?
                                > 0;
                        if !taken {
                            break;
                        }
                        n += 1;
                        let suffix = format!("-{n}");
                        let keep = name.chars().count().min(20 - suffix.len());
                        let head: String = name.chars().take(keep).collect();
                        candidate = format!("{head}{suffix}");
                    }
                    if candidate != name {
                        report.renamed.push(Renamed {
                            table: table.name.into(),
                            uuid: new.clone(),
                            from: name,
                            to: candidate.clone(),
                        });
                        rec.insert(col.to_string(), Value::String(candidate.clone()));
                    }
                    names_used.insert((table.name.to_string(), candidate));
                }
                table.insert(&rec).execute(&mut *tx).await?;
                created += 1;
                if let Ok(u) = Uuid::parse_str(&new) {
                    match table.name {
                        "repository_registries" => new_registries.push(u),
                        "repos" => new_repos.push(u),
                        "units" => new_units.push(u),
                        _ => {}
                    }
                }
                if created.is_multiple_of(5000) {
                    progress(Progress {
                        table: table.name,
                        records: created,
                    });
                }
            }
            progress(Progress {
                table: table.name,
                records: created,
            });
            if table.name != "unit_logs" {
                report.created.insert(table.name.to_string(), created);
            }
        }
        tx.commit().await?;
        let created = self
            .import_logs(&a, &pending_logs, &mut report.remapped, progress)
            .await?;
        report
            .created
            .insert(tables::LOGS.name.to_string(), created);
        report.new_registries = new_registries;
        report.credentials_to_check = credentials_to_check;
        for r in new_repos {
            self.repos_cache.invalidate(r);
            self.federation_changed(pepeunit_federation::backend::LocalRef::Repo(r));
        }
        for u in new_units {
            self.units_cache.invalidate(u);
            // the stored env still names the old instance and carries its token
            let unit = self.unit(u).await?;
            self.refresh_stored_env(&unit).await?;
            self.federation_changed(pepeunit_federation::backend::LocalRef::Unit(u));
        }
        Ok(report)
    }
}

impl Instance {
    /// Writes the checked log lines of an archive into the telemetry store, `LOG_CHUNK` at a
    /// time (one INSERT each), a line whose uuid is taken here getting a new one. Runs after
    /// the relational data committed, because the store may be ClickHouse, outside that
    /// transaction: if the store fails now, the import answers with the error and the account
    /// is there with part of its logs.
    async fn import_logs(
        &self,
        a: &CheckedArchive,
        pending: &[(usize, String)],
        remapped: &mut Vec<Remapped>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<usize> {
        let Some(recs) = a.records.get(tables::LOGS.name) else {
            return Ok(0);
        };
        let mut created = 0;
        for chunk in pending.chunks(LOG_CHUNK as usize) {
            let mut lines = Vec::with_capacity(chunk.len());
            for (i, unit) in chunk {
                let mut line = new_log(&recs[*i])?;
                line.unit_uuid = unit
                    .parse()
                    .map_err(|_| AppError::transfer("unit_logs: invalid unit_uuid"))?;
                lines.push(line);
            }
            let uuids: Vec<Uuid> = lines.iter().map(|l| l.uuid).collect();
            let taken = self.logs.taken_uuids(&uuids).await?;
            for line in &mut lines {
                if taken.contains(&line.uuid) {
                    let new = Uuid::now_v7();
                    remapped.push(Remapped {
                        table: tables::LOGS.name.into(),
                        from: line.uuid.to_string(),
                        to: new.to_string(),
                    });
                    line.uuid = new;
                }
            }
            created += self.logs.insert(&lines).await? as usize;
            progress(Progress {
                table: tables::LOGS.name,
                records: created,
            });
        }
        Ok(created)
    }

    /// Clones the mirrors of the registries an import created, in the background (a stopped
    /// instance clones missing mirrors when it starts).
    /// Checks the credentials an import brought (stored as `Error` until then) against their
    /// remotes. `sync_imported` runs it in the background; the CLI awaits it.
    pub async fn check_imported_credentials(&self, user: Uuid, registries: &[Uuid]) {
        for r in registries {
            if let Err(e) = self.recheck_credentials(user, *r).await {
                tracing::warn!(registry = %r, "credentials check after import: {}", e.detail());
            }
        }
    }

    pub fn sync_imported(&self, report: &ImportReport) {
        let inst = self.clone();
        let user = report.user_uuid;
        let (check, sync) = (
            report.credentials_to_check.clone(),
            report.new_registries.clone(),
        );
        tokio::spawn(async move {
            // imported credentials first: a private mirror is cloned with them once valid
            inst.check_imported_credentials(user, &check).await;
            for r in sync {
                if let Err(e) = inst.sync_registry(r, Some(user)).await {
                    tracing::warn!(registry = %r, "sync after import: {}", e.detail());
                }
            }
        });
    }
}

/// An archive whose members, checksums, MAC and records all checked out.
struct CheckedArchive {
    source: String,
    source_user: String,
    sealer: Option<Sealer>,
    records: HashMap<&'static str, Vec<Map<String, Value>>>,
}

fn broken(msg: impl Into<String>) -> AppError {
    AppError::transfer(format!(
        "The archive is broken or tampered with: {}",
        msg.into()
    ))
}

/// Reads and checks a whole archive (blocking; run it off the async threads).
fn too_large(max_bytes: u64) -> AppError {
    AppError::transfer(format!(
        "The archive is larger than PU_IMPORT_MAX_BYTES ({max_bytes} bytes unpacked)"
    ))
}

fn read_archive(
    bytes: &[u8],
    max_bytes: u64,
    passphrase: Option<String>,
) -> AppResult<CheckedArchive> {
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
    let manifest_raw = members
        .remove("manifest.json")
        .ok_or_else(|| broken("it has no manifest.json"))?;
    let mut manifest: Value = serde_json::from_slice(&manifest_raw)
        .map_err(|e| broken(format!("manifest.json is not JSON ({e})")))?;
    if manifest["format"] != FORMAT {
        return Err(AppError::transfer(format!(
            "Not a Pepeunit account export (format {})",
            manifest["format"]
        )));
    }
    let version = manifest["version"].as_u64().unwrap_or(0);
    if version == 0 || version > VERSION {
        return Err(AppError::transfer(format!(
            "The archive's format version {} is not supported (this instance reads up to {VERSION})",
            manifest["version"]
        )));
    }
    let mac = manifest
        .as_object_mut()
        .and_then(|m| m.remove("mac"))
        .and_then(|m| m.as_str().map(str::to_string));
    let sealer = match (&manifest["sealed"], passphrase) {
        (Value::Null, _) => None,
        (sealed, Some(p)) => {
            let salt = sealed["salt"]
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| broken("sealed.salt is missing"))?;
            if sealed["iterations"].as_u64() != Some(KDF_ITERATIONS as u64) {
                return Err(broken("sealed.iterations is not the one this version uses"));
            }
            let sealer = Sealer::new(&p, &salt);
            let mac = mac
                .as_deref()
                .ok_or_else(|| broken("a sealed archive without its mac"))?;
            if !sealer.verify(&manifest, mac) {
                return Err(AppError::transfer(
                    "Wrong passphrase, or the manifest was changed after export",
                ));
            }
            Some(sealer)
        }
        (_, None) => {
            return Err(AppError::transfer(
                "This archive holds sealed env and credentials: give its passphrase",
            ))
        }
    };
    let files = manifest["files"]
        .as_array()
        .ok_or_else(|| broken("manifest.files is missing"))?;
    let mut records: HashMap<&'static str, Vec<Map<String, Value>>> = HashMap::new();
    let mut listed = HashSet::new();
    for f in files {
        let path = f["path"]
            .as_str()
            .ok_or_else(|| broken("a file without path"))?;
        if !listed.insert(path.to_string()) {
            return Err(broken(format!("{path} is listed twice in the manifest")));
        }
        let data = members
            .get(path)
            .ok_or_else(|| broken(format!("{path} is listed but missing")))?;
        if f["sha256"].as_str() != Some(crate::crypto::hex(&Sha256::digest(data)).as_str()) {
            return Err(broken(format!("{path} does not match its sha256")));
        }
        let table = tables::TABLES
            .iter()
            .find(|t| Some(t.name) == f["table"].as_str())
            .ok_or_else(|| broken(format!("{path}: unknown table {}", f["table"])))?;
        let list = records.entry(table.name).or_default();
        let mut n = 0u64;
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let rec: Map<String, Value> = serde_json::from_slice(line)
                .map_err(|e| broken(format!("{path} line {}: {e}", i + 1)))?;
            table
                .check(&rec)
                .map_err(|e| broken(format!("{path} line {}: {e}", i + 1)))?;
            list.push(rec);
            n += 1;
        }
        if f["records"].as_u64() != Some(n) {
            return Err(broken(format!(
                "{path} has {n} records, the manifest says {}",
                f["records"]
            )));
        }
    }
    if let Some(extra) = members.keys().find(|k| !listed.contains(*k)) {
        return Err(broken(format!("{extra} is not listed in the manifest")));
    }
    let users = records.get("users").map(Vec::len).unwrap_or(0);
    if users != 1 {
        return Err(broken(format!(
            "it must hold exactly one user, not {users}"
        )));
    }
    let source_user = records["users"][0]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if manifest["user"]["uuid"].as_str() != Some(source_user.as_str()) {
        return Err(broken("the manifest's user is not the archive's user"));
    }
    Ok(CheckedArchive {
        source: manifest["source"]["domain"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        source_user,
        sealer,
        records,
    })
}

/// Writes a whole archive to a `Vec` (tests, moves).
pub async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.write_all(&b).expect("Vec write");
    }
    out
}
